import json

import pytest

from kit.demos import data as demo_data
from kit.demos.shop import shop_fact_prompts
from kit.data.rows import DataError, load_conversations, split
from kit.paths import PROJECT_ROOT

GOOD = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}


def write_jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    "name, generator", [("tiny-demo", demo_data.conversations), ("smollm2-grpo-demo", shop_fact_prompts)]
)
def test_committed_demo_data_matches_its_generator(name, generator):
    committed = (PROJECT_ROOT / "data" / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in committed] == generator()


def test_loads_jsonl_and_json_array(tmp_path):
    assert load_conversations(str(write_jsonl(tmp_path / "a.jsonl", [GOOD, GOOD]))).rows == [GOOD, GOOD]
    (tmp_path / "b.json").write_text(json.dumps([GOOD]))
    assert load_conversations(str(tmp_path / "b.json")).rows == [GOOD]


@pytest.mark.parametrize(
    "row, reason",
    [
        ({"messages": [{"role": "user", "content": "only a question"}]}, "no assistant turn"),
        (
            {"messages": [{"role": "user", "content": "q"}, {"role": "bot", "content": "a"}]},
            "unknown role: messages[1].role is 'bot'",
        ),
        (
            {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "  "}]},
            "empty content: messages[1].content",
        ),
        (
            {"messages": [{"role": "user", "content": ""}, {"role": "assistant", "content": "a"}]},
            "empty content: messages[0].content is empty",
        ),
        (
            {
                "messages": [
                    {"role": "system", "content": " "},
                    {"role": "user", "content": "q"},
                    {"role": "assistant", "content": "a"},
                ]
            },
            "empty content: messages[0].content is whitespace only",
        ),
        (
            {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": 5}]},
            "bad content: messages[1].content is int",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": "q"},
                    {"role": "user", "content": "q"},
                    {"role": "assistant", "content": "a"},
                ]
            },
            "repeated role: messages[1]",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": "q"},
                    {"role": "system", "content": "s"},
                    {"role": "assistant", "content": "a"},
                ]
            },
            "misplaced system: messages[1]",
        ),
        ({"messages": []}, "no messages"),
        (
            {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]},
            "mixed formats: this row looks like sharegpt",
        ),
    ],
)
def test_bad_rows_error_with_file_and_row(tmp_path, row, reason):
    path = write_jsonl(tmp_path / "d.jsonl", [GOOD, row, GOOD])
    with pytest.raises(DataError) as e:
        load_conversations(str(path))
    assert f"{path}: row 2: {reason}" in str(e.value)


def test_empty_strings_where_legal(tmp_path):
    """An explicit empty system prompt is kept (templates render it; it suppresses Qwen2.5's default
    one); empty reasoning means no reasoning; an empty alpaca input or system field means none."""
    rows = [
        {"messages": [{"role": "system", "content": ""}, *GOOD["messages"]]},
        {"messages": [GOOD["messages"][0], {"role": "assistant", "content": "hello", "reasoning_content": ""}]},
        {"instruction": "hi", "input": "", "output": "hello", "system": ""},
    ]
    loaded = [
        load_conversations(str(write_jsonl(tmp_path / f"{i}.jsonl", [row]))).rows[0] for i, row in enumerate(rows)
    ]
    assert loaded == [rows[0], GOOD, GOOD]


def test_drop_mode_counts_and_reports_rows(tmp_path):
    bad = {"messages": [{"role": "user", "content": "q"}]}
    result = load_conversations(str(write_jsonl(tmp_path / "d.jsonl", [GOOD, bad, GOOD, bad])), invalid_rows="drop")
    assert len(result.rows) == 2 and [row for _, row in result.origins] == [1, 3]
    assert [d["row"] for d in result.dropped] == [2, 4]
    assert all(d["reason"].startswith("no assistant turn") for d in result.dropped)


def test_file_level_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_conversations(str(tmp_path / "missing.jsonl"))
    with pytest.raises(DataError, match="the dataset is empty"):
        load_conversations(str(write_jsonl(tmp_path / "empty.jsonl", [])))
    with pytest.raises(DataError, match=r"line 2: invalid JSON"):
        load_conversations(str(write_jsonl(tmp_path / "broken.jsonl", [GOOD, '{"messages": ['])))
    (tmp_path / "latin1.jsonl").write_bytes(b'{"messages": "caf\xe9"}\n')
    with pytest.raises(DataError, match="not UTF-8"):
        load_conversations(str(tmp_path / "latin1.jsonl"))
    bad = {"messages": [{"role": "user", "content": "q"}]}
    with pytest.raises(DataError, match="no usable conversations among 1 rows"):
        load_conversations(str(write_jsonl(tmp_path / "allbad.jsonl", [bad])), invalid_rows="drop")


def test_split_is_deterministic_disjoint_and_complete():
    rows = [{"messages": [{"role": "user", "content": str(i)}]} for i in range(50)]
    train, ev = split(rows, 0.1, seed=1)
    assert len(ev) == 5 and len(train) == 45
    assert sorted(r["messages"][0]["content"] for r in train + ev) == sorted(str(i) for i in range(50))
    assert split(rows, 0.1, seed=1) == (train, ev)
    assert split(rows, 0.1, seed=2)[1] != ev


