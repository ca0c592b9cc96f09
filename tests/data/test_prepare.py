"""prepare on user data in another layout: report, reasoning accounting, rows over the limit."""

import json

import pytest
import yaml

from kit.data.rows import DataError
from kit.files import read_jsonl
from kit.data.prepare import prepare, summary


def recipe_file(tmp_path, data: dict, max_seq_length=256):
    path = tmp_path / "mine.yaml"
    path.write_text(
        yaml.safe_dump(
            {"model": {"id": "builtin:tiny-qwen3", "family": "qwen3", "max_seq_length": max_seq_length}, "data": data}
        )
    )
    return str(path)


def test_sharegpt_with_reasoning_is_prepared_and_reported(tmp_path, runs_dir, tiny_model_dir):
    rows = [
        {
            "conversations": [
                {"from": "human", "value": f"Q{i}"},
                {"from": "gpt", "value": f"<think>step {i}</think>A{i}"},
                {"from": "human", "value": "More?"},
                {"from": "gpt", "value": "No."},
            ]
        }
        for i in range(6)
    ]
    (tmp_path / "chats.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    prepared = prepare(recipe_file(tmp_path, {"source": str(tmp_path / "chats.jsonl"), "eval_fraction": 0.34}))
    report = prepared.report
    assert report.sources[0]["format"] == "sharegpt" and report.rows_kept == 6
    assert report.split == {"train": 4, "eval": 2, "seed": 3407}
    # Qwen3 renders reasoning only after the last user turn: these turns' reasoning is left out.
    assert report.reasoning == {"assistant_turns_with_reasoning": 6, "rendered": 0, "not_rendered": 6}
    saved = read_jsonl(prepared.run.data_dir / "train.jsonl") + read_jsonl(prepared.run.data_dir / "eval.jsonl")
    assert sorted(r["messages"][1]["reasoning"] for r in saved) == [f"step {i}" for i in range(6)]
    manifest = json.loads(prepared.run.manifest_path.read_text())
    assert manifest["data"]["sources"][0]["sha256"] and manifest["data"]["sources"][0]["format"] == "sharegpt"


def test_overlength_rows_are_dropped_or_truncated_with_counts(tmp_path, runs_dir, tiny_model_dir):
    long_answer = "word " * 300
    rows = [{"prompt": "short", "completion": "ok"}] * 3 + [{"prompt": "long", "completion": long_answer}]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    dropped = prepare(recipe_file(tmp_path, {"source": str(tmp_path / "d.jsonl")}, max_seq_length=64)).report
    assert dropped.rows_kept == 3 and dropped.dropped[0]["row"] == 4
    assert dropped.dropped[0]["reason"].startswith("over max_seq_length:")
    truncated = prepare(
        recipe_file(tmp_path, {"source": str(tmp_path / "d.jsonl"), "overlength": "truncate"}, max_seq_length=64)
    ).report
    # Its only answer cut, nothing of the long row is left to train: dropped, not trained cut.
    assert truncated.rows_kept == 3 and truncated.rows_truncated == 1
    assert truncated.dropped[0]["row"] == 4 and "no whole trained turn" in truncated.dropped[0]["reason"]


def test_truncation_leaves_a_cut_answer_as_context(tokenizer):
    """data.overlength: truncate cuts a row to model.max_seq_length; an answer the cut runs through is
    context only, never trained as if whole (its end-of-turn token is gone), and the whole answers
    before it are trained as they are. Fails if a cut answer keeps its labels."""
    from kit.chat.render import IGNORE_INDEX
    from kit.data.tokenize import tokenize_rows
    from kit.families import get_family
    from kit.recipes import load_recipe

    row = {
        "messages": [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello there."},
            {"role": "user", "content": "Tell me more"},
            {"role": "assistant", "content": "more " * 80},
        ]
    }
    whole = tokenize_rows(tokenizer, get_family("qwen3"), [row], load_recipe("tiny-demo")[1]).examples[0]
    first_end = next(
        k
        for k, label in enumerate(whole["labels"])
        if label != IGNORE_INDEX and tokenizer.convert_ids_to_tokens(label) == "<|im_end|>"
    )
    limit = first_end + 20  # inside the second answer
    config = load_recipe("tiny-demo", {"data.overlength": "truncate", "model.max_seq_length": limit})[1]
    cut = tokenize_rows(tokenizer, get_family("qwen3"), [row], config)
    assert cut.truncated == 1 and cut.kept == [0]
    [example] = cut.examples
    assert len(example["labels"]) == limit
    assert example["labels"][: first_end + 1] == whole["labels"][: first_end + 1]  # the first answer, trained
    assert all(label == IGNORE_INDEX for label in example["labels"][first_end + 1 :])  # the cut one, context


def test_bad_data_creates_no_run(tmp_path, runs_dir):
    (tmp_path / "d.jsonl").write_text(json.dumps({"instruction": "Hi"}) + "\n")
    with pytest.raises(DataError, match="cannot tell the data format"):
        prepare(recipe_file(tmp_path, {"source": str(tmp_path / "d.jsonl")}))
    assert not runs_dir.exists() or not any(runs_dir.rglob("recipe.yaml"))


@pytest.mark.parametrize("mode, rendered, examples", [("as_template", 0, 6), ("every_turn", 6, 12)])
def test_reasoning_every_turn_renders_each_turns_reasoning(
    tmp_path, runs_dir, tiny_model_dir, mode, rendered, examples
):
    from kit.chat.render import IGNORE_INDEX

    rows = [
        {
            "messages": [
                {"role": "user", "content": f"Q{i}"},
                {"role": "assistant", "content": f"A{i}", "reasoning": f"step {i}"},
                {"role": "user", "content": "More?"},
                {"role": "assistant", "content": "No."},
            ]
        }
        for i in range(6)
    ]
    (tmp_path / "r.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    prepared = prepare(recipe_file(tmp_path, {"source": str(tmp_path / "r.jsonl"), "reasoning": mode}))
    assert prepared.report.reasoning["rendered"] == rendered
    assert len(prepared.examples) == examples
    trained = [prepared.tokenizer.decode([t for t in ex["labels"] if t != IGNORE_INDEX]) for ex in prepared.examples]
    assert sum("<think>\nstep" in t for t in trained) == rendered


def test_reasoning_inline_for_a_family_without_a_channel(tmp_path, runs_dir, family_tokenizers):
    from kit.chat.render import IGNORE_INDEX
    from kit.data.tokenize import tokenize_rows
    from kit.families import family_for
    from kit.recipes import load_recipe

    recipe = load_recipe("llama-3.1-8b", {"data.reasoning": "inline"})[1]
    rows = [
        {"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4", "reasoning": "Add."}]}
    ]
    tokenizer = family_tokenizers["llama-3.1"]
    examples = tokenize_rows(tokenizer, family_for(recipe), rows, recipe).examples
    trained = tokenizer.decode([t for t in examples[0]["labels"] if t != IGNORE_INDEX])
    assert trained == "<think>\nAdd.\n</think>\n\n4<|eot_id|>"
    plain = load_recipe("llama-3.1-8b")[1]
    examples = tokenize_rows(tokenizer, family_for(plain), rows, plain).examples
    assert tokenizer.decode([t for t in examples[0]["labels"] if t != IGNORE_INDEX]) == "4<|eot_id|>"


