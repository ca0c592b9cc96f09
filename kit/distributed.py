"""Several processes training one run (torchrun / accelerate launch, DDP): which process this is.

The launchers describe the process in the environment (RANK, LOCAL_RANK, WORLD_SIZE); transformers'
Trainer starts the process group from it. The kit only asks who writes the run's records (rank 0)
and which device a process loads its model on (its local rank's GPU)."""
from __future__ import annotations

import os


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    """Whether this process writes the run's records (the only one, or rank 0)."""
    return rank() == 0
