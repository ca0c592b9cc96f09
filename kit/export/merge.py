"""merge: LoRA adapter + base → merged 16-bit safetensors, verified, then GGUF and a Modelfile.

The merge streams the base checkpoint tensor by tensor (``kit.export.lora_merge``), in the dtype
``merged_dtype`` decides from the base's config (the Unsloth route writes the same). Two checks:
every merged tensor against base + adapter, a band of rows at a time (``kit.export.merge_check``), and,
where memory allows, the merged files loaded back with plain transformers against base + adapter
(PEFT on the base, both read straight into device memory; through Unsloth where the base is not a
local 16-bit checkpoint), logits on held-out prompts, judged against a noise floor measured in the
same run, device and dtype (a correct merge's rounding) rather than an absolute tolerance; the
adapter's own effect is recorded beside it (``kit.export.logits_check``). Then the QLoRA gap: eval loss
of the merged 16-bit model against the 4-bit base + adapter that training saw. Where the base
checkpoint is and how base + adapter load: ``kit.export.base_model``.
"""
from __future__ import annotations

import resource
import shutil
import time
from contextlib import contextmanager
from pathlib import Path

import torch

from kit import backend  # first: Unsloth patches transformers/peft on import
from kit.chat.render import render_prompt
from kit.data.rows import held_out_prompts, read_jsonl
from kit.families import family_for
from kit.evaluation.inference import generate
from kit.runs import Run, RunError, write_json
from kit.recipes import Recipe
from kit.export.base_model import base_config, check_adapter_base, direct_base, load_adapter_model, local_checkpoint
from kit.export.logits_check import (QLORA_GAP_ROWS, check_logits, logits_check_room, qlora_gap, reference_logits,
                                     release_memory)


def export_gguf(run: Run, recipe: Recipe, tokenizer, prompts: list[str], reference_ids: list[list[int]] | None,
                dtype: torch.dtype, overwrite: bool = False) -> dict:
    """GGUF files of the merged model, each loaded back in llama.cpp and compared with it (the merged
    model loaded in ``dtype``)."""
    from kit.export import gguf
    from kit.evaluation.metrics import shows_behavior

    types, family = recipe.export.gguf, family_for(recipe)
    if not gguf.have_llama_cpp():
        raise RunError("GGUF export needs llama-cpp-python: pip install '.[gguf]' (or set export.gguf: [])")
    paths = gguf.export(run.merged_dir, run.path / "gguf", f"{run.recipe_name}-{run.path.name}", types, overwrite)
    behavior = recipe.eval.behavior
    out = {t: gguf.verify(p, tokenizer, family, prompts, reference_ids, lambda text: shows_behavior(text, behavior),
                          recipe.export.verify_tokens) for t, p in paths.items()}
    generated = {t: g.pop("decided") for t, g in out.items()}
    if reference_ids is not None:  # the merged model fits in memory: judge each llama.cpp token by it
        for t, gaps in _decision_gaps(run.merged_dir, dtype, tokenizer, prompts, generated).items():
            out[t].update(gaps)
            if t not in ("f16", "bf16") and out[t]["greedy_equal_prompts"] < len(prompts):
                out[t]["why_answers_differ"] = gguf.why_answers_differ(t, out[t], len(prompts), recipe.model.id)
    return out


@torch.no_grad()
def _decision_gaps(merged_dir: Path, dtype: torch.dtype, tokenizer, prompts: list[str],
                   generated: dict[str, list[list[int]]]) -> dict:
    """Teacher-forced: llama.cpp's tokens fed to the merged HF model; at each step, how far below
    HF's best logit is the token llama.cpp chose (0: HF's own greedy choice). Separates a real
    difference from a near-tie that rounding flipped and that then changes everything after it."""
    model = backend.load_merged(str(merged_dir), dtype)
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


def modelfile_conversations(held_out: list[dict], family) -> list:
    """The held-out prompts the Modelfile's TEMPLATE is checked on: whole conversations with their
    tools where the family's TEMPLATE renders history and tools, else the single-turn ones."""
    from kit.export import modelfile

    if modelfile.renders_history(family):
        return [{"messages": p["messages"], "tools": p.get("tools")} for p in held_out]
    return [p["messages"] for p in held_out if len(p["messages"]) <= 2 and not p.get("tools")]


def export_modelfile(run: Run, recipe: Recipe, tokenizer, exported: dict, conversations: list[list[dict]]) -> dict:
    """gguf/Modelfile for Ollama, pointing at the smallest usual quantization that was exported;
    SYSTEM: ``export.system``, else the system prompt the model was trained with, if one for all."""
    from kit.export import modelfile

    kind = next(t for t in PREFERRED_FOR_OLLAMA if t in exported)
    system = recipe.export.system
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


