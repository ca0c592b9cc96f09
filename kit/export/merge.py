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

The stage runs in steps, each a method of ``Merge`` that the merge notebook calls in its own cell:

    merging = Merge(run, config, overwrite)   # refusals first: no adapter, merged/ exists, wrong base
    tokenizer = merging.merge_weights()        # into a temporary folder
    merging.check_tensors(); merging.check_logits(); merging.qlora_gap()
    merging.publish()                          # the temporary folder becomes merged/
    merging.export_gguf(); merging.export_modelfile()
    report = merging.finish()                  # merge_report.json and the manifest, written once

``merge`` runs exactly these steps. ``config`` is the run's resolved recipe.
"""

from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from kit import backend  # first: Unsloth patches transformers/peft on import
from kit.chat.render import render_prompt
from kit.data.prompts import as_conversations, held_out_prompts
from kit.families import family_for
from kit.inference import generate
from kit.runs import Run, RunError
from kit.files import read_jsonl, write_json
from kit.recipes import Recipe
from kit.export.base_model import base_config, check_adapter_base, direct_base, load_adapter_model, local_checkpoint
from kit.export.logits_check import (
    QLORA_GAP_ROWS,
    check_logits,
    logits_check_room,
    qlora_gap,
    reference_logits,
    release_memory,
)
from kit.export.lora_merge import NotStreamable, merge_checkpoint, merged_dtype
from kit.export.measure import measured
from kit.export.packaging import export_gguf, export_modelfile, modelfile_conversations
from kit.export.merge_check import check_merged_tensors
from kit.safetensors_io import dtype_name, parameter_count, stated_dtype


# Bytes per parameter of each output, for the free-space check (K-quants keep some tensors wider).
BYTES_PER_PARAMETER = {"merged": 2.0, "f16": 2.0, "bf16": 2.0, "q8_0": 1.07, "q5_k_m": 0.72, "q4_k_m": 0.62}


def estimate_bytes(parameters: int, gguf_types: list[str]) -> int:
    """Merged 16-bit weights, every GGUF asked for, and the f16 file quantization starts from."""
    kinds = ["merged", *gguf_types] + (
        ["f16"] if {"q4_k_m", "q5_k_m"} & set(gguf_types) and "f16" not in gguf_types else []
    )
    return int(parameters * sum(BYTES_PER_PARAMETER[k] for k in kinds) * 1.05)


def check_disk(path: Path, needed: int) -> None:
    free = shutil.disk_usage(path).free
    if free < needed:
        raise RunError(
            f"not enough disk space in {path}: the merge and exports need about {needed / 1e9:.1f} GB, "
            f"{free / 1e9:.1f} GB are free; nothing was written"
        )


def merge_with_unsloth(run: Run, config: Recipe, out: Path, stored: torch.dtype) -> tuple[int, object]:
    """The fallback: base + adapter loaded through Unsloth, merged by ``save_pretrained_merged``
    (which fetches 16-bit base weights for pre-quantized checkpoints where the Hub is reachable).
    Unsloth writes the dtype the model is loaded in (on CPU: bfloat16 where the CPU has it, else
    float16, for a float32 model), so the model is loaded in the merged dtype."""
    from kit.export.lora_merge import cast_checkpoint

    model, tokenizer = load_adapter_model(run, config, stored)
    parameters = sum(p.numel() for n, p in model.named_parameters() if "lora_" not in n)
    check_disk(run.path, estimate_bytes(parameters, config.export.gguf))
    model.save_pretrained_merged(str(out), tokenizer, save_method="merged_16bit")
    del model
    cast_checkpoint(out, stored)  # where Unsloth chose another dtype anyway (a GPU without bfloat16)
    return parameters, tokenizer


@dataclass
class MergeReport:
    """What the merge stage did and found; written once, as merge_report.json, by ``Merge.finish``."""

    method: str = ""
    why: str | None = None  # why the Unsloth route was taken, where it was
    shards: int | None = None  # safetensors files written by the streaming merge
    stored_dtype: str = ""
    stored_dtype_from: str = ""
    parameters: int = 0
    tensor_check: dict = field(default_factory=dict)
    logits_check: dict = field(default_factory=dict)
    qlora_gap: dict = field(default_factory=dict)
    prompts: int = 0
    merged_dir: str = ""
    files: dict = field(default_factory=dict)
    gguf: dict = field(default_factory=dict)
    modelfile: dict = field(default_factory=dict)
    stages: dict = field(default_factory=dict)  # each step's seconds and peak RSS

    @property
    def ok(self) -> bool:
        """No check failed (a skipped check is None, not a failure)."""
        return self.tensor_check.get("ok") is not False and self.logits_check.get("ok") is not False

    @property
    def peak_rss_mb(self) -> float | None:
        return max((s["peak_rss_mb"] for s in self.stages.values()), default=None)

    def to_dict(self) -> dict:
        out = {k: v for k, v in asdict(self).items() if v not in (None, {}) or k in ("tensor_check", "logits_check")}
        return {**out, "ok": self.ok, "peak_rss_mb": self.peak_rss_mb}


class Merge:
    """The merge stage of one run, step by step (see the module's docstring)."""

    def __init__(self, run: Run, config: Recipe, overwrite: bool = False):
        if not run.adapter_dir.exists():
            raise RunError(f"{run.path} has no adapter/: run the train notebook on this run first")
        if run.merged_dir.exists() and not overwrite:
            raise RunError(f"{run.merged_dir} already exists; pass overwrite=True to replace it")
        check_adapter_base(run, config)
        self.run, self.config, self.overwrite = run, config, overwrite
        self.family = family_for(config)
        self.base_config = base_config(config.model.id)
        self.stored = merged_dtype(self.base_config)
        self.tmp = run.path / ".merged.tmp"  # merged/ is written under this name and renamed: never half-written
        self.base_dir = None
        self.tokenizer = None
        # held-out prompts, and the QLoRA gap's rows (a preference pair: its prompt and chosen answer)
        self.eval_rows = as_conversations(read_jsonl(run.data_dir / "eval.jsonl"))
        self.held_out = held_out_prompts(self.eval_rows, config.eval.num_prompts)
        self.prompts: list[str] = []
        self.greedy = None  # the merged model's greedy tokens per prompt, for the GGUF comparison
        self.merged_loss = None
        self.report = MergeReport(
            stored_dtype=dtype_name(self.stored),
            stored_dtype_from=f"the base checkpoint's config (dtype {stated_dtype(self.base_config)})",
            merged_dir=str(run.merged_dir),
        )

    def merge_weights(self):
        """Base + adapter → 16-bit safetensors in the temporary folder: streamed tensor by tensor where
        the base checkpoint is local, else through Unsloth. Returns the tokenizer (saved beside them)."""
        from transformers import AutoTokenizer

        run, config, report = self.run, self.config, self.report
        shutil.rmtree(self.tmp, ignore_errors=True)
        method_asked = config.export.merge_method
        with measured(report.stages, "merge"):
            try:
                if method_asked == "unsloth":
                    raise NotStreamable("export.merge_method is unsloth")
                self.base_dir = local_checkpoint(config.model.id)
                report.parameters = parameter_count(self.base_dir)
                check_disk(run.path, estimate_bytes(report.parameters, config.export.gguf))
                streamed = merge_checkpoint(self.base_dir, run.adapter_dir, self.tmp)
                report.method, report.shards = streamed["method"], streamed["shards"]
                self.tokenizer = AutoTokenizer.from_pretrained(str(run.adapter_dir))
                self.tokenizer.save_pretrained(str(self.tmp))
            except NotStreamable as e:
                shutil.rmtree(self.tmp, ignore_errors=True)
                if method_asked == "streaming":
                    raise RunError(f"export.merge_method is streaming, but {e}") from None
                print(f"Streaming merge not possible ({e}); merging with the model loaded, through Unsloth.")
                report.parameters, self.tokenizer = merge_with_unsloth(run, config, self.tmp, self.stored)
                report.method, report.why = "unsloth save_pretrained_merged", str(e)
        self.prompts = [render_prompt(self.tokenizer, self.family, p.messages, tools=p.tools) for p in self.held_out]
        report.prompts = len(self.prompts)
        return self.tokenizer

    def check_tensors(self) -> dict:
        """Every merged tensor against base + scale·B·A, a band of rows at a time."""
        with measured(self.report.stages, "tensor_check"):
            try:
                self.base_dir = self.base_dir or local_checkpoint(self.config.model.id)
                self.report.tensor_check = check_merged_tensors(self.base_dir, self.run.adapter_dir, self.tmp)
            except NotStreamable as e:
                self.report.tensor_check = {"ok": None, "skipped": str(e)}
        return self.report.tensor_check

    def _room(self) -> str | None:
        """Why the checks that load a model are skipped (it would not fit in memory), or None."""
        return logits_check_room(self.report.parameters, direct=direct_base(self.run, self.config) is not None)

    def check_logits(self) -> dict:
        """The merged files loaded back with plain transformers against base + adapter: logits on the
        held-out prompts, judged against the noise floor of a correct merge. Also keeps the merged
        model's greedy tokens (for the GGUF comparison) and its eval loss (for the QLoRA gap)."""
        from kit.inference import token_loss

        config, tokenizer = self.config, self.tokenizer
        why = self._room()
        if why is not None:
            self.report.logits_check = {"ok": None, "skipped": why}
            return self.report.logits_check
        with measured(self.report.stages, "logits_check"):
            reference = reference_logits(self.run, config, tokenizer, self.prompts, self.stored)
            merged = backend.load_merged(str(self.tmp), reference["dtype"])
            self.report.logits_check = check_logits(reference, merged, tokenizer, self.prompts)
            del reference
            # One prompt at a time: no padding, so these are the merged model's plain greedy tokens.
            self.greedy = [
                a.ids
                for a in generate(
                    merged,
                    tokenizer,
                    self.family,
                    [p.messages for p in self.held_out],
                    max_new_tokens=config.export.verify_tokens,
                    batch_size=1,
                    tools=[p.tools for p in self.held_out],
                )[0]
            ]
            if config.model.load_in_4bit:
                self.merged_loss = token_loss(
                    merged, tokenizer, self.family, self.eval_rows[:QLORA_GAP_ROWS], config.data.train_on
                )
            del merged
            release_memory()
        return self.report.logits_check

    def qlora_gap(self) -> dict:
        """Eval loss of the merged 16-bit model against the 4-bit base + adapter that training saw."""
        if not self.config.model.load_in_4bit:
            gap = {"skipped": "trained on the 16-bit base (model.load_in_4bit: false): no quantization gap"}
        elif self.merged_loss is None:
            gap = {"skipped": self._room() or "the logits check has not run"}
        else:
            with measured(self.report.stages, "qlora_gap"):
                gap = qlora_gap(
                    self.run, self.config, self.tokenizer, self.eval_rows[:QLORA_GAP_ROWS], self.merged_loss
                )
        self.report.qlora_gap = gap
        return gap

    def publish(self) -> Path:
        """The checked weights become ``merged/`` (replacing the old one only with overwrite=True)."""
        if not self.tmp.exists():  # a cell run twice, or before merge_weights(): keep what merged/ holds
            raise RunError(
                f"nothing to publish: {self.tmp} does not exist (merge_weights() not run, or already "
                f"published to {self.run.merged_dir})"
            )
        if self.run.merged_dir.exists():  # overwrite=True, checked at the start
            shutil.rmtree(self.run.merged_dir)
        self.tmp.rename(self.run.merged_dir)
        self.report.files = {p.name: p.stat().st_size for p in sorted(self.run.merged_dir.iterdir())}
        return self.run.merged_dir

    def export_gguf(self) -> dict:
        """The GGUF files of ``export.gguf``, each loaded in llama.cpp and compared with the merged model."""
        if self.config.export.gguf:
            with measured(self.report.stages, "gguf"):
                self.report.gguf = export_gguf(
                    self.run,
                    self.config,
                    self.tokenizer,
                    self.prompts,
                    self.greedy,
                    backend.merge_dtype(self.stored),
                    self.overwrite,
                )
        return self.report.gguf

    def export_modelfile(self) -> dict:
        """An Ollama Modelfile beside the GGUF files, its TEMPLATE checked against the chat template."""
        if self.report.gguf:
            self.report.modelfile = export_modelfile(
                self.run,
                self.config,
                self.tokenizer,
                self.report.gguf,
                modelfile_conversations(self.held_out, self.family),
            )
        return self.report.modelfile

    def finish(self) -> MergeReport:
        """merge_report.json and the manifest, written once; then a failed check raises."""
        run, report = self.run, self.report
        write_json(run.path / "merge_report.json", report.to_dict())
        run.update_manifest(
            {
                "merge": {
                    "method": report.method,
                    "ok": report.ok,
                    "stored_dtype": report.stored_dtype,
                    "logits_check": report.logits_check.get("why") or report.logits_check.get("skipped"),
                },
                "exports": {t: {k: g[k] for k in ("path", "bytes", "sha256")} for t, g in report.gguf.items()},
            }
        )
        if report.tensor_check.get("ok") is False:
            raise RunError(
                f"merged tensors differ from base + adapter: {report.tensor_check}; "
                f"see {run.path / 'merge_report.json'}"
            )
        if report.logits_check.get("ok") is False:
            raise RunError(
                f"merged logits are further from base + adapter than a correct merge's rounding: "
                f"{report.logits_check['why']}; see {run.path / 'merge_report.json'}"
            )
        return report


def merge(run: Run, config: Recipe, overwrite: bool = False) -> MergeReport:
    """The whole stage in one call: exactly the merge notebook's steps, in order."""
    merging = Merge(run, config, overwrite)
    merging.merge_weights()
    merging.check_tensors()
    merging.check_logits()
    merging.qlora_gap()
    merging.publish()
    merging.export_gguf()
    merging.export_modelfile()
    return merging.finish()


def summary(report: MergeReport | dict) -> str:
    report = report.to_dict() if isinstance(report, MergeReport) else report
    lines = [
        f"merged by {report['method']}"
        + (f" ({report['why']})" if report.get("why") else "")
        + f": {report['parameters'] / 1e6:.1f} M parameters, stored as {report['stored_dtype']}"
    ]
    t = report["tensor_check"]
    lines.append(
        "tensor check: "
        + (
            t["skipped"]
            if t.get("skipped")
            else f"{t['lora_modules_merged']}/{t['lora_modules']} LoRA weights = base + scale·B·A within rounding "
            f"(max |error| {t['max_abs_error']:.3g}), {t['tensors_unchanged']} other tensors identical: "
            + ("ok" if t["ok"] else "FAILED")
        )
    )
    c = report["logits_check"]
    lines.append(
        "logits check: "
        + (
            c["skipped"]
            if c.get("skipped")
            else f"merged files vs base + adapter in {c['compute_dtype']} on {c['device']}: {c['why']} "
            f"(noise floor {c['noise_floor']['max_abs_diff']:.3g}; adapter effect "
            f"{c['adapter_max_abs_logit_effect']:.3g}): " + ("ok" if c["ok"] else "FAILED")
        )
    )
    g = report["qlora_gap"]
    if not g.get("skipped"):
        lines.append(
            f"QLoRA gap: eval loss {g['merged_16bit_eval_loss']:.4f} merged 16-bit vs "
            f"{g['qlora_eval_loss']:.4f} 4-bit base + adapter ({g['gap']:+.4f}, {g['rows']} held-out rows)"
        )
    lines += [
        f"  {name}: {s['seconds']:.1f} s, peak RSS {s['peak_rss_mb']:.0f} MB"
        + (f" ({s['peak_rss_added_mb']:+.0f} MB over its start)" if s["peak_rss_added_mb"] is not None else "")
        for name, s in report["stages"].items()
    ]
    return "\n".join(lines)


def gguf_rows(report: MergeReport) -> list[dict]:
    """One row per GGUF file for the notebook's table."""
    return [
        {
            "type": t,
            "MB": round(g["bytes"] / 1e6, 1),
            "tokens match": g["tokens_match"],
            "prompts equal (greedy)": f"{g.get('greedy_equal_prompts')}/{report.prompts}",
            "tokens = HF's greedy choice": f"{g.get('greedy_decisions_equal')}/{g.get('greedy_decisions')}",
            "max logit gap": g.get("max_logit_gap"),
            "behavior": g["behavior"],
        }
        for t, g in report.gguf.items()
    ]