def test_prompts_file_rows_and_errors(tmp_path):
    from kit.data.prompts import load_prompts

    good = write_jsonl(
        tmp_path / "p.jsonl",
        [
            {"messages": [{"role": "user", "content": "q1"}]},
            {
                "messages": [
                    {"role": "system", "content": "s"},
                    {"role": "user", "content": "q2"},
                    {"role": "assistant", "content": "ref"},
                ]
            },
        ],
    )
    prompts = load_prompts(good)
    assert [p.row for p in prompts] == [1, 2]
    assert prompts[0].reference is None and prompts[1].reference == "ref"
    assert prompts[1].messages[-1] == {"role": "user", "content": "q2"}
    bad = write_jsonl(
        tmp_path / "bad.jsonl",
        [{"messages": [{"role": "user", "content": "q"}]}, {"messages": [{"role": "user", "content": 3}]}],
    )
    with pytest.raises(DataError, match=r"bad\.jsonl: row 2: bad content: messages\[0\]\.content is int"):
        load_prompts(bad)


def test_all_rows_dropped_error_gives_counts_and_first_three_rows(tmp_path):
    """With invalid_rows: drop, a file with no usable row says why: counts per reason and the first
    three rows with file, row and field (not just "no usable conversations among 500 rows")."""
    no_answer = {"messages": [{"role": "user", "content": "q"}]}
    empty = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": " "}]}
    bot = {"messages": [{"role": "user", "content": "q"}, {"role": "bot", "content": "a"}]}
    path = write_jsonl(tmp_path / "bad.jsonl", [empty, bot] + [no_answer] * 497 + [{"messages": "hi"}])
    with pytest.raises(DataError) as e:
        load_conversations(str(path), invalid_rows="drop")
    message = str(e.value)
    assert "\n" not in message
    assert message.startswith("data.source: no usable conversations among 500 rows: 500 dropped (")
    assert "497 no assistant turn, 1 empty content, 1 unknown role, 1 bad structure)" in message
    assert (
        f"first: {path}: row 1: empty content: messages[1].content is whitespace only; "
        f"{path}: row 2: unknown role: messages[1].role is 'bot'"
    ) in message
    assert f"{path}: row 3: no assistant turn: messages has none" in message
    assert "row 4:" not in message


def test_drop_reasons_have_a_key_and_a_field(tmp_path):
    from kit.data.rows import count_reasons, drop_examples, reason_field, reason_key

    rows = [
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": 5}]},  # bad content
        {"messages": [{"role": "assistant", "content": "a"}, {"role": "user", "content": "q"}]},  # ends with user
        {"messages": [{"role": "user", "content": "q"}]},  # no assistant turn
        {"messages": "not a list"},  # kit.data.formats
        {"messages": [{"role": "user", "content": "q"}, "oops"]},  # kit.data.formats
        {"conversations": [{"from": "human", "value": "q"}]},  # mixed formats
        GOOD,
    ]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    dropped = load_conversations(str(path), invalid_rows="drop").dropped
    assert [(reason_key(d["reason"]), reason_field(d["reason"])) for d in dropped] == [
        ("bad content", "messages[1].content"),
        ("ends with user", "messages[1]"),
        ("no assistant turn", "messages"),
        ("bad structure", "messages"),
        ("bad structure", "messages[1]"),
        ("mixed formats", None),
    ]
    assert count_reasons(dropped) == {
        "bad structure": 2,
        "bad content": 1,
        "ends with user": 1,
        "no assistant turn": 1,
        "mixed formats": 1,
    }
    assert drop_examples(dropped) == [
        {
            "source": str(path),
            "row": 1,
            "field": "messages[1].content",
            "reason": "bad content: messages[1].content is int, expected a string",
        },
        {
            "source": str(path),
            "row": 2,
            "field": "messages[1]",
            "reason": "ends with user: messages[1] is the last message and must be the assistant's",
        },
        {
            "source": str(path),
            "row": 3,
            "field": "messages",
            "reason": "no assistant turn: messages has none, nothing to train on",
        },
    ]
    assert (
        reason_field("unknown role: conversations[1].from is 'bot' (expected one of human, gpt)")
        == "conversations[1].from"
    )
    assert (
        reason_field("data.columns.output names the field 'reply', which this row does not have")
        == "data.columns.output"
    )
    assert reason_key("over max_seq_length: 300 > 256 tokens") == "over max_seq_length"
    assert reason_field("over max_seq_length: 300 > 256 tokens") is None


def test_reason_fields_with_nested_indices_and_hyphenated_keys():
    from kit.data.rows import reason_field, reason_key

    reason = "bad arguments: messages[2].tool_calls[0].function.arguments is not valid JSON (Expecting value)"
    assert (reason_key(reason), reason_field(reason)) == (
        "bad arguments",
        "messages[2].tool_calls[0].function.arguments",
    )
    reason = "non-text content: messages[0].content[1] is image_url"
    assert (reason_key(reason), reason_field(reason)) == ("non-text content", "messages[0].content[1]")


@pytest.mark.parametrize(
    "row, reason",
    [
        (
            {
                "messages": [
                    {"role": "user", "content": "q"},
                    {"role": "tool", "content": "4", "name": "f"},
                    {"role": "assistant", "content": "a"},
                ]
            },
            "tool result without call: messages[1] is a tool result with no tool call before it",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": "q"},
                    {"role": "assistant", "content": "", "tool_calls": [{"name": "f", "arguments": {}}]},
                    {"role": "tool", "content": "4"},
                ]
            },
            "ends with tool: messages[2] is the last message and must be the assistant's",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": "q"},
                    {"role": "assistant", "content": "", "tool_calls": [{"name": "f", "arguments": {}}]},
                    {"role": "assistant", "content": "a"},
                ]
            },
            "repeated role: messages[2] has the same role as the message before it",
        ),
    ],
)
def test_tool_turn_order_rules(tmp_path, row, reason):
    path = write_jsonl(tmp_path / "d.jsonl", [GOOD, row])
    with pytest.raises(DataError) as e:
        load_conversations(str(path))
    assert str(e.value) == f"{path}: row 2: {reason}"
