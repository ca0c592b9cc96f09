"""The notebooks as a Kaggle runtime runs them: opened outside the checkout, in a Python that has
the heavy stack (as Colab and Kaggle have torch) but not the kit. The first cell clones the kit from
a git URL and installs it into that Python; runs go to a runs root elsewhere (the persistent
folder). The train notebook's kernel is killed with SIGKILL after a checkpoint, and the same
papermill command, run again unchanged, finishes the run where the uninterrupted run ends."""

import json
import os
import shutil
import signal
import subprocess
import sysconfig
import time
import venv
from pathlib import Path

import nbformat
import psutil
import pytest

from kit.checkpoints import is_complete
from kit.paths import PROJECT_ROOT, cache_root

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

OVERRIDES = {
    "train.max_steps": 12,
    "train.save_steps": 4,
    "train.eval_steps": 4,
    "train.logging_steps": 1,
    "train.save_total_limit": 2,
}


def kit_repository(tmp: Path) -> str:
    """A git repository of this working tree (committed or not), as a clone URL."""
    source = tmp / "kit-source"
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\0")
    for name in filter(None, files):
        if (PROJECT_ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(PROJECT_ROOT / name, source / name)
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com"]
    for command in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "kit"]):
        subprocess.run(git + command, cwd=source, check=True)
    return f"file://{source}"


