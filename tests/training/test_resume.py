"""Crash-safety of training: a real training process killed with SIGKILL, then resumed, ends where
the uninterrupted run ends, and its records hold each step once; for SFT (tiny-demo), for DPO
(tiny-dpo-demo: TRL's DPOTrainer, the reference model the adapter disabled) and for GRPO
(tiny-grpo-demo: TRL's GRPOTrainer, which samples its answers: the resumed run must draw the same
samples, so every step's reward equals the uninterrupted run's)."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from kit.paths import PROJECT_ROOT
from tests.conftest import SLOW_STEPS

pytestmark = pytest.mark.slow

SETTINGS = {"train": {"max_steps": 12, "save_steps": 4, "eval_steps": 4, "logging_steps": 1, "save_total_limit": 3}}

# The training process, as the train notebook runs it, its steps slowed (SLOW_STEPS).
TRAIN = (
    SLOW_STEPS
    + r"""
import sys
from pathlib import Path
from kit.training import train as T
from kit.runs import Run
run = Run(Path(sys.argv[1]))
T.train(run, run.config())
"""
)


def logged_steps(run, key: str = "loss") -> list[int]:
    return [r["step"] for r in map(json.loads, run.metrics_path.read_text().splitlines()) if key in r]


def logged(run, key: str) -> dict[int, float]:
    """``key``'s value at each step that logged it (a step logged twice: the later record)."""
    return {r["step"]: r[key] for r in map(json.loads, run.metrics_path.read_text().splitlines()) if key in r}


def kill_when(run, ready, timeout: float = 300) -> None:
    """Start training in a subprocess and SIGKILL it as soon as ``ready(run)`` holds."""
    process = subprocess.Popen(
        [sys.executable, "-c", TRAIN, str(run.path)],
        cwd=PROJECT_ROOT,
        env={**os.environ},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.time() + timeout
    try:
        while not ready(run):
            assert process.poll() is None, f"training ended before the kill point: {process.stderr.read()[-2000:]}"
            assert time.time() < deadline, "training never reached the kill point"
            time.sleep(0.02)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()


def saved(run, step: int) -> bool:
    return (run.checkpoints_dir / f"checkpoint-{step}" / "trainer_state.json").exists()


def tensorboard_steps(run, tag: str) -> list[int]:
    """Steps of ``tag`` as TensorBoard shows them (its loader applies restart markers)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run.path / "tensorboard"))
    events.Reload()
    return [e.step for e in events.Scalars(tag)]


@pytest.fixture(params=["tiny-demo", "tiny-dpo-demo", "tiny-grpo-demo"])
def reference(runs_dir, request):
    """The uninterrupted run, and a prepared copy of it before training for each crash."""
    from kit.training import train as T
    from kit.data.prepare import prepare
    from kit.runs import Run

    run = prepare(request.param, SETTINGS, run_id="whole").run
    fresh = runs_dir / "prepared"
    shutil.copytree(run.path, fresh)
    summary = T.train(run, run.config())

    def copy(name: str):
        shutil.copytree(fresh, runs_dir / name)
        return Run(runs_dir / name)

    return run, summary, copy


def resumed(run):
    from kit.training import train as T

    return T.train(run, run.config(), resume=True)


def test_killed_between_checkpoints_resumes_to_the_same_eval_loss(reference):
    whole, expected, copy = reference
    run = copy("killed-mid")
    kill_when(run, lambda r: saved(r, 4) and max(logged_steps(r) or [0]) >= 6)
    assert not saved(run, 8) and not run.adapter_dir.exists()
    killed_steps = logged_steps(run)

    summary = resumed(run)
    assert summary["resumed_from"].endswith("checkpoint-4")
    assert summary["global_step"] == expected["global_step"] == 12
    assert abs(summary["eval_loss"] - expected["eval_loss"]) <= 1e-4
    assert abs(summary["train_loss"] - expected["train_loss"]) <= 1e-4
    # The records count every token once: the checkpoint carries the counts up to its step.
    assert summary["tokens_seen"] == expected["tokens_seen"] > 0
    assert logged(run, "num_tokens") == logged(whole, "num_tokens") and logged(whole, "num_tokens")
    # Each step once, in metrics.jsonl and in TensorBoard; the killed process's later lines kept aside.
    assert logged_steps(run) == logged_steps(whole) == list(range(1, 13))
    assert logged_steps(run, "eval_loss") == [4, 8, 12]
    assert logged(run, "reward") == logged(whole, "reward")  # GRPO: the same samples drawn at every step
    assert logged_steps(run, "checkpoint_save_s") == [4, 8, 12]  # each checkpoint's write time, once
    assert summary["checkpoint_save_s"] > 0
    assert tensorboard_steps(run, "train/loss") == list(range(1, 13))
    aside = list(run.path.glob("metrics.before-resume-*.jsonl"))
    assert len(aside) == 1
    assert [json.loads(line)["step"] for line in aside[0].read_text().splitlines() if "loss" in json.loads(line)] == [
        s for s in killed_steps if s > 4
    ]
    # Same precision as the uninterrupted run: the adapter is saved in the same dtype.
    assert adapter_dtypes(run) == adapter_dtypes(whole)


@pytest.mark.parametrize("reference", ["tiny-demo"], indirect=True)  # the last-step path is the same for DPO
def test_killed_after_the_last_checkpoint_trains_no_extra_step(reference):
    whole, expected, copy = reference
    run = copy("killed-end")
    kill_when(run, lambda r: saved(r, 12))
    assert not run.adapter_dir.exists(), "the process finished before the kill; nothing was tested"

    summary = resumed(run)
    assert summary["global_step"] == 12 and summary["resumed_from"].endswith("checkpoint-12")
    assert summary["tokens_seen"] == expected["tokens_seen"] > 0
    assert abs(summary["eval_loss"] - expected["eval_loss"]) <= 1e-4
    assert abs(summary["train_loss"] - expected["train_loss"]) <= 1e-4
    assert logged_steps(run) == list(range(1, 13))
    assert logged_steps(run, "eval_loss") == [4, 8, 12]
    assert tensorboard_steps(run, "train/loss") == list(range(1, 13))
    assert adapter_dtypes(run) == adapter_dtypes(whole)


def adapter_dtypes(run) -> set[str]:
    from safetensors import safe_open

    with safe_open(str(run.adapter_dir / "adapter_model.safetensors"), "pt") as f:
        return {str(f.get_slice(name).get_dtype()) for name in f.keys()}
