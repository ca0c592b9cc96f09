"""DPO through the same four notebooks: tiny-dpo-demo (the tiny Qwen3, pairs in the message-list
layout) prepared, trained by TRL's DPOTrainer, evaluated on held-out pairs and merged and exported
unchanged; and the real-model demo, smollm2-dpo-demo, measured as the issue asks: on held-out pairs
SmolLM2 as it comes prefers the rejected (bare) answers, and after DPO the chosen (house-style) ones."""

import json

import pytest

from tests.conftest import pipeline, pipeline_run, read, records

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_dpo(tmp_path_factory):
    return pipeline_run(
        tmp_path_factory.mktemp("runs"),
        "tiny-dpo-demo",
        "-o",
        "train.max_steps=12",
        "-o",
        "train.eval_steps=6",
        "-o",
        "train.save_steps=6",
        "-o",
        "train.logging_steps=3",
        "-o",
        "eval.num_prompts=4",
        "-o",
        "eval.max_new_tokens=8",
        "-o",
        "eval.live_samples=1",
        "-o",
        "export.verify_tokens=8",
    )


def test_prepare_reports_the_pairs(tiny_dpo):
    report = read(tiny_dpo, "prepare_report.json")
    assert report["method"] == "dpo" and report["sources"][0]["format"] == "chosen_rejected"
    assert report["pairs"] == {"kept": 200, "ties_dropped": 0, "over_length_dropped": 0, "over_length_truncated": 0}
    first = json.loads((tiny_dpo / "data" / "train.jsonl").read_text().splitlines()[0])
    assert set(first) == {"prompt", "chosen", "rejected"} and first["chosen"]["content"].startswith("Dear customer,")


def test_dpo_trains_and_logs_its_rewards(tiny_dpo):
    logged = records(tiny_dpo)
    margins = [r["rewards/margins"] for r in logged if "rewards/margins" in r]
    assert len(margins) == 4 and margins[-1] > margins[0]  # logging_steps 3: steps 3, 6, 9, 12
    assert [r["step"] for r in logged if "eval_rewards/accuracies" in r] == [6, 12]
    summary = read(tiny_dpo, "manifest.json")["train"]
    assert summary["global_step"] == 12 and summary["tokens_seen"] > 0


def test_evaluate_scores_held_out_pairs_for_base_and_tuned(tiny_dpo):
    report = read(tiny_dpo, "report.json")
    base, tuned = report["base"]["preference"], report["tuned"]["preference"]
    assert base["pairs"] == tuned["pairs"] == 20 == read(tiny_dpo, "manifest.json")["data"]["eval_rows"]
    assert tuned["accuracy"] > base["accuracy"] and tuned["margin"] > base["margin"]
    assert "eval_loss" in report["tuned"] and "rouge_l" in report["tuned"]  # the SFT metrics, still there
    assert (tiny_dpo / "margins.png").exists() and "reward accuracy (20 held-out pairs)" in (
        tiny_dpo / "report.md"
    ).read_text()


def test_a_dpo_adapter_merges_and_exports_unchanged(tiny_dpo):
    merge = read(tiny_dpo, "merge_report.json")
    assert merge["ok"] and merge["tensor_check"]["ok"] and merge["logits_check"]["ok"]
    assert merge["gguf"]["q8_0"]["tokens_match"]
    assert (tiny_dpo / "merged" / "model.safetensors").exists() or list((tiny_dpo / "merged").glob("*.safetensors"))


def test_the_real_model_demo_turns_its_preference_round(tmp_path):
    """smollm2-dpo-demo in 12 of its 20 steps, without the merge: held-out reward accuracy at most 0.6
    for SmolLM2 as it comes, at least 0.8 after DPO (the issue's figures; make demo-dpo's full run
    is in the README)."""
    result = pipeline(
        tmp_path / "runs",
        "smollm2-dpo-demo",
        "--run",
        "e2e",
        "--stages",
        "prepare,train,evaluate",
        "-o",
        "train.max_steps=12",
        "-o",
        "train.eval_steps=12",
        "-o",
        "train.save_steps=12",
        "-o",
        "eval.num_prompts=2",
        "-o",
        "eval.max_new_tokens=8",
        "-o",
        "eval.live_samples=0",
        timeout=1500,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = read(tmp_path / "runs" / "smollm2-dpo-demo" / "e2e", "report.json")
    base, tuned = report["base"]["preference"], report["tuned"]["preference"]
    assert base["accuracy"] <= 0.6 and tuned["accuracy"] >= 0.8, (base, tuned)