def hosted_python(tmp: Path) -> Path:
    """A fresh Python environment that sees this one's packages (torch, Unsloth, TRL, papermill...)
    but not the kit, the way a Colab or Kaggle runtime starts."""
    runtime = tmp / "runtime"
    venv.create(runtime, with_pip=True)
    python = runtime / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    (Path(purelib) / "preinstalled-stack.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    assert subprocess.run([str(python), "-c", "import kit"], cwd=tmp, capture_output=True).returncode != 0
    return python


@pytest.fixture(scope="module")
def kaggle(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hosted")
    working = tmp / "kaggle-working"  # the notebook's folder: outside the checkout
    working.mkdir()
    for stage in ("prepare", "train"):
        shutil.copy(PROJECT_ROOT / "notebooks" / f"{stage}.ipynb", working)
    python = hosted_python(tmp)
    env = {k: v for k, v in os.environ.items() if k not in ("KIT_RUNS_DIR", "VIRTUAL_ENV", "PYTHONPATH")}
    env.update(
        KAGGLE_KERNEL_RUN_TYPE="Interactive",
        KIT_REPO=kit_repository(tmp),
        KIT_CACHE_DIR=str(cache_root()),  # the demo's tiny model, built by set-up
        XDG_CACHE_HOME=str(tmp / "xdg"),  # the runtime's own install stamp
        PIP_CACHE_DIR=os.environ.get("PIP_CACHE_DIR") or str(Path.home() / ".cache" / "pip"),
        PATH=f"{python.parent}:{os.environ['PATH']}",
    )
    return {"tmp": tmp, "working": working, "python": python, "env": env, "runs": tmp / "persistent" / "runs"}


def papermill(kaggle, stage: str) -> list[str]:
    return [
        str(kaggle["python"]),
        "-m",
        "papermill",
        f"{stage}.ipynb",
        f"out/{stage}.ipynb",
        "--log-level",
        "ERROR",
        "-p",
        "recipe",
        "tiny-demo",
        "-p",
        "run",
        "hosted",
        "-p",
        "runs_dir",
        str(kaggle["runs"]),
        "-y",
        json.dumps({"overrides": OVERRIDES}),
    ]


def outputs(path: Path, tag: str | None = None) -> str:
    cells = nbformat.read(path, as_version=4).cells
    return "\n".join(
        o.get("text", "") + "".join(o.get("data", {}).get("text/plain", ""))
        for c in cells
        if c.cell_type == "code" and (tag is None or tag in c.metadata.get("tags", []))
        for o in c.get("outputs", [])
    )


def cell_seconds(path: Path, tag: str) -> float:
    """How long papermill ran the cell tagged ``tag``."""
    return next(
        c.metadata["papermill"]["duration"]
        for c in nbformat.read(path, as_version=4).cells
        if tag in c.metadata.get("tags", [])
    )


def logged_steps(run: Path, key: str = "loss") -> list[int]:
    return [r["step"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if key in r]


def test_the_notebooks_install_themselves_keep_runs_elsewhere_and_resume_after_a_kill(kaggle):
    working, run = kaggle["working"], kaggle["runs"] / "tiny-demo" / "hosted"
    (working / "out").mkdir()
    started = time.time()
    prepared = subprocess.run(
        papermill(kaggle, "prepare"), cwd=working, env=kaggle["env"], capture_output=True, text=True, timeout=900
    )
    prepare_s = time.time() - started
    assert prepared.returncode == 0, prepared.stdout[-3000:] + prepared.stderr[-3000:]
    install = outputs(working / "out" / "prepare.ipynb", "kit-install")
    assert "[setup] installing" in install and f"[setup] done ({kaggle['python']})" in install
    assert (working / "unsloth-notebook-kit" / "kit" / "training" / "train.py").exists()  # cloned beside the notebook
    assert json.loads((run / "manifest.json").read_text())["location"] == str(run)
    assert not (working / "unsloth-notebook-kit" / "runs").exists()  # nothing in the runtime's copy of the kit
    print(
        f"\nhosted install: {cell_seconds(working / 'out' / 'prepare.ipynb', 'kit-install'):.1f} s; "
        f"the prepare notebook with it: {prepare_s:.0f} s"
    )

    # The uninterrupted run, for comparison: the same prepared run trained in one go.
    reference = kaggle["tmp"] / "reference" / "tiny-demo" / "hosted"
    shutil.copytree(run, reference)

    # Train; the runtime dies (SIGKILL to the kernel) right after a checkpoint is complete.
    trainer = subprocess.Popen(
        papermill(kaggle, "train"),
        cwd=working,
        env=kaggle["env"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.time() + 600
    while not any(is_complete(p) for p in (run / "checkpoints").glob("checkpoint-*")):
        assert trainer.poll() is None, f"train ended before a checkpoint: {trainer.stdout.read()[-3000:]}"
        assert time.time() < deadline, "no checkpoint within 10 minutes"
        time.sleep(0.02)
    kernels = [
        p for p in psutil.Process(trainer.pid).children(recursive=True) if "ipykernel_launcher" in " ".join(p.cmdline())
    ]
    assert len(kernels) == 1
    kernels[0].send_signal(signal.SIGKILL)
    trainer.communicate(timeout=300)
    assert trainer.returncode != 0
    assert not (run / "adapter").exists(), "the run finished before the kill: nothing was tested"
    assert (run / "train.lock").exists()  # left by the killed kernel
    killed_at = max(logged_steps(run) or [0])
    assert killed_at < OVERRIDES["train.max_steps"]

    # The same command again, unchanged: it continues from the newest complete checkpoint.
    rerun = subprocess.run(
        papermill(kaggle, "train"), cwd=working, env=kaggle["env"], capture_output=True, text=True, timeout=900
    )
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    executed = working / "out" / "train.ipynb"
    assert "Resuming from checkpoint-" in outputs(executed)
    assert "[setup] installing" not in outputs(executed, "kit-install")  # installed once per runtime
    print(f"the second notebook's install cell: {cell_seconds(executed, 'kit-install'):.1f} s")
    summary = json.loads((run / "manifest.json").read_text())["train"]
    assert summary["resumed_from"] and summary["global_step"] == OVERRIDES["train.max_steps"]

    from kit.runs import Run
    from kit.training import train as T

    expected = T.train(Run(reference), Run(reference).config())
    assert abs(summary["eval_loss"] - expected["eval_loss"]) <= 1e-4
    assert logged_steps(run) == logged_steps(reference) == list(range(1, OVERRIDES["train.max_steps"] + 1))
    assert logged_steps(run, "eval_loss") == [4, 8, 12]
    assert logged_steps(run, "checkpoint_save_s") == [4, 8, 12]  # how long each write to the runs root took
    assert len(list((run / "checkpoints").glob("checkpoint-*"))) == OVERRIDES["train.save_total_limit"]
    assert not (run / "train.lock").exists()

    # Once more: the trained run is reported and left as it is.
    before = (run / "manifest.json").read_text()
    again = subprocess.run(
        papermill(kaggle, "train"), cwd=working, env=kaggle["env"], capture_output=True, text=True, timeout=900
    )
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "Already trained" in outputs(executed)
    assert (run / "manifest.json").read_text() == before
