"""merge: LoRA adapter + base → merged 16-bit safetensors, verified against the adapter model.

The check loads the merged files back with plain transformers and compares logits on held-out
prompts with the base+adapter model that was merged; a merge that lost or mis-scaled the adapter
shows up as a difference of the size of the adapter's own effect, which is recorded beside it.
"""
from __future__ import annotations

import json
import resource
import shutil
from pathlib import Path

import torch

from . import backend  # first: Unsloth patches transformers/peft on import
from .chat import render_prompt
from .data import held_out_prompts, read_jsonl
from .families import family_for
from .inference import generate
from .runs import Run, RunError, write_json

from transformers import AutoModelForCausalLM  # noqa: E402


@torch.no_grad()
def _logits(model, tokenizer, prompts: list[str]) -> list[torch.Tensor]:
    out = []
    for prompt in prompts:
        ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False).to(model.device)
        out.append(model(**ids).logits.float().cpu())
    return out


def _max_abs_diff(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
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
    return {t: gguf.verify(p, tokenizer, family, prompts, reference_ids, lambda text: shows_behavior(text, behavior),
                           recipe["export"]["verify_tokens"]) for t, p in paths.items()}


PREFERRED_FOR_OLLAMA = ("q4_k_m", "q5_k_m", "q8_0", "f16", "bf16")


def export_modelfile(run: Run, recipe: dict, tokenizer, exported: dict, conversations: list[list[dict]]) -> dict:
    """gguf/Modelfile for Ollama, pointing at the smallest usual quantization that was exported."""
    from . import modelfile

    kind = next(t for t in PREFERRED_FOR_OLLAMA if t in exported)
    path = modelfile.write_modelfile(run.path / "gguf" / "Modelfile", Path(exported[kind]["path"]), tokenizer,
                                     family_for(recipe))
    return modelfile.check(path, tokenizer, family_for(recipe), conversations)


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


def merge(run: Run, recipe: dict, overwrite: bool = False) -> dict:
    if not run.adapter_dir.exists():
        raise RunError(f"{run.path} has no adapter/: run the train notebook on this run first")
    if run.merged_dir.exists() and not overwrite:
        raise RunError(f"{run.merged_dir} already exists; pass overwrite=True to replace it")
    m = recipe["model"]
    check_adapter_base(run, recipe)
    family = family_for(recipe)
    dtype = backend.merge_dtype()
    model, tokenizer = backend.load_model(str(run.adapter_dir), m["max_seq_length"], load_in_4bit=False, dtype=dtype)
    parameters = sum(p.numel() for n, p in model.named_parameters() if "lora_" not in n)
    check_disk(run.path, estimate_bytes(parameters, recipe["export"]["gguf"]))

    # Write under a temporary name and rename, so merged/ is never half-written.
    tmp = run.path / ".merged.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained_merged(str(tmp), tokenizer, save_method="merged_16bit")

    held_out = held_out_prompts(read_jsonl(run.data_dir / "eval.jsonl"), recipe["eval"]["num_prompts"])
    prompts = [render_prompt(tokenizer, family, p["messages"]) for p in held_out]
    adapter_logits = _logits(model, tokenizer, prompts)
    with model.disable_adapter():
        base_logits = _logits(model, tokenizer, prompts)
    del model
    merged = AutoModelForCausalLM.from_pretrained(str(tmp), dtype=dtype or "auto")
    merged_logits = _logits(merged, tokenizer, prompts)
    # One prompt at a time: no padding, so these are the merged model's plain greedy tokens.
    greedy = [a.ids for a in generate(merged, tokenizer, family, [p["messages"] for p in held_out],
                                      max_new_tokens=recipe["export"]["verify_tokens"], batch_size=1)[0]]
    config = json.loads((tmp / "config.json").read_text(encoding="utf-8"))
    stored_dtype = config.get("dtype") or config.get("torch_dtype")
    del merged

    diff = _max_abs_diff(merged_logits, adapter_logits)
    tolerance = recipe["export"]["logit_tolerance"]
    report = {
        "merged_max_abs_logit_diff": diff,
        "adapter_max_abs_logit_effect": _max_abs_diff(adapter_logits, base_logits),
        "tolerance": tolerance,
        "ok": diff <= tolerance,
        "prompts": len(prompts),
        "compute_dtype": str(dtype or "model default"),
        "stored_dtype": stored_dtype,
        "merged_dir": str(run.merged_dir),
    }
    if run.merged_dir.exists():  # overwrite=True
        shutil.rmtree(run.merged_dir)
    tmp.rename(run.merged_dir)
    files = {p.name: p.stat().st_size for p in sorted(run.merged_dir.iterdir())}
    report["files"] = files
    # Peak resident memory of this process so far (loading, merging, checking), in MB.
    report["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    report["parameters"] = parameters
    if recipe["export"]["gguf"]:
        report["gguf"] = export_gguf(run, recipe, tokenizer, prompts, greedy, overwrite)
        single_turn = [p["messages"] for p in held_out if len(p["messages"]) <= 2]
        report["modelfile"] = export_modelfile(run, recipe, tokenizer, report["gguf"], single_turn)
    write_json(run.path / "merge_report.json", report)
    run.update_manifest({"merge": {k: report[k] for k in ("merged_max_abs_logit_diff", "ok", "tolerance")},
                         "exports": {t: {k: g[k] for k in ("path", "bytes", "sha256")}
                                     for t, g in report.get("gguf", {}).items()}})
    if not report["ok"]:
        raise RunError(f"merged logits differ from the adapter model's by {diff:.3g} > tolerance {tolerance:g}; "
                       f"see {run.path / 'merge_report.json'}")
    return report
