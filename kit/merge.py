"""merge: LoRA adapter + base → merged 16-bit safetensors, verified against the adapter model.

The check loads the merged files back with plain transformers and compares logits on held-out
prompts with the base+adapter model that was merged; a merge that lost or mis-scaled the adapter
shows up as a difference of the size of the adapter's own effect, which is recorded beside it.
"""
from __future__ import annotations

import json
import shutil

import torch

from . import backend  # first: Unsloth patches transformers/peft on import
from .chat import render_prompt
from .data import held_out_prompts, read_jsonl
from .families import family_for
from .runs import Run, RunError

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


def merge(run: Run, recipe: dict, overwrite: bool = False) -> dict:
    if not run.adapter_dir.exists():
        raise RunError(f"{run.path} has no adapter/: run the train notebook on this run first")
    if run.merged_dir.exists() and not overwrite:
        raise RunError(f"{run.merged_dir} already exists; pass overwrite=True to replace it")
    m = recipe["model"]
    family = family_for(recipe)
    dtype = backend.merge_dtype()
    model, tokenizer = backend.load_model(str(run.adapter_dir), m["max_seq_length"], load_in_4bit=False, dtype=dtype)

    # Write under a temporary name and rename, so merged/ is never half-written.
    tmp = run.path / ".merged.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained_merged(str(tmp), tokenizer, save_method="merged_16bit")

    prompts = [render_prompt(tokenizer, family, p["messages"])
               for p in held_out_prompts(read_jsonl(run.data_dir / "eval.jsonl"), recipe["eval"]["num_prompts"])]
    adapter_logits = _logits(model, tokenizer, prompts)
    with model.disable_adapter():
        base_logits = _logits(model, tokenizer, prompts)
    del model
    merged = AutoModelForCausalLM.from_pretrained(str(tmp), dtype=dtype or "auto")
    merged_logits = _logits(merged, tokenizer, prompts)
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
    (run.path / "merge_report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    run.update_manifest({"merge": {k: report[k] for k in ("merged_max_abs_logit_diff", "ok", "tolerance")}})
    if not report["ok"]:
        raise RunError(f"merged logits differ from the adapter model's by {diff:.3g} > tolerance {tolerance:g}; "
                       f"see {run.path / 'merge_report.json'}")
    return report
