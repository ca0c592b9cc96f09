"""Several processes training one run (torchrun / accelerate launch, DDP): which process this is.

The launchers describe the process in the environment (RANK, LOCAL_RANK, WORLD_SIZE); transformers'
Trainer starts the process group from it. The kit only asks who writes the run's records (rank 0)
and which device a process loads its model on (its local rank's GPU)."""

from __future__ import annotations

import os


class LaunchError(RuntimeError):
    pass


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    """Whether this process writes the run's records (the only one, or rank 0)."""
    return rank() == 0


def local_world_size() -> int:
    """Processes on this machine (torchrun sets LOCAL_WORLD_SIZE; several machines may share a world)."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1")))


def capacity(gpus: int) -> tuple[int, str]:
    """How many training processes a machine with ``gpus`` GPUs holds, and of what: one per GPU,
    else one per CPU core."""
    return (gpus, "GPU") if gpus else (os.cpu_count() or 1, "CPU core")


def check_processes(gpus: int) -> None:
    """Before a process loads its model: no more processes on this machine than it has GPUs (one
    whole model per GPU), or, without a GPU, than CPU cores."""
    here = local_world_size()
    if world_size() == 1 or here <= 1:
        return
    have, kind = capacity(gpus)
    if here > have:
        raise LaunchError(
            f"{here} processes on this machine, but it has {have} {kind}{'s' if have > 1 else ''}: "
            f"start at most {have} (torchrun --nproc_per_node {have})"
        )


def check_same_devices(on_gpu: bool) -> None:
    """Every process of a DDP run on a GPU, or every one on the CPU: gloo and NCCL do not mix, and
    a CPU process would hold the others back. A collective: every process calls it."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    kinds: list = [None] * dist.get_world_size()
    dist.all_gather_object(kinds, on_gpu)
    if len(set(kinds)) > 1:
        cpu = [rank for rank, gpu in enumerate(kinds) if not gpu]
        raise LaunchError(
            f"processes {cpu} run on the CPU and the others on GPUs: give every process a GPU "
            "(CUDA_VISIBLE_DEVICES), or run all of them on the CPU"
        )


def check_one_device(device_map: dict | None) -> None:
    """A 4-bit model spread over several GPUs (device_map "auto"/"balanced") is model parallelism,
    which the kit does not train: one whole model per process, one process per GPU."""
    gpus = sorted({str(d) for d in (device_map or {}).values() if str(d) not in ("cpu", "disk")})
    if len(gpus) > 1:
        raise LaunchError(
            f"the model was spread over GPUs {', '.join(gpus)} (model parallel), which the kit does not "
            "train: use a model that fits one GPU, one process per GPU (torchrun), or "
            "CUDA_VISIBLE_DEVICES=0"
        )
