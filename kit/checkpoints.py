"""A run's checkpoints with their step and eval loss; pick the final adapter, latest or best."""

from __future__ import annotations

import json
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path

from kit.runs import Run, RunError


@dataclass
class Checkpoint:
    name: str  # "final" (adapter/) or "checkpoint-N"
    path: Path
    step: int
    eval_loss: float | None  # eval loss measured at this step, if there was an evaluation then


def _eval_losses(log_history: list[dict]) -> dict[int, float]:
    return {r["step"]: r["eval_loss"] for r in log_history if "eval_loss" in r}


def is_complete(checkpoint_dir: Path) -> bool:
    """Whether every file of a checkpoint was written whole. transformers writes trainer_state.json
    last, but a folder on a network mount (Google Drive) may receive the files in another order, so
    a runtime that dies mid-save can leave any of them cut short: weights are checked against the
    size their header states, torch's files (zip archives) for their closing record, JSON by parsing."""
    try:
        json.loads((checkpoint_dir / "trainer_state.json").read_text(encoding="utf-8"))
        for path in checkpoint_dir.iterdir():
            if path.suffix == ".safetensors" and not _safetensors_whole(path):
                return False
            if path.suffix in (".pt", ".pth", ".bin") and not zipfile.is_zipfile(path):
                return False
    except (OSError, ValueError, struct.error):  # unreadable, bad JSON, a header cut short
        return False
    return True


def _safetensors_whole(path: Path) -> bool:
    with open(path, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(length))
    ends = [entry["data_offsets"][1] for name, entry in header.items() if name != "__metadata__"]
    return path.stat().st_size == 8 + length + max(ends, default=0)


def _numbered(run: Run) -> list[Path]:
    return [p for p in run.checkpoints_dir.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()]


def incomplete_checkpoints(run: Run, complete: list[Checkpoint] | None = None) -> list[str]:
    """Names of the run's checkpoint folders that were cut off mid-write (never resumed from): those
    not among ``complete`` (``list_checkpoints(run)``, read again only when not given)."""
    listed = {c.name for c in (list_checkpoints(run) if complete is None else complete)}
    return sorted((p.name for p in _numbered(run) if p.name not in listed), key=lambda n: int(n.split("-")[-1]))


def list_checkpoints(run: Run) -> list[Checkpoint]:
    """Complete trainer checkpoints (by step), then the final adapter if training finished."""
    found = []
    for path in _numbered(run):
        if not is_complete(path):
            continue
        state = json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))
        step = state.get("global_step", int(path.name.split("-")[-1]))
        found.append(Checkpoint(path.name, path, step, _eval_losses(state.get("log_history", [])).get(step)))
    found.sort(key=lambda c: c.step)
    if run.adapter_dir.exists():
        summary = run.manifest().get("train", {})
        step = summary.get("global_step", found[-1].step if found else 0)
        found.append(Checkpoint("final", run.adapter_dir, step, summary.get("eval_loss")))
    return found


def pick(checkpoints: list[Checkpoint], which: str) -> Checkpoint:
    """``final``, ``latest`` (highest step), ``best`` (lowest eval loss) or a checkpoint name."""
    if not checkpoints:
        raise RunError("this run has no adapter or checkpoint yet: run the train notebook first")
    if which == "latest":
        return max(checkpoints, key=lambda c: (c.step, c.name == "final"))
    if which == "best":
        scored = [c for c in checkpoints if c.eval_loss is not None]
        if not scored:
            raise RunError(
                "no checkpoint has an eval loss; evaluate during training (train.eval_steps) to pick the best"
            )
        return min(scored, key=lambda c: (c.eval_loss, -c.step))
    for c in checkpoints:
        if c.name == which:
            return c
    raise RunError(
        f"no checkpoint {which!r} in this run; choose latest, best, or one of: "
        + ", ".join(c.name for c in checkpoints)
    )


def find_checkpoint(run: Run, which: str = "final") -> Checkpoint:
    if which == "final" and not run.adapter_dir.exists():
        raise RunError(
            f"{run.path} has no adapter/: run the train notebook on this run first "
            f"(or pick a checkpoint: latest, best, checkpoint-N)"
        )
    return pick(list_checkpoints(run), which)
