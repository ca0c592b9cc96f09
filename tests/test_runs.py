import json
import os
import time

import pytest

from kit.paths import PROJECT_ROOT
from kit.recipes import load_recipe
from kit.runs import RunError, check_later_overrides, create_run, find_run, list_runs


@pytest.fixture
def recipe():
    return load_recipe("tiny-demo")[1]


def test_create_run_writes_recipe_and_manifest(runs_dir, recipe):
    run = create_run("tiny-demo", recipe, "r1")
    assert run.path == runs_dir / "tiny-demo" / "r1"
    assert run.config() == recipe
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
    updated = run.apply_overrides({"train.max_steps": 3}, stage="train")
    assert updated.train.max_steps == 3
    assert run.config().train.max_steps == 3  # written back into recipe.yaml
    assert run.manifest()["overrides"]["train"] == {"train": {"max_steps": 3}}
    with pytest.raises(RunError, match="data must be given to prepare"):
        run.apply_overrides({"data.seed": 1}, stage="train")
    with pytest.raises(ValueError, match="train.max_stepz; did you mean train.max_steps"):
        run.apply_overrides({"train.max_stepz": 1}, stage="train")


def test_record_stage(runs_dir, recipe):
    run = create_run("tiny-demo", recipe, "r")
    run.record_stage("train", time.time() - 2.0, device="CPU")
    stage = run.manifest()["stages"]["train"]
    assert 2.0 <= stage["wall_s"] < 10 and stage["device"] == "CPU"
    assert run.manifest()["run_id"] == "r"  # merged, not replaced


def test_a_run_id_is_never_a_path_in_the_current_directory(runs_dir, recipe, monkeypatch):
    monkeypatch.chdir(PROJECT_ROOT)
    assert (PROJECT_ROOT / "bench").is_dir()  # the project's bench/ folder must not shadow run 'bench'
    with pytest.raises(RunError, match=r"no run 'bench' for recipe 'tiny-demo' \(runs: none\)"):
        find_run("tiny-demo", "bench")
    run = create_run("tiny-demo", recipe, "bench")
    assert find_run("tiny-demo", "bench").path == runs_dir / "tiny-demo" / "bench"
    # With a separator it is a path, and it must be a run directory.
    with pytest.raises(RunError, match=r"^\./bench is not a run directory \(no recipe.yaml\)"):
        find_run("tiny-demo", "./bench")
    monkeypatch.chdir(runs_dir)
    assert find_run("tiny-demo", "tiny-demo/bench").path == run.path
    assert find_run("tiny-demo", run.path).path == run.path


def test_prepare_overrides_are_recorded_like_later_ones(runs_dir, recipe):
    run = create_run("tiny-demo", recipe, "r", overrides={"train.max_steps": 5, "data": {"seed": 1}})
    assert run.manifest()["overrides"] == {"prepare": {"train": {"max_steps": 5}, "data": {"seed": 1}}}
    run.apply_overrides({"eval.num_prompts": 2}, stage="evaluate")
    assert run.manifest()["overrides"] == {
        "prepare": {"train": {"max_steps": 5}, "data": {"seed": 1}},
        "evaluate": {"eval": {"num_prompts": 2}},
    }
    assert "overrides" not in create_run("tiny-demo", recipe, "plain").manifest()


def test_later_overrides_refuse_model_and_data_before_touching_the_run():
    assert check_later_overrides({"train.max_steps": 2}) == {"train": {"max_steps": 2}}
    with pytest.raises(RunError, match=r"^overrides of model, data must be given to prepare"):
        check_later_overrides({"model.max_seq_length": 128, "data.seed": 1, "train.max_steps": 2})


def test_a_run_is_found_by_recipe_name_or_path_and_another_recipes_run_is_refused(runs_dir, recipe):
    run = create_run("tiny-demo", recipe, "r")
    assert run.manifest()["location"] == str(run.path)  # where the run lives (a Drive folder, Kaggle's output)
    yaml_path = str(PROJECT_ROOT / "recipes" / "tiny-demo.yaml")
    assert find_run(yaml_path).path == find_run("tiny-demo").path == run.path  # as prepare was given it
    assert find_run(yaml_path, "r").path == run.path
    with pytest.raises(RunError) as e:
        find_run("smollm2-shop-demo", str(run.path))
    assert str(e.value) == (
        f"run {run.path} was prepared from recipe 'tiny-demo', not 'smollm2-shop-demo': "
        "set recipe to 'tiny-demo', or give a run of 'smollm2-shop-demo'"
    )


