"""Every supported layout and container → the same canonical conversation, with clear errors."""

import csv
import json

import pytest

from kit.data.rows import DataError, load_conversations

CANONICAL = [
    {"role": "system", "content": "Be kind."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello!"},
]

SAME_CONVERSATION = {
    "messages": {"messages": CANONICAL},
    "sharegpt": {
        "conversations": [
            {"from": "system", "value": "Be kind."},
            {"from": "human", "value": "Hi"},
            {"from": "gpt", "value": "Hello!"},
        ]
    },
    "alpaca": {"system": "Be kind.", "instruction": "Hi", "input": "", "output": "Hello!"},
    "conversation_pair": {
        "conversation_id": "c1",
        "system_prompt": "Be kind.",
        "conversation_pair": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}],
    },
    "prompt_completion": {
        "prompt": [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi"}],
        "completion": [{"role": "assistant", "content": "Hello!"}],
    },
}


def write(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return str(path)


@pytest.mark.parametrize("fmt", list(SAME_CONVERSATION))
def test_each_format_is_detected_and_converted(tmp_path, fmt):
    result = load_conversations(write(tmp_path / "d.jsonl", [SAME_CONVERSATION[fmt]] * 2))
    assert result.rows == [{"messages": CANONICAL}] * 2
    assert result.sources[0]["format"] == fmt


def test_alpaca_input_and_history(tmp_path):
    row = {"instruction": "Translate", "input": "chat", "output": "cat", "history": [["Hi", "Hello"]]}
    [conv] = load_conversations(write(tmp_path / "a.jsonl", [row])).rows
    assert conv["messages"] == [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "Translate\n\nchat"},
        {"role": "assistant", "content": "cat"},
    ]


def test_prompt_completion_strings(tmp_path):
    [conv] = load_conversations(write(tmp_path / "p.jsonl", [{"prompt": "2+2?", "completion": "4"}])).rows
    assert conv["messages"] == [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]


@pytest.mark.parametrize(
    "assistant",
    [
        {"role": "assistant", "content": "4", "reasoning_content": "Two and two."},
        {"role": "assistant", "content": "4", "thinking": "Two and two."},
        {"role": "assistant", "content": "<think>\nTwo and two.\n</think>\n\n4"},
    ],
)
def test_reasoning_variants_become_one_field(tmp_path, assistant):
    rows = [{"messages": [{"role": "user", "content": "2+2?"}, assistant]}]
    [conv] = load_conversations(write(tmp_path / "r.jsonl", rows)).rows
    assert conv["messages"][1] == {"role": "assistant", "content": "4", "reasoning": "Two and two."}


def test_conversation_pair_thinking(tmp_path):
    row = {
        "conversation_id": 7,
        "system_prompt": "",
        "conversation_pair": [
            {"role": "user", "content": "Refund?"},
            {"role": "assistant", "content": "Yes.", "thinking": "Policy allows."},
        ],
    }
    [conv] = load_conversations(write(tmp_path / "c.jsonl", [row])).rows
    assert conv["messages"] == [
        {"role": "user", "content": "Refund?"},
        {"role": "assistant", "content": "Yes.", "reasoning": "Policy allows."},
    ]


def test_column_mapping_and_a_missing_column(tmp_path):
    rows = [{"question": "Hi", "answer": "Hello!", "sys": "Be kind."}]
    path = write(tmp_path / "m.jsonl", rows)
    result = load_conversations(path, columns={"instruction": "question", "output": "answer", "system": "sys"})
    assert result.rows == [{"messages": CANONICAL}]
    with pytest.raises(
        DataError,
        match=r"m\.jsonl: row 1: data\.columns\.output names the field 'reply', which "
        r"this row does not have \(its fields: question, answer, sys\)",
    ):
        load_conversations(path, columns={"instruction": "question", "output": "reply"})


def test_undetectable_and_explicit_format_errors(tmp_path):
    path = write(tmp_path / "x.jsonl", [{"q": "Hi", "a": "Hello"}])
    with pytest.raises(DataError, match=r"cannot tell the data format from the fields \(q, a\); set data\.format"):
        load_conversations(path)
    with pytest.raises(DataError, match=r"row 1: not alpaca: expected the field\(s\) instruction, output; got q, a"):
        load_conversations(path, fmt="alpaca")


def test_unknown_sharegpt_role(tmp_path):
    row = {"conversations": [{"from": "human", "value": "q"}, {"from": "bot", "value": "a"}]}
    with pytest.raises(DataError, match=r"row 1: unknown role: conversations\[1\]\.from is 'bot'"):
        load_conversations(write(tmp_path / "s.jsonl", [row]))


