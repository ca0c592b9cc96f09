import os
import subprocess
import sys

import pytest

from kit.paths import PROJECT_ROOT


@pytest.fixture(scope="session")
def tiny_model_dir():
    """The real tiny Qwen3 + Qwen tokenizer, built once into the kit cache (~30 s the first time)."""
    from kit.tiny import ensure_tiny_model

    return ensure_tiny_model()


@pytest.fixture(scope="session")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture
def runs_dir(tmp_path, monkeypatch):
    path = tmp_path / "runs"
    monkeypatch.setenv("KIT_RUNS_DIR", str(path))
    return path


def pipeline(runs_dir, *args):
    """``python -m kit.pipeline ARGS`` with runs under ``runs_dir``."""
    env = {**os.environ, "KIT_RUNS_DIR": str(runs_dir)}
    return subprocess.run([sys.executable, "-m", "kit.pipeline", *args], cwd=PROJECT_ROOT, env=env,
                          capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory):
    """The four notebooks executed by papermill on tiny-demo, once per test session: (run dir, stdout)."""
    runs_dir = tmp_path_factory.mktemp("runs")
    result = pipeline(runs_dir, "tiny-demo", "--run", "e2e")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return runs_dir / "tiny-demo" / "e2e", result.stdout
