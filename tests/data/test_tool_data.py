"""Agent data: tool definitions, calls and results, in the OpenAI/HF and ShareGPT layouts, read from
real files into the canonical conversation; bad tool data is an error naming file, row and field."""

import csv
import json

import pytest

from kit.data.rows import DataError, load_conversations

from kit.data.prompts import load_prompts

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "Local time in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}

# What every layout below must become.
CANONICAL = {
    "messages": [
        {"role": "system", "content": "You help travellers."},
        {"role": "user", "content": "Weather and time in Oslo and Rome?"},
        {
            "role": "assistant",
            "content": "Let me look.",
            "tool_calls": [
                {"name": "get_weather", "arguments": {"city": "Oslo"}},
                {"name": "get_time", "arguments": {"city": "Rome"}},
            ],
        },
        {"role": "tool", "content": '{"temp": 4}', "name": "get_weather"},
        {"role": "tool", "content": "14:05", "name": "get_time"},
        {"role": "assistant", "content": "Oslo is 4 degrees; in Rome it is 14:05."},
    ],
    "tools": [WEATHER, TIME],
}


def openai_row(tools=(WEATHER, TIME), ids=True):
    def call(i, name, args):
        return {
            "type": "function",
            **({"id": f"call_{i}"} if ids else {}),
            "function": {"name": name, "arguments": json.dumps(args)},
        }

    def result(i, content):
        return {"role": "tool", "content": content, **({"tool_call_id": f"call_{i}"} if ids else {})}

    return {
        "messages": [
            {"role": "system", "content": "You help travellers."},
            {"role": "user", "content": "Weather and time in Oslo and Rome?"},
            {
                "role": "assistant",
                "content": "Let me look.",
                "tool_calls": [call(0, "get_weather", {"city": "Oslo"}), call(1, "get_time", {"city": "Rome"})],
            },
            result(0, '{"temp": 4}'),
            result(1, "14:05"),
            {"role": "assistant", "content": "Oslo is 4 degrees; in Rome it is 14:05."},
        ],
        "tools": list(tools),
    }


def with_ids(conversation):
    """CANONICAL with the OpenAI call ids kept on calls and results."""
    out = json.loads(json.dumps(conversation))
    for j, call in enumerate(out["messages"][2]["tool_calls"]):
        call["id"] = f"call_{j}"
        out["messages"][3 + j]["tool_call_id"] = f"call_{j}"
    return out


SHAREGPT = {
    "conversations": [
        {"from": "human", "value": "Weather and time in Oslo and Rome?"},
        {"from": "gpt", "value": "Let me look."},
        {
            "from": "function_call",
            "value": json.dumps(
                [
                    {"name": "get_weather", "arguments": {"city": "Oslo"}},
                    {"name": "get_time", "arguments": {"city": "Rome"}},
                ]
            ),
        },
        {"from": "observation", "value": '{"temp": 4}'},
        {"from": "observation", "value": "14:05"},
        {"from": "gpt", "value": "Oslo is 4 degrees; in Rome it is 14:05."},
    ],
    "system": "You help travellers.",
    # Bare function definitions, as JSON text (the LLaMA-Factory layout).
    "tools": json.dumps([WEATHER["function"], TIME["function"]]),
}


def write(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def test_openai_messages_with_tool_calls_results_and_tools(tmp_path):
    result = load_conversations(write(tmp_path / "o.jsonl", [openai_row()]))
    assert result.rows == [with_ids(CANONICAL)]
    assert result.sources[0]["format"] == "messages"


def test_openai_tools_as_json_text_and_results_named_in_order(tmp_path):
    """No ids: the i-th result after an assistant turn answers its i-th call."""
    row = openai_row(ids=False)
    row["tools"] = json.dumps(row["tools"])
    assert load_conversations(write(tmp_path / "o.jsonl", [row])).rows == [CANONICAL]


def test_results_are_named_by_call_id_in_any_order(tmp_path):
    row = openai_row()
    row["messages"][3], row["messages"][4] = row["messages"][4], row["messages"][3]
    [conv] = load_conversations(write(tmp_path / "o.jsonl", [row])).rows
    assert [(m["name"], m["tool_call_id"], m["content"]) for m in conv["messages"][3:5]] == [
        ("get_time", "call_1", "14:05"),
        ("get_weather", "call_0", '{"temp": 4}'),
    ]


def test_sharegpt_function_call_and_observation(tmp_path):
    """The gpt turn right before a function_call is the text said with the calls: one assistant turn."""
    result = load_conversations(write(tmp_path / "s.jsonl", [SHAREGPT]))
    assert result.rows == [CANONICAL]
    assert result.sources[0]["format"] == "sharegpt"


def test_sharegpt_call_alone_single_object_and_reasoning(tmp_path):
    row = {
        "conversations": [
            {"from": "human", "value": "Weather in Oslo?"},
            {"from": "function_call", "value": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}},
            {"from": "observation", "value": "4 degrees"},
            {"from": "gpt", "value": "<think>It said 4.</think>\n\nIt is 4 degrees."},
        ],
        "tools": [WEATHER],
    }
    [conv] = load_conversations(write(tmp_path / "s.jsonl", [row])).rows
    assert conv == {
        "messages": [
            {"role": "user", "content": "Weather in Oslo?"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [{"name": "get_weather", "arguments": {"city": "Oslo"}}],
            },
            {"role": "tool", "content": "4 degrees", "name": "get_weather"},
            {"role": "assistant", "content": "It is 4 degrees.", "reasoning": "It said 4."},
        ],
        "tools": [WEATHER],
    }


