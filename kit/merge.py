"""merge: LoRA adapter + base → merged 16-bit safetensors, verified, then GGUF and a Modelfile.

The merge streams the base checkpoint shard by shard (``kit.lora_merge``). Two checks: every merged
tensor against base + adapter, one tensor at a time (``kit.merge_check``), and, where memory allows,
the merged files loaded back with plain transformers against base + adapter run through Unsloth and
PEFT, logits on held-out prompts; a merge that lost or mis-scaled the adapter shows up as a
difference of the size of the adapter's own effect, which is recorded beside it.
"""
from __future__ import annotations

import json
import resource
import shutil
import time
from contextlib import contextmanager
from pathlib import Path

import torch

from . import backend  # first: Unsloth patches transformers/peft on import
from .chat import render_prompt
from .data import held_out_prompts, read_jsonl
from .families import family_for
from .inference import generate
from .runs import Run, RunError, write_json


@torch.no_grad()
def _logits(model, tokenizer, prompts: list[str]):
    """Each prompt's logits, one prompt at a time (a generator: nothing is kept)."""
    for prompt in prompts:
        ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False).to(model.device)
        yield model(**ids).logits.float().cpu()


def _max_abs_diff(a, b) -> float:
    return max(float((x - y).abs().max()) for x, y in zip(a, b))


def export_gguf(run: Run, recipe: dict, tokenizer, prompts: list[str], reference_ids: list[list[int]],
                overwrite: bool = False) -> dict:
    """GGUF files of the merged model, each loaded back in llama.cpp and compared with it."""
    from . import gguf
    from .metrics import shows_behavior

    types, family = recipe["export"]["gguf"], family_for(recipe)
    if not gguf.have_llama_cpp():
        raise RunError("GGUF export needs llama-cpp-python: pip install '.[gguf]' (or set export.gguf: [])")
    paths = gguf.export(run.merged_dir, run.path / "gguf", f"{run.recipe_name}-{run.path.name}", types, overwrite)
    behavior = recipe["eval"]["behavior"]
    out = {t: gguf.verify(p, tokenizer, family, prompts, reference_ids, lambda text: shows_behavior(text, behavior),
                          recipe["export"]["verify_tokens"]) for t, p in paths.items()}
    generated = {t: g.pop("decided") for t, g in out.items()}
    if reference_ids is not None:  # the merged model fits in memory: judge each llama.cpp token by it
        for t, gaps in _decision_gaps(run.merged_dir, tokenizer, prompts, generated).items():
            out[t].update(gaps)
    return out


@torch.no_grad()
def _decision_gaps(merged_dir: Path, tokenizer, prompts: list[str], generated: dict[str, list[list[int]]]) -> dict:
    """Teacher-forced: llama.cpp's tokens fed to the merged HF model; at each step, how far below
    HF's best logit is the token llama.cpp chose (0: HF's own greedy choice). Separates a real
    difference from a near-tie that rounding flipped and that then changes everything after it."""
    model = backend.load_merged(str(merged_dir))
    out = {}
    for kind, continuations in generated.items():
        decisions = equal = 0
        worst = 0.0
        for prompt, tokens in zip(prompts, continuations):
            ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
            if not tokens:
                continue
            logits = model(torch.tensor([ids + tokens], device=model.device)).logits[0, len(ids) - 1:-1].float()
            gaps = logits.max(dim=-1).values - logits[torch.arange(len(tokens)), torch.tensor(tokens)]
            decisions += len(tokens)
            equal += int((gaps == 0).sum())
            worst = max(worst, float(gaps.max()))
        out[kind] = {"greedy_decisions": decisions, "greedy_decisions_equal": equal, "max_logit_gap": round(worst, 4)}
    del model
    return out


PREFERRED_FOR_OLLAMA = ("q4_k_m", "q5_k_m", "q8_0", "f16", "bf16")


def shared_system_prompt(rows: list[dict]) -> str | None:
    """The system prompt every training conversation starts with, if they all share one."""
    systems = {r["messages"][0]["content"] if r["messages"][0]["role"] == "system" else None for r in rows}
    return systems.pop() if len(systems) == 1 else None