SAFE = "; use letters, digits, '-', '_' or '.'"


@pytest.mark.parametrize(
    "run_id, message",
    [
        ("..", "run id '..' cannot name a folder: it starts with a dot" + SAFE),
        (".", "run id '.' cannot name a folder: it starts with a dot" + SAFE),
        (".hidden", "run id '.hidden' cannot name a folder: it starts with a dot" + SAFE),
        ("a\x00b", "run id 'a\\x00b' cannot name a folder: it holds a control character" + SAFE),
        ("a\nb", "run id 'a\\nb' cannot name a folder: it holds a control character" + SAFE),
        ("a\\b", "run id 'a\\\\b' cannot name a folder: it holds a path separator" + SAFE),
        (
            "r" * 300,
            f"run id '{'r' * 60}...' cannot name a folder: it is 300 characters long, at most 100 are allowed" + SAFE,
        ),
    ],
)
def test_a_run_id_that_is_not_one_folder_name_is_refused_in_one_line(runs_dir, recipe, run_id, message):
    with pytest.raises(RunError) as e:
        create_run("tiny-demo", recipe, run_id)
    assert str(e.value) == message
    with pytest.raises(RunError) as e:
        find_run("tiny-demo", run_id)
    assert str(e.value) == message
    assert not runs_dir.exists() or not any(runs_dir.rglob("*"))  # nothing written, anywhere
    create_run("tiny-demo", recipe, "r" * 100)  # the limit itself is a run id


def test_a_recipe_file_whose_name_is_not_one_folder_name_is_refused(tmp_path, runs_dir, recipe):
    from kit.recipes import RecipeError

    path = tmp_path / "...yaml"  # its stem, "..", put the run at <runs root>/../<run>
    path.write_text((PROJECT_ROOT / "recipes" / "tiny-demo.yaml").read_text())
    message = f"recipe name '..' cannot name a folder: it starts with a dot{SAFE} (from {path})"
    with pytest.raises(RecipeError) as e:
        load_recipe(str(path))
    assert str(e.value) == message
    with pytest.raises(RecipeError) as e:
        find_run(str(path))
    assert str(e.value) == message
    with pytest.raises(RecipeError, match=r"^recipe name '\.\.' cannot name a folder"):
        create_run("..", recipe, "r")
    assert not runs_dir.exists() and not (runs_dir.parent / "r").exists()


def test_a_prepare_with_a_bad_run_id_is_refused_before_reading_data(runs_dir, monkeypatch):
    from kit.data import prepare as prepare_module

    monkeypatch.setattr(prepare_module, "load_conversations", lambda *a, **k: pytest.fail("data was read"))
    with pytest.raises(RunError, match=r"^run id '\.\.' cannot name a folder"):
        prepare_module.prepare("tiny-demo", run_id="..")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through chmod: a read-only folder cannot be shown as root")
def test_a_runs_root_that_cannot_be_written_is_one_line(tmp_path, recipe):
    root = tmp_path / "readonly"
    root.mkdir()
    root.chmod(0o500)
    try:
        with pytest.raises(RunError) as e:
            create_run("tiny-demo", recipe, "r", root=root)
        assert str(e.value) == (
            f"run {root / 'tiny-demo' / 'r'} cannot be written (Permission denied: {root / 'tiny-demo'}); "
            "set runs_dir (or KIT_RUNS_DIR) to a folder you can write"
        )
    finally:
        root.chmod(0o700)


def test_a_runs_folder_that_cannot_be_made_is_one_line(tmp_path, recipe):
    """What root can be refused, too: the recipe's folder under the runs root is a file."""
    root = tmp_path / "runs"
    root.mkdir()
    (root / "tiny-demo").write_text("not a folder")
    with pytest.raises(RunError) as e:
        create_run("tiny-demo", recipe, "r", root=root)
    assert str(e.value) == (
        f"run {root / 'tiny-demo' / 'r'} cannot be written (File exists: {root / 'tiny-demo'}); "
        "set runs_dir (or KIT_RUNS_DIR) to a folder you can write"
    )
