"""The merge's logits check and QLoRA gap: base + adapter (the reference) against the merged files,
next-token logits on held-out prompts, judged against a noise floor measured in the same run,
device and dtype (``kit.export.merge_check.judge_logits``); and the memory the check needs."""

from __future__ import annotations

from pathlib import Path

import torch

from kit import backend  # first: Unsloth patches transformers/peft on import
from kit.families import family_for
from kit.export.base_model import direct_base, load_adapter_model
from kit.recipes import Recipe
from kit.runs import Run


# Logits are compared at each prompt's last positions only: the whole vocabulary at every position of
# long prompts (tool definitions) would be GBs kept on the host (32 prompts of ~420 tokens x 152k:
# 8 GB in float32). Every position runs through every weight, so a few per prompt check them all.
LOGIT_POSITIONS = 32


@torch.no_grad()
def _logits(model, tokenizer, prompts: list[str]):
    """Each prompt's logits at its last ``LOGIT_POSITIONS`` positions, one prompt at a time (a
    generator: nothing is kept)."""
    for prompt in prompts:
        ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False).to(model.device)
        yield model(**ids).logits[:, -LOGIT_POSITIONS:].float().cpu().clone()  # not a view of all positions


def _max_abs_diff(a, b) -> float:
    return max(float((x - y).abs().max()) for x, y in zip(a, b))


def load_reference_direct(base_dir: Path, adapter_dir: Path, dtype: torch.dtype):
    """Base + adapter, unquantized, in ``dtype``: the base read a band at a time straight into
    device memory (``kit.safetensors_io.load_model``, no host copy of the model), the adapter put on
    it by PEFT. None where that loader does not apply to the checkpoint."""
    from peft import PeftModel

    from kit.safetensors_io import load_model

    base = load_model(Path(base_dir), dtype, backend.device())
    return None if base is None else PeftModel.from_pretrained(base, str(adapter_dir)).eval()


def _load_reference(run: Run, config: Recipe, dtype: torch.dtype) -> tuple[object, str]:
    """(base + the run's adapter in ``dtype``, how it was loaded): straight into device memory where
    ``direct_base`` allows, else through Unsloth."""
    base_dir = direct_base(run, config)
    model = None if base_dir is None else load_reference_direct(base_dir, run.adapter_dir, dtype)
    if model is not None:
        return model, f"transformers + PEFT, base read straight into {backend.device()} memory"
    return load_adapter_model(run, config, dtype)[0], "Unsloth + PEFT"


def reference_logits(run: Run, config: Recipe, tokenizer, prompts: list[str], stored: torch.dtype) -> dict:
    """Base + the run's adapter (``_load_reference``) in the check's dtype: its logits on the
    prompts (the reference, kept), the adapter's own effect on them (adapter disabled), and the noise
    floor (``reference_from``). One model in memory."""
    dtype = backend.merge_dtype(stored)
    return reference_from(lambda: _load_reference(run, config, dtype), tokenizer, prompts, stored, dtype)


def reference_from(load, tokenizer, prompts: list[str], stored: torch.dtype, dtype: torch.dtype) -> dict:
    """``reference_logits`` for the base + adapter that ``load()`` returns (a PEFT model in
    ``dtype``, and how it was loaded; loaded here, so that nothing else holds it when it is deleted
    before the merged model is loaded). The noise floor: the same model merged in memory by PEFT
    with its weights rounded to the stored dtype (a merge known to be right), compared with the
    reference as the merged files will be. Where the base is already stored in that dtype, the base
    alone would show no rounding at all; a merged weight is always rounded."""
    from kit.export.merge_check import compare_logits

    model, loaded_by = load()
    reference = list(_logits(model, tokenizer, prompts))
    with model.disable_adapter():
        effect = _max_abs_diff(reference, _logits(model, tokenizer, prompts))
    model = model.merge_and_unload()
    for p in model.parameters():  # float32 ones a 16-bit checkpoint keeps too: the floor errs high, not low
        if p.dtype != stored:  # in place, 4096 rows at a time: no second copy of the embedding
            for rows in p.data.split(4096) if p.dim() else [p.data]:
                rows.copy_(rows.to(stored))
    floor = compare_logits(reference, _logits(model, tokenizer, prompts))
    del model
    release_memory()
    return {
        "logits": reference,
        "dtype": dtype,
        "stored_dtype": stored,
        "noise_floor": floor,
        "adapter_max_abs_logit_effect": effect,
        "loaded_by": loaded_by,
    }


