"""Run the four notebooks for a recipe with papermill: prepare → train → evaluate → merge.

    python -m kit.pipeline tiny-demo [-o train.max_steps=50] [--run ID] [--stages train,evaluate]

Executed notebooks are saved into the run directory (``notebooks/``), next to everything else.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path


from kit.paths import NOTEBOOKS_DIR
from kit.recipes import RecipeError, load_recipe, override_argument, override_arguments
from kit.runs import check_later_overrides, check_run_id, find_run, is_path
from kit.files import keep_replaced, new_run_id

STAGES = ("prepare", "train", "evaluate", "merge")


def run_notebook(stage: str, out: Path, parameters: dict) -> None:
    import papermill

    papermill.execute_notebook(
        str(NOTEBOOKS_DIR / f"{stage}.ipynb"),
        str(out),
        parameters=parameters,
        cwd=str(NOTEBOOKS_DIR),
        kernel_name="python3",
        progress_bar=True,
    )


def run_pipeline(
    recipe: str, overrides: dict | None = None, run_id: str | None = None, stages: tuple[str, ...] = STAGES
) -> Path:
    name, _ = load_recipe(recipe, overrides)  # fail fast on a bad recipe or override
    run_id, params = plan(name, stages, overrides or {}, run_id)
    # A stage that refuses writes nothing into a run it did not create: prepare on an existing run
    # (refused, since runs are never reused) leaves that run as it was, its failed notebook included.
    existed = "prepare" in stages and _exists(name, run_id)
    timings = {}
    for stage in stages:
        started = time.time()
        # prepare creates the run directory, so each executed copy is written to a temporary
        # place first and moved into runs/<recipe>/<run>/notebooks/ (failed ones too, to debug).
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / f"{stage}.ipynb"
            try:
                run_notebook(stage, out, {"recipe": recipe, "run": run_id, **params[stage]})
            except BaseException:
                if not (stage == "prepare" and existed):
                    _keep_executed(name, run_id, out, failed=True)
                raise
            dest = _keep_executed(name, run_id, out, failed=False)
        timings[stage] = round(time.time() - started, 1)
        print(f"[pipeline] {stage}: {timings[stage]} s → {dest}", flush=True)
    run = find_run(name, run_id)
    run.update_manifest({"pipeline_wall_s": timings})
    return run.path


def plan(recipe_name: str, stages: tuple[str, ...], overrides: dict, run_id: str | None) -> tuple[str, dict]:
    """The run the stages work on and each stage's extra parameters, decided before any notebook
    runs. With prepare, a new run (``run_id`` or a timestamp) and all overrides go to prepare,
    which writes the resolved recipe. Without it, an existing run (``run_id``, else the newest of
    the recipe) and the overrides go to the first stage: it writes them into the run's recipe.yaml,
    which the stages after it read. Overrides of model or data are refused here: they shaped the
    prepared data."""
    params: dict = {stage: {} for stage in stages}
    if "prepare" in stages:
        first, run_id = "prepare", check_run_id(run_id or new_run_id())
    else:
        check_later_overrides(overrides)
        run = find_run(recipe_name, run_id)
        # A path goes to the notebooks absolute: they run in notebooks/, not here.
        first, run_id = stages[0], str(run.path) if run_id and is_path(run_id) else run.path.name
    if overrides:
        params[first]["overrides"] = overrides
    return run_id, params


def _exists(recipe_name: str, run_id: str) -> bool:
    try:
        find_run(recipe_name, run_id)
    except ValueError:
        return False
    return True


def _keep_executed(recipe_name: str, run_id: str, out: Path, failed: bool) -> Path | None:
    """Keep an executed notebook in the run, never over another: a failed attempt is kept as
    ``<stage>.failed-<time>.ipynb``; a good one is ``<stage>.ipynb``, and an earlier good one it
    replaces (a stage run again) is kept as ``<stage>.replaced-<time>.ipynb``."""
    try:
        run = find_run(recipe_name, run_id)
    except ValueError:
        return None  # prepare failed before creating the run
    if not out.exists():
        return None
    run.notebooks_dir.mkdir(exist_ok=True)
    dest = run.notebooks_dir / out.name
    if failed:
        dest = dest.with_name(f"{out.stem}.failed-{new_run_id()}.ipynb")
    else:
        keep_replaced(dest)
    return Path(shutil.move(str(out), dest))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kit.pipeline", description=__doc__.split("\n\n")[0])
    parser.add_argument("recipe", help="recipe name in recipes/ or a YAML path")
    parser.add_argument(
        "-o",
        "--override",
        action="append",
        type=override_argument,
        default=[],
        help="recipe override KEY=VALUE (dotted key, YAML value); repeatable",
    )
    parser.add_argument(
        "--run",
        help="run id (or a run's directory): with prepare, the new run's id (default: a "
        "timestamp); without it, the run to continue (default: the recipe's newest)",
    )
    parser.add_argument("--stages", default=",".join(STAGES), help="comma-separated subset of " + ",".join(STAGES))
    args = parser.parse_args(argv)
    try:
        overrides = override_arguments(args.override)
    except RecipeError as e:
        parser.error(f"argument -o/--override: {e}")  # one line, exit status 2, as argparse's own errors
    requested = [s for s in args.stages.split(",") if s]
    unknown = [s for s in requested if s not in STAGES]
    if unknown or not requested:
        parser.error(f"--stages {args.stages!r}: choose from {', '.join(STAGES)}")
    stages = tuple(s for s in STAGES if s in requested)  # always in pipeline order
    try:
        path = run_pipeline(args.recipe, overrides, args.run, stages)
    except Exception as e:
        # A notebook's error arrives as PapermillExecutionError carrying the cell's exception;
        # show that one line (the executed notebook in the run has the full traceback).
        message = f"{e.ename}: {e.evalue}" if hasattr(e, "ename") else f"{type(e).__name__}: {e}"
        print(f"[pipeline] failed: {message}", file=sys.stderr)
        return 1
    print(f"[pipeline] done. Run directory: {path}")
    if (path / "report.md").exists():
        print(f"[pipeline] evaluation report: {path / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
