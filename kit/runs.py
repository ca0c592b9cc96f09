"""Run directories: ``runs/<recipe>/<run-id>/`` holds everything one run produces.

A run is created by prepare and found again by the later notebooks (the newest run of the recipe
unless one is named). ``manifest.json`` records versions, commit, seed, data hash, device and each
stage's wall time; it is rewritten atomically. Run ids never collide: creation uses mkdir, which
fails if the directory exists.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import subprocess
import time
from importlib import metadata
from pathlib import Path

from kit import distributed, recipes
from kit.files import new_run_id, sha256_file, write_json, write_text_atomic
from kit.paths import PROJECT_ROOT, name_refusal, runs_root

LIBRARIES = (
    "unsloth",
    "unsloth_zoo",
    "torch",
    "transformers",
    "trl",
    "peft",
    "datasets",
    "accelerate",
    "bitsandbytes",
    "papermill",
)
# Sections that prepare has consumed: changing them afterwards would silently mismatch the data.
FROZEN_AFTER_PREPARE = ("model", "data")


class RunError(ValueError):
    pass


class Run:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.recipe_name = self.path.parent.name

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"

    # Layout -----------------------------------------------------------------------------------
    data_dir = property(lambda self: self.path / "data")
    checkpoints_dir = property(lambda self: self.path / "checkpoints")
    adapter_dir = property(lambda self: self.path / "adapter")
    merged_dir = property(lambda self: self.path / "merged")
    notebooks_dir = property(lambda self: self.path / "notebooks")
    manifest_path = property(lambda self: self.path / "manifest.json")
    recipe_path = property(lambda self: self.path / "recipe.yaml")
    metrics_path = property(lambda self: self.path / "metrics.jsonl")

    # Recipe -----------------------------------------------------------------------------------
    def config(self) -> recipes.Recipe:
        """The run's resolved recipe, as recipe.yaml holds it (read only)."""
        if not self.recipe_path.exists():
            raise RunError(f"{self.path}: no recipe.yaml; run the prepare notebook first")
        return recipes.resolve(recipes.read_yaml(self.recipe_path), str(self.recipe_path))

    def apply_overrides(self, overrides: dict | str | None, stage: str | None = None) -> recipes.Recipe:
        """The run's resolved recipe with a later notebook's overrides (``stage``'s), validated and refused
        for sections prepare has consumed, and written back into recipe.yaml (and the manifest's
        ``overrides``) so the file stays the truth. No overrides: ``config()``, nothing written."""
        config = self.config()
        changes = check_later_overrides(overrides)
        if not changes:
            return config
        updated = recipes.apply_overrides(config, changes, where=f"{self.recipe_path} with overrides")
        if distributed.is_main():  # with several processes, each applies them; rank 0 writes them
            self.write_recipe(updated)
            self.update_manifest({"overrides": {stage or "unknown": changes}})
        return updated

    def write_recipe(self, config: recipes.Recipe) -> None:
        write_text_atomic(self.recipe_path, recipes.dump(config))

    # Manifest ---------------------------------------------------------------------------------
    def manifest(self) -> dict:
        if not self.manifest_path.exists():
            return {}
        return json.loads(self.manifest_path.read_text(encoding="utf-8"))

    def update_manifest(self, update: dict) -> dict:
        manifest = recipes.deep_merge(self.manifest(), update)
        write_json(self.manifest_path, manifest)
        return manifest

    def record_stage(self, name: str, started: float, **extra) -> None:
        """Record a notebook stage's wall time (from ``started``, a time.time()) and extras."""
        self.update_manifest(
            {"stages": {name: {"finished": _now(), "wall_s": round(time.time() - started, 2), **extra}}}
        )


def check_later_overrides(overrides: dict | str | None) -> dict:
    """``overrides`` as a nested dict, refused if they touch a section prepare has consumed."""
    changes = recipes.parse_overrides(overrides)
    frozen = [k for k in changes if k in FROZEN_AFTER_PREPARE]
    if "method" in (changes.get("train") or {}):  # prepare wrote conversations or pairs for it
        frozen.append("train.method")
    if frozen:
        raise RunError(
            f"overrides of {', '.join(frozen)} must be given to prepare (they shape the data); "
            f"start a new run with prepare"
        )
    return changes


def _now() -> str:
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


def library_versions() -> dict:
    out = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_commit() -> str | None:
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=PROJECT_ROOT, capture_output=True, text=True
        ).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return None


def create_run(
    recipe_name: str,
    config: recipes.Recipe,
    run_id: str | None = None,
    root: Path | None = None,
    overrides: dict | str | None = None,
) -> Run:
    """Make a new, empty run directory and write the resolved recipe and the manifest's header
    (with the ``overrides`` prepare applied, if any). Fails if ``run_id`` exists: a run is never
    reused or overwritten."""
    recipe_name = recipes.recipe_name(recipe_name)
    run_id = check_run_id(run_id or new_run_id())
    parent = (root or runs_root()) / recipe_name
    path = parent / run_id
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # a read-only runs root, or a file where the recipe's folder goes
        raise RunError(_cannot_write(path, e)) from None
    try:
        path.mkdir()
        run = Run(path)
        run.write_recipe(config)
        run.update_manifest(
            {
                "recipe": recipe_name,
                "run_id": path.name,
                "location": str(path),
                "created": _now(),
                "git_commit": git_commit(),
                "libraries": library_versions(),
                "seed": {"data": config.data.seed, "train": config.train.seed},
            }
        )
    except FileExistsError:
        raise RunError(f"run {path} already exists; runs are never overwritten (choose another run id)") from None
    except OSError as e:  # a read-only recipe folder, a full disk: one line, not a traceback
        raise RunError(_cannot_write(path, e)) from None
    changes = recipes.parse_overrides(overrides)
    if changes:
        run.update_manifest({"overrides": {"prepare": changes}})  # as later stages record theirs
    return run


