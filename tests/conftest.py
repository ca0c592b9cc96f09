import json
import os
import subprocess
import sys

import pytest

from kit.paths import PROJECT_ROOT


# model.dtype values the numeric tests run in, whatever this CPU's default (Unsloth's: bfloat16 where the
# CPU has native bfloat16, else float32), so both numeric paths are exercised on every machine: a CPU
# without native bfloat16 emulates it (slower; the tiny model keeps it to seconds).
DTYPES = ("float32", "bfloat16")

# CPU flags that choose the numeric path of torch's CPU kernels (oneDNN): native bfloat16 or not.
NUMERIC_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile")


def pytest_report_header(config):
    """The CPU and its numeric-path flags, and the dtype Unsloth picks by default here, at the top of
    every run: a failure report then shows which numeric path ran (docs/testing.md)."""
    model, flags = "unknown CPU", set()
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
                break
    except OSError:
        pass
    import torch

    native_bf16 = bool({"avx512_bf16", "amx_bf16"} & flags)
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return [
        f"cpu: {model}; {', '.join(f for f in NUMERIC_FLAGS if f in flags) or 'no AVX2/AVX-512 flags'}",
        f"native bfloat16: {native_bf16} (Unsloth's default dtype here: "
        f"{'bfloat16' if native_bf16 or gpu != 'none' else 'float32'}); gpu: {gpu}; "
        f"ONEDNN_MAX_CPU_ISA={os.environ.get('ONEDNN_MAX_CPU_ISA', 'unset')}; numeric tests run in {', '.join(DTYPES)}",
    ]


# The first lines of a training process a test kills: each logged step sleeps a little, so the test
# can kill it at a known point. Nothing in training itself is replaced.
SLOW_STEPS = r"""
import time
from kit.training import callbacks
_log = callbacks.MetricsJsonl.on_log
def _slow_log(self, *args, **kwargs):
    _log(self, *args, **kwargs)
    time.sleep(0.3)
callbacks.MetricsJsonl.on_log = _slow_log
"""

# Fixtures that execute the notebooks end to end: every test using one is an e2e test.
END_TO_END_FIXTURES = {"demo_run"}


def pytest_collection_modifyitems(items):
    """``make test-fast`` (-m "not slow and not e2e") leaves out the end-to-end notebook runs."""
    for item in items:
        if END_TO_END_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def tiny_model_dir():
    """The real tiny Qwen3 + Qwen tokenizer, built once into the kit cache (~30 s the first time)."""
    from kit.demos.tiny import ensure_tiny_model

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


def read(run, name: str):
    """A run's JSON file (report.json, manifest.json ...)."""
    return json.loads((run / name).read_text())


def records(run) -> list[dict]:
    """A run's metrics.jsonl, a record a line."""
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def pipeline(runs_dir, *args, timeout: int = 900, **env_vars):
    """``python -m kit.pipeline ARGS`` with runs under ``runs_dir`` (and extra environment)."""
    env = {**os.environ, "KIT_RUNS_DIR": str(runs_dir), **env_vars}
    return subprocess.run(
        [sys.executable, "-m", "kit.pipeline", *args],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def pipeline_run(runs_dir, recipe: str, *args, timeout: int = 900):
    """``pipeline`` of ``recipe`` as run "e2e" (``args``: overrides ...), asserted to succeed: its run directory."""
    result = pipeline(runs_dir, recipe, "--run", "e2e", *args, timeout=timeout)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return runs_dir / recipe / "e2e"


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory):
    """The four notebooks executed by papermill on tiny-demo, once per test session: (run dir, stdout)."""
    runs_dir = tmp_path_factory.mktemp("runs")
    result = pipeline(runs_dir, "tiny-demo", "--run", "e2e")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return runs_dir / "tiny-demo" / "e2e", result.stdout


@pytest.fixture(scope="session")
def family_tokenizers(tokenizer):
    """One tokenizer per family carrying the official chat template: the real Qwen tokenizer for
    the Qwen families, the real Llama-3 tokenizer for Llama 3.1, and for the others the Qwen
    vocabulary plus the family's special tokens (their own vocabularies are not available offline)."""
    from kit.families import FAMILIES
    from kit.demos.tiny import family_tokenizer

    return {name: tokenizer if name == "qwen3" else family_tokenizer(name) for name in FAMILIES}


def trl_only_pieces(tokenizer, family, messages, training_template: str) -> list[str]:
    """Compare the kit's labels with the masks of TRL's ``{% generation %}`` training template:
    asserts the same ids and that the kit trains nothing TRL does not, and returns the text of
    each run of tokens that only TRL trains."""
    from pathlib import Path

    import trl

    from kit.chat.render import IGNORE_INDEX, tokenize_with_labels

    template = (Path(trl.__file__).parent / "chat_templates" / f"{training_template}.jinja").read_text()
    as_template = [
        {k if k != "reasoning" else (family.reasoning_field or k): v for k, v in m.items()} for m in messages
    ]
    ref = tokenizer.apply_chat_template(
        as_template, chat_template=template, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    ours = tokenize_with_labels(tokenizer, family, messages)
    assert ours["input_ids"] == ref["input_ids"]
    mask = [label != IGNORE_INDEX for label in ours["labels"]]
    assert all(r for o, r in zip(mask, ref["assistant_masks"]) if o)  # ours ⊆ TRL's
    only_trl = [tid if r and not o else None for tid, o, r in zip(ours["input_ids"], mask, ref["assistant_masks"])]
    runs = "".join(tokenizer.decode([t]) if t is not None else "\0" for t in only_trl).split("\0")
    return [r for r in runs if r]