def export_modelfile(run: Run, recipe: dict, tokenizer, exported: dict, conversations: list[list[dict]]) -> dict:
    """gguf/Modelfile for Ollama, pointing at the smallest usual quantization that was exported;
    SYSTEM: ``export.system``, else the system prompt the model was trained with, if one for all."""
    from . import modelfile

    kind = next(t for t in PREFERRED_FOR_OLLAMA if t in exported)
    system = recipe["export"]["system"]
    if system is None:
        system = shared_system_prompt(read_jsonl(run.data_dir / "train.jsonl"))
    path = modelfile.write_modelfile(run.path / "gguf" / "Modelfile", Path(exported[kind]["path"]), tokenizer,
                                     family_for(recipe), system=system)
    return {**modelfile.check(path, tokenizer, family_for(recipe), conversations), "system": system}


# Bytes per parameter of each output, for the free-space check (K-quants keep some tensors wider).
BYTES_PER_PARAMETER = {"merged": 2.0, "f16": 2.0, "bf16": 2.0, "q8_0": 1.07, "q5_k_m": 0.72, "q4_k_m": 0.62}


def estimate_bytes(parameters: int, gguf_types: list[str]) -> int:
    """Merged 16-bit weights, every GGUF asked for, and the f16 file quantization starts from."""
    kinds = ["merged", *gguf_types] + (["f16"] if {"q4_k_m", "q5_k_m"} & set(gguf_types) and "f16" not in gguf_types else [])
    return int(parameters * sum(BYTES_PER_PARAMETER[k] for k in kinds) * 1.05)


def check_disk(path: Path, needed: int) -> None:
    free = shutil.disk_usage(path).free
    if free < needed:
        raise RunError(f"not enough disk space in {path}: the merge and exports need about {needed / 1e9:.1f} GB, "
                       f"{free / 1e9:.1f} GB are free; nothing was written")


def check_adapter_base(run: Run, recipe: dict) -> None:
    """The adapter must have been trained on the recipe's model."""
    from .tiny import resolve_model_id

    config = json.loads((run.adapter_dir / "adapter_config.json").read_text(encoding="utf-8"))
    trained_on, expected = config.get("base_model_name_or_path"), resolve_model_id(recipe["model"]["id"])
    if trained_on and Path(str(trained_on)).resolve() != Path(expected).resolve() and trained_on != expected:
        raise RunError(f"{run.adapter_dir} was trained on {trained_on!r}, but the recipe's model is {expected!r}")


def _local_checkpoint(model_id: str) -> Path:
    """The base checkpoint's local directory, for the streaming merge (Hub ids: Unsloth's merge)."""
    from .lora_merge import NotStreamable
    from .tiny import resolve_model_id

    path = Path(resolve_model_id(model_id))
    if not (path / "config.json").exists():
        raise NotStreamable(f"{model_id!r} is not a local checkpoint directory")
    return path


def _load_adapter_model(run: Run, recipe: dict):
    """Base + the run's adapter through Unsloth, unquantized, in the merge dtype."""
    return backend.load_model(str(run.adapter_dir), recipe["model"]["max_seq_length"],
                              load_in_4bit=False, dtype=backend.merge_dtype())


def _merge_with_unsloth(run: Run, recipe: dict, out: Path) -> tuple[int, object]:
    """The fallback: base + adapter loaded through Unsloth, merged by ``save_pretrained_merged``
    (which fetches 16-bit base weights for pre-quantized checkpoints where the Hub is reachable)."""
    model, tokenizer = _load_adapter_model(run, recipe)
    parameters = sum(p.numel() for n, p in model.named_parameters() if "lora_" not in n)
    check_disk(run.path, estimate_bytes(parameters, recipe["export"]["gguf"]))
    model.save_pretrained_merged(str(out), tokenizer, save_method="merged_16bit")
    return parameters, tokenizer


def _logits_check(run: Run, recipe: dict, tmp: Path, prompts: list[str], held_out: list[dict], family) -> dict:
    """Logits of the merged files (plain transformers) against base + adapter (Unsloth + PEFT), and
    the merged model's greedy tokens for the GGUF comparison. One model in memory at a time."""
    dtype = backend.merge_dtype()
    model, tokenizer = _load_adapter_model(run, recipe)
    # Only the adapter model's logits are kept (full vocabulary, every position); the others are
    # compared prompt by prompt as they are computed.
    adapter_logits = list(_logits(model, tokenizer, prompts))
    with model.disable_adapter():
        effect = _max_abs_diff(adapter_logits, _logits(model, tokenizer, prompts))
    del model
    merged = backend.load_merged(str(tmp))
    diff = _max_abs_diff(_logits(merged, tokenizer, prompts), adapter_logits)
    del adapter_logits
    # One prompt at a time: no padding, so these are the merged model's plain greedy tokens.
    greedy = [a.ids for a in generate(merged, tokenizer, family, [p["messages"] for p in held_out],
                                      max_new_tokens=recipe["export"]["verify_tokens"], batch_size=1)[0]]
    del merged
    return {"merged_max_abs_logit_diff": diff, "adapter_max_abs_logit_effect": effect,
            "ok": diff <= recipe["export"]["logit_tolerance"], "compute_dtype": str(dtype or "model default"),
            "greedy": greedy}


