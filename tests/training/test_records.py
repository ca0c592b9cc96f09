"""What a resumed run records: each step once in metrics.jsonl (the killed process's later steps
kept aside), and a train loss over all the run's steps."""

import json

import pytest

from kit.training.plan import set_aside_steps_after
from kit.training.train import mean_train_loss


def write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def test_steps_after_the_checkpoint_are_set_aside_not_lost(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    killed = [{"step": s, "loss": 5.0 - s / 100} for s in range(10, 170, 10)] + [{"step": 100, "eval_loss": 3.9}]
    write(metrics, killed)
    aside = set_aside_steps_after(metrics, 100)
    kept = [json.loads(line) for line in metrics.read_text().splitlines()]
    moved = [json.loads(line) for line in aside.read_text().splitlines()]
    assert [r["step"] for r in kept] == list(range(10, 110, 10)) + [100]
    assert [r["step"] for r in moved] == list(range(110, 170, 10))
    assert sorted(map(json.dumps, kept + moved)) == sorted(map(json.dumps, killed))  # nothing lost
    assert aside.name.startswith("metrics.before-resume-") and set_aside_steps_after(metrics, 100) is None


def test_the_train_loss_is_the_mean_over_all_steps(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    # logged every 10 steps, except a last log after 5 steps; an eval record has no loss
    write(
        metrics,
        [
            {"step": 10, "loss": 4.0},
            {"step": 20, "loss": 2.0},
            {"step": 20, "eval_loss": 9.0},
            {"step": 25, "loss": 1.0},
        ],
    )
    assert mean_train_loss(metrics) == pytest.approx((4.0 * 10 + 2.0 * 10 + 1.0 * 5) / 25)


def test_resume_names_a_checkpoint_with_its_step(runs_dir):
    from kit.recipes import load_recipe
    from kit.runs import create_run
    from kit.training.plan import resume_checkpoint

    run = create_run("tiny-demo", load_recipe("tiny-demo")[1], "r")
    for step in (100, 200):
        (run.checkpoints_dir / f"checkpoint-{step}").mkdir(parents=True)
        (run.checkpoints_dir / f"checkpoint-{step}" / "trainer_state.json").write_text(
            json.dumps({"global_step": step})
        )
    assert [(c.name, c.step) for c in (resume_checkpoint(run, v) for v in (True, "true", "latest"))] == [
        ("checkpoint-200", 200)
    ] * 3
    assert resume_checkpoint(run, "checkpoint-100").step == 100
    by_path = resume_checkpoint(run, str(run.checkpoints_dir / "checkpoint-100"))
    assert (by_path.path, by_path.step) == (run.checkpoints_dir / "checkpoint-100", 100)