def test_drops_are_counted_by_reason_with_examples_in_the_report(tmp_path, runs_dir, tiny_model_dir):
    good = {"prompt": "short", "completion": "ok"}
    rows = [
        good,
        {"prompt": "q", "completion": 5},
        good,
        {"prompt": "long", "completion": "word " * 300},
        {"prompt": "q", "completion": " "},
        good,
        {"prompt": "q", "completion": []},
    ]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    source = str(tmp_path / "d.jsonl")
    prepared = prepare(recipe_file(tmp_path, {"source": source, "invalid_rows": "drop"}, max_seq_length=64))
    report = prepared.report
    assert report.rows_kept == 3 and report.rows_dropped == 4
    assert report.dropped_by_reason == {
        "bad structure": 1,
        "empty content": 1,
        "no assistant turn": 1,
        "over max_seq_length": 1,
    }
    assert report.dropped_examples == [
        {"source": source, "row": 2, "field": "completion", "reason": "completion must be a list, got int"},
        {
            "source": source,
            "row": 5,
            "field": "messages[1].content",
            "reason": "empty content: messages[1].content is whitespace only",
        },
        {
            "source": source,
            "row": 7,
            "field": "messages",
            "reason": "no assistant turn: messages has none, nothing to train on",
        },
    ]
    assert [d["row"] for d in report.dropped] == [2, 5, 7, 4]  # every drop is still listed
    saved = json.loads((prepared.run.path / "prepare_report.json").read_text())
    assert saved["dropped_examples"] == report.dropped_examples
    # What the prepare notebook prints: counts per reason as words, statistics as readable lines.
    printed = summary(report)
    assert "kept 3, dropped 4 (1 bad structure, 1 empty content, 1 no assistant turn, 1 over max_seq_length)" in printed
    assert "tokens per row: min " in printed and "{" not in printed


