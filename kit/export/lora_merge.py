"""Merge a LoRA adapter into its base checkpoint tensor by tensor, without loading the model.

Each base shard is read and written under the same name, tensor by tensor and each tensor by bands
of rows (``kit.safetensors_io``): every weight the adapter targets becomes ``W + scale · B @ A``
(float32, then ``merged_dtype``), one band at a time, with the adapter's A and B read when their
weight comes. Peak memory is a few bands of at most 64 MB and one module's A and B, whatever the
size of the model or its shards, and the output is sharded like the base (with its index). This is
the arithmetic PEFT's ``merge_and_unload`` does for plain LoRA; adapters it does not cover (DoRA,
fully trained ``modules_to_save``, a quantized base checkpoint) raise ``NotStreamable`` and the
caller merges through Unsloth with the model loaded instead.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from pathlib import Path

import torch

from kit.safetensors_io import (
    CHUNK_BYTES,
    SafetensorsFile,
    SafetensorsWriter,
    converted_dtype,
    copy_tensor,
    dtype_name,
    names_by_file,
    stated_dtype,
    tensor_files,
)

ADAPTER_PREFIX = "base_model.model."
COPIED_FILES = ("config.json", "generation_config.json")


class NotStreamable(ValueError):
    pass


def merged_dtype(config: dict) -> torch.dtype:
    """The dtype a merged checkpoint is stored in, decided from the base checkpoint's config alone so
    that every merge route writes the same one whatever dtype it computed in: the base's own 16-bit
    dtype (``dtype``, ``torch_dtype`` in older configs; a pre-quantized checkpoint states the dtype it
    was quantized from), and bfloat16 for a float32 or unstated one (float32's range in 16 bits)."""
    return torch.float16 if stated_dtype(config) == "float16" else torch.bfloat16


def cast_checkpoint(directory: Path, dtype: torch.dtype) -> None:
    """Rewrite a checkpoint's 16-bit tensors in ``dtype``, shard by shard, and its config's dtype; a
    checkpoint already stored in ``dtype`` is left as it is. (A second rounding: a last resort for a
    writer that chose its own dtype; the tensor check measures what it cost.)"""
    config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    if stated_dtype(config) == dtype_name(dtype):
        return
    for file, names in names_by_file(tensor_files(directory)).items():
        tmp = file.with_name(file.name + ".tmp")
        with SafetensorsFile(file) as source:
            wanted = set(names)
            names = [n for n in source.names() if n in wanted]
            to = {
                n: dtype if source.entries[n].dtype in (torch.float16, torch.bfloat16) else source.entries[n].dtype
                for n in names
            }
            with SafetensorsWriter(tmp, [(n, to[n], source.entries[n].shape) for n in names], {"format": "pt"}) as out:
                for name in names:
                    copy_tensor(source, name, out, to[name])
        tmp.replace(file)
    config["dtype"] = dtype_name(dtype)
    config.pop("torch_dtype", None)
    (directory / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


def lora_scales(config: dict, lora: dict[str, torch.Tensor]) -> dict[str, float]:
    """Scale per module: alpha / r (alpha / sqrt(r) with rsLoRA), with ``rank_pattern`` and
    ``alpha_pattern`` resolved by PEFT's own matcher; r must be the rank the A matrix has."""
    from peft.utils.other import get_pattern_key

    def resolve(patterns: dict, module: str, default):
        return patterns.get(get_pattern_key(list(patterns), module), default) if patterns else default

    out = {}
    for module in sorted({name.rsplit(".lora_", 1)[0] for name in lora}):
        r = resolve(config.get("rank_pattern") or {}, module, config["r"])
        a = f"{module}.lora_A.weight"
        rank = (lora.shape(a) if isinstance(lora, LazyTensors) else lora[a].shape)[0]
        if r != rank:
            raise ValueError(f"adapter_config.json gives {module} rank {r}, its lora_A has rank {rank}")
        alpha = resolve(config.get("alpha_pattern") or {}, module, config["lora_alpha"])
        out[module] = alpha / (r**0.5 if config.get("use_rslora") else r)
    return out


class LazyTensors(Mapping):
    """Tensors of one safetensors file by name, each read from the file when asked for (a module's A
    and B are read when its weight is merged or checked, so the adapter is never in memory whole)."""

    def __init__(self, path: Path, prefix: str = ""):
        self.file = SafetensorsFile(path)
        self._names = {name.removeprefix(prefix): name for name in self.file.entries}

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.file.read(self._names[name])

    def __iter__(self):
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def shape(self, name: str) -> tuple[int, ...]:
        return self.file.entries[self._names[name]].shape


def read_adapter(adapter_dir: Path) -> tuple[dict, LazyTensors, dict[str, float]]:
    """(adapter config, its LoRA tensors keyed ``<module>.lora_A/B.weight``, read when asked for,
    {module: scale})."""
    config = json.loads((adapter_dir / "adapter_config.json").read_text(encoding="utf-8"))
    for option, what in (
        ("use_dora", "DoRA adapters"),
        ("fan_in_fan_out", "fan_in_fan_out (transposed) weights"),
        ("target_parameters", "adapters on parameters (target_parameters)"),
    ):
        if config.get(option):
            raise NotStreamable(what)
    lora = LazyTensors(adapter_dir / "adapter_model.safetensors", ADAPTER_PREFIX)
    other = [name for name in lora if not name.endswith((".lora_A.weight", ".lora_B.weight"))]
    if other:  # LoRA biases, embedding LoRA, modules_to_save: not plain W + scale·B·A
        raise NotStreamable(f"adapter tensors other than LoRA A/B weights ({other[0]}, …)")
    return config, lora, lora_scales(config, lora)


def merge_checkpoint(base_dir: Path, adapter_dir: Path, out_dir: Path, progress: bool = True) -> dict:
    """Write the merged checkpoint to ``out_dir`` (created; the caller renames it into place)."""
    base_dir, adapter_dir, out_dir = Path(base_dir), Path(adapter_dir), Path(out_dir)
    config = json.loads((base_dir / "config.json").read_text(encoding="utf-8"))
    if config.get("quantization_config"):
        raise NotStreamable(f"a quantized base checkpoint ({config['quantization_config'].get('quant_method')})")
    _, lora, scales = read_adapter(adapter_dir)
    files = tensor_files(base_dir)
    targets = {f"{module}.weight": module for module in scales}
    missing = sorted(set(targets) - set(files))
    if missing:  # e.g. lm_head tied to the embeddings
        raise NotStreamable(
            f"the adapter targets weights the base checkpoint does not store ({', '.join(missing[:3])})"
        )
    by_file = names_by_file(files)

    from tqdm.auto import tqdm

    dtype = merged_dtype(config)
    whole_float32 = stated_dtype(config) == "float32"
    out_dir.mkdir(parents=True)
    for file, names in tqdm(by_file.items(), desc="merging shards", unit="shard", disable=not progress):
        with SafetensorsFile(file) as source:
            wanted = set(names)
            names = [n for n in source.names() if n in wanted]  # in the order their bytes lie
            out_dtypes = {n: converted_dtype(source.entries[n].dtype, dtype, whole_float32) for n in names}
            specs = [(n, out_dtypes[n], source.entries[n].shape) for n in names]
            with SafetensorsWriter(out_dir / file.name, specs, {"format": "pt"}) as out:
                for name in names:
                    if name not in targets:
                        copy_tensor(source, name, out, out_dtypes[name])
                        continue
                    module = targets[name]
                    a, b = lora[f"{module}.lora_A.weight"].float(), lora[f"{module}.lora_B.weight"].float()
                    # A band of rows at a time: rows i of W + scale·B·A need only rows i of B.
                    for start, stop in source.bands(name, CHUNK_BYTES // 4):  # ~64 MB in float32, from 16 bits
                        band = source.read(name, start, stop).float().addmm_(b[start:stop], a, alpha=scales[module])
                        out.write(band.to(out_dtypes[name]))

    index = base_dir / "model.safetensors.index.json"
    if index.exists():
        data = json.loads(index.read_text(encoding="utf-8"))
        data.setdefault("metadata", {})["total_size"] = sum((out_dir / f.name).stat().st_size for f in by_file)
        (out_dir / index.name).write_text(json.dumps(data, indent=2), encoding="utf-8")
    for name in COPIED_FILES:
        if (base_dir / name).exists():
            shutil.copy2(base_dir / name, out_dir / name)
    if config.get("dtype") != dtype_name(dtype):  # the stored dtype, as transformers writes it
        config["dtype"] = dtype_name(dtype)
        config.pop("torch_dtype", None)
        (out_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return {"method": "streaming", "shards": len(by_file), "lora_modules_merged": len(scales)}