def test_csv_parquet_json_and_saved_dataset_give_the_same_rows(tmp_path):
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"instruction": f"Q{i}", "input": "", "output": f"A{i}"} for i in range(3)]
    (tmp_path / "a.json").write_text(json.dumps(rows))
    (tmp_path / "a.csv").write_text("instruction,input,output\n" + "".join(f"Q{i},,A{i}\n" for i in range(3)))
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "a.parquet")
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "saved"))
    chat_rows = [{"messages": CANONICAL}]
    with open(tmp_path / "m.csv", "w", newline="") as f:  # a column of JSON cells
        csv.writer(f).writerows([["messages"], [json.dumps(CANONICAL)]])
    expected = load_conversations(str(tmp_path / "a.json")).rows
    assert len(expected) == 3
    for name in ("a.csv", "a.parquet", "saved"):
        assert load_conversations(str(tmp_path / name)).rows == expected, name
    assert load_conversations(str(tmp_path / "m.csv")).rows == chat_rows


def test_several_sources_globs_and_weights(tmp_path):
    for part in range(2):
        write(tmp_path / f"part{part}.jsonl", [{"prompt": f"p{part}-{i}", "completion": "c"} for i in range(10)])
    write(tmp_path / "extra.jsonl", [SAME_CONVERSATION["sharegpt"]] * 4)
    result = load_conversations(
        [{"path": str(tmp_path / "part*.jsonl"), "weight": 0.5}, {"path": str(tmp_path / "extra.jsonl"), "weight": 2}],
        seed=1,
    )
    assert [s["used"] for s in result.sources] == [10, 8]
    assert [s["format"] for s in result.sources] == ["prompt_completion", "sharegpt"]
    again = load_conversations(
        [{"path": str(tmp_path / "part*.jsonl"), "weight": 0.5}, {"path": str(tmp_path / "extra.jsonl"), "weight": 2}],
        seed=1,
    )
    assert again.rows == result.rows  # deterministic for a seed
    with pytest.raises(DataError, match=r"data\.source\[0\]\.weight: expected a positive finite number, got -1"):
        load_conversations([{"path": "x.jsonl", "weight": -1}])
    with pytest.raises(DataError, match="matches no file"):
        load_conversations(str(tmp_path / "nothing*.jsonl"))


def test_hub_dataset_id_fails_offline_with_a_clear_message(monkeypatch):
    import datasets

    # datasets reads HF_HUB_OFFLINE at import; set its switch so the test does not wait for retries.
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    with pytest.raises(
        DataError,
        match=r"'someone/chat-data' is not a local file, so it was tried as a Hugging Face "
        r"Hub dataset, which could not be loaded \(offline\?\)",
    ):
        load_conversations("someone/chat-data")


def test_drops_are_reported_with_source_and_row(tmp_path):
    good, bad = SAME_CONVERSATION["alpaca"], {"instruction": "Hi", "output": 5}
    result = load_conversations(write(tmp_path / "d.jsonl", [good, bad, good]), invalid_rows="drop")
    assert len(result.rows) == 2
    assert result.dropped == [
        {
            "source": str(tmp_path / "d.jsonl"),
            "row": 2,
            "reason": "bad content: messages[1].content is int, expected a string",
        }
    ]


def test_sharegpt_system_field_and_system_given_twice(tmp_path):
    row = {"system": "Be kind.", "conversations": SAME_CONVERSATION["sharegpt"]["conversations"][1:]}
    assert load_conversations(write(tmp_path / "s.jsonl", [row])).rows == [{"messages": CANONICAL}]
    twice = {**SAME_CONVERSATION["sharegpt"], "system": "Be brief."}
    with pytest.raises(
        DataError,
        match=r"row 1: system twice: conversations\[0\] is a system turn and the row's "
        r"system field is given too",
    ):
        load_conversations(write(tmp_path / "t.jsonl", [twice]))


def test_parquet_nulls_read_as_absent_fields(tmp_path):
    """Arrow writes a key some rows lack as null in the others: those rows read as if it were absent."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [
        {"instruction": "Hi", "output": "Hello!", "system": "Be kind.", "note": "x"},
        {"instruction": "Hi", "output": "Hello!"},
    ]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "a.parquet")
    result = load_conversations(str(tmp_path / "a.parquet"))
    assert result.rows[1] == {"messages": CANONICAL[1:]}
    assert result.unused_fields == {"note": 1}


def test_every_format_a_recipe_may_name_has_a_reader():
    """The recipe declares the format names (kit.recipe_schema.FORMATS); kit.data.formats detects
    and reads each of them, and no other."""
    from kit.data.formats import SIGNATURES
    from kit.recipes import FORMATS

    assert sorted(dict(SIGNATURES)) == sorted(FORMATS)