def merge(run: Run, recipe: dict, overwrite: bool = False) -> dict:
    """Merged 16-bit weights in ``merged/`` (streamed shard by shard where the base checkpoint is
    local, else through Unsloth), checked tensor by tensor and, where one model fits in free
    memory, by logits against base + adapter; then the GGUF files and Modelfile."""
    from transformers import AutoTokenizer

    from .lora_merge import NotStreamable, merge_checkpoint, parameter_count
    from .merge_check import check_merged_tensors

    if not run.adapter_dir.exists():
        raise RunError(f"{run.path} has no adapter/: run the train notebook on this run first")
    if run.merged_dir.exists() and not overwrite:
        raise RunError(f"{run.merged_dir} already exists; pass overwrite=True to replace it")
    check_adapter_base(run, recipe)
    family = family_for(recipe)
    stages: dict = {}

    # Write under a temporary name and rename, so merged/ is never half-written.
    tmp = run.path / ".merged.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    base_dir = None
    method_asked = recipe["export"]["merge_method"]
    with measured(stages, "merge"):
        try:
            if method_asked == "unsloth":
                raise NotStreamable("export.merge_method is unsloth")
            base_dir = _local_checkpoint(recipe["model"]["id"])
            parameters = parameter_count(base_dir)
            check_disk(run.path, estimate_bytes(parameters, recipe["export"]["gguf"]))
            method = merge_checkpoint(base_dir, run.adapter_dir, tmp)
            tokenizer = AutoTokenizer.from_pretrained(str(run.adapter_dir))
            tokenizer.save_pretrained(str(tmp))
        except NotStreamable as e:
            shutil.rmtree(tmp, ignore_errors=True)
            if method_asked == "streaming":
                raise RunError(f"export.merge_method is streaming, but {e}") from None
            print(f"Streaming merge not possible ({e}); merging with the model loaded, through Unsloth.")
            parameters, tokenizer = _merge_with_unsloth(run, recipe, tmp)
            method = {"method": "unsloth save_pretrained_merged", "why": str(e)}
    with measured(stages, "tensor_check"):
        try:
            base_dir = base_dir or _local_checkpoint(recipe["model"]["id"])
            tensors = check_merged_tensors(base_dir, run.adapter_dir, tmp)
        except NotStreamable as e:
            tensors = {"ok": None, "skipped": str(e)}

    held_out = held_out_prompts(read_jsonl(run.data_dir / "eval.jsonl"), recipe["eval"]["num_prompts"])
    prompts = [render_prompt(tokenizer, family, p["messages"]) for p in held_out]
    needed, free = logits_check_bytes(parameters), backend.free_memory_bytes()
    with measured(stages, "logits_check"):
        if needed <= free:
            logits = _logits_check(run, recipe, tmp, prompts, held_out, family)
        else:
            logits = {"merged_max_abs_logit_diff": None, "adapter_max_abs_logit_effect": None, "ok": None, "greedy": None,
                      "skipped": f"needs about {needed / 1e9:.1f} GB for one model at a time, {free / 1e9:.1f} GB free"}
    greedy = logits.pop("greedy")
    config = json.loads((tmp / "config.json").read_text(encoding="utf-8"))
    tolerance = recipe["export"]["logit_tolerance"]
    report = {
        **method,
        **logits,
        "ok": tensors["ok"] is not False and logits["ok"] is not False,
        "tolerance": tolerance,
        "tensor_check": tensors,
        "prompts": len(prompts),
        "stored_dtype": config.get("dtype") or config.get("torch_dtype"),
        "merged_dir": str(run.merged_dir),
    }
    if run.merged_dir.exists():  # overwrite=True
        shutil.rmtree(run.merged_dir)
    tmp.rename(run.merged_dir)
    report["files"] = {p.name: p.stat().st_size for p in sorted(run.merged_dir.iterdir())}
    report["parameters"] = parameters
    if recipe["export"]["gguf"]:
        with measured(stages, "gguf"):
            report["gguf"] = export_gguf(run, recipe, tokenizer, prompts, greedy, overwrite)
        single_turn = [p["messages"] for p in held_out if len(p["messages"]) <= 2]
        report["modelfile"] = export_modelfile(run, recipe, tokenizer, report["gguf"], single_turn)
    report["stages"] = stages
    report["peak_rss_mb"] = max(s["peak_rss_mb"] for s in stages.values())
    write_json(run.path / "merge_report.json", report)
    run.update_manifest({"merge": {k: report[k] for k in ("method", "merged_max_abs_logit_diff", "ok", "tolerance")},
                         "exports": {t: {k: g[k] for k in ("path", "bytes", "sha256")}
                                     for t, g in report.get("gguf", {}).items()}})
    if tensors["ok"] is False:
        raise RunError(f"merged tensors differ from base + adapter: {tensors}; see {run.path / 'merge_report.json'}")
    if logits["ok"] is False:
        raise RunError(f"merged logits differ from the adapter model's by {logits['merged_max_abs_logit_diff']:.3g} > "
                       f"tolerance {tolerance:g}; see {run.path / 'merge_report.json'}")
    return report