def release_memory() -> None:
    """Return what a deleted model held: PEFT wrappers sit in reference cycles; PyTorch's caching
    allocator keeps freed GPU memory, which the next model's free-memory check would miss; and glibc
    keeps freed heap memory (tensors under its mmap threshold: a model's smaller weights) in the
    process, where the next model, loaded by other threads, may not reuse it."""
    import ctypes
    import gc

    gc.collect()
    if backend.HAS_GPU:
        torch.cuda.empty_cache()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def check_logits(reference: dict, merged, tokenizer, prompts: list[str]) -> dict:
    """The merged model's logits against the reference, judged against the noise floor
    (``kit.export.merge_check.judge_logits``), with what was compared, in which dtype, on which device."""
    from kit.safetensors_io import dtype_name
    from kit.export.merge_check import compare_logits, judge_logits, top1_margins

    logits, dtype = reference["logits"], reference["dtype"]
    result = compare_logits(logits, _logits(merged, tokenizer, prompts))
    resolution = torch.finfo(dtype).eps * max(float(r.abs().max()) for r in logits)
    stored = dtype_name(reference["stored_dtype"])
    return {
        "compared": f"merged files loaded with transformers vs base + adapter ({reference['loaded_by']}): "
        f"next-token logits at {result['positions']} positions (each prompt's last {LOGIT_POSITIONS}) of "
        f"{len(prompts)} held-out prompts, "
        "whole vocabulary",
        "noise_floor_from": f"base + adapter merged in memory by PEFT, weights rounded to {stored}, vs base + adapter",
        "device": backend.device_name(),
        "compute_dtype": dtype_name(dtype),
        "stored_dtype": stored,
        "merged": result,
        "noise_floor": reference["noise_floor"],
        "adapter_max_abs_logit_effect": reference["adapter_max_abs_logit_effect"],
        "resolution": resolution,
        **judge_logits(result, reference["noise_floor"], top1_margins(logits), resolution),
    }


QLORA_GAP_ROWS = 16  # held-out conversations: a few, since it costs one more model load


def qlora_gap(run: Run, config: Recipe, tokenizer, rows: list[dict], merged_loss: float) -> dict:
    """Eval loss of the merged 16-bit model (``merged_loss``, on ``rows``) against the 4-bit base +
    adapter that training saw: the adapter was fitted to the quantized base, and the merge puts it on
    the 16-bit one. Loads that model (smaller than the 16-bit one) once the merged one is gone."""
    from kit.inference import token_loss

    model, _ = backend.load_model(
        str(run.adapter_dir), config.model.max_seq_length, load_in_4bit=True, dtype=config.model.dtype
    )
    qlora_loss = token_loss(model, tokenizer, family_for(config), rows, config.data.train_on)
    del model
    return {
        "rows": len(rows),
        "merged_16bit_eval_loss": merged_loss,
        "qlora_eval_loss": qlora_loss,
        "gap": merged_loss - qlora_loss,
    }


def logits_check_bytes(parameters: int) -> int:
    """Memory for one copy of the model in the check's dtype, plus a third for activations and
    the libraries."""
    return int(parameters * (2 if backend.HAS_GPU else 4) * 1.33)


def logits_check_room(parameters: int, direct: bool) -> str | None:
    """Why the logits check cannot run here (the GB it needs and the GB free), or None where it can.
    It holds one model at a time (``logits_check_bytes``) in free GPU memory, or RAM on a CPU. Both
    models are read straight into that memory where ``direct`` (``direct_base``): the host then holds
    a 64 MB band, never the model. Otherwise the reference goes through transformers' loader, which
    maps the base's 16-bit files, every page it reads counting in RAM until the load ends: they must
    fit in available RAM too."""
    import psutil

    needed, free = logits_check_bytes(parameters), backend.free_memory_bytes()
    mapped = 0 if direct else parameters * 2
    if not backend.HAS_GPU:
        needed += mapped
    if needed > free:
        where = "GPU memory" if backend.HAS_GPU else "RAM"
        return (
            f"needs about {needed / 1e9:.1f} GB of {where} for one model at a time"
            + ("" if backend.HAS_GPU or direct else " and the base's files that transformers' loader maps")
            + f", {free / 1e9:.1f} GB free"
        )
    available = psutil.virtual_memory().available
    if backend.HAS_GPU and mapped > available:
        return (
            f"the reference model goes through transformers' loader (the base is not a local 16-bit "
            f"checkpoint with a plain LoRA adapter), which maps its {mapped / 1e9:.1f} GB of files into RAM; "
            f"{available / 1e9:.1f} GB available"
        )
    return None
