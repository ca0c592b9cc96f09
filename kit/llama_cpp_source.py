"""llama.cpp's source tree, taken offline from the llama-cpp-python sdist on PyPI.

The sdist vendors the whole of llama.cpp (converter, gguf-py, vocab-only GGUFs). It is fetched once
with pip into the kit cache; single members are extracted on demand.
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
from pathlib import Path

from kit.paths import build_cached_dir, cache_root

LLAMA_CPP_PYTHON_VERSION = "0.3.36"
_SDIST_NAME = f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}"


def sdist_path() -> Path:
    target = cache_root() / "sdist"
    tarball = target / f"{_SDIST_NAME}.tar.gz"
    if tarball.exists():
        return tarball
    target.mkdir(parents=True, exist_ok=True)
    print(f"Fetching llama-cpp-python {LLAMA_CPP_PYTHON_VERSION} source (~76 MB) into {target} ...", flush=True)
    # --no-binary for this package only: with :all: pip also builds its build tools from source
    # to read the metadata (3+ minutes instead of seconds).
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        "--no-deps",
        "--no-binary",
        "llama-cpp-python",
        f"llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION}",
        "-d",
        str(target),
    ]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0 or not tarball.exists():
        raise RuntimeError(f"could not download the llama-cpp-python sdist with pip:\n{result.stderr[-2000:]}")
    return tarball


def extract_member(relative: str) -> Path:
    """Extract ``vendor/llama.cpp/<relative>`` once and return its path in the cache."""
    out = cache_root() / "llama.cpp" / relative
    if out.exists():
        return out
    member = f"{_SDIST_NAME}/vendor/llama.cpp/{relative}"
    with tarfile.open(sdist_path()) as tar:
        data = tar.extractfile(member)
        if data is None:
            raise FileNotFoundError(f"{member} is not in {sdist_path()}")
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(out.suffix + ".part")
        tmp.write_bytes(data.read())
        tmp.replace(out)
    return out


# What convert_hf_to_gguf.py imports from the tree beside it.
CONVERTER_PARTS = ("convert_hf_to_gguf.py", "conversion/", "gguf-py/")


def converter_tree() -> Path:
    """llama.cpp's HF→GGUF converter with the modules it loads, extracted once into the cache."""
    root = cache_root() / f"llama.cpp-{LLAMA_CPP_PYTHON_VERSION}"
    if (root / "convert_hf_to_gguf.py").exists():
        return root
    prefix = f"{_SDIST_NAME}/vendor/llama.cpp/"

    def extract(tmp: Path) -> None:
        with tarfile.open(sdist_path()) as tar:
            members = [
                m
                for m in tar.getmembers()
                if m.isfile() and m.name.startswith(prefix) and m.name[len(prefix) :].startswith(CONVERTER_PARTS)
            ]
            for m in members:
                m.name = m.name[len(prefix) :]
            tar.extractall(tmp, members=members, filter="data")

    return build_cached_dir(root, extract)
