"""The train stage's first step: what a run's state asks for (start, resume, already trained),
which checkpoints count as complete, and one trainer per run. No model is loaded here."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import save_file

from kit.checkpoints import incomplete_checkpoints, is_complete, list_checkpoints
from kit.paths import PROJECT_ROOT
from kit.recipes import load_recipe
from kit.training.run_lock import LOCK_NAME, STALE_AFTER_S
from kit.runs import RunError, create_run
from kit.training.plan import start


def checkpoint(run, step: int):
    """A checkpoint as transformers writes it: adapter weights, torch's optimizer and RNG files, state."""
    path = run.checkpoints_dir / f"checkpoint-{step}"
    path.mkdir(parents=True)
    save_file({"lora_A": torch.zeros(4, 8), "lora_B": torch.ones(8, 4)}, str(path / "adapter_model.safetensors"))
    torch.save({"state": {0: torch.arange(64.0)}}, path / "optimizer.pt")
    torch.save({"python": 1}, path / "rng_state.pth")
    (path / "trainer_state.json").write_text(json.dumps({"global_step": step, "log_history": []}))
    return path


def cut_short(path, keep: int):
    data = path.read_bytes()
    path.write_bytes(data[:keep])


def contents(path) -> dict:
    return {str(p.relative_to(path)): p.stat().st_mtime_ns for p in sorted(path.rglob("*"))}


@pytest.fixture
def run(runs_dir):
    return create_run("tiny-demo", load_recipe("tiny-demo")[1], "r")


def test_a_checkpoint_cut_off_mid_write_is_never_resumed_from(run):
    whole = checkpoint(run, 2)
    assert is_complete(whole)
    for name, keep in [
        ("adapter_model.safetensors", 100),
        ("optimizer.pt", 200),
        ("rng_state.pth", 10),
        ("trainer_state.json", 5),
    ]:
        broken = checkpoint(run, 4)
        cut_short(broken / name, keep)
        assert not is_complete(broken), name
        assert [c.name for c in list_checkpoints(run)] == ["checkpoint-2"]
        assert incomplete_checkpoints(run) == ["checkpoint-4"]
        plan = start(run)
        assert (plan.action, plan.checkpoint.name) == ("resume", "checkpoint-2")
        assert str(plan) == "Resuming from checkpoint-2 (step 2) (checkpoint-4 cut off mid-write: skipped)."
        plan.lock.release()
        for f in broken.iterdir():
            f.unlink()
        broken.rmdir()


def test_auto_starts_a_new_run_and_sets_a_killed_start_aside(run):
    run.metrics_path.write_text('{"step": 1, "loss": 3.0}\n')  # killed before its first checkpoint
    plan = start(run)
    assert (plan.action, plan.checkpoint, plan.resume_from) == ("start", None, None)
    assert str(plan) == "Starting at step 0: no checkpoint to resume from."
    assert run.metrics_path.read_text() == ""
    assert len(list(run.path.glob("metrics.before-resume-*.jsonl"))) == 1
    assert json.loads((run.path / LOCK_NAME).read_text())["pid"] == os.getpid()
    plan.lock.release()
    assert not (run.path / LOCK_NAME).exists()


def test_auto_resumes_the_newest_complete_checkpoint(run):
    checkpoint(run, 2), checkpoint(run, 4)
    plan = start(run, "auto")
    assert (plan.action, plan.resume_from) == ("resume", str(run.checkpoints_dir / "checkpoint-4"))
    plan.lock.release()
    for value in (True, "latest", "checkpoint-2"):  # explicit values as before
        plan = start(run, value)
        assert plan.action == "resume"
        plan.lock.release()


