"""Merge a LoRA adapter into its base checkpoint shard by shard, without loading the model.

Each base shard is read, every weight the adapter targets becomes ``W + scale · B @ A`` (float32,
then ``merged_dtype``), and the shard is written under the same name: peak memory is one
shard plus the adapter, whatever the model's size, and the output is sharded like the base (with
its index). This is the arithmetic PEFT's ``merge_and_unload`` does for plain LoRA; adapters it
does not cover (DoRA, fully trained ``modules_to_save``, a quantized base checkpoint) raise
``NotStreamable`` and the caller merges through Unsloth with the model loaded instead.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

ADAPTER_PREFIX = "base_model.model."
COPIED_FILES = ("config.json", "generation_config.json")


class NotStreamable(ValueError):
    pass


def tensor_files(directory: Path) -> dict[str, Path]:
    """Tensor name → the safetensors file holding it (one file, or shards with an index)."""
    index = directory / "model.safetensors.index.json"
    if index.exists():
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        return {name: directory / file for name, file in weight_map.items()}
    files = sorted(directory.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{directory}: no .safetensors weights")
    out = {}
    for file in files:
        with safe_open(str(file), "pt") as f:
            out.update({name: file for name in f.keys()})
    return out


def names_by_file(files: dict[str, Path]) -> dict[Path, list[str]]:
    """``tensor_files`` turned around: each file with the tensor names it holds, files in order."""
    out: dict[Path, list[str]] = {}
    for name, file in files.items():
        out.setdefault(file, []).append(name)
    return dict(sorted(out.items()))


def parameter_count(directory: Path) -> int:
    """Parameters in a checkpoint, from the safetensors headers (nothing loaded)."""
    total = 0
    for file, names in names_by_file(tensor_files(directory)).items():
        with safe_open(str(file), "pt") as f:
            for name in names:
                numel = 1
                for d in f.get_slice(name).get_shape():
                    numel *= d
                total += numel
    return total


def merged_dtype(config: dict) -> torch.dtype:
    """The dtype a merged checkpoint is stored in, decided from the base checkpoint's config alone so
    that every merge route writes the same one whatever dtype it computed in: the base's own 16-bit
    dtype (``dtype``, ``torch_dtype`` in older configs; a pre-quantized checkpoint states the dtype it
    was quantized from), and bfloat16 for a float32 or unstated one (float32's range in 16 bits)."""
    return torch.float16 if stated_dtype(config) == "float16" else torch.bfloat16


def stated_dtype(config: dict) -> str:
    """The dtype a config says its checkpoint is stored in (float32 when it says none, as transformers reads it)."""
    return dtype_name(config.get("dtype") or config.get("torch_dtype") or "float32")


def dtype_name(dtype) -> str:
    return str(dtype).removeprefix("torch.")


def cast_checkpoint(directory: Path, dtype: torch.dtype) -> None:
    """Rewrite a checkpoint's 16-bit tensors in ``dtype``, shard by shard, and its config's dtype; a
    checkpoint already stored in ``dtype`` is left as it is. (A second rounding: a last resort for a
    writer that chose its own dtype; the tensor check measures what it cost.)"""
    config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    if stated_dtype(config) == dtype_name(dtype):
        return
    for file, names in names_by_file(tensor_files(directory)).items():
        with safe_open(str(file), "pt") as f:
            shard = {name: f.get_tensor(name) for name in names}
        shard = {name: t.to(dtype) if t.dtype in (torch.float16, torch.bfloat16) else t for name, t in shard.items()}
        save_file(shard, str(file), metadata={"format": "pt"})
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
        rank = lora[f"{module}.lora_A.weight"].shape[0]
        if r != rank:
            raise ValueError(f"adapter_config.json gives {module} rank {r}, its lora_A has rank {rank}")
        alpha = resolve(config.get("alpha_pattern") or {}, module, config["lora_alpha"])
        out[module] = alpha / (r ** 0.5 if config.get("use_rslora") else r)
    return out


def read_adapter(adapter_dir: Path) -> tuple[dict, dict[str, torch.Tensor], dict[str, float]]:
    """(adapter config, {module: (A, B)} tensors keyed ``<module>.lora_A/B.weight``, {module: scale})."""
    config = json.loads((adapter_dir / "adapter_config.json").read_text(encoding="utf-8"))
    for option, what in (("use_dora", "DoRA adapters"), ("fan_in_fan_out", "fan_in_fan_out (transposed) weights"),
                         ("target_parameters", "adapters on parameters (target_parameters)")):
        if config.get(option):
            raise NotStreamable(what)
    with safe_open(str(adapter_dir / "adapter_model.safetensors"), "pt") as f:
        lora = {name.removeprefix(ADAPTER_PREFIX): f.get_tensor(name) for name in f.keys()}
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
        raise NotStreamable(f"the adapter targets weights the base checkpoint does not store ({', '.join(missing[:3])})")
    by_file = names_by_file(files)

    from tqdm.auto import tqdm

    # Every floating tensor is written in the merged dtype, except float32 ones in a 16-bit checkpoint:
    # a model may keep some in float32 on purpose (transformers' _keep_in_fp32_modules).
    dtype = merged_dtype(config)
    whole_float32 = stated_dtype(config) == "float32"
    out_dir.mkdir(parents=True)
    for file, names in tqdm(by_file.items(), desc="merging shards", unit="shard", disable=not progress):
        shard = {}
        with safe_open(str(file), "pt") as f:
            for name in names:
                weight = f.get_tensor(name)
                keep = not weight.is_floating_point() or (weight.dtype == torch.float32 and not whole_float32)
                out_dtype = weight.dtype if keep else dtype
                if name in targets:
                    module = targets[name]
                    a, b = lora[f"{module}.lora_A.weight"].float(), lora[f"{module}.lora_B.weight"].float()
                    weight = weight.float().addmm_(b, a, alpha=scales[module])
                shard[name] = weight.to(out_dtype).contiguous()
        save_file(shard, str(out_dir / file.name), metadata={"format": "pt"})
        del shard  # one shard in memory at a time

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
