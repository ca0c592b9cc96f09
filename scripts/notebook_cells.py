"""The cells every notebook shares, written once here and copied into the four notebooks.

A shared cell is found by its tag: ``kit-install`` (the hosted-runtime install cell) and
``kit-runlog`` (the run-log set-up and the runs root). Edit the text here, then run

    .venv/bin/python scripts/notebook_cells.py          # rewrite the copies in notebooks/
    .venv/bin/python scripts/notebook_cells.py --check  # exit 1 if a copy differs (tests run this)
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat

NOTEBOOKS_DIR = Path(__file__).resolve().parent.parent / "notebooks"
STAGES = ("prepare", "train", "evaluate", "merge")
# Extras a notebook's install needs beyond the core (the merge notebook's GGUF export).
EXTRAS = {"merge": "gguf"}

INSTALL = """\
# Colab / Kaggle: fetch the kit and install it with Unsloth into this runtime (minutes the first
# time; seconds for the next notebook). Elsewhere (your checkout, papermill) this cell does nothing.
# Before it, say where the kit comes from: %env KIT_REPO=<its git URL, or a folder holding it>
import os, shutil, subprocess, sys
def shown(*command, **options):  # run a command, its output printed here as it comes; its exit code
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **options) as p:
        for line in p.stdout:
            print(line, end="")
    return p.returncode
if "google.colab" in sys.modules or "KAGGLE_KERNEL_RUN_TYPE" in os.environ:
    KIT_REPO, KIT_DIR = os.environ.get("KIT_REPO", ""), os.path.abspath("unsloth-notebook-kit")
    if not os.path.isdir(KIT_DIR):
        if not KIT_REPO:
            sys.exit("Set KIT_REPO first: %env KIT_REPO=<the kit's git URL, or a folder holding it, e.g. on Drive>")
        if KIT_REPO.startswith("/content/drive/") and not os.path.isdir("/content/drive/MyDrive"):
            from google.colab import drive; drive.mount("/content/drive")
        if os.path.isdir(KIT_REPO):  # a folder (on Drive, an upload): copied without its venv or runs
            shutil.copytree(KIT_REPO, KIT_DIR, ignore=shutil.ignore_patterns(".venv", "runs", "__pycache__"))
        elif shown("git", "clone", "--depth", "1", KIT_REPO, KIT_DIR):
            sys.exit(f"Could not clone KIT_REPO={KIT_REPO!r} (git's message above): check the URL or folder")
    env = {**os.environ, "KIT_PYTHON": sys.executable}  # into this Python: keeps the runtime's CUDA torch{extras}
    if shown("bash", f"{KIT_DIR}/scripts/setup.sh", env=env):
        sys.exit("The kit's set-up failed (its message is above)")
    sys.path.insert(0, KIT_DIR)"""

EXTRAS_TEXT = {
    "gguf": '\n    env["KIT_EXTRAS"] = "gguf"  # llama-cpp-python for GGUF export: built once, a few minutes'
}

RUNLOG = """\
import time
started = time.time()

from kit import paths, runlog
runlog.setup()  # library warnings → the run's run.log; the kit's errors as one line; text progress bars
# runs_dir, else $KIT_RUNS_DIR, else /kaggle/working/runs on Kaggle, else runs/ in the kit; Drive is mounted if named
print("Runs are kept in", paths.use_runs_root(runs_dir))"""


def shared_cells(stage: str) -> dict[str, str]:
    """Tag → the source that notebook's cell with that tag must have."""
    extras = EXTRAS_TEXT[EXTRAS[stage]] if stage in EXTRAS else ""
    return {"kit-install": INSTALL.replace("{extras}", extras), "kit-runlog": RUNLOG}


def stale(write: bool = False) -> list[str]:
    """``notebook: tag`` for every shared cell whose copy differs (or is missing); with ``write``,
    the copies are rewritten first (a missing one is still reported)."""
    problems = []
    for stage in STAGES:
        path = NOTEBOOKS_DIR / f"{stage}.ipynb"
        notebook = nbformat.read(path, as_version=4)
        changed = False
        for tag, source in shared_cells(stage).items():
            cells = [c for c in notebook.cells if tag in c.metadata.get("tags", [])]
            if len(cells) != 1:
                problems.append(f"{path.name}: {len(cells)} cells tagged {tag}, expected 1")
                continue
            if cells[0].source != source:
                if write:
                    cells[0].source, changed = source, True
                else:
                    problems.append(f"{path.name}: {tag}")
        if changed:
            nbformat.write(notebook, path)
    return problems


if __name__ == "__main__":
    found = stale(write="--check" not in sys.argv)
    for problem in found:
        print(f"stale or missing shared cell: {problem}", file=sys.stderr)
    sys.exit(1 if found else 0)
