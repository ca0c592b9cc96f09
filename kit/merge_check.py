"""The merged checkpoint checked tensor by tensor against base + LoRA, one tensor in memory at a time.

For every weight a LoRA adapter targets, the merged tensor must equal ``W + scale · B @ A``
(computed here in float32 from the base checkpoint and the adapter file, independently of the code
that merged) to within the rounding of the stored dtype; every other tensor must equal the base's.
Unlike the logits check, this needs memory for one tensor, not for whole models, so it runs for
any model size.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open

from .lora_merge import NotStreamable, read_adapter, tensor_files


class _Reader:
    """Tensors by name across shards, keeping one shard open at a time."""

    def __init__(self, directory: Path):
        self.files, self._open, self._handle = tensor_files(directory), None, None

    def get(self, name: str) -> torch.Tensor:
        file = self.files[name]
        if file != self._open:
            self._handle = safe_open(str(file), "pt")
            self._open = file
        return self._handle.get_tensor(name)


def check_merged_tensors(base_dir: Path, adapter_dir: Path, merged_dir: Path) -> dict:
    if json.loads((Path(base_dir) / "config.json").read_text(encoding="utf-8")).get("quantization_config"):
        return {"ok": None, "skipped": "the base checkpoint is quantized: its weights are not the 16-bit ones merged"}
    try:
        _, lora, scales = read_adapter(Path(adapter_dir))
    except NotStreamable as e:
        return {"ok": None, "skipped": f"not checked tensor by tensor: {e}"}
    modules = sorted(scales)
    targets = {f"{module}.weight": module for module in modules}

    base, merged = _Reader(Path(base_dir)), _Reader(Path(merged_dir))
    unstored = sorted(set(targets) - set(base.files))
    if unstored:  # e.g. lm_head tied to the embeddings: merged into a weight stored under another name
        return {"ok": None, "skipped": f"the adapter targets weights the base does not store ({', '.join(unstored[:3])})"}
    missing = sorted(set(base.files) - set(merged.files))
    extra = sorted(set(merged.files) - set(base.files))
    merged_modules, unchanged, changed, worst = 0, 0, [], (0.0, None)
    # In file order, so each shard is opened once.
    for name in sorted(set(base.files) & set(merged.files), key=lambda n: (str(merged.files[n]), n)):
        new = merged.get(name)
        if name in targets:
            module = targets[name]
            a = lora[f"{module}.lora_A.weight"].float()
            b = lora[f"{module}.lora_B.weight"].float()
            expected = base.get(name).float() + scales[module] * (b @ a)
            # Round-to-nearest in the stored dtype moves a value by at most half an ulp.
            bound = expected.abs() * (torch.finfo(new.dtype).eps / 2) + torch.finfo(new.dtype).tiny
            error = (new.float() - expected).abs()
            excess = float((error - bound).max())
            worst = max(worst, (float(error.max()), name), key=lambda w: w[0])
            if excess > 0:
                changed.append(name)
            merged_modules += 1
        elif torch.equal(new, base.get(name).to(new.dtype)):
            unchanged += 1
        else:
            changed.append(name)
    not_found = sorted(set(targets) - set(merged.files))
    return {
        "ok": not (missing or extra or changed or not_found),
        "lora_modules": len(modules),
        "lora_modules_merged": merged_modules,
        "tensors_unchanged": unchanged,
        "max_abs_error": worst[0],
        "worst_tensor": worst[1],
        "wrong_tensors": changed[:10],
        "missing_tensors": (missing + not_found)[:10],
        "extra_tensors": extra[:10],
    }