def test_a_conversation_may_end_with_a_call_and_content_may_be_null(tmp_path):
    row = {
        "messages": [
            {"role": "user", "content": "Weather in Oslo?"},
            {
                "role": "assistant",
                "content": None,
                "reasoning_content": "Need the tool.",
                "tool_calls": [{"name": "get_weather", "arguments": {"city": "Oslo"}}],
            },
        ],
        "tools": [WEATHER],
    }
    [conv] = load_conversations(write(tmp_path / "o.jsonl", [row])).rows
    assert conv["messages"][1] == {
        "role": "assistant",
        "content": "",
        "reasoning": "Need the tool.",
        "tool_calls": [{"name": "get_weather", "arguments": {"city": "Oslo"}}],
    }


def test_rows_without_tools_keep_no_tools_field(tmp_path):
    rows = [
        {"messages": CANONICAL["messages"][:2] + [{"role": "assistant", "content": "Hi"}], "tools": None},
        {"messages": CANONICAL["messages"][:2] + [{"role": "assistant", "content": "Hi"}], "tools": "[]"},
    ]
    assert all(set(r) == {"messages"} for r in load_conversations(write(tmp_path / "o.jsonl", rows)).rows)


def test_tools_column_mapped_and_missing_in_some_rows(tmp_path):
    plain = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}
    row = openai_row()
    row["functions"] = row.pop("tools")
    path = write(tmp_path / "o.jsonl", [row, plain])
    result = load_conversations(path, columns={"tools": "functions"})
    assert result.rows == [with_ids(CANONICAL), plain]
    with pytest.raises(
        DataError,
        match=r"o\.jsonl: data\.columns\.tools names the field 'tool_defs', which no row "
        r"of this source has",
    ):
        load_conversations(path, columns={"tools": "tool_defs"})


