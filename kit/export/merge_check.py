"""The merged checkpoint checked tensor by tensor against base + LoRA, a band of one tensor's rows in
memory at a time.

For every weight a LoRA adapter targets, the merged tensor must equal ``W + scale · B @ A``
(computed here in float32 from the base checkpoint and the adapter file, independently of the code
that merged) to within the rounding of the stored dtype; every other tensor must equal the base's.
Unlike the logits check, this needs memory for a band of one tensor's rows (tens of MB), not for
whole models, so it runs for any model size. The logits check's comparison and its rule
(``judge_logits``) are here too; the models it compares are loaded by ``kit.export.merge``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from kit.export.lora_merge import NotStreamable, read_adapter
from kit.safetensors_io import tensor_files
from kit.safetensors_io import CHUNK_BYTES, SafetensorsFile


class _Reader:
    """Tensors by name across shards, read a band of rows at a time (``kit.safetensors_io``): never
    a whole shard, nor a whole tensor, in memory."""

    def __init__(self, directory: Path):
        self.files, self._open = tensor_files(directory), {}

    def file(self, name: str) -> SafetensorsFile:
        path = self.files[name]
        if path not in self._open:
            self._open[path] = SafetensorsFile(path)
        return self._open[path]

    def close(self) -> None:
        for f in self._open.values():
            f.close()


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
        return {
            "ok": None,
            "skipped": f"the adapter targets weights the base does not store ({', '.join(unstored[:3])})",
        }
    missing = sorted(set(base.files) - set(merged.files))
    extra = sorted(set(merged.files) - set(base.files))
    merged_modules, unchanged, changed, worst = 0, 0, [], (0.0, None)
    # In file order, so each shard is read front to back.
    in_order = sorted(
        set(base.files) & set(merged.files), key=lambda n: (str(merged.files[n]), merged.file(n).entries[n].begin)
    )
    for name in in_order:
        new_file, base_file = merged.file(name), base.file(name)
        if new_file.entries[name].shape != base_file.entries[name].shape:
            changed.append(name)
            continue
        dtype = new_file.entries[name].dtype
        if name in targets:
            module = targets[name]
            a = lora[f"{module}.lora_A.weight"].float()
            b = lora[f"{module}.lora_B.weight"].float()
            excess, error_max = 0.0, 0.0
            for start, stop in new_file.bands(name, CHUNK_BYTES // 4):  # ~64 MB in float32, from 16 bits
                # base + scale · (B @ A), in place: a few float32 bands at a time
                expected = torch.mm(b[start:stop], a).mul_(scales[module]).add_(base_file.read(name, start, stop))
                error = new_file.read(name, start, stop).float().sub_(expected).abs_()
                error_max = max(error_max, float(error.max()))
                # Round-to-nearest in the stored dtype moves a value by at most half an ulp.
                bound = expected.abs_().mul_(torch.finfo(dtype).eps / 2).add_(torch.finfo(dtype).tiny)
                excess = max(excess, float(error.sub_(bound).max()))
                del expected, error, bound
            worst = max(worst, (error_max, name), key=lambda w: w[0])
            if excess > 0:
                changed.append(name)
            merged_modules += 1
        elif all(
            torch.equal(new_file.read(name, start, stop), base_file.read(name, start, stop).to(dtype))
            for start, stop in new_file.bands(name)
        ):
            unchanged += 1
        else:
            changed.append(name)
    base.close()
    merged.close()
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


# The logits check. A merge stored in 16 bits never reproduces base + adapter exactly: rounding the
# merged weights moves the logits, by an amount that depends on the stored dtype, the dtype the check
# computes in and the device. So the merged files are not judged by an absolute tolerance but against a
# noise floor measured in the same run, on the same device, in the same dtype: a merge known to be
# right (PEFT's, in memory, rounded to the stored dtype) compared with base + adapter the same way.

# Merged and floor are two draws of the same rounding noise; the largest of thousands of positions ×
# the vocabulary differs little between draws (demo: equal, in float32 and in bfloat16 on CPU). A
# broken merge moves logits by a part of the adapter's own effect, many times the floor.
NOISE_MULTIPLE = 2.0


@torch.no_grad()
def compare_logits(reference: list[torch.Tensor], other) -> dict:
    """``other``'s next-token logits against ``reference``'s (one [1, T, V] tensor per prompt) at every
    position: the largest |difference|, the share of positions whose argmax agrees (and, where it does
    not, the reference's margin for its own token over the other's: how near a tie it was), and the mean
    KL(reference ‖ other) in float64."""
    worst = kl = margin = 0.0
    positions = agree = 0
    for ref, new in zip(reference, other):
        ref, new = ref.reshape(-1, ref.shape[-1]).double(), new.reshape(-1, new.shape[-1]).double()
        worst = max(worst, float((ref - new).abs().max()))
        mine, theirs = ref.argmax(-1), new.argmax(-1)
        differ = (mine != theirs).nonzero()[:, 0]
        if len(differ):
            margin = max(margin, float((ref[differ, mine[differ]] - ref[differ, theirs[differ]]).max()))
        positions += len(mine)
        agree += len(mine) - len(differ)
        log_p, log_q = ref.log_softmax(-1), new.log_softmax(-1)
        kl += float((log_p.exp() * (log_p - log_q)).sum())
    return {
        "max_abs_diff": worst,
        "top1_agreement": agree / positions,
        "top1_disagreement_max_margin": margin,
        "kl_mean": kl / positions,
        "positions": positions,
    }


def top1_margins(reference: list[torch.Tensor]) -> torch.Tensor:
    """At every position, how far the reference's best logit is above its second best."""
    top2 = torch.cat([r.reshape(-1, r.shape[-1]).float().topk(2, dim=-1).values for r in reference])
    return top2[:, 0] - top2[:, 1]


