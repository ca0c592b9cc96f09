"""prepare on user data in another layout: report, reasoning accounting, rows over the limit."""
import json

import pytest
import yaml

from kit.data import DataError, read_jsonl
from kit.prepare import prepare


def recipe_file(tmp_path, data: dict, max_seq_length=256):
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump({"model": {"id": "builtin:tiny-qwen3", "family": "qwen3",
                                              "max_seq_length": max_seq_length}, "data": data}))
    return str(path)


def test_sharegpt_with_reasoning_is_prepared_and_reported(tmp_path, runs_dir, tiny_model_dir):
    rows = [{"conversations": [{"from": "human", "value": f"Q{i}"},
                               {"from": "gpt", "value": f"<think>step {i}</think>A{i}"},
                               {"from": "human", "value": "More?"}, {"from": "gpt", "value": "No."}]}
            for i in range(6)]
    (tmp_path / "chats.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    prepared = prepare(recipe_file(tmp_path, {"source": str(tmp_path / "chats.jsonl"), "eval_fraction": 0.34}))
    report = prepared.report
    assert report["sources"][0]["format"] == "sharegpt" and report["rows_kept"] == 6
    assert report["split"] == {"train": 4, "eval": 2, "seed": 3407}
    # Qwen3 renders reasoning only after the last user turn: these turns' reasoning is left out.
    assert report["reasoning"] == {"assistant_turns_with_reasoning": 6, "rendered": 0, "not_rendered": 6}
    saved = read_jsonl(prepared.run.data_dir / "train.jsonl") + read_jsonl(prepared.run.data_dir / "eval.jsonl")
    assert sorted(r["messages"][1]["reasoning"] for r in saved) == [f"step {i}" for i in range(6)]
    manifest = json.loads(prepared.run.manifest_path.read_text())
    assert manifest["data"]["sources"][0]["sha256"] and manifest["data"]["sources"][0]["format"] == "sharegpt"


def test_overlength_rows_are_dropped_or_truncated_with_counts(tmp_path, runs_dir, tiny_model_dir):
    long_answer = "word " * 300
    rows = [{"prompt": "short", "completion": "ok"}] * 3 + [{"prompt": "long", "completion": long_answer}]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    dropped = prepare(recipe_file(tmp_path, {"source": str(tmp_path / "d.jsonl")}, max_seq_length=64)).report
    assert dropped["rows_kept"] == 3 and dropped["dropped"][0]["row"] == 4
    assert dropped["dropped"][0]["reason"].startswith("over max_seq_length:")
    truncated = prepare(recipe_file(tmp_path, {"source": str(tmp_path / "d.jsonl"), "overlength": "truncate"},
                                    max_seq_length=64)).report
    assert truncated["rows_kept"] == 4 and truncated["rows_truncated"] == 1
    assert truncated["tokens_per_row"]["max"] == 64


def test_bad_data_creates_no_run(tmp_path, runs_dir):
    (tmp_path / "d.jsonl").write_text(json.dumps({"instruction": "Hi"}) + "\n")
    with pytest.raises(DataError, match="cannot tell the data format"):
        prepare(recipe_file(tmp_path, {"source": str(tmp_path / "d.jsonl")}))
    assert not runs_dir.exists() or not any(runs_dir.rglob("recipe.yaml"))


@pytest.mark.parametrize("mode, rendered, examples", [("as_template", 0, 6), ("every_turn", 6, 12)])
def test_reasoning_every_turn_renders_each_turns_reasoning(tmp_path, runs_dir, tiny_model_dir, mode, rendered, examples):
    from kit.chat import IGNORE_INDEX

    rows = [{"messages": [{"role": "user", "content": f"Q{i}"},
                          {"role": "assistant", "content": f"A{i}", "reasoning": f"step {i}"},
                          {"role": "user", "content": "More?"}, {"role": "assistant", "content": "No."}]}
            for i in range(6)]
    (tmp_path / "r.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    prepared = prepare(recipe_file(tmp_path, {"source": str(tmp_path / "r.jsonl"), "reasoning": mode}))
    assert prepared.report["reasoning"]["rendered"] == rendered
    assert len(prepared.examples) == examples
    trained = [prepared.tokenizer.decode([t for t in ex["labels"] if t != IGNORE_INDEX]) for ex in prepared.examples]
    assert sum("<think>\nstep" in t for t in trained) == rendered


def test_reasoning_inline_for_a_family_without_a_channel(tmp_path, runs_dir, family_tokenizers):
    from kit.chat import IGNORE_INDEX
    from kit.prepare import tokenize_rows
    from kit.families import family_for
    from kit.recipes import load_recipe

    recipe = load_recipe("llama-3.1-8b", {"data.reasoning": "inline"})[1]
    rows = [{"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4", "reasoning": "Add."}]}]
    tokenizer = family_tokenizers["llama-3.1"]
    examples, *_ = tokenize_rows(tokenizer, family_for(recipe), rows, recipe)
    trained = tokenizer.decode([t for t in examples[0]["labels"] if t != IGNORE_INDEX])
    assert trained == "<think>\nAdd.\n</think>\n\n4<|eot_id|>"
    plain = load_recipe("llama-3.1-8b")[1]
    examples, *_ = tokenize_rows(tokenizer, family_for(plain), rows, plain)
    assert tokenizer.decode([t for t in examples[0]["labels"] if t != IGNORE_INDEX]) == "4<|eot_id|>"
