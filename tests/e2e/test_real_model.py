"""The real SmolLM2-135M-Instruct through the whole pipeline in a few minutes: prepare, a few training
steps on the shop demo, the streaming merge of a Llama-architecture checkpoint with both checks,
an f16 GGUF loaded back in llama.cpp, and the Modelfile. (What the demo learns in full is measured
by ``make demo`` and recorded in the README; this test checks the machinery on the real model.)"""

import json

import pytest

from tests.conftest import pipeline, read

pytestmark = pytest.mark.slow

OVERRIDES = [
    "train.max_steps=4",
    "train.eval_steps=4",
    "train.save_steps=4",
    "train.logging_steps=1",
    "eval.num_prompts=6",
    "eval.live_samples=0",
    "export.gguf=[f16]",
    "export.verify_tokens=24",
]


@pytest.fixture(scope="module")
def real_run(tmp_path_factory):
    runs_dir = tmp_path_factory.mktemp("runs")
    args = ["smollm2-shop-demo", "--run", "e2e", "--stages", "prepare,train,merge"]
    for override in OVERRIDES:
        args += ["-o", override]
    result = pipeline(runs_dir, *args, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return runs_dir / "smollm2-shop-demo" / "e2e"


def test_the_real_model_trains(real_run):
    records = [json.loads(line) for line in (real_run / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if "loss" in r]
    assert len(losses) == 4 and all(0 < loss < 10 for loss in losses)
    config = json.loads((real_run / "adapter" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"].endswith("smollm2-135m-instruct-v2")
    assert read(real_run, "manifest.json")["train"]["global_step"] == 4


def test_the_llama_checkpoint_merges_and_both_checks_pass(real_run):
    merge = read(real_run, "merge_report.json")
    assert merge["ok"] and merge["method"] == "streaming" and merge["stored_dtype"] == "bfloat16"
    tensors = merge["tensor_check"]
    assert tensors["ok"] and tensors["lora_modules_merged"] == tensors["lora_modules"] == 30 * 7
    logits = merge["logits_check"]
    assert logits["ok"] and logits["merged"]["max_abs_diff"] <= logits["allowed_max_abs_diff"]
    # the check can see the adapter: four steps move logits by more than the rounding it allows
    assert logits["adapter_max_abs_logit_effect"] > logits["allowed_max_abs_diff"]
    merged_config = json.loads((real_run / "merged" / "config.json").read_text())
    assert merged_config["architectures"] == ["LlamaForCausalLM"] and merged_config["tie_word_embeddings"]


def test_the_f16_gguf_answers_like_the_merged_model_and_the_modelfile_is_verified(real_run):
    merge = read(real_run, "merge_report.json")
    f16 = merge["gguf"]["f16"]
    assert f16["tokens_match"]  # llama.cpp tokenizes the rendered prompts exactly as transformers does
    assert f16["greedy_equal_prompts"] == merge["prompts"] == 6, f16
    assert f16["greedy_decisions_equal"] == f16["greedy_decisions"] > 0
    modelfile = merge["modelfile"]
    assert modelfile["ok"] and modelfile["prompts_equal"] == modelfile["prompts_checked"] == 6
    text = (real_run / "gguf" / "Modelfile").read_text()
    assert "<|im_start|>system" in text and 'PARAMETER stop "<|im_end|>"' in text