def judge_logits(merged: dict, floor: dict, margins: torch.Tensor, resolution: float) -> dict:
    """The rule: the merged model passes when it is as close to base + adapter as the floor allows:
    max |diff| ≤ NOISE_MULTIPLE × the floor's + ``resolution``, and mean KL ≤ NOISE_MULTIPLE² × the
    floor's (KL grows with the square of a logit change) + resolution²/12, where ``resolution`` is
    the check dtype's eps × the largest |logit| (about one unit in its last place): two roundings of
    the logits differ by up to that and give about that KL (half the variance of their difference,
    ulp²/6), so a floor of zero still leaves the logits' own rounding. And the argmax differs only at near-ties,
    positions whose top two reference logits are within 2 × the allowed difference (the most such a
    change can overturn): top-1 agreement is at least the share of positions that are not near-ties."""
    allowed = NOISE_MULTIPLE * floor["max_abs_diff"] + resolution
    allowed_kl = NOISE_MULTIPLE**2 * floor["kl_mean"] + resolution**2 / 12
    near_tie = 2 * allowed
    limits = {
        "max |diff|": (merged["max_abs_diff"], allowed),
        "mean KL": (merged["kl_mean"], allowed_kl),
        "margin of a top-1 disagreement": (merged["top1_disagreement_max_margin"], near_tie),
    }
    failed = [f"{name} {value:.3g} > {limit:.3g}" for name, (value, limit) in limits.items() if value > limit]
    min_top1 = float((margins > near_tie).float().mean())
    why = (
        "; ".join(failed) + ": further from base + adapter than the floor allows"
        if failed
        else f"max |diff| {merged['max_abs_diff']:.3g} ≤ {allowed:.3g}, mean KL {merged['kl_mean']:.3g} ≤ "
        f"{allowed_kl:.3g}, top-1 agreement {merged['top1_agreement']:.4f} (≥ {min_top1:.4f}: every "
        f"disagreement a near-tie, margin ≤ {near_tie:.3g})"
    )
    return {
        "ok": not failed,
        "allowed_max_abs_diff": allowed,
        "allowed_kl_mean": allowed_kl,
        "near_tie_margin": near_tie,
        "min_top1_agreement": min_top1,
        "why": why,
    }
