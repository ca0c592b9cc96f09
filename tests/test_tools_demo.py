"""The tool-calling demo end to end: prepare and train ``tiny-tools-demo`` through the notebooks
(real Unsloth, TRL, transformers, PEFT), then answer held-out requests with the tools in the prompt,
with the tuned model and with the base (the adapter disabled), and judge the calls they write."""
import json
import os
import re

import pytest

from kit.data import held_out_prompts, read_jsonl
from kit.demo_data import TOOL_REQUESTS, TOOLS, tool_conversations
from kit.paths import PROJECT_ROOT
from kit.tool_calls import parse_answer, tool_call_scores

from .conftest import pipeline

RECIPE = "tiny-tools-demo"


def test_committed_tool_demo_data_matches_its_generator():
    committed = (PROJECT_ROOT / "data" / "tiny-tools-demo.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in committed] == tool_conversations()


def test_every_request_calls_the_right_tool_with_the_values_it_names():
    rows = tool_conversations()
    assert len(rows) == 4 * 80 and all(r["tools"] == TOOLS for r in rows)
    by_tool = {name: 0 for name in TOOL_REQUESTS}
    followed = 0
    for row in rows:
        messages = row["messages"]
        ask = next(m for m in messages if m["role"] == "user")["content"]
        call_turn = next(m for m in messages if m["role"] == "assistant")
        [call] = call_turn["tool_calls"]
        by_tool[call["name"]] += 1
        for value in call["arguments"].values():  # every argument is a value the request names
            assert str(value) in ask, (ask, call)
        if messages[-1] is not call_turn:  # the result of that call, then an answer without a call
            assert [m["role"] for m in messages[-2:]] == ["tool", "assistant"] and messages[-2]["name"] == call["name"]
            assert messages[-1]["content"] and "tool_calls" not in messages[-1]
            followed += 1
    assert set(by_tool.values()) == {80}
    assert 0.3 * len(rows) < followed < 0.5 * len(rows)  # both patterns are trained


def tool_answers(model, tokenizer, family, prompts: list[dict], max_new_tokens: int) -> list[str]:
    """Greedy answers to held-out prompts rendered with their tools (``render_prompt(tools=...)``),
    left-padded in one batch, cut at the family's stop tokens."""
    import torch

    from kit.chat import render_prompt
    from kit.inference import answer_of, stop_ids, unsloth_inference

    stops = stop_ids(tokenizer, family)
    texts = [render_prompt(tokenizer, family, p["messages"], tools=p.get("tools")) for p in prompts]
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    try:
        with unsloth_inference(model), torch.no_grad():
            inputs = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
            out = model.generate(**inputs, max_new_tokens=max_new_tokens, eos_token_id=stops, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id)
    finally:
        tokenizer.padding_side = side
    answers = []
    for row in out[:, inputs["input_ids"].shape[1]:].tolist():
        end = next((k for k, t in enumerate(row) if t in stops), len(row))
        answers.append(answer_of(tokenizer, family, row[:end]).text)
    return answers


@pytest.fixture(scope="module")
def tools_run(tmp_path_factory):
    """prepare and train executed by papermill on tiny-tools-demo, once: the run directory."""
    runs_dir = tmp_path_factory.mktemp("runs")
    result = pipeline(runs_dir, RECIPE, "--run", "e2e", "--stages", "prepare,train")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return runs_dir / RECIPE / "e2e"


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("KIT_TOOLS_DEMO"), reason="~13 min of training that does not reach the bar "
                    "yet (issue 10); run with KIT_TOOLS_DEMO=1")
@pytest.mark.xfail(strict=True, reason="not learned yet: measured after the recipe's 240 steps, 6 of 32 held-out "
                   "answers are well-formed calls and 2 name the right tool (base: 0); more steps than a CPU test "
                   "affords today")
def test_tuned_model_calls_the_right_tool_on_held_out_requests_and_the_base_does_not(tools_run):
    from kit.evaluate import load
    from kit.families import family_for
    from kit.runs import Run

    run = Run(tools_run)
    recipe = run.recipe()
    report = json.loads((tools_run / "prepare_report.json").read_text())
    assert report["rows_kept"] == 320 and report["rows_dropped"] == 0 and report["split"]["eval"] == 32
    assert report["tokens_per_row"]["max"] <= recipe["model"]["max_seq_length"] and report["rows_truncated"] == 0

    rows = read_jsonl(tools_run / "data" / "eval.jsonl")
    prompts = held_out_prompts(rows)  # each cut before its call: [system?, user] and the tools
    references = [next(m for m in r["messages"] if m["role"] == "assistant")["tool_calls"] for r in rows]
    assert all(p["tools"] == TOOLS and p["messages"][-1]["role"] == "user" for p in prompts)
    assert {c[0]["name"] for c in references} == set(TOOL_REQUESTS)  # every tool is asked for among them

    model, tokenizer, _ = load(run, recipe, "final")
    family = family_for(recipe)
    max_new_tokens = recipe["eval"]["max_new_tokens"]
    with model.disable_adapter():
        base_answers = tool_answers(model, tokenizer, family, prompts, max_new_tokens)
    tuned_answers = tool_answers(model, tokenizer, family, prompts, max_new_tokens)
    tools = [p["tools"] for p in prompts]
    base = tool_call_scores([parse_answer(a, family) for a in base_answers], references, tools)
    tuned = tool_call_scores([parse_answer(a, family) for a in tuned_answers], references, tools)
    print(f"base {base}\ntuned {tuned}")
    # The random base never writes a well-formed call: that takes one particular ~30-token sequence
    # out of a 152k-token vocabulary, so any call from it means the adapter was not disabled.
    assert base == {"rows": 32, "valid_call": 0, "right_name": 0, "exact_arguments": 0}, (base, base_answers[:3])
    # The tuned model learned the call format and which request calls which tool (the recipe's training must reach this).
    assert tuned["valid_call"] >= 0.9 and tuned["right_name"] >= 0.8, (tuned, tuned_answers)
    behavior = recipe["eval"]["behavior"]["regex"]  # what evaluate's behaviour metric checks, until tool metrics
    assert sum(bool(re.search(behavior, a)) for a in tuned_answers) >= 0.9 * len(prompts)
    assert not any(re.search(behavior, a) for a in base_answers)
