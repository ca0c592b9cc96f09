"""Training details that the end-to-end run does not exercise: resuming and refusing to overwrite."""

import json
import shutil

import pytest

pytestmark = pytest.mark.slow


def test_resume_from_checkpoint_and_never_overwrite_an_adapter(runs_dir):
    from kit.training import train as T  # imports Unsloth
    from kit.data.prepare import prepare
    from kit.runs import RunError

    run = prepare(
        "tiny-demo", {"train": {"max_steps": 4, "save_steps": 2, "eval_steps": 2, "logging_steps": 1}}, run_id="resume"
    ).run
    first = T.train(run, run.config())
    assert first["global_step"] == 4 and first["resumed_from"] is None
    assert sorted(p.name for p in run.checkpoints_dir.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]

    with pytest.raises(RunError, match="already exists: this run is trained"):
        T.train(run, run.config(), resume=False)
    manifest = run.manifest_path.read_text()
    assert T.train(run, run.config()) == json.loads(manifest)["train"]  # auto: reported, left as it is
    assert run.manifest_path.read_text() == manifest

    # trainer.train(resume_from_checkpoint=True), as Unsloth's notebooks call it on the notebook's
    # trainer: the newest checkpoint (here the last step: nothing more to train).
    model, tokenizer = T.load_model(run.config())
    trainer = T.build_trainer(run, run.config(), T.add_lora(model, run.config()), tokenizer)
    result = trainer.train(resume_from_checkpoint=True)
    assert result.global_step == 4 and trainer.resumed_from.endswith("checkpoint-4")

    shutil.rmtree(run.adapter_dir)  # as if training had been interrupted after checkpoint-4
    second = T.train(run, run.apply_overrides({"train.max_steps": 6}, stage="train"), resume=True)
    assert second["global_step"] == 6 and second["resumed_from"].endswith("checkpoint-4")
    steps = [
        json.loads(line)["step"] for line in run.metrics_path.read_text().splitlines() if "loss" in json.loads(line)
    ]
    assert steps == [1, 2, 3, 4, 5, 6]  # the resumed run continued, it did not start over
    assert (run.adapter_dir / "adapter_model.safetensors").exists()