def test_a_trained_run_is_reported_and_left_as_it_is(run):
    checkpoint(run, 2), checkpoint(run, 4)
    run.adapter_dir.mkdir()
    run.update_manifest({"train": {"global_step": 4, "eval_loss": 1.5}})
    run.write_recipe(run.apply_overrides({"train.max_steps": 4}))
    before = contents(run.path)
    plan = start(run)
    assert (plan.action, plan.checkpoint.name, plan.lock) == ("trained", "checkpoint-4", None)
    assert str(plan).startswith(f"Already trained ({run.adapter_dir}): left as it is.")
    assert contents(run.path) == before  # no lock, no records set aside, nothing written
    for value in (True, False, "checkpoint-2"):  # an explicit resume of a trained run is refused
        with pytest.raises(RunError, match="already exists: this run is trained"):
            start(run, value)
    run.write_recipe(run.apply_overrides({"train.max_steps": 8}))  # more steps for a trained run: a new run's job
    with pytest.raises(RunError, match=r"already trained \(4 steps\); train.max_steps is now 8"):
        start(run)
    run.write_recipe(run.apply_overrides({"train.max_steps": 4}))
    for path in run.checkpoints_dir.glob("checkpoint-4/*"):
        path.unlink()
    with pytest.raises(RunError, match=r"already trained, and its last checkpoint \(step 4\) is gone"):
        start(run)


def test_resume_false_refuses_to_overwrite_checkpoints(run):
    checkpoint(run, 2)
    with pytest.raises(RunError) as e:
        start(run, False)
    assert str(e.value) == (
        f"resume: false, but {run.checkpoints_dir} has checkpoints (checkpoint-2) that a fresh "
        "start would overwrite: resume (auto, the default) or start a new run with prepare"
    )
    assert not (run.path / LOCK_NAME).exists()


HOLD = """
import sys, time
from pathlib import Path
from kit.runs import Run
from kit.training.plan import start
plan = start(Run(Path(sys.argv[1])))
print(plan.action, flush=True)
time.sleep(600)
"""


def test_a_second_trainer_is_refused_while_the_first_runs_and_allowed_once_it_was_killed(run):
    first = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(run.path)],
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert first.stdout.readline().strip() == "start", first.stderr.read()[-2000:]
        with pytest.raises(RunError) as e:
            start(run)
        assert str(e.value).startswith(
            f"{run.path} is being trained by process {first.pid} on {socket.gethostname()} since "
        )
        assert "\n" not in str(e.value)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    plan = start(run)  # the killed process's lock is taken over at once on this machine
    assert plan.action == "start" and json.loads((run.path / LOCK_NAME).read_text())["pid"] == os.getpid()
    plan.lock.release()


def test_a_lock_from_another_machine_holds_until_it_goes_quiet(run):
    lock = run.path / LOCK_NAME
    lock.write_text(json.dumps({"host": "colab-runtime-that-died", "pid": 42, "since": "earlier"}))
    with pytest.raises(RunError, match="being trained by process 42 on colab-runtime-that-died"):
        start(run)
    quiet = time.time() - STALE_AFTER_S - 5
    os.utime(lock, (quiet, quiet))
    plan = start(run)
    assert json.loads(lock.read_text())["host"] == socket.gethostname()
    plan.lock.release()


def test_a_checkpoint_of_two_processes_needs_both_rng_states_and_two_processes(run):
    run.update_manifest({"launch": {"world_size": 2, "global_batch": 4}})
    for step in (2, 4):
        path = checkpoint(run, step)
        (path / "rng_state.pth").rename(path / "rng_state_0.pth")
    torch.save({"python": 1}, run.checkpoints_dir / "checkpoint-2" / "rng_state_1.pth")  # checkpoint-4 lacks rank 1's
    with pytest.raises(RunError) as e:
        start(run)  # this process is not under torchrun: one process
    assert str(e.value) == (
        "checkpoint-2 was written by 2 processes, and this train stage runs on 1: resume it on 2 "
        "(torchrun --nproc_per_node 2 -m kit.training RECIPE RUN), or start a new run with prepare"
    )
    with pytest.raises(RunError, match="checkpoint-4 was cut off mid-save"):
        start(run, "checkpoint-4")