def logits_check_bytes(parameters: int) -> int:
    """Memory for one copy of the model in the check's dtype, plus a third for activations and
    the libraries."""
    return int(parameters * (2 if backend.HAS_GPU else 4) * 1.33)


def summary(report: dict) -> str:
    lines = [f"merged by {report['method']}" + (f" ({report['why']})" if report.get("why") else "")
             + f": {report['parameters'] / 1e6:.1f} M parameters, stored as {report['stored_dtype']}"]
    t = report["tensor_check"]
    lines.append("tensor check: " + (t["skipped"] if t.get("skipped") else
                 f"{t['lora_modules_merged']}/{t['lora_modules']} LoRA weights = base + scale·B·A within rounding "
                 f"(max |error| {t['max_abs_error']:.3g}), {t['tensors_unchanged']} other tensors identical: "
                 + ("ok" if t["ok"] else "FAILED")))
    if report["merged_max_abs_logit_diff"] is None:
        lines.append(f"logits check skipped: {report['skipped']}")
    else:
        lines.append(f"merged logits vs adapter logits: max |diff| {report['merged_max_abs_logit_diff']:.3g} "
                     f"(adapter effect {report['adapter_max_abs_logit_effect']:.3g}, tolerance {report['tolerance']})")
    lines += [f"  {name}: {s['seconds']:.1f} s, peak RSS {s['peak_rss_mb']:.0f} MB"
              + (f" ({s['peak_rss_added_mb']:+.0f} MB over its start)" if s["peak_rss_added_mb"] is not None else "")
              for name, s in report["stages"].items()]
    return "\n".join(lines)


def gguf_rows(report: dict) -> list[dict]:
    """One row per GGUF file for the notebook's table."""
    return [{"type": t, "MB": round(g["bytes"] / 1e6, 1), "tokens match": g["tokens_match"],
             "prompts equal (greedy)": f"{g.get('greedy_equal_prompts')}/{report['prompts']}",
             "tokens = HF's greedy choice": f"{g.get('greedy_decisions_equal')}/{g.get('greedy_decisions')}",
             "max logit gap": g.get("max_logit_gap"), "behavior": g["behavior"]}
            for t, g in report.get("gguf", {}).items()]


@contextmanager
def measured(stages: dict, name: str):
    """Wall time and peak resident memory of one stage. Linux lets a process reset its peak
    (``/proc/self/clear_refs``), so each stage's peak is its own; elsewhere it is the process's."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    before, started = _rss_mb("VmRSS"), time.perf_counter()
    yield
    peak = _rss_mb("VmHWM")
    stages[name] = {"seconds": round(time.perf_counter() - started, 2), "peak_rss_mb": peak,
                    "rss_at_start_mb": before, "peak_rss_added_mb": round(peak - before, 1) if before else None}


def _rss_mb(field: str) -> float | None:
    """VmRSS (now) or VmHWM (peak) of this process in MB; the lifetime peak where /proc is absent."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1) if field == "VmHWM" else None
