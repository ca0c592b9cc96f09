"""The train stage on two processes (torchrun, DDP over gloo on this CPU), as the README documents
it: it trains like one process on the doubled batch, writes each record once, resumes exactly
after both processes were killed, refuses to resume on another process count, and gives a run
that evaluate and merge accept unchanged."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from safetensors.torch import load_file

from kit.checkpoints import is_complete
from kit.paths import PROJECT_ROOT
from tests.conftest import SLOW_STEPS

pytestmark = pytest.mark.slow

SETTINGS = {
    "train": {
        "max_steps": 6,
        "save_steps": 2,
        "eval_steps": 2,
        "logging_steps": 1,
        "save_total_limit": 4,
        "per_device_train_batch_size": 2,
        "gradient_accumulation_steps": 1,
    }
}
TORCHRUN = [str(Path(sys.executable).with_name("torchrun")), "--standalone", "--nproc_per_node", "2"]

# The documented command, its steps slowed (SLOW_STEPS) so the test can kill both processes at a known point.
SLOWED = (
    SLOW_STEPS
    + r"""
import sys
from kit.training.__main__ import main
sys.exit(main(sys.argv[1:]))
"""
)


def train(runs_dir, run: str, *extra: str, processes: int = 2, **kwargs):
    command = (TORCHRUN if processes == 2 else [sys.executable]) + ["-m", "kit.training", "tiny-demo", run, *extra]
    return subprocess.run(
        command,
        cwd=PROJECT_ROOT,
        env={**os.environ, "KIT_RUNS_DIR": str(runs_dir)},
        capture_output=True,
        text=True,
        timeout=900,
        **kwargs,
    )


def records(run: Path, key: str) -> list:
    return [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if key in r]


def adapter(run: Path) -> dict:
    return load_file(str(run / "adapter" / "adapter_model.safetensors"))


def every_rank_saved(checkpoint: Path) -> bool:
    return is_complete(checkpoint) and all((checkpoint / f"rng_state_{r}.pth").exists() for r in (0, 1))


def relative_difference(a: dict, b: dict) -> float:
    return max(float((a[k].float() - b[k].float()).norm() / b[k].float().norm().clamp_min(1e-12)) for k in a)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    from kit.data.prepare import prepare

    runs_dir = tmp_path_factory.mktemp("processes") / "runs"
    os.environ["KIT_RUNS_DIR"] = str(runs_dir)
    try:
        run = prepare("tiny-demo", SETTINGS, run_id="prepared").run
    finally:
        del os.environ["KIT_RUNS_DIR"]

    def copy(name: str) -> Path:
        shutil.copytree(run.path, runs_dir / "tiny-demo" / name)
        return runs_dir / "tiny-demo" / name

    return runs_dir, copy


@pytest.fixture(scope="module")
def two_processes(prepared):
    runs_dir, copy = prepared
    run = copy("two")
    result = train(runs_dir, "two")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return run, result


def test_two_processes_train_like_one_on_the_doubled_batch(prepared, two_processes):
    """Two processes × batch 2 train as one process × batch 4, within the noise floor measured here
    between two single-process runs of the same math (batch 4, and 2 × accumulation 2: another
    summation order). The floor is whatever this CPU's arithmetic gives (bfloat16 adapters and, on a
    CPU with native bfloat16, bfloat16 compute: larger): it gets no fixed ceiling of its own. The check
    can fail: a process that dropped its peer's gradients would train as one process on its own
    half of each batch, and that run ("half") lies outside 3 × the floor."""
    runs_dir, copy = prepared
    two, _ = two_processes
    one = copy("one")  # 1 process × batch 4: the same rows each step
    accumulated = copy("accumulated")  # 1 process × 2 × accumulation 2: the same math, another summation order
    half = copy("half")  # 1 process × batch 2: rank 0's rows alone
    for name, options in (
        ("one", ["-o", "train.per_device_train_batch_size=4"]),
        ("accumulated", ["-o", "train.gradient_accumulation_steps=2"]),
        ("half", []),
    ):
        result = train(runs_dir, name, *options, processes=1)
        assert result.returncode == 0, result.stderr[-3000:]
    losses = {run.name: [r["loss"] for r in records(run, "loss")] for run in (one, accumulated, two, half)}
    floor = max(abs(a - b) for a, b in zip(losses["accumulated"], losses["one"]))
    weights_floor = relative_difference(adapter(accumulated), adapter(one))
    assert floor > 0 and weights_floor > 0  # measured: a floor of 0 would mean the two runs were one
    gaps = {
        name: (
            max(abs(a - b) for a, b in zip(losses[name], losses["one"])),
            relative_difference(adapter(run), adapter(one)),
        )
        for name, run in (("two", two), ("half", half))
    }
    print(
        f"\nloss: floor {floor:.2e}, two processes {gaps['two'][0]:.2e}, half {gaps['half'][0]:.2e}; "
        f"adapter: floor {weights_floor:.2e}, two processes {gaps['two'][1]:.2e}, half {gaps['half'][1]:.2e}"
    )
    assert gaps["two"][0] <= 3 * floor and gaps["two"][1] <= 3 * weights_floor
    assert gaps["half"][0] > 3 * floor and gaps["half"][1] > 3 * weights_floor
    assert [len(v) for v in losses.values()] == [6, 6, 6, 6]


def test_the_records_hold_each_step_once_and_say_how_many_processes_trained(two_processes):
    run, result = two_processes
    assert [r["step"] for r in records(run, "loss")] == [1, 2, 3, 4, 5, 6]
    assert [r["step"] for r in records(run, "eval_loss")] == [2, 4, 6]
    assert [r["step"] for r in records(run, "samples")] == [2, 4, 6]
    assert [r["step"] for r in records(run, "checkpoint_save_s")] == [2, 4, 6]
    summary = json.loads((run / "manifest.json").read_text())["train"]
    assert (summary["world_size"], summary["global_batch"]) == (2, 4)
    assert json.loads((run / "manifest.json").read_text())["launch"] == {"world_size": 2, "global_batch": 4}
    assert sorted(p.name for p in (run / "checkpoints" / "checkpoint-6").glob("rng_state*")) == [
        "rng_state_0.pth",
        "rng_state_1.pth",
    ]  # every rank's file, as transformers expects
    assert f"[train] {run}: step 6" in result.stdout and "2 process(es), global batch 4" in result.stdout
    assert not (run / "train.lock").exists()


def test_both_processes_killed_resume_exactly_on_two_and_are_refused_on_one(prepared, two_processes):
    runs_dir, copy = prepared
    whole, _ = two_processes
    run = copy("killed")
    process = subprocess.Popen(
        TORCHRUN + ["--no-python", sys.executable, "-c", SLOWED, "tiny-demo", "killed"],
        cwd=PROJECT_ROOT,
        env={**os.environ, "KIT_RUNS_DIR": str(runs_dir)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline = time.time() + 600
    try:
        while not every_rank_saved(run / "checkpoints" / "checkpoint-2"):
            assert process.poll() is None, process.stderr.read()[-3000:]
            assert time.time() < deadline
            time.sleep(0.02)
    finally:
        for each in psutil.Process(process.pid).children(recursive=True) + [psutil.Process(process.pid)]:
            each.send_signal(signal.SIGKILL)  # torchrun and both of its processes (they have their own session)
        process.wait()
    assert not (run / "adapter").exists() and not (run / "checkpoints" / "checkpoint-4").exists()

    refused = train(runs_dir, "killed", processes=1)
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines()[-1] == (
        "[train] rank 0: RunError: checkpoint-2 was written by 2 processes, and this train stage runs on 1: "
        "resume it on 2 (torchrun --nproc_per_node 2 -m kit.training RECIPE RUN), or start a new run with prepare"
    )

    resumed = train(runs_dir, "killed")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = json.loads((run / "manifest.json").read_text())["train"]
    expected = json.loads((whole / "manifest.json").read_text())["train"]
    assert summary["resumed_from"].endswith("checkpoint-2") and summary["global_step"] == 6
    assert abs(summary["eval_loss"] - expected["eval_loss"]) <= 1e-4
    assert abs(summary["train_loss"] - expected["train_loss"]) <= 1e-4
    assert [r["step"] for r in records(run, "loss")] == [1, 2, 3, 4, 5, 6]
    assert relative_difference(adapter(run), adapter(whole)) <= 1e-4


@pytest.mark.e2e
def test_evaluate_and_merge_take_a_two_process_run_unchanged(two_processes):
    from tests.conftest import pipeline

    run, _ = two_processes
    result = pipeline(run.parent.parent, "tiny-demo", "--run", "two", "--stages", "evaluate,merge")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (run / "report.json").exists() and (run / "merged").is_dir()


@pytest.mark.e2e
def test_the_train_notebook_trains_on_two_processes_and_shows_rank_0(prepared, tmp_path):
    import nbformat

    runs_dir, copy = prepared
    run = copy("notebook")
    out = tmp_path / "train.ipynb"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "papermill",
            "notebooks/train.ipynb",
            str(out),
            "--log-level",
            "ERROR",
            "-p",
            "recipe",
            "tiny-demo",
            "-p",
            "run",
            "notebook",
            "-p",
            "processes",
            "2",
        ],
        cwd=PROJECT_ROOT,
        env={**os.environ, "KIT_RUNS_DIR": str(runs_dir)},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    text = "\n".join(
        o.get("text", "") for c in nbformat.read(out, as_version=4).cells if c.cell_type == "code" for o in c.outputs
    )
    assert "Training on 2 processes: torch.distributed.run --standalone --nproc_per_node 2" in text
    assert "Answers at step 6" in text  # rank 0's live answers, streamed into the cell
    assert text.count("Answers at step 6") == 1  # once: rank 1's output is not shown
    assert "Already trained" in text  # the cells after the launch show the trained run
    summary = json.loads((run / "manifest.json").read_text())["train"]
    assert (summary["world_size"], summary["global_step"]) == (2, 6)
