"""Unsloth, imported first, and the few places where CPU and GPU runs differ.

Import this module before trl/transformers/peft in any process that trains or generates: Unsloth
patches them on import. Everything device-specific lives here; the rest of the kit is the same on
both. GPU branches follow Unsloth's documented API (they cannot run on this project's CI).
"""

from __future__ import annotations

import unsloth  # noqa: F401  (must precede trl / transformers / peft)
from unsloth import FastLanguageModel  # noqa: E402

import torch  # noqa: E402

from kit import distributed  # noqa: E402
from kit.models import resolve_model_id  # noqa: E402

HAS_GPU = torch.cuda.is_available()


def device_name() -> str:
    if HAS_GPU:
        return torch.cuda.get_device_name(0)
    import platform

    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def precision_flags() -> dict:
    """SFTConfig precision: bf16 where the GPU has it, else fp16; full precision flags off on CPU."""
    if not HAS_GPU:
        return {"bf16": False, "fp16": False}
    bf16 = torch.cuda.is_bf16_supported()
    return {"bf16": bf16, "fp16": not bf16}


def default_optim() -> str:
    # 8-bit AdamW is Unsloth's recommendation on GPU; bitsandbytes' 8-bit optimizers need CUDA.
    return "adamw_8bit" if HAS_GPU else "adamw_torch"


def merge_dtype(stored: torch.dtype) -> torch.dtype:
    """dtype the merge checks compute in, given the merged checkpoint's stored dtype. On CPU float32,
    so a check sees the rounding of the 16-bit file and little else; on GPU the stored dtype itself
    (float32 would not fit an 8B model on one GPU), float16 where the GPU has no bfloat16."""
    if not HAS_GPU:
        return torch.float32
    return torch.float16 if stored == torch.bfloat16 and not torch.cuda.is_bf16_supported() else stored


def device() -> str:
    return "cuda" if HAS_GPU else "cpu"


def load_merged(path: str, dtype: torch.dtype):
    """A 16-bit checkpoint with plain transformers, for the merge checks, in ``dtype``: on the GPU
    where there is one (the checks size themselves by free GPU memory there). Its tensors are read
    a band at a time straight into device memory (``kit.safetensors_io.load_model``: no host copy of
    the model); transformers' own loader only where that route does not apply."""
    from pathlib import Path

    from transformers import AutoModelForCausalLM

    from kit.safetensors_io import load_model as load_direct

    model = load_direct(Path(path), dtype, device())
    return model if model is not None else AutoModelForCausalLM.from_pretrained(path, dtype=dtype, device_map=device())


# Dense bf16/fp16 tensor-core peaks (TFLOP/s, without sparsity) from the vendors' data sheets, for
# an MFU estimate; a GPU not listed gets none.
PEAK_TFLOPS = {
    "H200": 989.0,
    "H100": 989.0,
    "A100": 312.0,
    "L40S": 362.0,
    "L4": 121.0,
    "A10G": 125.0,
    "A10": 125.0,
    "T4": 65.0,
    "V100": 125.0,
    "RTX 4090": 165.0,
    "RTX 3090": 71.0,
}


def reset_peak_memory() -> None:
    if HAS_GPU:
        torch.cuda.reset_peak_memory_stats()


def peak_memory() -> dict:
    """Peak memory so far: the GPU's max reserved bytes (what nvidia-smi shows, within ~1 GB), or
    on CPU the process's peak resident set."""
    if HAS_GPU:
        return {"peak_gpu_reserved_gb": round(torch.cuda.max_memory_reserved() / 2**30, 2)}
    import resource

    return {"peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)}  # KiB on Linux


def memory_now() -> str:
    """One line on memory, as Unsloth's notebooks show before and after training."""
    if HAS_GPU:
        total = torch.cuda.get_device_properties(0).total_memory / 2**30
        return (
            f"{device_name()}: {total:.1f} GB; reserved now {torch.cuda.memory_reserved() / 2**30:.2f} GB, "
            f"peak {torch.cuda.max_memory_reserved() / 2**30:.2f} GB"
        )
    import psutil

    rss = psutil.Process().memory_info().rss / 2**30
    return f"{device_name()}: process RSS {rss:.2f} GB, {psutil.virtual_memory().available / 2**30:.1f} GB available"


def mfu(parameters: int, tokens_per_s: float) -> float | None:
    """Model FLOPs utilisation: ~6 FLOPs per parameter per trained token (forward + backward),
    over the GPU's dense peak; None on CPU or a GPU the table does not know."""
    if not HAS_GPU:
        return None
    name = torch.cuda.get_device_name(0)
    peak = next((v for k, v in PEAK_TFLOPS.items() if k in name), None)
    return round(6 * parameters * tokens_per_s / (peak * 1e12), 4) if peak else None


def free_memory_bytes() -> int:
    """Memory a model could still be loaded into: free GPU memory, else available RAM."""
    if HAS_GPU:
        return torch.cuda.mem_get_info()[0]
    import psutil

    return psutil.virtual_memory().available


def load_model(model_id: str, max_seq_length: int, load_in_4bit: bool, dtype: torch.dtype | str | None = None):
    """FastLanguageModel.from_pretrained for a base model or a saved adapter directory, computing in
    ``dtype`` (a name, as ``model.dtype``; None: Unsloth's choice, bfloat16 where the device has it). Under
    torchrun / accelerate launch each process loads the whole model onto its own GPU (DDP), as
    Unsloth's multi-GPU guide does: ``device_map={"": local_rank}``."""
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    distributed.check_processes(torch.cuda.device_count() if HAS_GPU else 0)
    options = {"device_map": {"": distributed.local_rank()}} if HAS_GPU and distributed.world_size() > 1 else {}
    model, tokenizer = FastLanguageModel.from_pretrained(
        model_name=resolve_model_id(model_id),
        max_seq_length=max_seq_length,
        load_in_4bit=load_in_4bit,
        dtype=dtype,
        **options,
    )
    distributed.check_one_device(getattr(model, "hf_device_map", None))
    return model, tokenizer


def ddp_flags() -> dict:
    """SFTConfig's DDP settings when several processes train: gloo on CPU (NCCL, transformers'
    default, needs GPUs); LoRA leaves no parameter unused, so DDP need not search for them."""
    if distributed.world_size() == 1:
        return {}
    return {"ddp_find_unused_parameters": False, **({} if HAS_GPU else {"ddp_backend": "gloo"})}


def generation_free_bytes() -> int:
    """Memory a generate() batch can use: ``free_memory_bytes`` plus, on GPU, what PyTorch's caching
    allocator holds without a tensor in it (reused before the driver is asked for more)."""
    if HAS_GPU:
        return free_memory_bytes() + torch.cuda.memory_reserved() - torch.cuda.memory_allocated()
    return free_memory_bytes()
