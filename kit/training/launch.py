"""The train notebook on several processes: the same train stage under torchrun, started from the
notebook, its rank-0 output streamed into the cell.

Accelerate's ``notebook_launcher`` would fork the notebook's own process, but it refuses once
bitsandbytes is imported (Unsloth imports it), and forked processes cannot show the notebook's
tables. torchrun runs ``python -m kit.training``, the documented command line, instead; the
notebook's later cells then find the run trained and show it."""

from __future__ import annotations

import subprocess
import sys

import torch

from kit.distributed import LaunchError, capacity
from kit.runs import Run


def available_processes() -> tuple[int, str]:
    """How many training processes this machine can hold, and of what (``distributed.capacity``)."""
    return capacity(torch.cuda.device_count() if torch.cuda.is_available() else 0)


def launch(run: Run, processes: int | str, resume: bool | str = "auto") -> bool:
    """With ``processes`` > 1 ("all": one per GPU), train ``run`` on that many processes now and
    return True; with 1, or where several cannot work, return False (with one line saying why), so
    the notebook trains in its own process."""
    have, kind = available_processes()
    wanted = have if processes == "all" else int(processes)
    if wanted <= 1 or run.adapter_dir.exists():  # a trained run: the notebook's cells show it as it is
        return False
    if wanted > have:
        print(
            f"processes={processes}: this machine has {have} {kind}{'s' if have > 1 else ''}; "
            f"training in this notebook's process instead"
        )
        return False
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        str(wanted),
        "--local-ranks-filter",
        "0",  # rank 0's output: the progress, the losses, the live answers
        "-m",
        "kit.training",
        run.recipe_name,
        str(run.path),
        "--resume",
        str(resume),
    ]
    print(f"Training on {wanted} processes: {' '.join(command[2:])}", flush=True)
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT) as process:
        for chunk in iter(lambda: process.stdout.read1(4096), b""):
            sys.stdout.write(chunk.decode("utf-8", errors="replace"))
            sys.stdout.flush()
    if process.returncode:
        raise LaunchError(f"training on {wanted} processes failed (exit {process.returncode}); its output is above")
    return True
