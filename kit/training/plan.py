"""The train stage's first step: what a run's state asks for, decided before any model loads.

A run may be new, killed mid-training (its newest complete checkpoint is resumed from), or trained
already (left as it is). ``start`` decides, in one line a notebook prints, takes the run's lock
(one trainer per run) and sets a killed process's later records aside, so the run's records hold
each step once after a resume."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from kit import distributed
from kit.checkpoints import Checkpoint, incomplete_checkpoints, list_checkpoints
from kit.files import new_run_id, write_text_atomic
from kit.training.run_lock import RunLock
from kit.runs import Run, RunError, find_adapter


def refuse_trained(run: Run) -> None:
    """Runs are never overwritten: a run with an adapter is trained."""
    if run.adapter_dir.exists():
        raise RunError(
            f"{run.adapter_dir} already exists: this run is trained. Start a new run with "
            "the prepare notebook (runs are never overwritten)."
        )


@dataclass
class Plan:
    """What ``start`` found in the run and what the train stage does: "start" (from step 0),
    "resume" (from ``checkpoint``) or "trained" (the run has its adapter: nothing is trained or
    written; its last checkpoint is loaded so the notebook's cells show the tuned model)."""

    run: Run
    action: str
    checkpoint: Checkpoint | None = None
    skipped: tuple[str, ...] = ()  # checkpoint folders cut off mid-write
    lock: RunLock | None = None

    @property
    def resume_from(self) -> str | None:
        """What ``trainer.train(resume_from_checkpoint=...)`` takes: the checkpoint's folder, or None."""
        return str(self.checkpoint.path) if self.checkpoint else None

    def __str__(self) -> str:
        skipped = f" ({', '.join(self.skipped)} cut off mid-write: skipped)" if self.skipped else ""
        if self.action == "trained":
            return (
                f"Already trained ({self.run.adapter_dir}): left as it is. The cells below load "
                f"{self.checkpoint.name}, its last step, and train nothing."
            )
        if self.action == "resume":
            return f"Resuming from {self.checkpoint.name} (step {self.checkpoint.step}){skipped}."
        return f"Starting at step 0: no checkpoint to resume from{skipped}."


def start(run: Run, resume: bool | str = "auto") -> Plan:
    """Before any model loads: what to do with this run, in one line (``print(plan)``).

    ``resume="auto"``: a trained run is left as it is; otherwise the newest complete checkpoint is
    resumed from, or training starts. Explicit values: True or "latest" (the newest checkpoint), a
    checkpoint's name or path, or False (start; refused when the run has checkpoints, which a
    fresh start would overwrite). A run with an adapter is refused for every explicit value.

    Training takes the run's lock (one trainer per run); a resume sets the killed process's later
    records aside so the run's records hold each step once."""
    resume = parse_resume(resume)
    manifest = run.manifest()
    launched = manifest.get("launch", {}).get("world_size")  # the processes that wrote the checkpoints
    listed = [c for c in list_checkpoints(run) if c.name != "final"]
    torn = [c.name for c in listed if not every_rank_saved(c, launched)]
    saved = [c for c in listed if c.name not in torn]
    skipped = tuple(sorted(incomplete_checkpoints(run, listed) + torn, key=lambda n: int(n.split("-")[-1])))
    if resume == "auto" and run.adapter_dir.exists():
        step = manifest.get("train", {}).get("global_step")
        last = next((c for c in saved if c.step == step), None)
        if last is None:
            raise RunError(
                f"{run.path} is already trained, and its last checkpoint (step {step}) is gone, "
                "so there is nothing to load here: evaluate it with the evaluate notebook"
            )
        limit = run.config().train.max_steps
        if limit and limit > 0 and limit != step:  # loading step N with a new limit would train on
            raise RunError(
                f"{run.path} is already trained ({step} steps); train.max_steps is now {limit}, and "
                "runs are never overwritten: start a new run with prepare"
            )
        return Plan(run, "trained", last)
    refuse_trained(run)
    if resume == "auto":
        checkpoint = saved[-1] if saved else None
    elif resume is False and saved:
        raise RunError(
            f"resume: false, but {run.checkpoints_dir} has checkpoints ({', '.join(c.name for c in saved)}) "
            "that a fresh start would overwrite: resume (auto, the default) or start a new run with prepare"
        )
    else:
        checkpoint = resume_checkpoint(run, resume, listed)
    if checkpoint is not None:
        check_world_size(checkpoint, launched)
    config = run.config()
    train = config.train
    if train.init_adapter:  # refused here, before any model loads
        _, init = find_adapter(config)
        began = manifest.get("init_adapter")
        if (
            checkpoint is not None
            and began
            and (began["adapter"], began["sha256"]) != (init["adapter"], init["sha256"])
        ):
            raise RunError(
                f"train.init_adapter: {train.init_adapter} now names {init['adapter']} (sha256 "
                f"{init['sha256'][:12]}), and this run started from {began['adapter']} (sha256 "
                f"{began['sha256'][:12]}): resume from the same adapter (recipe/run-id names one run)"
            )
    lock = None
    if distributed.is_main():  # with several processes, rank 0 alone writes the run's records
        lock = RunLock(run.path).acquire()
        if train.init_adapter:
            run.update_manifest({"init_adapter": init})
        run.update_manifest(
            {
                "launch": {
                    "world_size": distributed.world_size(),
                    "global_batch": train.per_device_train_batch_size
                    * train.gradient_accumulation_steps
                    * distributed.world_size(),
                }
            }
        )
        step = checkpoint.step if checkpoint else 0
        set_aside_steps_after(run.metrics_path, step)
        if checkpoint or (run.path / "tensorboard").exists():
            purge_tensorboard_after(run.path / "tensorboard", step)
    return Plan(run, "resume" if checkpoint else "start", checkpoint, skipped, lock)


RESUME_VALUES = "auto, true (or latest), false, or a checkpoint name such as checkpoint-100"


def resume_checkpoint(run: Run, resume, saved: list[Checkpoint] | None = None) -> Checkpoint | None:
    """The checkpoint an explicit ``resume`` names, checked before any model is loaded: None for
    False, the newest complete checkpoint for True or "latest", else a checkpoint name
    (checkpoint-N) of this run or a checkpoint's path. (``start`` handles "auto".) ``saved``: the
    run's complete checkpoints, when the caller has listed them already."""
    resume = parse_resume(resume)
    if resume is False:
        return None
    if saved is None:
        saved = [c for c in list_checkpoints(run) if c.name != "final"]
    if resume is True or resume == "latest":
        if not saved:
            raise RunError(f"resume: {run.checkpoints_dir} has no complete checkpoint to resume from")
        return saved[-1]
    named = next((c for c in saved if c.name == resume), None)
    if named is not None:
        return named
    if "/" in resume and (Path(resume) / "trainer_state.json").exists():
        state = json.loads((Path(resume) / "trainer_state.json").read_text(encoding="utf-8"))
        return Checkpoint(Path(resume).name, Path(resume), state["global_step"], None)
    raise RunError(
        f"resume: no complete checkpoint {resume!r} in {run.checkpoints_dir} "
        f"(have: {', '.join(c.name for c in saved) or 'none'}); give {RESUME_VALUES}"
    )


def every_rank_saved(checkpoint: Checkpoint, world_size: int | None) -> bool:
    """Whether each of the ``world_size`` processes that wrote the checkpoint saved its RNG state
    (rng_state_<rank>.pth): rank 0 writes trainer_state.json without waiting for the others."""
    return (
        not world_size
        or world_size == 1
        or all((checkpoint.path / f"rng_state_{rank}.pth").exists() for rank in range(world_size))
    )


def check_world_size(checkpoint: Checkpoint, launched: int | None) -> None:
    """A checkpoint resumes on as many processes as wrote it (the run's recorded launch, else its
    RNG files: rng_state.pth for one process, one rng_state_<rank>.pth each for several). On
    another count the global batch, each process's share of the data and the RNG states would all
    change: the resumed run would not continue the interrupted one."""
    wrote = launched or len(list(checkpoint.path.glob("rng_state_*.pth"))) or 1
    now = distributed.world_size()
    if not every_rank_saved(checkpoint, wrote):
        raise RunError(
            f"{checkpoint.name} was cut off mid-save (a process's RNG state is missing): "
            "resume from an earlier checkpoint"
        )
    if wrote != now:
        raise RunError(
            f"{checkpoint.name} was written by {wrote} process{'es' if wrote > 1 else ''}, and this "
            f"train stage runs on {now}: resume it on {wrote} "
            + (f"(torchrun --nproc_per_node {wrote} -m kit.training RECIPE RUN)" if wrote > 1 else "(no torchrun)")
            + ", or start a new run with prepare"
        )


def parse_resume(resume) -> bool | str:
    """``resume`` as True, False, "auto" or a checkpoint's name or path; papermill's -p passes strings."""
    if resume is None:
        return False
    if isinstance(resume, str) and resume.strip().lower() in ("true", "false", ""):
        return resume.strip().lower() == "true"
    if isinstance(resume, bool):
        return resume
    if isinstance(resume, str):
        return resume.strip()
    raise RunError(f"resume: expected {RESUME_VALUES}, got {type(resume).__name__} ({resume!r})")


def set_aside_steps_after(metrics_path: Path, step: int) -> Path | None:
    """Before resuming from ``step``: the records a killed process wrote after it move to
    ``metrics.before-resume-<time>.jsonl`` (kept, not lost), so metrics.jsonl holds each step once."""
    if not metrics_path.exists():
        return None
    lines = metrics_path.read_text(encoding="utf-8").splitlines(keepends=True)
    is_later = [json.loads(line).get("step", 0) > step for line in lines]
    if not any(is_later):
        return None
    aside = metrics_path.with_name(f"metrics.before-resume-{new_run_id()}.jsonl")
    aside.write_text("".join(line for line, later in zip(lines, is_later) if later), encoding="utf-8")
    write_text_atomic(metrics_path, "".join(line for line, later in zip(lines, is_later) if not later))
    return aside


def purge_tensorboard_after(tensorboard_dir: Path, step: int) -> None:
    """Before resuming from ``step``: TensorBoard's own restart marker (a session START at step+1),
    so TensorBoard shows the resumed run's steps after ``step`` in place of the killed process's.
    The killed process's event file is left as it was."""
    from torch.utils.tensorboard import SummaryWriter

    SummaryWriter(str(tensorboard_dir), purge_step=step + 1).close()