def _cannot_write(path: Path, e: OSError) -> str:
    return (
        f"run {path} cannot be written ({e.strerror or e}: {e.filename}); "
        "set runs_dir (or KIT_RUNS_DIR) to a folder you can write"
    )


def check_run_id(run_id: str) -> str:
    """``run_id`` if it can be one folder under ``<runs root>/<recipe>/`` (kit.paths.name_problem), else RunError."""
    refusal = name_refusal("run id", run_id)
    if refusal:
        raise RunError(refusal)
    return run_id


def list_runs(recipe_name: str, root: Path | None = None) -> list[Run]:
    parent = (root or runs_root()) / recipes.recipe_name(recipe_name)
    if not parent.is_dir():
        return []
    runs = [Run(p) for p in parent.iterdir() if p.is_dir() and (p / "recipe.yaml").exists()]
    return sorted(runs, key=lambda r: (r.manifest().get("created", ""), r.path.name))  # oldest first


def find_run(recipe: str, run: str | Path | None = None, root: Path | None = None) -> Run:
    """The named run, or the newest run of the recipe (a name, or the YAML path prepare was given).
    ``run`` is a run id under ``<runs root>/<recipe>/`` unless it is a path (a Path, absolute, or
    containing a separator): a bare id never resolves against the current directory (``bench`` is
    a run id, not ./bench). A run directory prepared from another recipe is refused."""
    recipe_name = recipes.recipe_name(recipe)
    if run and is_path(run):
        path = Path(run).expanduser()
        if not (path / "recipe.yaml").exists():
            raise RunError(f"{run} is not a run directory (no recipe.yaml); give a run id or a run's directory")
        found = Run(path.resolve())
        prepared_from = found.manifest().get("recipe", found.recipe_name)
        if prepared_from != recipe_name:
            raise RunError(
                f"run {found.path} was prepared from recipe {prepared_from!r}, not {recipe_name!r}: "
                f"set recipe to {prepared_from!r}, or give a run of {recipe_name!r}"
            )
        return found
    if run:
        candidate = (root or runs_root()) / recipe_name / check_run_id(str(run))
        if not (candidate / "recipe.yaml").exists():
            known = ", ".join(r.path.name for r in list_runs(recipe_name, root)) or "none"
            raise RunError(f"no run {run!r} for recipe {recipe_name!r} (runs: {known})")
        return Run(candidate)
    runs = list_runs(recipe_name, root)
    if not runs:
        raise RunError(
            f"no runs yet for recipe {recipe_name!r} under {(root or runs_root())}; run the prepare notebook first"
        )
    return runs[-1]


# adapter_config.json's keys for the recipe's lora settings: an earlier adapter must match them.
LORA_KEYS = {"r": "r", "alpha": "lora_alpha", "use_rslora": "use_rslora", "target_modules": "target_modules"}


def find_adapter(config: recipes.Recipe, root: Path | None = None) -> tuple[Path, dict]:
    """``train.init_adapter``: an earlier run's adapter, named by its recipe (the newest run),
    ``recipe/run-id``, a run's directory or an adapter directory; and what the manifest records of it
    (what was given, the adapter's directory and its weights' sha256, the run). Refused in one line:
    a run not trained yet, a run of another base model than ``config``'s, an adapter whose rank,
    alpha, rsLoRA or target modules are not ``config``'s ``lora.*``."""
    ref = config.train.init_adapter
    where = f"train.init_adapter: {ref}"
    path, run = Path(ref).expanduser(), None
    if (path / "adapter_config.json").exists():
        adapter = path
    else:
        if (path / "recipe.yaml").exists():
            run = Run(path.resolve())
        else:
            recipe_name, _, run_id = str(ref).partition("/")
            try:
                run = find_run(recipe_name, run_id or None, root)
            except (RunError, recipes.RecipeError) as e:
                raise RunError(f"{where}: {e}") from None
        adapter = run.adapter_dir
        if not (adapter / "adapter_config.json").exists():
            raise RunError(f"{where}: run {run.path} has no adapter yet: train it first, or name a trained run")
        base = run.config().model.id
        if base != config.model.id:
            raise RunError(
                f"{where}: run {run.path} trained an adapter for {base!r}, and this recipe's model.id is "
                f"{config.model.id!r}: an adapter fits the base model it was trained on"
            )
    weights = adapter / "adapter_model.safetensors"
    if not weights.exists():
        raise RunError(f"{where}: {adapter} has no adapter_model.safetensors")
    saved, wanted = json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8")), config.lora.to_dict()
    for key, saved_key in LORA_KEYS.items():
        mine, theirs = wanted[key], saved.get(saved_key)
        if key == "target_modules":
            mine, theirs = sorted(mine), sorted(theirs or [])
        if mine != theirs:
            raise RunError(
                f"{where}: the adapter has {saved_key} {theirs}, and this recipe's lora.{key} is {mine}: set "
                f"lora.{key} to the adapter's"
            )
    record = {"given": str(ref), "adapter": str(adapter.resolve()), "sha256": sha256_file(weights)}
    if run is not None:
        record |= {"recipe": run.recipe_name, "run": run.path.name}
    return adapter, record


def is_path(run: str | Path) -> bool:
    """Whether ``run`` names a run's directory rather than a run id."""
    text = str(run)
    return isinstance(run, Path) or os.path.isabs(text) or "/" in text or os.sep in text
