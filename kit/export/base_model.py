"""The merge's base model: where the recipe's base checkpoint is, its config, whether the run's
adapter was trained on it, and base + adapter loaded through Unsloth."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from kit import backend  # first: Unsloth patches transformers/peft on import
from kit.recipes import Recipe
from kit.runs import Run, RunError


def check_adapter_base(run: Run, config: Recipe) -> None:
    """The adapter must have been trained on the recipe's model."""
    from kit.models import resolve_model_id

    adapter = json.loads((run.adapter_dir / "adapter_config.json").read_text(encoding="utf-8"))
    trained_on, expected = adapter.get("base_model_name_or_path"), resolve_model_id(config.model.id)
    if trained_on and Path(str(trained_on)).resolve() != Path(expected).resolve() and trained_on != expected:
        raise RunError(f"{run.adapter_dir} was trained on {trained_on!r}, but the recipe's model is {expected!r}")


def local_checkpoint(model_id: str) -> Path:
    """The base checkpoint's local directory, for the streaming merge (Hub ids: Unsloth's merge)."""
    from kit.export.lora_merge import NotStreamable
    from kit.models import resolve_model_id

    path = Path(resolve_model_id(model_id))
    if not (path / "config.json").exists():
        raise NotStreamable(f"{model_id!r} is not a local checkpoint directory")
    return path


def base_config(model_id: str) -> dict:
    """The base checkpoint's config (a Hub id's through transformers: its cache, else the Hub)."""
    from transformers import AutoConfig

    from kit.models import resolve_model_id

    path = Path(resolve_model_id(model_id))
    if (path / "config.json").exists():
        return json.loads((path / "config.json").read_text(encoding="utf-8"))
    return AutoConfig.from_pretrained(str(path)).to_dict()


def load_adapter_model(run: Run, config: Recipe, dtype: torch.dtype):
    """Base + the run's adapter through Unsloth, unquantized, in ``dtype``."""
    return backend.load_model(str(run.adapter_dir), config.model.max_seq_length, load_in_4bit=False, dtype=dtype)


def direct_base(run: Run, config: Recipe) -> Path | None:
    """The base checkpoint's directory where base + adapter can be loaded without transformers'
    loader (a local, unquantized checkpoint and a plain LoRA adapter, as the streaming merge needs),
    else None."""
    from kit.export.lora_merge import NotStreamable, read_adapter

    try:
        base_dir = local_checkpoint(config.model.id)
        read_adapter(run.adapter_dir)
    except NotStreamable:
        return None
    model_config = json.loads((base_dir / "config.json").read_text(encoding="utf-8"))
    return None if model_config.get("quantization_config") else base_dir
