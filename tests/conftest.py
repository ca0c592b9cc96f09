import pytest


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
