"""Peak memory and time of the kit's streaming merge against Unsloth's ``save_pretrained_merged``
(base + adapter loaded, then merged), on the same sharded checkpoint, each in a fresh process.

A Qwen3-architecture checkpoint of ~0.36 B parameters (bf16, ~0.7 GB, 100 MB shards) and a rank-16
LoRA adapter on all linear layers are built once into a temporary folder; the two merges must
produce identical tensors.

    .venv/bin/python bench/merge.py [--shard-mb 100]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

BUILD = r"""
import sys, torch
from pathlib import Path
from kit import backend  # Unsloth first
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
from peft import LoraConfig, get_peft_model
from kit.tiny import ensure_tiny_model
out, shard_mb = Path(sys.argv[1]), int(sys.argv[2])
config = AutoConfig.from_pretrained(ensure_tiny_model())
config.update({"hidden_size": 1024, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 16,
               "num_key_value_heads": 8, "head_dim": 64, "layer_types": ["full_attention"] * 12, "initializer_range": 0.02})
torch.manual_seed(0)
model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
model.save_pretrained(out / "base", max_shard_size=f"{shard_mb}MB")
tokenizer = AutoTokenizer.from_pretrained(ensure_tiny_model())
tokenizer.save_pretrained(out / "base")
targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
peft_model = get_peft_model(model, LoraConfig(r=16, lora_alpha=16, target_modules=targets, init_lora_weights=False))
peft_model.peft_config["default"].base_model_name_or_path = str(out / "base")
peft_model.save_pretrained(out / "adapter")
tokenizer.save_pretrained(out / "adapter")
print(sum(p.numel() for p in model.parameters()))
"""

MEASURE = r"""
import json, sys, shutil
from pathlib import Path
from kit import backend  # Unsloth first, in both: the same baseline
from kit.merge import measured  # what merge_report.json's stages use
way, work = sys.argv[1], Path(sys.argv[2])
out = work / f"merged-{way}"
shutil.rmtree(out, ignore_errors=True)
stages = {}
with measured(stages, way):
    if way == "streaming":
        from kit.lora_merge import merge_checkpoint
        merge_checkpoint(work / "base", work / "adapter", out, progress=False)
    else:
        import torch
        # As the kit's fallback: the adapter folder loaded through FastLanguageModel (16-bit here).
        model, tokenizer = backend.load_model(str(work / "adapter"), 2048, load_in_4bit=False, dtype=torch.bfloat16)
        model.save_pretrained_merged(str(out), tokenizer, save_method="merged_16bit")
print(json.dumps({"seconds": stages[way]["seconds"], "added_mb": stages[way]["peak_rss_added_mb"]}))
"""


def run(code: str, *args) -> str:
    result = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(result.stdout[-2000:] + result.stderr[-3000:])
    return result.stdout.strip().splitlines()[-1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shard-mb", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        parameters = int(run(BUILD, work, args.shard_mb))
        base_mb = sum(f.stat().st_size for f in (work / "base").glob("*.safetensors")) / 1e6
        largest_mb = max(f.stat().st_size for f in (work / "base").glob("*.safetensors")) / 1e6
        print(f"checkpoint: {parameters / 1e6:.0f} M parameters, {base_mb:.0f} MB bf16, largest shard {largest_mb:.0f} MB")
        results = {way: json.loads(run(MEASURE, way, work)) for way in ("streaming", "unsloth")}
        for way, r in results.items():
            print(f"{way:10s} {r['seconds']:6.1f} s, peak RSS {r['added_mb']:7.0f} MB above the process's start")
        from safetensors.torch import load_file

        def tensors(d):
            return {k: v for f in sorted((work / d).glob("*.safetensors")) for k, v in load_file(f).items()}
        a, b = tensors("merged-streaming"), tensors("merged-unsloth")
        same = sum(1 for k in a if k in b and a[k].equal(b[k]))
        print(f"identical tensors: {same}/{len(b)}")
    s, u = results["streaming"], results["unsloth"]
    print(f"ratio unsloth / streaming peak memory: {u['added_mb'] / max(s['added_mb'], 1):.1f}x; "
          f"time: {u['seconds'] / s['seconds']:.2f}x")


if __name__ == "__main__":
    main()
