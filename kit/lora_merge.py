"""Merge a LoRA adapter into its base checkpoint shard by shard, without loading the model.

Each base shard is read, every weight the adapter targets becomes ``W + scale · B @ A`` (float32,
then the shard's 16-bit dtype), and the shard is written under the same name: peak memory is one
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

    # Tensors keep their stored dtype (a model may keep some in float32 on purpose), except that a
    # checkpoint stored in float32 as a whole is written in bfloat16: the output is 16-bit.
    stored = config.get("dtype") or config.get("torch_dtype")
    widen_to = torch.bfloat16 if stored in (None, "float32") else None
    out_dir.mkdir(parents=True)
    for file, names in tqdm(by_file.items(), desc="merging shards", unit="shard", disable=not progress):
        shard = {}
        with safe_open(str(file), "pt") as f:
            for name in names:
                weight = f.get_tensor(name)
                dtype = widen_to if widen_to is not None and weight.dtype == torch.float32 else weight.dtype
                if name in targets:
                    module = targets[name]
                    a, b = lora[f"{module}.lora_A.weight"].float(), lora[f"{module}.lora_B.weight"].float()
                    weight = weight.float().addmm_(b, a, alpha=scales[module])
                shard[name] = weight.to(dtype).contiguous()
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
    if widen_to is not None:  # the stored dtype, as transformers writes it
        config["dtype"] = str(widen_to).removeprefix("torch.")
        config.pop("torch_dtype", None)
        (out_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return {"method": "streaming", "shards": len(by_file), "lora_modules_merged": len(scales)}