def test_parquet_with_arrow_nulls_and_csv_with_json_cells(tmp_path):
    """Arrow fills absent struct fields with null; a CSV holds the messages and tools as JSON text."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [
        openai_row(),
        {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}], "tools": []},
    ]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "t.parquet")
    [read_back] = pq.read_table(tmp_path / "t.parquet").slice(1).to_pylist()
    assert read_back["messages"][0]["tool_calls"] is None  # the nulls this test is about
    result = load_conversations(str(tmp_path / "t.parquet"))
    assert result.rows == [with_ids(CANONICAL), {"messages": rows[1]["messages"]}]
    assert result.unused_fields == {}
    with open(tmp_path / "t.csv", "w", newline="") as f:
        csv.writer(f).writerows(
            [["messages", "tools"], [json.dumps(openai_row()["messages"]), json.dumps([WEATHER, TIME])]]
        )
    assert load_conversations(str(tmp_path / "t.csv")).rows == [with_ids(CANONICAL)]


def test_multi_part_text_content_becomes_plain_text(tmp_path):
    row = {
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "Weather in "}, {"type": "text", "text": "Oslo?"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "4 degrees."}]},
        ]
    }
    [conv] = load_conversations(write(tmp_path / "p.jsonl", [row])).rows
    assert conv["messages"] == [
        {"role": "user", "content": "Weather in Oslo?"},
        {"role": "assistant", "content": "4 degrees."},
    ]


def test_non_text_content_is_a_counted_drop_even_when_invalid_rows_is_error(tmp_path):
    good = {
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
            {"role": "assistant", "content": "Hello"},
        ]
    }
    image = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": "x.png"}},
                ],
            },
            {"role": "assistant", "content": "A cat."},
        ]
    }
    path = write(tmp_path / "p.jsonl", [good, image, good])
    result = load_conversations(path)
    assert len(result.rows) == 2
    assert result.dropped == [
        {"source": path, "row": 2, "reason": "non-text content: messages[0].content[1] is image_url"}
    ]


def test_every_row_dropped_gives_reasons_for_list_content(tmp_path):
    """Rows with list content used to be refused whole with no reason given."""
    audio = {
        "messages": [
            {"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]},
            {"role": "assistant", "content": "ok"},
        ]
    }
    number = {
        "messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}, {"role": "assistant", "content": "ok"}]
    }
    path = write(tmp_path / "p.jsonl", [audio] * 3 + [number])
    with pytest.raises(DataError) as e:
        load_conversations(path, invalid_rows="drop")
    assert str(e.value) == (
        f"data.source: no usable conversations among 4 rows: 4 dropped (3 non-text content, 1 bad content); first: "
        f"{path}: row 1: non-text content: messages[0].content[0] is input_audio; "
        f"{path}: row 2: non-text content: messages[0].content[0] is input_audio; "
        f"{path}: row 3: non-text content: messages[0].content[0] is input_audio"
    )


def test_unused_fields_are_counted_per_field(tmp_path):
    rows = [{**openai_row(), "id": i, "category": "travel", "source": None} for i in range(3)]
    rows[0]["messages"][1]["weight"] = 0
    rows[1]["messages"][1]["name"] = "ann"  # a user's name is not read either
    result = load_conversations(write(tmp_path / "o.jsonl", rows))
    assert result.unused_fields == {"id": 3, "category": 3, "messages[].weight": 1, "messages[].name": 1}
    assert result.sources[0]["unused_fields"] == result.unused_fields
    sharegpt = [
        {**SHAREGPT, "id": "a"},
        {**SHAREGPT, "conversations": [{**t, "loss": True} for t in SHAREGPT["conversations"]]},
    ]
    assert load_conversations(write(tmp_path / "s.jsonl", sharegpt)).unused_fields == {
        "id": 1,
        "conversations[].loss": 1,
    }


def test_prompts_carry_their_tools(tmp_path):
    row = openai_row()
    row["messages"] = row["messages"][:5]  # ends with the tool results: answer from them
    [prompt] = load_prompts(write(tmp_path / "p.jsonl", [row]))
    assert prompt.tools == [WEATHER, TIME] and prompt.messages[-1]["role"] == "tool"
    assert prompt.reference is None


def mutate(change):
    row = openai_row()
    change(row)
    return row


def drop_tools(row):
    del row["tools"]


# (the row, the exact reason after "<file>: row 2: ")
BAD = [
    (
        mutate(lambda r: r["messages"][2]["tool_calls"][1]["function"].update(name="get_news")),
        "unknown tool: messages[2].tool_calls[1].name is 'get_news', which is not in tools (get_weather, get_time)",
    ),
    (
        mutate(lambda r: r["messages"][2]["tool_calls"][0]["function"].update(arguments="{city: Oslo}")),
        "bad arguments: messages[2].tool_calls[0].function.arguments is not valid JSON "
        "(Expecting property name enclosed in double quotes at character 1)",
    ),
    (
        mutate(lambda r: r["messages"][2]["tool_calls"][0]["function"].update(arguments='["Oslo"]')),
        "bad arguments: messages[2].tool_calls[0].function.arguments is list, expected a JSON object",
    ),
    (
        mutate(lambda r: r["messages"][2]["tool_calls"][0]["function"].pop("name")),
        "bad tool call: messages[2].tool_calls[0].function.name is missing, expected the called function's name",
    ),
    (
        mutate(lambda r: r["messages"].insert(2, {"role": "tool", "content": "4", "name": "get_weather"})),
        "tool result without call: messages[2] is a tool result with no tool call before it",
    ),
    (
        mutate(lambda r: r["messages"][3].update(tool_call_id="call_9")),
        "tool result without call: messages[3].tool_call_id is 'call_9', which no call in messages[2] has",
    ),
    (
        mutate(lambda r: r["messages"].insert(5, {"role": "tool", "content": "more"})),
        "tool result without call: messages[5] is result 3 after messages[2], which makes 2 calls",
    ),
    (mutate(lambda r: r.update(tools={"get_weather": WEATHER})), "bad tools: tools is dict, expected a list"),
    (mutate(lambda r: r.update(tools=[WEATHER, "get_time"])), "bad tools: tools[1] is str, expected an object"),
    (
        mutate(lambda r: r.update(tools='[{"name": "get_time"')),
        "bad tools: tools is not valid JSON (Expecting ',' delimiter at character 20)",
    ),
    (
        mutate(lambda r: r.update(tools=[WEATHER, {"type": "function", "function": {"description": "no name"}}])),
        "bad tools: tools[1].function.name is missing, expected the function's name",
    ),
    (
        mutate(lambda r: r.update(tools=[WEATHER, WEATHER])),
        "bad tools: tools[1].function.name is 'get_weather', which an earlier tool has too",
    ),
    (
        mutate(lambda r: r["messages"][1].update(tool_calls=[{"name": "get_time", "arguments": {}}])),
        "bad tool call: messages[1].tool_calls is on a user turn; only assistant turns call tools",
    ),
    (
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": ""}]},  # no calls: no answer
        "empty content: messages[1].content is empty",
    ),
    (
        {"conversations": [{"from": "human", "value": "q"}, {"from": "function_call", "value": "get_weather(Oslo)"}]},
        "bad tool call: conversations[1].value is not valid JSON (Expecting value at character 0)",
    ),
    (
        {"conversations": [{"from": "human", "value": "q"}, {"from": "function_call", "value": {"arguments": {}}}]},
        "bad tool call: conversations[1].value.name is missing, expected the called function's name",
    ),
    (
        {
            "conversations": [
                {"from": "human", "value": "q"},
                {"from": "observation", "value": "4"},
                {"from": "gpt", "value": "a"},
            ]
        },
        "tool result without call: messages[1] is a tool result with no tool call before it",
    ),
]


@pytest.mark.parametrize("row, reason", BAD, ids=[reason.split(":")[0] + f"-{i}" for i, (_, reason) in enumerate(BAD)])
def test_bad_tool_data_is_an_error_naming_file_row_and_field(tmp_path, row, reason):
    good = openai_row() if "messages" in row else SHAREGPT
    path = write(tmp_path / "d.jsonl", [good, row, good])
    with pytest.raises(DataError) as e:
        load_conversations(path)
    assert str(e.value) == f"{path}: row 2: {reason}"


def test_calls_are_not_checked_against_tools_when_a_row_has_none(tmp_path):
    row = mutate(drop_tools)
    [conv] = load_conversations(write(tmp_path / "o.jsonl", [row])).rows
    assert "tools" not in conv and conv["messages"][2]["tool_calls"][1]["name"] == "get_time"


def test_bad_tool_data_is_dropped_and_counted_per_reason(tmp_path):
    from kit.data.rows import count_reasons, drop_examples

    path = write(tmp_path / "d.jsonl", [openai_row()] + [row for row, _ in BAD if "messages" in row])
    result = load_conversations(path, invalid_rows="drop")
    assert len(result.rows) == 1
    assert count_reasons(result.dropped) == {
        "bad tools": 5,
        "tool result without call": 3,
        "bad arguments": 2,
        "bad tool call": 2,
        "unknown tool": 1,
        "empty content": 1,
    }
    assert [e["field"] for e in drop_examples(result.dropped)] == [
        "messages[2].tool_calls[1].name",
        "messages[2].tool_calls[0].function.arguments",
        "messages[2].tool_calls[0].function.arguments",
    ]


def test_prepare_reports_unused_fields(tmp_path, runs_dir, tiny_model_dir):
    import yaml

    from kit.data.prepare import prepare, summary

    rows = [
        {
            "id": i,
            "category": "greeting",
            "messages": [{"role": "user", "content": f"Hi {i}"}, {"role": "assistant", "content": "Hello"}],
        }
        for i in range(4)
    ]
    recipe = tmp_path / "mine.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "model": {"id": "builtin:tiny-qwen3", "family": "qwen3", "max_seq_length": 64},
                "data": {"source": write(tmp_path / "d.jsonl", rows)},
            }
        )
    )
    report = prepare(str(recipe)).report
    assert report.unused_fields == {"id": 4, "category": 4}
    assert "unused fields (not read, not trained on): id 4, category 4" in summary(report)


def test_held_out_prompts_carry_their_tools(tmp_path):
    from kit.data.prompts import held_out_prompts

    rows = load_conversations(
        write(
            tmp_path / "o.jsonl",
            [
                openai_row(),
                {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]},
            ],
        )
    ).rows
    with_tools, plain = held_out_prompts(rows)
    calls = [{"name": c["name"], "arguments": c["arguments"]} for c in CANONICAL["messages"][2]["tool_calls"]]
    assert with_tools.to_dict() == {
        "messages": CANONICAL["messages"][:2],
        "reference": "Let me look.",
        "tools": [WEATHER, TIME],
        "reference_calls": calls,
    }
    assert plain.to_dict() == {"messages": [{"role": "user", "content": "Hi"}], "reference": "Hello"}
