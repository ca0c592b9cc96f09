"""GRPO through the same four notebooks: tiny-grpo-demo (the tiny Qwen3; the tiny demo's chats as
prompts, a format reward) prepared, trained by TRL's GRPOTrainer on answers it samples itself, its
rewards logged at every step, evaluated by the mean reward of base and tuned answers to held-out
prompts, and merged and exported unchanged. The real-model demo (smollm2-grpo-demo) is measured in
docs/training.md; it takes minutes a run on this CPU."""

import json

import pytest

from tests.conftest import pipeline_run, read, records

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_grpo(tmp_path_factory):
    return pipeline_run(
        tmp_path_factory.mktemp("runs"), "tiny-grpo-demo", "-o", "eval.num_prompts=8", "-o", "export.verify_tokens=8"
    )


def test_prepare_keeps_the_conversations_whose_prompts_grpo_answers(tiny_grpo):
    report = read(tiny_grpo, "prepare_report.json")
    assert report["method"] == "grpo" and report["sources"][0]["format"] == "messages"
    first = json.loads((tiny_grpo / "data" / "train.jsonl").read_text().splitlines()[0])
    assert first["messages"][0]["role"] == "user" and first["messages"][1]["role"] == "assistant"


def test_grpo_samples_scores_and_logs_its_rewards_at_every_step(tiny_grpo):
    from safetensors.torch import load_file
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logged = records(tiny_grpo)
    steps = [r["step"] for r in logged if "reward" in r]
    assert steps == list(range(1, 13))  # logging_steps 1, max_steps 12
    for r in (r for r in logged if "reward" in r):
        assert 0 <= r["reward"] <= 1 and r["rewards/format/mean"] == r["reward"]  # one function, weight 1
    assert any(r["reward_std"] > 0 for r in logged if "reward" in r), "no group ever differed: nothing to learn from"
    assert [r["step"] for r in logged if "eval_reward" in r] == [6, 12]
    events = EventAccumulator(str(tiny_grpo / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("train/reward")] == steps
    summary = read(tiny_grpo, "manifest.json")["train"]
    assert summary["global_step"] == 12 and summary["tokens_seen"] > 0
    weights = load_file(str(tiny_grpo / "adapter" / "adapter_model.safetensors"))
    assert any(name.endswith("lora_B.weight") and t.abs().max() > 0 for name, t in weights.items()), (
        "the adapter never moved"
    )
    assert (tiny_grpo / "loss.png").exists()


def test_evaluate_scores_the_held_out_answers_with_the_recipes_rewards(tiny_grpo):
    report = read(tiny_grpo, "report.json")
    for name in ("base", "tuned"):
        rewards = report[name]["rewards"]
        assert rewards["prompts"] == 8 and 0 <= rewards["mean"] <= 1
        assert rewards["by_function"] == [{"function": "format", "weight": 1.0, "mean": rewards["mean"]}]
    assert read(tiny_grpo, "manifest.json")["evaluate"]["tuned"]["rewards"] == report["tuned"]["rewards"]
    assert "mean reward (8 held-out prompts)" in (tiny_grpo / "report.md").read_text()
    assert "eval_loss" in report["tuned"] and "rouge_l" in report["tuned"]  # the SFT metrics, still there


def test_a_grpo_adapter_merges_and_exports_unchanged(tiny_grpo):
    merge = read(tiny_grpo, "merge_report.json")
    assert merge["ok"] and merge["tensor_check"]["ok"] and merge["logits_check"]["ok"]
    assert merge["gguf"]["q8_0"]["tokens_match"]
