"""``python -m kit.pipeline`` as a newcomer types it: which run the stages work on, where the
overrides go, and one-line errors before any notebook runs."""

import json

import pytest
import yaml

from kit.recipes import load_recipe
from kit.runs import create_run

from tests.conftest import pipeline

# A train stage of seconds: 2 steps, one evaluation and one checkpoint, no live samples.
QUICK_TRAIN = [
    "-o",
    "train.max_steps=2",
    "-o",
    "train.eval_steps=2",
    "-o",
    "train.save_steps=2",
    "-o",
    "train.logging_steps=1",
    "-o",
    "eval.live_samples=0",
]


def manifest(run):
    return json.loads((run / "manifest.json").read_text())


def failure_line(result) -> str:
    """The pipeline's error: exactly one line on stderr, no traceback."""
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("[pipeline] failed: "), result.stderr[-2000:]
    return lines[0]


@pytest.mark.slow
def test_later_stages_continue_the_newest_run_with_their_overrides(runs_dir):
    """prepare, then ``--stages train -o ...`` without --run: train works on the newest run and
    applies the overrides, writing them into the run's recipe.yaml (which later stages read)."""
    older = create_run("tiny-demo", load_recipe("tiny-demo")[1], "older")
    # 'bench' is also a folder of the project, the pipeline's working directory: still a run id.
    result = pipeline(runs_dir, "tiny-demo", "--stages", "prepare", "--run", "bench", "-o", "eval.num_prompts=2")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    run = runs_dir / "tiny-demo" / "bench"
    assert (run / "notebooks" / "prepare.ipynb").exists()
    assert manifest(run)["overrides"] == {"prepare": {"eval": {"num_prompts": 2}}}

    result = pipeline(runs_dir, "tiny-demo", "--stages", "train", *QUICK_TRAIN)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    recipe = yaml.safe_load((run / "recipe.yaml").read_text())
    assert recipe["train"]["max_steps"] == 2 and recipe["eval"]["num_prompts"] == 2
    assert manifest(run)["overrides"] == {
        "prepare": {"eval": {"num_prompts": 2}},
        "train": {
            "train": {"max_steps": 2, "eval_steps": 2, "save_steps": 2, "logging_steps": 1},
            "eval": {"live_samples": 0},
        },
    }
    assert set(manifest(run)["stages"]) == {"prepare", "train"} and manifest(run)["train"]["global_step"] == 2
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert max(steps) == 2  # trained 2 steps, not the recipe's 200
    assert [p.name for p in (run / "checkpoints").glob("checkpoint-*")] == ["checkpoint-2"]
    assert sorted(p.name for p in (run / "notebooks").iterdir()) == ["prepare.ipynb", "train.ipynb"]
    assert not older.notebooks_dir.exists() and "overrides" not in older.manifest()

    # Stages run again on this run: prepare is refused and writes nothing into the run it did not
    # create (not even its failed notebook); train (resume: auto) reports the run trained and leaves
    # it as it is, its earlier notebook kept as a replaced copy. Nothing is written over.
    good = {p.name: p.read_bytes() for p in (run / "notebooks").iterdir()}
    trained, before = manifest(run)["train"], manifest(run)
    refused = pipeline(runs_dir, "tiny-demo", "--stages", "prepare", "--run", "bench")
    assert refused.returncode == 1 and "already exists" in refused.stderr, refused.stderr[-2000:]
    assert {p.name for p in (run / "notebooks").iterdir()} == set(good) and manifest(run) == before
    again = pipeline(runs_dir, "tiny-demo", "--stages", "train", "--run", "bench")
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert manifest(run)["train"] == trained
    kept = {p.name: p.read_bytes() for p in (run / "notebooks").iterdir()}
    assert kept["prepare.ipynb"] == good["prepare.ipynb"]
    assert not [name for name in kept if ".failed-" in name]
    assert [kept[name] for name in kept if name.startswith("train.replaced-")] == [good["train.ipynb"]]
    assert b"Already trained" in kept["train.ipynb"]


def test_overrides_that_a_later_stage_cannot_take_fail_before_any_notebook(runs_dir):
    run = create_run("tiny-demo", load_recipe("tiny-demo")[1], "bench")
    recipe_before = run.recipe_path.read_text()
    result = pipeline(
        runs_dir,
        "tiny-demo",
        "--stages",
        "train,evaluate",
        "--run",
        "bench",
        "-o",
        "train.max_steps=2",
        "-o",
        "model.max_seq_length=128",
    )
    assert failure_line(result).startswith("[pipeline] failed: RunError: overrides of model must be given to prepare")
    assert run.recipe_path.read_text() == recipe_before and "overrides" not in run.manifest()
    assert not run.notebooks_dir.exists()
    # A key the schema does not know fails the same way, naming the nearest one.
    result = pipeline(runs_dir, "tiny-demo", "--stages", "train", "-o", "train.max_step=2")
    assert "unknown key train.max_step; did you mean train.max_steps?" in failure_line(result)


def test_later_stages_need_an_existing_run(runs_dir):
    result = pipeline(runs_dir, "tiny-demo", "--stages", "train")
    assert "RunError: no runs yet for recipe 'tiny-demo'" in failure_line(result)
    create_run("tiny-demo", load_recipe("tiny-demo")[1], "mine")
    result = pipeline(runs_dir, "tiny-demo", "--stages", "evaluate", "--run", "bench")
    assert "RunError: no run 'bench' for recipe 'tiny-demo' (runs: mine)" in failure_line(result)
    result = pipeline(runs_dir, "tiny-demo", "--stages", "evaluate", "--run", "bench/")
    assert "RunError: bench/ is not a run directory (no recipe.yaml)" in failure_line(result)
