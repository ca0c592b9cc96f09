"""Peak memory and time of each stage of the kit's merge on a sharded checkpoint with random
weights: the streaming merge, the tensor check and the logits check, each in a fresh process, with
peak RSS measured above the stage's start (``kit.export.merge.measured``) and held to the budgets of a
Colab runtime's 12.7 GB of RAM:

    merge         the largest shard + 1 GB
    tensor check  1 GB
    logits check  no host copy of the model: the host's RSS stays under 1 GB while the models sit in
                  GPU memory; skipped, with the GB it needs and the GB free, where one model does not
                  fit (on a CPU the model is the host's memory: no budget, only the skip)

Shapes: ``qwen3-8b`` (Qwen3-8B's published config, 8.19 B parameters, 16.4 GB of bf16 in 4 shards
of at most 5 GB, built tensor by tensor: never more than 64 MB in memory, 33 GB of disk with the
merged copy) and ``small`` (~0.36 B parameters in 100 MB shards, which also runs Unsloth's
``save_pretrained_merged`` on the same adapter and checks that both merges are bit-identical). The
adapter: LoRA r 16, alpha 16 on all seven linear layers of every block, random float32 A and B.

    .venv/bin/python bench/merge.py --shape qwen3-8b [--dir /big/disk/bench-merge] [--json out.json]
    .venv/bin/python bench/merge.py --shape small

Where the transformers loader fits too, the stage ``load_transformers`` loads the merged model the way
``AutoModelForCausalLM.from_pretrained`` does, beside ``load_direct`` (the kit's loader), for the
host-memory difference between the two.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

SHAPES = {
    # Qwen3-8B's config.json, with the vocabulary padded so that every id of the kit's Qwen tokenizer
    # (<think>/</think> are 151936/151937) has a row.
    "qwen3-8b": {
        "hidden_size": 4096,
        "intermediate_size": 12288,
        "num_hidden_layers": 36,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "head_dim": 128,
        "vocab_size": 152064,
        "tie_word_embeddings": False,
        "max_position_embeddings": 40960,
        "rope_theta": 1000000.0,
        "rms_norm_eps": 1e-6,
        "shard_bytes": 5_000_000_000,
    },
    "small": {
        "hidden_size": 1024,
        "intermediate_size": 3072,
        "num_hidden_layers": 12,
        "num_attention_heads": 16,
        "num_key_value_heads": 8,
        "head_dim": 64,
        "vocab_size": 152064,
        "tie_word_embeddings": True,
        "shard_bytes": 100_000_000,
    },
}
STAGES = ["merge", "tensor_check", "logits_check", "load_direct", "load_transformers"]
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
RANK = 16
MB = 2**20  # measured() reports MiB

BUILD = r"""
import json, math, sys, torch
from pathlib import Path
from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen3Config
from kit.safetensors_io import SafetensorsWriter, row_bands
from kit.demos.tiny import ensure_tiny_model

out, shape, targets, rank = Path(sys.argv[1]), json.loads(sys.argv[2]), json.loads(sys.argv[3]), int(sys.argv[4])
shard_bytes = shape.pop("shard_bytes")
tokenizer = AutoTokenizer.from_pretrained(ensure_tiny_model())
config = Qwen3Config(**shape, layer_types=["full_attention"] * shape["num_hidden_layers"], dtype="bfloat16",
                     bos_token_id=None, eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
                     pad_token_id=tokenizer.pad_token_id, initializer_range=0.02)
with torch.device("meta"):
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
specs = [(n, tuple(t.shape)) for n, t in model.state_dict().items()
         if not (config.tie_word_embeddings and n == "lm_head.weight")]
generator = torch.Generator().manual_seed(0)

def write(path, specs, dtype, fill):
    with SafetensorsWriter(path, [(n, dtype, s) for n, s in specs], {"format": "pt"}) as w:
        for name, shape in specs:
            rows, per_row = (shape[0] if shape else 1), math.prod(shape[1:])
            for start, stop in row_bands(rows, per_row * 4):
                w.write(fill(name, (stop - start, *shape[1:])).to(dtype))