def merge_with_unsloth(run: Run, recipe: Recipe, out: Path, stored: torch.dtype) -> tuple[int, object]:
    """The fallback: base + adapter loaded through Unsloth, merged by ``save_pretrained_merged``
    (which fetches 16-bit base weights for pre-quantized checkpoints where the Hub is reachable).
    Unsloth writes the dtype the model is loaded in (on CPU: bfloat16 where the CPU has it, else
    float16, for a float32 model), so the model is loaded in the merged dtype."""
    from kit.export.lora_merge import cast_checkpoint

    model, tokenizer = load_adapter_model(run, recipe, stored)
    parameters = sum(p.numel() for n, p in model.named_parameters() if "lora_" not in n)
    check_disk(run.path, estimate_bytes(parameters, recipe.export.gguf))
    model.save_pretrained_merged(str(out), tokenizer, save_method="merged_16bit")
    del model
    cast_checkpoint(out, stored)  # where Unsloth chose another dtype anyway (a GPU without bfloat16)
    return parameters, tokenizer


def _model_checks(run: Run, recipe: Recipe, merged_dir: Path, tokenizer, prompts: list[str], held_out: list[dict],
                  stored: torch.dtype, stages: dict) -> tuple[dict, list[list[int]], dict]:
    """The checks that load models, one at a time: the logits check, the merged model's greedy tokens
    (for the GGUF comparison) and its eval loss, then the QLoRA gap."""
    from kit.evaluation.evaluate import token_loss

    with measured(stages, "logits_check"):
        reference = reference_logits(run, recipe, tokenizer, prompts, stored)
        merged = backend.load_merged(str(merged_dir), reference["dtype"])
        logits = check_logits(reference, merged, tokenizer, prompts)
        del reference
        # One prompt at a time: no padding, so these are the merged model's plain greedy tokens.
        greedy = [a.ids for a in generate(merged, tokenizer, family_for(recipe), [p["messages"] for p in held_out],
                                          max_new_tokens=recipe.export.verify_tokens, batch_size=1,
                                          tools=[p.get("tools") for p in held_out])[0]]
    with measured(stages, "qlora_gap"):
        if recipe.model.load_in_4bit:
            rows = read_jsonl(run.data_dir / "eval.jsonl")[:QLORA_GAP_ROWS]
            loss = token_loss(merged, tokenizer, family_for(recipe), rows, recipe.data.train_on)
            del merged
            release_memory()
            gap = qlora_gap(run, recipe, tokenizer, rows, loss)
        else:
            gap = {"skipped": "trained on the 16-bit base (model.load_in_4bit: false): no quantization gap"}
    return logits, greedy, gap


