"""Where the kit finds recipes and writes runs and caches.

The project root is the checkout that holds ``recipes/`` next to the ``kit`` package (an editable
install, a Colab clone). ``KIT_RUNS_DIR`` and ``KIT_CACHE_DIR`` move runs and caches elsewhere.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Callable

PROJECT_ROOT = Path(__file__).resolve().parent.parent
RECIPES_DIR = PROJECT_ROOT / "recipes"
NOTEBOOKS_DIR = PROJECT_ROOT / "notebooks"


def runs_root() -> Path:
    return Path(os.environ.get("KIT_RUNS_DIR", PROJECT_ROOT / "runs")).resolve()


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
