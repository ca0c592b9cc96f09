import json
import time

import pytest

from kit.recipes import load_recipe
from kit.runs import RunError, create_run, find_run, list_runs


@pytest.fixture
def recipe():
    return load_recipe("tiny-demo")[1]


def test_create_run_writes_recipe_and_manifest(runs_dir, recipe):
    run = create_run("tiny-demo", recipe, "r1")
    assert run.path == runs_dir / "tiny-demo" / "r1"
    assert run.recipe() == recipe
    manifest = json.loads(run.manifest_path.read_text())
    assert manifest["run_id"] == "r1" and manifest["seed"] == {"data": 3407, "train": 3407}
    assert manifest["libraries"]["transformers"] == "5.17.0"


def test_runs_never_overwrite_each_other(runs_dir, recipe):
    run = create_run("tiny-demo", recipe, "same")
    (run.path / "marker").write_text("kept")
    with pytest.raises(RunError, match="already exists"):
        create_run("tiny-demo", recipe, "same")
    assert (run.path / "marker").read_text() == "kept"
    a, b = create_run("tiny-demo", recipe), create_run("tiny-demo", recipe)
    assert a.path != b.path


def test_find_run_newest_named_and_missing(runs_dir, recipe):
    with pytest.raises(RunError, match="no runs yet for recipe 'tiny-demo'.*prepare"):
        find_run("tiny-demo")
    create_run("tiny-demo", recipe, "zzz-first")
    time.sleep(1.1)  # manifest 'created' has one-second resolution
    second = create_run("tiny-demo", recipe, "aaa-second")
    assert find_run("tiny-demo").path == second.path  # newest by creation, not by name
    assert find_run("tiny-demo", "zzz-first").path.name == "zzz-first"
    assert find_run("tiny-demo", str(second.path)).path == second.path
    with pytest.raises(RunError, match=r"no run 'nope' for recipe 'tiny-demo' \(runs: .*zzz-first"):
        find_run("tiny-demo", "nope")
    assert [r.path.name for r in list_runs("tiny-demo")] == ["zzz-first", "aaa-second"]


def test_later_overrides_are_validated_recorded_and_frozen_sections_refused(runs_dir, recipe):
    run = create_run("tiny-demo", recipe, "r")
    updated = run.recipe({"train.max_steps": 3}, stage="train")
    assert updated["train"]["max_steps"] == 3
    assert run.recipe()["train"]["max_steps"] == 3  # written back into recipe.yaml
    assert run.manifest()["overrides"]["train"] == {"train": {"max_steps": 3}}
    with pytest.raises(RunError, match="data must be given to prepare"):
        run.recipe({"data.seed": 1}, stage="train")
    with pytest.raises(ValueError, match="train.max_stepz; did you mean train.max_steps"):
        run.recipe({"train.max_stepz": 1}, stage="train")


def test_record_stage(runs_dir, recipe):
    run = create_run("tiny-demo", recipe, "r")
    run.record_stage("train", time.time() - 2.0, device="CPU")
    stage = run.manifest()["stages"]["train"]
    assert 2.0 <= stage["wall_s"] < 10 and stage["device"] == "CPU"
    assert run.manifest()["run_id"] == "r"  # merged, not replaced