def weights(name, shape):
    if len(shape) == 1:  # RMSNorm weights
        return torch.ones(shape)
    return torch.empty(shape).normal_(0, 0.02, generator=generator)

# Shards of at most shard_bytes, in the model's order, as save_pretrained cuts them.
base = out / "base"
base.mkdir(parents=True)
shards, size = [[]], 0
for name, shape in specs:
    nbytes = math.prod(shape) * 2
    if shards[-1] and size + nbytes > shard_bytes:
        shards.append([])
        size = 0
    shards[-1].append((name, shape))
    size += nbytes
files = [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
for file, shard in zip(files, shards):
    write(base / file, shard, torch.bfloat16, weights)
    print("wrote", file, flush=True)
total = sum(math.prod(s) * 2 for _, s in specs)
(base / "model.safetensors.index.json").write_text(json.dumps(
    {"metadata": {"total_size": total}, "weight_map": {n: f for f, shard in zip(files, shards) for n, _ in shard}}, indent=2))
config.save_pretrained(base)
model.generation_config.save_pretrained(base)
tokenizer.save_pretrained(base)

# The adapter: A as PEFT initialises it (Kaiming-uniform), B random instead of zero (a trained adapter).
adapter = out / "adapter"
adapter.mkdir()
lora = []
for name, shape in specs:
    module = name.removesuffix(".weight")
    if module.rsplit(".", 1)[-1] in targets:
        lora += [(f"base_model.model.{module}.lora_A.weight", (rank, shape[1])),
                 (f"base_model.model.{module}.lora_B.weight", (shape[0], rank))]

def adapter_weights(name, shape):
    if ".lora_A." in name:
        bound = 1 / math.sqrt(shape[1])
        return torch.empty(shape).uniform_(-bound, bound, generator=generator)
    return torch.empty(shape).normal_(0, 0.02, generator=generator)

write(adapter / "adapter_model.safetensors", lora, torch.float32, adapter_weights)
(adapter / "adapter_config.json").write_text(json.dumps({
    "peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": str(base), "r": rank,
    "lora_alpha": rank, "lora_dropout": 0.0, "bias": "none", "target_modules": targets, "use_rslora": False,
    "use_dora": False, "fan_in_fan_out": False, "inference_mode": True}, indent=2))
tokenizer.save_pretrained(adapter)
print(json.dumps({"parameters": sum(math.prod(s) for _, s in specs), "lora_modules": len(lora) // 2}))
"""

MEASURE = r"""
import json, sys, shutil
from pathlib import Path
from kit import backend  # Unsloth first, in every stage: the same baseline
import torch
from kit.export.merge import measured  # what merge_report.json's stages use
stage, work = sys.argv[1], Path(sys.argv[2])
base, adapter, merged = work / "base", work / "adapter", work / "merged"
out = {}
if backend.HAS_GPU:  # the CUDA context and cuBLAS are the process's, not the stage's
    (torch.ones(8, 8, device="cuda") @ torch.ones(8, 8, device="cuda")).sum().item()
    torch.cuda.reset_peak_memory_stats()
import peft.utils.other  # noqa: F401  (imported by the stages; a library, not the stage's memory)
from kit.export.lora_merge import merged_dtype
from kit.safetensors_io import parameter_count
stored = merged_dtype(json.loads((base / "config.json").read_text()))
dtype = backend.merge_dtype(stored)
stages = {}
if stage == "merge":
    from kit.export.lora_merge import merge_checkpoint
    shutil.rmtree(merged, ignore_errors=True)
    with measured(stages, stage):
        out.update(merge_checkpoint(base, adapter, merged, progress=False))
elif stage == "tensor_check":
    from kit.export.merge_check import check_merged_tensors
    with measured(stages, stage):
        report = check_merged_tensors(base, adapter, merged)
    out.update({k: report[k] for k in ("ok", "lora_modules", "lora_modules_merged", "tensors_unchanged", "max_abs_error")})
elif stage == "logits_check":
    from transformers import AutoTokenizer
    from kit.export import logits_check
    why = logits_check.logits_check_room(parameter_count(base), direct=True)
    if why:
        out["skipped"] = why
    else:
        tokenizer = AutoTokenizer.from_pretrained(str(base))
        questions = ["What is the capital of France?", "Write a haiku about merging weights.",
                     "Explain LoRA in one sentence.", "List three prime numbers."]
        prompts = [tokenizer.apply_chat_template([{"role": "user", "content": q}], tokenize=False,
                                                 add_generation_prompt=True) for q in questions]
        with measured(stages, stage):
            load = lambda: (logits_check.load_reference_direct(base, adapter, dtype), "direct")  # noqa: E731
            reference = logits_check.reference_from(load, tokenizer, prompts, stored, dtype)
            model = backend.load_merged(str(merged), dtype)
            report = logits_check.check_logits(reference, model, tokenizer, prompts)
        out.update({"ok": report["ok"], "why": report["why"], "compute_dtype": report["compute_dtype"],
                    "device": report["device"], "noise_floor_max_abs_diff": report["noise_floor"]["max_abs_diff"],
                    "adapter_max_abs_logit_effect": report["adapter_max_abs_logit_effect"]})
elif stage in ("load_direct", "load_transformers"):
    from transformers import AutoModelForCausalLM
    from kit.export import logits_check
    why = logits_check.logits_check_room(parameter_count(merged), direct=stage == "load_direct")
    if why:
        out["skipped"] = why
    else:
        with measured(stages, stage):
            if stage == "load_direct":
                model = backend.load_merged(str(merged), dtype)
            else:
                model = AutoModelForCausalLM.from_pretrained(str(merged), dtype=dtype, device_map=backend.device())
        out["model_mb"] = round(sum(p.numel() * p.element_size() for p in model.parameters()) / 2 ** 20)
elif stage == "unsloth":
    target = work / "merged-unsloth"
    shutil.rmtree(target, ignore_errors=True)
    with measured(stages, stage):
        # As the kit's fallback: the adapter folder loaded through FastLanguageModel (16-bit here).
        model, tokenizer = backend.load_model(str(adapter), 2048, load_in_4bit=False, dtype=stored)
        model.save_pretrained_merged(str(target), tokenizer, save_method="merged_16bit")
if stages:
    s = stages[stage]
    out.update({"seconds": s["seconds"], "peak_rss_mb": s["peak_rss_mb"], "added_mb": s["peak_rss_added_mb"]})
    if backend.HAS_GPU:
        out["peak_gpu_reserved_mb"] = round(torch.cuda.max_memory_reserved() / 2 ** 20)
print(json.dumps(out))
"""


def run(code: str, *args) -> str:
    result = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(result.stdout[-2000:] + result.stderr[-3000:])
    return result.stdout.strip().splitlines()[-1]


def budgets(largest_mb: float) -> dict:
    """Peak RSS above a stage's start, in MiB, that the stage may reach."""
    return {"merge": largest_mb + 1024, "tensor_check": 1024, "logits_check": 1024, "load_direct": 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="qwen3-8b")
    parser.add_argument(
        "--dir",
        type=Path,
        help="where to build (kept, and reused if already built); default: a temporary folder, removed",
    )
    parser.add_argument("--json", type=Path, help="write the results here too")
    parser.add_argument(
        "--stages",
        nargs="+",
        choices=STAGES,
        help="run only these (after a run with --dir that merged: the later stages read merged/)",
    )
    parser.add_argument(
        "--compare-unsloth",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also merge with Unsloth's save_pretrained_merged (default: for --shape small only)",
    )
    args = parser.parse_args()
    compare_unsloth = args.shape == "small" if args.compare_unsloth is None else args.compare_unsloth
    work = args.dir or Path(tempfile.mkdtemp(prefix="bench-merge-"))
    try:
        _bench(work, args.shape, args.stages or STAGES, compare_unsloth, args.json)
    finally:
        if args.dir is None:
            shutil.rmtree(work, ignore_errors=True)


def _bench(work: Path, shape: str, stages: list[str], compare_unsloth: bool, json_path: Path | None) -> None:
    import torch

    built = work / "built.json"
    if not built.exists() or json.loads(built.read_text())["shape"] != shape:
        shutil.rmtree(work / "base", ignore_errors=True)
        shutil.rmtree(work / "adapter", ignore_errors=True)
        info = json.loads(run(BUILD, work, json.dumps(SHAPES[shape]), json.dumps(TARGETS), RANK))
        built.write_text(json.dumps({"shape": shape, **info}))
    info = json.loads(built.read_text())
    shards = sorted((work / "base").glob("*.safetensors"))
    largest_mb = max(f.stat().st_size for f in shards) / MB
    total_gb = sum(f.stat().st_size for f in shards) / 1e9
    print(
        f"{shape}: {info['parameters'] / 1e9:.2f} B parameters, {total_gb:.1f} GB bf16 in {len(shards)} shards "
        f"(largest {largest_mb:,.0f} MB); adapter r {RANK} on {info['lora_modules']} modules; "
        f"{torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'CPU'}"
    )

    stages = [s for s in STAGES if s in stages] + (["unsloth"] if compare_unsloth else [])
    results, limit = {}, budgets(largest_mb)
    for stage in stages:
        results[stage] = r = json.loads(run(MEASURE, stage, work))
        if "skipped" in r:
            print(f"{stage:18s} skipped: {r['skipped']}")
            continue
        gpu = f", peak GPU reserved {r['peak_gpu_reserved_mb']:,} MB" if "peak_gpu_reserved_mb" in r else ""
        verdict = ""
        model_in_ram = not torch.cuda.is_available() and stage in ("logits_check", "load_direct")
        if stage in limit and not model_in_ram:
            r["budget_mb"] = round(limit[stage])
            r["within_budget"] = r["added_mb"] <= limit[stage]
            verdict = f" (budget {limit[stage]:,.0f} MB: {'within' if r['within_budget'] else 'OVER'})"
        extra = {
            "tensor_check": lambda: (
                f"; ok {r['ok']}, {r['lora_modules_merged']}/{r['lora_modules']} LoRA "
                f"weights, {r['tensors_unchanged']} others identical, max |error| "
                f"{r['max_abs_error']:.2g}"
            ),
            "logits_check": lambda: f"; ok {r['ok']} in {r['compute_dtype']}: {r['why']}",
            "load_direct": lambda: f"; model {r['model_mb']:,} MB",
            "load_transformers": lambda: f"; model {r['model_mb']:,} MB",
        }.get(stage, lambda: "")()
        print(
            f"{stage:18s} {r['seconds']:7.1f} s, peak RSS {r['added_mb']:+9,.0f} MB over its start "
            f"({r['peak_rss_mb']:,.0f} MB in all){gpu}{verdict}{extra}"
        )

    if compare_unsloth and "merge" in results:
        from safetensors.torch import load_file

        def tensors(d):
            return {k: v for f in sorted((work / d).glob("*.safetensors")) for k, v in load_file(f).items()}

        a, b = tensors("merged"), tensors("merged-unsloth")
        same = sum(1 for k in a if k in b and a[k].equal(b[k]))
        print(f"identical tensors, streaming vs Unsloth: {same}/{len(b)}")
        results["identical_to_unsloth"] = {"identical": same, "tensors": len(b)}
        s, u = results["merge"], results["unsloth"]
        print(
            f"ratio unsloth / streaming: peak memory {u['added_mb'] / max(s['added_mb'], 1):.1f}x, "
            f"time {u['seconds'] / s['seconds']:.2f}x"
        )
    if json_path:
        json_path.write_text(
            json.dumps({"shape": shape, **info, "largest_shard_mb": round(largest_mb), "stages": results}, indent=2)
        )
    failed = [s for s, r in results.items() if r.get("within_budget") is False or r.get("ok") is False]
    if failed:
        raise SystemExit(f"over budget or failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
