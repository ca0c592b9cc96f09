import json

import pytest

from kit.checkpoints import find_checkpoint, list_checkpoints
from kit.recipes import load_recipe
from kit.runs import RunError, create_run


def fake_checkpoint(run, step, eval_losses):
    """A checkpoint directory with a trainer_state.json in the Trainer's format."""
    path = run.checkpoints_dir / f"checkpoint-{step}"
    path.mkdir(parents=True)
    history = [{"step": s, "eval_loss": loss} for s, loss in eval_losses.items()] + [{"step": step, "loss": 9.0}]
    (path / "trainer_state.json").write_text(json.dumps({"global_step": step, "log_history": history}))
    return path


@pytest.fixture
def run(runs_dir):
    return create_run("tiny-demo", load_recipe("tiny-demo")[1], "r")


def test_list_and_pick(run):
    fake_checkpoint(run, 100, {50: 5.0, 100: 3.0})
    fake_checkpoint(run, 200, {50: 5.0, 100: 3.0, 150: 3.5, 200: 3.2})
    fake_checkpoint(run, 300, {300: 3.1})
    (run.checkpoints_dir / "checkpoint-x").mkdir()  # not a checkpoint: ignored
    found = list_checkpoints(run)
    assert [(c.name, c.step, c.eval_loss) for c in found] == [
        ("checkpoint-100", 100, 3.0),
        ("checkpoint-200", 200, 3.2),
        ("checkpoint-300", 300, 3.1),
    ]
    assert find_checkpoint(run, "best").name == "checkpoint-100"
    assert find_checkpoint(run, "latest").name == "checkpoint-300"
    assert find_checkpoint(run, "checkpoint-200").step == 200


def test_final_adapter_is_listed_last(run):
    fake_checkpoint(run, 100, {100: 3.0})
    run.adapter_dir.mkdir()
    run.update_manifest({"train": {"global_step": 120, "eval_loss": 2.5}})
    assert [c.name for c in list_checkpoints(run)] == ["checkpoint-100", "final"]
    assert find_checkpoint(run, "latest").name == "final"
    assert find_checkpoint(run, "best").name == "final"


def test_errors_say_what_exists_and_what_to_run(run):
    with pytest.raises(RunError, match="no adapter/: run the train notebook"):
        find_checkpoint(run, "final")
    with pytest.raises(RunError, match="no adapter or checkpoint yet: run the train notebook"):
        find_checkpoint(run, "latest")
    fake_checkpoint(run, 100, {})
    with pytest.raises(RunError, match="no checkpoint 'checkpoint-7'.*one of: checkpoint-100"):
        find_checkpoint(run, "checkpoint-7")
    with pytest.raises(RunError, match="no checkpoint has an eval loss"):
        find_checkpoint(run, "best")
