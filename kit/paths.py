"""Where the kit finds recipes and writes runs and caches.

The project root is the checkout that holds ``recipes/`` next to the ``kit`` package (an editable
install, a Colab or Kaggle clone). Runs go to the runs root: ``KIT_RUNS_DIR`` (which each notebook's
``runs_dir`` parameter sets), else ``/kaggle/working/runs`` on Kaggle (its persistent output folder),
else ``runs/`` in the checkout. ``KIT_CACHE_DIR`` moves the cache.
"""

from __future__ import annotations

import os
import shutil
import sys
import uuid
from pathlib import Path
from typing import Callable

PROJECT_ROOT = Path(__file__).resolve().parent.parent
RECIPES_DIR = PROJECT_ROOT / "recipes"
NOTEBOOKS_DIR = PROJECT_ROOT / "notebooks"
KAGGLE_RUNS = Path("/kaggle/working/runs")
DRIVE = Path("/content/drive")  # where Colab mounts Google Drive


class RunsRootError(ValueError):
    pass


# The longest recipe name or run id: one folder name, well inside a file system's 255 bytes.
NAME_LIMIT = 100


def name_problem(name: object) -> str | None:
    """Why ``name`` (a recipe name, a run id) cannot be one folder under the runs root, or None: each is
    used as a single path segment (``<root>/<recipe>/<run>``), so ``..`` or ``a/b`` would put a run
    elsewhere, a leading dot would hide it, and a control character or an over-long name breaks
    the file system or the terminal."""
    if not isinstance(name, str) or not name:
        return "it is empty"
    if len(name) > NAME_LIMIT:
        return f"it is {len(name)} characters long, at most {NAME_LIMIT} are allowed"
    if "/" in name or "\\" in name or os.sep in name:
        return "it holds a path separator"
    if name.startswith("."):
        return "it starts with a dot"
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return "it holds a control character"
    return None


def name_refusal(what: str, name: object) -> str | None:
    """``name_problem`` as one line naming the name (shortened), for the caller's own error."""
    problem = name_problem(name)
    if problem is None:
        return None
    shown = repr(name if not isinstance(name, str) or len(name) <= 60 else name[:60] + "...")
    return f"{what} {shown} cannot name a folder: {problem}; use letters, digits, '-', '_' or '.'"


def hosted_runtime() -> str | None:
    """ "colab" or "kaggle" when this Python runs in one of their notebooks, else None."""
    if "google.colab" in sys.modules:
        return "colab"
    if "KAGGLE_KERNEL_RUN_TYPE" in os.environ:
        return "kaggle"
    return None


def runs_root() -> Path:
    if os.environ.get("KIT_RUNS_DIR"):
        return Path(os.environ["KIT_RUNS_DIR"]).expanduser().resolve()
    return KAGGLE_RUNS if hosted_runtime() == "kaggle" else PROJECT_ROOT / "runs"


def use_runs_root(runs_dir: str | Path = "") -> Path:
    """Make ``runs_dir`` (a notebook's parameter; empty: ``runs_root()``'s default) the runs root of
    this process and the processes it starts, and check that runs can be written there. A root on
    Google Drive mounts Drive first, on Colab only."""
    path = Path(runs_dir).expanduser() if str(runs_dir).strip() else runs_root()
    if path.resolve() == DRIVE or DRIVE in path.resolve().parents:
        mount_drive(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{uuid.uuid4().hex[:8]}"
        probe.write_text("ok", encoding="utf-8")
        probe.unlink()
    except OSError as e:
        raise RunsRootError(
            f"runs root {path} cannot be written ({e.strerror or e}); "
            "set runs_dir (or KIT_RUNS_DIR) to a folder you can write"
        ) from None
    os.environ["KIT_RUNS_DIR"] = str(path.resolve())
    return path.resolve()


def mount_drive(path: Path) -> None:
    """Mount Google Drive at /content/drive for a runs root under it (Colab asks to authorise once)."""
    if hosted_runtime() != "colab":
        raise RunsRootError(
            f"runs root {path} is on Google Drive ({DRIVE}), which only a Colab notebook "
            "can mount; choose a local folder for runs_dir"
        )
    if not (DRIVE / "MyDrive").is_dir():
        from google.colab import drive  # type: ignore[import-not-found]  # Colab's own module

        drive.mount(str(DRIVE))


def cache_root() -> Path:
    """Cache outside the repository, shared by every checkout (built tiny models, llama.cpp source)."""
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "unsloth-notebook-kit"
    path = Path(os.environ.get("KIT_CACHE_DIR", default)).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def build_cached_dir(final: Path, build: Callable[[Path], None]) -> Path:
    """Run ``build`` into a fresh temporary folder beside ``final``, then rename it into place: an
    interrupted build never leaves a half-made cache entry that later runs would trust."""
    tmp = final.with_name(final.name + ".building")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    build(tmp)
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    return final