def test_all_rows_dropped_by_tokenization_explains_why(tmp_path, runs_dir, tiny_model_dir):
    rows = [{"prompt": f"long {i}", "completion": "word " * 300} for i in range(5)]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError) as e:
        prepare(recipe_file(tmp_path, {"source": str(tmp_path / "d.jsonl")}, max_seq_length=64))
    message = str(e.value)
    assert message.startswith(
        "data.source: no conversation left after tokenization: 5 dropped (5 over max_seq_length); "
        f"first: {tmp_path / 'd.jsonl'}: row 1: over max_seq_length: "
    )
    assert "row 3: over max_seq_length" in message and "row 4" not in message


def test_prepare_records_its_overrides_in_the_manifest(tmp_path, runs_dir, tiny_model_dir):
    rows = [{"prompt": "q1", "completion": "a1"}, {"prompt": "q2", "completion": "a2"}]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    run = prepare(
        recipe_file(tmp_path, {"source": str(tmp_path / "d.jsonl")}), {"train.max_steps": 7, "data.eval_fraction": 0.5}
    ).run
    assert run.manifest()["overrides"] == {"prepare": {"train": {"max_steps": 7}, "data": {"eval_fraction": 0.5}}}
    assert run.config().train.max_steps == 7
    assert "overrides" not in prepare(recipe_file(tmp_path, {"source": str(tmp_path / "d.jsonl")})).run.manifest()


def test_a_gpt_oss_reasoning_dataset_is_fully_supervised(tmp_path, runs_dir, family_tokenizers):
    """Issue 13's case through prepare: answers that repeat their reasoning, in every turn."""
    from kit.chat.render import IGNORE_INDEX

    family_tokenizers["gpt-oss"].save_pretrained(tmp_path / "gpt-oss-tokenizer")
    rows = [
        {
            "messages": [
                {"role": "user", "content": f"What is {i} * 3?"},
                {"role": "assistant", "content": str(3 * i), "reasoning": f"{i}*3={3 * i}, so the answer is {3 * i}"},
            ]
        }
        for i in range(1, 9)
    ]
    (tmp_path / "r.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = tmp_path / "oss.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "model": {"id": str(tmp_path / "gpt-oss-tokenizer"), "family": "gpt-oss", "max_seq_length": 512},
                "data": {"source": str(tmp_path / "r.jsonl")},
            }
        )
    )
    prepared = prepare(str(recipe))
    assert prepared.report.rows_kept == 8 and prepared.report.fully_supervised_turns == 8
    assert "8 trained assistant turns, each checked" in summary(prepared.report)
    tokenizer = prepared.tokenizer
    for example, row in zip(prepared.examples, rows):
        trained = tokenizer.decode([t for t in example["labels"] if t != IGNORE_INDEX])
        answer = row["messages"][1]
        assert trained.endswith(f"<|channel|>final<|message|>{answer['content']}<|return|>")
        assert trained.startswith(f"<|channel|>analysis<|message|>{answer['reasoning']}<|end|>")


def test_a_turn_left_unsupervised_stops_prepare_with_row_and_turn(tmp_path, runs_dir, tiny_model_dir, monkeypatch):
    """The supervision check's verdict is fatal in prepare (a kit bug, not a drop); the check
    itself is exercised on real labels in tests/chat/test_masks.py."""
    from kit.data import tokenize
    from kit.chat.render import SupervisionError

    rows = [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}] * 3
    (tmp_path / "r.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    real = tokenize.tokenize_many

    def one_bad_row(tokenizer, family, conversations, train_on, **kwargs):
        out = real(tokenizer, family, conversations, train_on, **kwargs)
        return [*out[:1], SupervisionError("assistant turn 1: 'hello' is not inside its supervised tokens"), *out[2:]]

    monkeypatch.setattr(tokenize, "tokenize_many", one_bad_row)
    with pytest.raises(
        DataError,
        match=r"r\.jsonl: row 2: assistant turn 1: 'hello' is not inside its supervised "
        r"tokens; this is a masking bug in the kit",
    ):
        prepare(recipe_file(tmp_path, {"source": str(tmp_path / "r.jsonl")}))
    assert not (runs_dir / "mine").exists() or not any((runs_dir / "mine").iterdir())