def merge(run: Run, recipe: Recipe, overwrite: bool = False) -> dict:
    """Merged 16-bit weights in ``merged/`` (streamed shard by shard where the base checkpoint is
    local, else through Unsloth), stored in the dtype ``kit.export.lora_merge.merged_dtype`` decides from
    the base's config, checked tensor by tensor and, where one model fits in free memory, by logits
    against base + adapter; then the GGUF files and Modelfile."""
    from transformers import AutoTokenizer

    from kit.export.lora_merge import NotStreamable, dtype_name, merge_checkpoint, merged_dtype, parameter_count, stated_dtype
    from kit.export.merge_check import check_merged_tensors

    if not run.adapter_dir.exists():
        raise RunError(f"{run.path} has no adapter/: run the train notebook on this run first")
    if run.merged_dir.exists() and not overwrite:
        raise RunError(f"{run.merged_dir} already exists; pass overwrite=True to replace it")
    check_adapter_base(run, recipe)
    family = family_for(recipe)
    stages: dict = {}
    config = base_config(recipe.model.id)
    stored = merged_dtype(config)

    # Write under a temporary name and rename, so merged/ is never half-written.
    tmp = run.path / ".merged.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    base_dir = None
    method_asked = recipe.export.merge_method
    with measured(stages, "merge"):
        try:
            if method_asked == "unsloth":
                raise NotStreamable("export.merge_method is unsloth")
            base_dir = local_checkpoint(recipe.model.id)
            parameters = parameter_count(base_dir)
            check_disk(run.path, estimate_bytes(parameters, recipe.export.gguf))
            method = merge_checkpoint(base_dir, run.adapter_dir, tmp)
            tokenizer = AutoTokenizer.from_pretrained(str(run.adapter_dir))
            tokenizer.save_pretrained(str(tmp))
        except NotStreamable as e:
            shutil.rmtree(tmp, ignore_errors=True)
            if method_asked == "streaming":
                raise RunError(f"export.merge_method is streaming, but {e}") from None
            print(f"Streaming merge not possible ({e}); merging with the model loaded, through Unsloth.")
            parameters, tokenizer = merge_with_unsloth(run, recipe, tmp, stored)
            method = {"method": "unsloth save_pretrained_merged", "why": str(e)}
    with measured(stages, "tensor_check"):
        try:
            base_dir = base_dir or local_checkpoint(recipe.model.id)
            tensors = check_merged_tensors(base_dir, run.adapter_dir, tmp)
        except NotStreamable as e:
            tensors = {"ok": None, "skipped": str(e)}

    held_out = held_out_prompts(read_jsonl(run.data_dir / "eval.jsonl"), recipe.eval.num_prompts)
    prompts = [render_prompt(tokenizer, family, p["messages"], tools=p.get("tools")) for p in held_out]
    why = logits_check_room(parameters, direct=direct_base(run, recipe) is not None)
    if why is None:
        logits, greedy, gap = _model_checks(run, recipe, tmp, tokenizer, prompts, held_out, stored, stages)
    else:
        logits, greedy, gap = {"ok": None, "skipped": why}, None, {"skipped": why}
    report = {
        **method,
        "ok": tensors["ok"] is not False and logits["ok"] is not False,
        "stored_dtype": dtype_name(stored),
        "stored_dtype_from": f"the base checkpoint's config (dtype {stated_dtype(config)})",
        "tensor_check": tensors,
        "logits_check": logits,
        "qlora_gap": gap,
        "prompts": len(prompts),
        "merged_dir": str(run.merged_dir),
    }
    if run.merged_dir.exists():  # overwrite=True
        shutil.rmtree(run.merged_dir)
    tmp.rename(run.merged_dir)
    report["files"] = {p.name: p.stat().st_size for p in sorted(run.merged_dir.iterdir())}
    report["parameters"] = parameters
    if recipe.export.gguf:
        with measured(stages, "gguf"):
            report["gguf"] = export_gguf(run, recipe, tokenizer, prompts, greedy, backend.merge_dtype(stored),
                                         overwrite)
        report["modelfile"] = export_modelfile(run, recipe, tokenizer, report["gguf"],
                                               modelfile_conversations(held_out, family))
    report["stages"] = stages
    report["peak_rss_mb"] = max(s["peak_rss_mb"] for s in stages.values())
    write_json(run.path / "merge_report.json", report)
    run.update_manifest({"merge": {"method": report["method"], "ok": report["ok"],
                                   "stored_dtype": report["stored_dtype"],
                                   "logits_check": logits.get("why") or logits.get("skipped")},
                         "exports": {t: {k: g[k] for k in ("path", "bytes", "sha256")}
                                     for t, g in report.get("gguf", {}).items()}})
    if tensors["ok"] is False:
        raise RunError(f"merged tensors differ from base + adapter: {tensors}; see {run.path / 'merge_report.json'}")
    if logits["ok"] is False:
        raise RunError(f"merged logits are further from base + adapter than a correct merge's rounding: "
                       f"{logits['why']}; see {run.path / 'merge_report.json'}")
    return report


def summary(report: dict) -> str:
    lines = [f"merged by {report['method']}" + (f" ({report['why']})" if report.get("why") else "")
             + f": {report['parameters'] / 1e6:.1f} M parameters, stored as {report['stored_dtype']}"]
    t = report["tensor_check"]
    lines.append("tensor check: " + (t["skipped"] if t.get("skipped") else
                 f"{t['lora_modules_merged']}/{t['lora_modules']} LoRA weights = base + scale·B·A within rounding "
                 f"(max |error| {t['max_abs_error']:.3g}), {t['tensors_unchanged']} other tensors identical: "
                 + ("ok" if t["ok"] else "FAILED")))
    c = report["logits_check"]
    lines.append("logits check: " + (c["skipped"] if c.get("skipped") else
                 f"merged files vs base + adapter in {c['compute_dtype']} on {c['device']}: {c['why']} "
                 f"(noise floor {c['noise_floor']['max_abs_diff']:.3g}; adapter effect "
                 f"{c['adapter_max_abs_logit_effect']:.3g}): " + ("ok" if c["ok"] else "FAILED")))
    g = report["qlora_gap"]
    if not g.get("skipped"):
        lines.append(f"QLoRA gap: eval loss {g['merged_16bit_eval_loss']:.4f} merged 16-bit vs "
                     f"{g['qlora_eval_loss']:.4f} 4-bit base + adapter ({g['gap']:+.4f}, {g['rows']} held-out rows)")
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
