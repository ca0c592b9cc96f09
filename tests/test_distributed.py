"""Launch checks that need no model: too many processes, CPU and GPU processes mixed, a model
spread over GPUs, and the notebook's fallback to one process."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from kit.distributed import LaunchError, check_one_device, check_processes
from kit.paths import PROJECT_ROOT


def test_more_processes_than_the_machine_has_is_one_line(monkeypatch):
    cores = os.cpu_count()
    monkeypatch.setenv("WORLD_SIZE", str(cores + 1))
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(cores + 1))
    with pytest.raises(LaunchError) as e:
        check_processes(gpus=0)
    assert str(e.value) == (
        f"{cores + 1} processes on this machine, but it has {cores} CPU cores: start at most "
        f"{cores} (torchrun --nproc_per_node {cores})"
    )
    with pytest.raises(LaunchError, match="3 processes on this machine, but it has 2 GPUs"):
        monkeypatch.setenv("LOCAL_WORLD_SIZE", "3")
        check_processes(gpus=2)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    check_processes(gpus=2)  # one per GPU
    monkeypatch.setenv("WORLD_SIZE", "1")
    check_processes(gpus=0)  # one process: nothing to check


def test_a_model_spread_over_gpus_is_refused():
    check_one_device(None)
    check_one_device({"": 0})
    check_one_device({"model.embed": 0, "lm_head": "cpu"})  # offload is not model parallel
    with pytest.raises(LaunchError) as e:
        check_one_device({"model.layers.0": 0, "model.layers.1": 1})
    assert str(e.value).startswith("the model was spread over GPUs 0, 1 (model parallel), which the kit does not train")


MIXED = """
import sys, torch.distributed as dist
from pathlib import Path
from kit.distributed import LaunchError, check_same_devices
dist.init_process_group("gloo")
try:
    check_same_devices(on_gpu=dist.get_rank() == 1)  # as if rank 1 had a GPU and rank 0 none
except LaunchError as e:
    Path(sys.argv[1], f"rank{dist.get_rank()}.txt").write_text(str(e))
check_same_devices(on_gpu=False)  # all on the CPU: fine
dist.destroy_process_group()
"""


def test_processes_on_the_cpu_and_on_gpus_at_once_are_refused_by_every_process(tmp_path):
    script = tmp_path / "mixed.py"
    script.write_text(MIXED)
    result = subprocess.run(
        [
            str(Path(sys.executable).with_name("torchrun")),
            "--standalone",
            "--nproc_per_node",
            "2",
            str(script),
            str(tmp_path),
        ],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    message = (
        "processes [0] run on the CPU and the others on GPUs: give every process a GPU "
        "(CUDA_VISIBLE_DEVICES), or run all of them on the CPU"
    )
    assert [(tmp_path / f"rank{r}.txt").read_text() for r in (0, 1)] == [message, message]


def test_the_notebook_falls_back_to_one_process_where_several_cannot_work(runs_dir, capsys):
    from kit.recipes import load_recipe
    from kit.runs import create_run
    from kit.training.launch import available_processes, launch

    run = create_run("tiny-demo", load_recipe("tiny-demo")[1], "r")
    have, kind = available_processes()
    assert launch(run, 1) is False and capsys.readouterr().out == ""
    assert launch(run, have + 1) is False
    assert capsys.readouterr().out.strip() == (
        f"processes={have + 1}: this machine has {have} {kind}s; training in this notebook's process instead"
    )
