"""Function-calling and chat layouts (Hermes, OpenAI's legacy functions, xLAM, LLaMA-Factory's parts)
read into the canonical conversation; rows that are not SFT text data (images, KTO's undesirable
answers, preference pairs) never trained as something they are not. Every row here is written by
hand in the test; the docs' example rows are checked to be the ones used here."""

import json
import re

import pytest

from kit.data.rows import DataError, count_reasons, drop_examples, load_conversations
from kit.paths import PROJECT_ROOT

from tests.chat.test_tool_masks import TIME, WEATHER  # the tool definitions the mask tests use


def call_json(name, city):
    return json.dumps({"name": name, "arguments": {"city": city}})


# What the Hermes, OpenAI-functions and LLaMA-Factory rows below become.
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

HERMES = {
    "conversations": [
        {"from": "system", "value": "You help travellers.\n<tools>\n" + json.dumps([WEATHER, TIME]) + "\n</tools>"},
        {"from": "human", "value": "Weather and time in Oslo and Rome?"},
        {
            "from": "gpt",
            "value": f"Let me look.\n<tool_call>\n{call_json('get_weather', 'Oslo')}\n</tool_call>\n"
            f"<tool_call>\n{call_json('get_time', 'Rome')}\n</tool_call>",
        },
        {
            "from": "tool",
            "value": '<tool_response>\n{"name": "get_weather", "content": {"temp": 4}}\n</tool_response>\n'
            '<tool_response>\n{"name": "get_time", "content": "14:05"}\n</tool_response>',
        },
        {"from": "gpt", "value": "Oslo is 4 degrees; in Rome it is 14:05."},
    ]
}

OPENAI_FUNCTIONS = {
    "messages": [
        {"role": "user", "content": "Weather in Oslo?"},
        {
            "role": "assistant",
            "content": None,
            "function_call": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
        },
        {"role": "function", "name": "get_weather", "content": '{"temp": 4}'},
        {"role": "assistant", "content": "It is 4 degrees in Oslo."},
    ],
    "functions": [WEATHER["function"]],
}

XLAM = {
    "id": 7,
    "query": "Weather and time in Oslo and Rome?",
    "tools": json.dumps(
        [
            {
                "name": "get_weather",
                "description": "Current weather in a city.",
                "parameters": {"city": {"type": "str", "description": "City name"}},
            },
            {
                "name": "get_time",
                "description": "Local time in a city.",
                "parameters": {
                    "city": {"type": "str", "description": "City name", "default": "Oslo"},
                    "format": {"type": "str, optional", "description": "12h or 24h", "default": "24h"},
                },
            },
        ]
    ),
    "answers": json.dumps(
        [{"name": "get_weather", "arguments": {"city": "Oslo"}}, {"name": "get_time", "arguments": {"city": "Rome"}}]
    ),
}
XLAM_TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "Local time in a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "City name", "default": "Oslo"},
                "format": {"type": "string", "description": "12h or 24h", "default": "24h"},
            },
            "required": ["city"],
        },
    },
}


def part(kind, value):
    return {"type": kind, "value": value}


LLAMAFACTORY = {
    "messages": [
        {"role": "system", "content": [part("text", "You help travellers.")], "loss_weight": 0.0},
        {"role": "user", "content": [part("text", "Weather and time in Oslo and Rome?")], "loss_weight": 0.0},
        {
            "role": "assistant",
            "content": [
                part("text", "Let me look."),
                part("tool_call", call_json("get_weather", "Oslo")),
                part("tool_call", {"name": "get_time", "arguments": {"city": "Rome"}}),
            ],
            "loss_weight": 1.0,
        },
        {"role": "tool", "content": [part("text", '{"temp": 4}')], "loss_weight": 0.0},
        {"role": "tool", "content": [part("text", "14:05")], "loss_weight": 0.0},
        {
            "role": "assistant",
            "content": [
                part("reasoning", "Both tools answered."),
                part("text", "Oslo is 4 degrees; in Rome it is 14:05."),
            ],
            "loss_weight": 1.0,
        },
    ],
    "tools": json.dumps([WEATHER, TIME]),
}


def write(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def load_one(tmp_path, row, **kwargs):
    result = load_conversations(write(tmp_path / "d.jsonl", [row]), **kwargs)
    return result.rows[0], result.sources[0]["format"]


def test_hermes(tmp_path):
    assert load_one(tmp_path, HERMES) == (CANONICAL, "hermes")


@pytest.mark.parametrize(
    "change",
    [
        "python literals and tools a line each",
        "tool turns",
        "observation and function_response",
        "results in a human turn",
        "tools field",
    ],
)
def test_hermes_variants(tmp_path, change):
    turns = [dict(t) for t in HERMES["conversations"]]
    row = {"conversations": turns}
    if change == "python literals and tools a line each":
        turns[0]["value"] = (
            "You help travellers.\n<tools>\n" + "\n".join(json.dumps(t) for t in (WEATHER, TIME)) + "\n</tools>"
        )
        turns[2]["value"] = (
            "Let me look.\n<tool_call>\n{'arguments': {'city': 'Oslo'}, 'name': 'get_weather'}\n</tool_call>"
            "\n<tool_call>\n{'arguments': {'city': 'Rome'}, 'name': 'get_time'}\n</tool_call>"
        )
    elif change in ("tool turns", "observation and function_response"):
        speakers = ("tool", "tool") if change == "tool turns" else ("observation", "function_response")
        turns[3:4] = [{"from": speakers[0], "value": '{"temp": 4}'}, {"from": speakers[1], "value": "14:05"}]
    elif change == "results in a human turn":
        turns[3] = {"from": "human", "value": turns[3]["value"]}
    else:
        turns[0] = {"from": "system", "value": "You help travellers."}
        row["tools"] = [WEATHER, TIME]
    assert load_one(tmp_path, row) == (CANONICAL, "hermes")


def test_hermes_system_of_tools_alone_and_plain_sharegpt_rows(tmp_path):
    """A system turn that only held the tools is gone (the template writes them); a Hermes source
    reads its plain ShareGPT rows too."""
    row = {
        "conversations": [
            {"from": "system", "value": "<tools>" + json.dumps([WEATHER]) + "</tools>"},
            {"from": "human", "value": "Weather in Oslo?"},
            {"from": "gpt", "value": "<tool_call>" + call_json("get_weather", "Oslo") + "</tool_call>"},
        ]
    }
    plain = {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello!"}]}
    result = load_conversations(write(tmp_path / "h.jsonl", [row, plain]))
    assert result.rows == [
        {
            "messages": [
                {"role": "user", "content": "Weather in Oslo?"},
                {
                    "role": "assistant",
                    "content": "",
                    "tool_calls": [{"name": "get_weather", "arguments": {"city": "Oslo"}}],
                },
            ],
            "tools": [WEATHER],
        },
        {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]},
    ]


def test_a_sharegpt_source_refuses_a_later_hermes_row_unless_told(tmp_path):
    plain = {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello!"}]}
    path = write(tmp_path / "s.jsonl", [plain, HERMES])
    with pytest.raises(DataError) as e:
        load_conversations(path)
    assert str(e.value) == (
        f"{path}: row 2: mixed formats: this row looks like hermes, the rest of the source is "
        "sharegpt; set data.format: hermes to read the source as hermes"
    )
    assert load_conversations(path, fmt="hermes").rows[1] == CANONICAL
    # told sharegpt, the tags are text (and the tool turn an unknown role)
    with pytest.raises(DataError, match=r"row 2: unknown role: conversations\[3\]\.from is 'tool'"):
        load_conversations(path, fmt="sharegpt")


def test_openai_functions(tmp_path):
    assert load_one(tmp_path, OPENAI_FUNCTIONS) == (
        {
            "messages": [
                {"role": "user", "content": "Weather in Oslo?"},
                {
                    "role": "assistant",
                    "content": "",
                    "tool_calls": [{"name": "get_weather", "arguments": {"city": "Oslo"}}],
                },
                {"role": "tool", "content": '{"temp": 4}', "name": "get_weather"},
                {"role": "assistant", "content": "It is 4 degrees in Oslo."},
            ],
            "tools": [WEATHER],
        },
        "openai_functions",
    )


def test_openai_functions_arguments_as_an_object_and_no_functions(tmp_path):
    row = json.loads(json.dumps(OPENAI_FUNCTIONS))
    row["messages"][1]["function_call"]["arguments"] = {"city": "Oslo"}
    del row["functions"]
    conversation, fmt = load_one(tmp_path, row)
    assert fmt == "openai_functions" and "tools" not in conversation
    assert conversation["messages"][1]["tool_calls"] == [{"name": "get_weather", "arguments": {"city": "Oslo"}}]


def test_xlam(tmp_path):
    result = load_conversations(write(tmp_path / "x.jsonl", [XLAM]))
    assert result.rows == [
        {
            "messages": [
                {"role": "user", "content": "Weather and time in Oslo and Rome?"},
                {
                    "role": "assistant",
                    "content": "",
                    "tool_calls": [
                        {"name": "get_weather", "arguments": {"city": "Oslo"}},
                        {"name": "get_time", "arguments": {"city": "Rome"}},
                    ],
                },
            ],
            "tools": [WEATHER, XLAM_TIME],
        }
    ]
    assert result.sources[0]["format"] == "xlam" and result.unused_fields == {"id": 1}


def test_xlam_lists_and_json_schema_parameters_kept(tmp_path):
    row = {
        "query": "Weather in Oslo?",
        "tools": [WEATHER],
        "answers": [{"name": "get_weather", "arguments": {"city": "Oslo"}}],
    }
    conversation, _ = load_one(tmp_path, row)
    assert conversation["tools"] == [WEATHER]


def test_llamafactory(tmp_path):
    expected = json.loads(json.dumps(CANONICAL))
    expected["messages"][5]["reasoning"] = "Both tools answered."
    assert load_one(tmp_path, LLAMAFACTORY) == (expected, "llamafactory")


# A turn LLaMA-Factory's loss_weight 0 leaves untrained, in a conversation every tool family can express.
CONTEXT_TURN = {
    "messages": [
        {"role": "user", "content": [part("text", "Hi")]},
        {"role": "assistant", "content": [part("text", "Hello! How can I help?")], "loss_weight": 0},
        {"role": "user", "content": [part("text", "Weather in Oslo?")]},
        {"role": "assistant", "content": [part("tool_call", call_json("get_weather", "Oslo"))]},
        {"role": "tool", "content": [part("text", "4 C")]},
        {"role": "assistant", "content": "It is 4 degrees in Oslo.", "loss_weight": 0.5},
    ],
    "tools": [WEATHER],
}


def test_llamafactory_loss_weight_zero_marks_the_turn_not_trained(tmp_path):
    conversation, _ = load_one(tmp_path, CONTEXT_TURN)
    assert conversation["messages"][1] == {"role": "assistant", "content": "Hello! How can I help?", "train": False}
    assert all("train" not in m for k, m in enumerate(conversation["messages"]) if k != 1)


def test_trained_turns_leave_out_turns_marked_not_trained():
    from kit.chat.render import trained_turns

    messages = [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b", "train": False},
        {"role": "user", "content": "c"},
        {"role": "assistant", "content": "d"},
    ]
    assert trained_turns(messages, "all_assistant") == {3}
    assert trained_turns(messages, "last_assistant") == {3}
    messages[3]["train"] = False  # last_assistant trains the last turn or none, never an earlier one
    assert trained_turns(messages, "last_assistant") == set()


def test_a_json_file_holding_one_conversation(tmp_path):
    (tmp_path / "one.json").write_text(json.dumps(HERMES, indent=2))
    result = load_conversations(str(tmp_path / "one.json"))
    assert result.rows == [CANONICAL] and result.total == 1


# -- trained spans, through every family whose template takes tools ---------------------------

# The same conversation in each layout: a greeting (untrained where the layout can say so), one call,
# its result, the answer.
SPAN_ROWS = {
    "hermes": {
        "conversations": [
            {"from": "system", "value": "<tools>" + json.dumps([WEATHER]) + "</tools>"},
            {"from": "human", "value": "Hi"},
            {"from": "gpt", "value": "Hello! How can I help?"},
            {"from": "human", "value": "Weather in Oslo?"},
            {"from": "gpt", "value": "<tool_call>\n" + call_json("get_weather", "Oslo") + "\n</tool_call>"},
            {"from": "tool", "value": "4 C"},
            {"from": "gpt", "value": "It is 4 degrees in Oslo."},
        ]
    },
    "openai_functions": {
        "messages": [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello! How can I help?"},
            {"role": "user", "content": "Weather in Oslo?"},
            {
                "role": "assistant",
                "content": None,
                "function_call": {"name": "get_weather", "arguments": {"city": "Oslo"}},
            },
            {"role": "function", "name": "get_weather", "content": "4 C"},
            {"role": "assistant", "content": "It is 4 degrees in Oslo."},
        ],
        "functions": [WEATHER["function"]],
    },
    "xlam": {
        "query": "Weather in Oslo?",
        "tools": [WEATHER],
        "answers": [{"name": "get_weather", "arguments": {"city": "Oslo"}}],
    },
    "llamafactory": CONTEXT_TURN,
}
TOOL_FAMILIES = ("qwen3", "qwen2.5", "smollm2", "llama-3.1", "gpt-oss", "glm-4")


def test_every_family_with_tools_is_covered():
    from kit.families import FAMILIES

    assert sorted(TOOL_FAMILIES) == sorted(n for n, f in FAMILIES.items() if f.tools is not None)


@pytest.mark.parametrize("layout", list(SPAN_ROWS))
@pytest.mark.parametrize("family_name", TOOL_FAMILIES)
def test_trained_spans_are_exactly_the_assistants_text_and_calls(tmp_path, family_tokenizers, family_name, layout):
    from kit.chat.render import tokenize_with_labels
    from kit.families import FAMILIES
    from tests.chat.test_tool_masks import expected_piece, supervised

    [row] = load_conversations(write(tmp_path / "d.jsonl", [SPAN_ROWS[layout]])).rows
    messages, tokenizer = row["messages"], family_tokenizers[family_name]
    ex = tokenize_with_labels(tokenizer, FAMILIES[family_name], messages, tools=row["tools"])
    trained = [k for k, m in enumerate(messages) if m["role"] == "assistant" and m.get("train", True)]
    assert trained == ([1] if layout == "xlam" else [3, 5] if layout == "llamafactory" else [1, 3, 5])
    assert supervised(tokenizer, ex) == [expected_piece(family_name, messages, k) for k in trained]
    if layout == "llamafactory":
        assert "Hello! How can I help?" in tokenizer.decode(ex["input_ids"])  # rendered, as context


# -- refusals: each names file, row and field -------------------------------------------------


def hermes_with(k, value):
    row = json.loads(json.dumps(HERMES))
    row["conversations"][k]["value"] = value
    return row


def llamafactory_with(change):
    row = json.loads(json.dumps(LLAMAFACTORY))
    change(row["messages"])
    return row


# (a bad row, the exact reason after "<file>: row 2: ")
BAD = [
    (
        hermes_with(2, "Let me look.\n<tool_call>\nget_weather(city='Oslo')\n</tool_call>"),
        "bad tool call: conversations[2].value: <tool_call> block 1 is not valid JSON (Expecting value at character 0)",
    ),
    (
        hermes_with(2, "<tool_call>" + call_json("get_weather", "Oslo") + '</tool_call><tool_call>{"name": '),
        "bad tool call: conversations[2].value: <tool_call> block 2 has no closing </tool_call>",
    ),
    (
        hermes_with(2, "<tool_call>[1, 2]</tool_call>"),
        "bad tool call: conversations[2].value: <tool_call> block 1 is list, expected an object with name and arguments",
    ),
    (
        hermes_with(2, "<tool_call>" + call_json("get_news", "Oslo") + "</tool_call>"),
        "unknown tool: messages[2].tool_calls[0].name is 'get_news', which is not in tools (get_weather, get_time)",
    ),
    (
        hermes_with(0, 'Be kind. <tools>[{"name": </tools>'),
        "bad tools: conversations[0].value: <tools> block is not valid JSON (Expecting value at character 9)",
    ),
    (
        hermes_with(3, "<tool_response>4</tool_response> and more"),
        "bad tool result: conversations[3].value has text outside its <tool_response> blocks",
    ),
    (
        {**HERMES, "tools": [WEATHER]},
        "bad tools: conversations[0].value has a <tools> block and the row's tools field is given too; keep one",
    ),
    (
        {
            **OPENAI_FUNCTIONS,
            "messages": [
                OPENAI_FUNCTIONS["messages"][0],
                {
                    "role": "assistant",
                    "content": None,
                    "function_call": {"name": "get_weather", "arguments": "{city: Oslo}"},
                },
            ],
        },
        "bad arguments: messages[1].function_call.arguments is not valid JSON "
        "(Expecting property name enclosed in double quotes at character 1)",
    ),
    (
        {
            **OPENAI_FUNCTIONS,
            "messages": [
                OPENAI_FUNCTIONS["messages"][0],
                {"role": "assistant", "content": None, "function_call": {"name": "get_news", "arguments": "{}"}},
            ],
        },
        "unknown tool: messages[1].tool_calls[0].name is 'get_news', which is not in tools (get_weather)",
    ),
    (
        {**OPENAI_FUNCTIONS, "messages": [{"role": "user", "content": "Hi", "function_call": {"name": "get_weather"}}]},
        "bad tool call: messages[0].function_call is on a user turn; only assistant turns call tools",
    ),
    ({**OPENAI_FUNCTIONS, "tools": [WEATHER]}, "bad tools: functions and tools are both given; keep one"),
    (
        {**XLAM, "answers": '{"name": "get_weather", "arguments": {}}'},
        "bad tool call: answers is dict, expected a list",
    ),
    (
        {**XLAM, "answers": "get_weather(city='Oslo')"},
        "bad tool call: answers is not valid JSON (Expecting value at character 0)",
    ),
    ({**XLAM, "answers": "[]"}, "bad tool call: answers is empty, expected the calls that answer the query"),
    (
        {**XLAM, "answers": [{"arguments": {"city": "Oslo"}}]},
        "bad tool call: answers[0].name is missing, expected the called function's name",
    ),
    (
        {**XLAM, "answers": [{"name": "get_news", "arguments": {}}]},
        "unknown tool: messages[1].tool_calls[0].name is 'get_news', which is not in tools (get_weather, get_time)",
    ),
    (
        llamafactory_with(lambda m: m[2].update(loss_weight=1.5)),
        "bad loss_weight: messages[2].loss_weight is 1.5, expected a number from 0 to 1 (0: the turn is not trained)",
    ),
    (
        llamafactory_with(lambda m: m[5].update(loss_weight=-1)),
        "bad loss_weight: messages[5].loss_weight is -1, expected a number from 0 to 1 (0: the turn is not trained)",
    ),
    (
        llamafactory_with(lambda m: m[1]["content"].append(part("citation", "p. 4"))),
        "bad content: messages[1].content[1].type is 'citation', a part type the kit does not know "
        "(expected one of text, reasoning, tool_call, tool_calls, tools)",
    ),
    (
        llamafactory_with(lambda m: m[2]["content"].__setitem__(1, part("tool_call", "get_weather(Oslo)"))),
        "bad tool call: messages[2].content[1].value is not valid JSON (Expecting value at character 0)",
    ),
    (
        llamafactory_with(lambda m: m[2]["content"].__setitem__(1, part("tool_call", call_json("get_news", "Oslo")))),
        "unknown tool: messages[2].tool_calls[0].name is 'get_news', which is not in tools (get_weather, get_time)",
    ),
    (
        llamafactory_with(lambda m: [t.update(loss_weight=0) for t in m if t["role"] == "assistant"]),
        "nothing to train: messages has no assistant turn to train (each has loss_weight 0)",
    ),
    (
        {**LLAMAFACTORY, "images": ["photo.png"]},
        "non-text content: images has 1 item; the kit trains text-only models, so a row with images, video or audio "
        "is not used",
    ),
    (
        {
            "messages": [
                {"role": "user", "content": "<video>What happens?"},
                {"role": "assistant", "content": "A goal."},
            ],
            "videos": ["a.mp4", "b.mp4"],
        },
        "non-text content: videos has 2 items; the kit trains text-only models, so a row with images, video or audio "
        "is not used",
    ),
]
GOOD = {"hermes": HERMES, "openai_functions": OPENAI_FUNCTIONS, "xlam": XLAM, "llamafactory": LLAMAFACTORY}


def layout_of(row):
    from kit.data.formats import detect

    return detect(row) if detect(row) != "messages" else "llamafactory"


@pytest.mark.parametrize("row, reason", BAD, ids=[reason.split(":")[0] + f"-{i}" for i, (_, reason) in enumerate(BAD)])
def test_bad_rows_are_errors_naming_file_row_and_field(tmp_path, row, reason):
    fmt = layout_of(row)
    path = write(tmp_path / "d.jsonl", [GOOD[fmt], row, GOOD[fmt]])
    with pytest.raises(DataError) as e:
        load_conversations(path, fmt=fmt)
    assert str(e.value) == f"{path}: row 2: {reason}"


def test_bad_rows_are_dropped_and_counted_per_reason(tmp_path):
    counts, fields = {}, []
    for fmt in GOOD:
        rows = [row for row, _ in BAD if layout_of(row) == fmt]
        result = load_conversations(write(tmp_path / f"{fmt}.jsonl", [GOOD[fmt], *rows]), fmt=fmt, invalid_rows="drop")
        assert len(result.rows) == 1 and len(result.dropped) == len(rows)
        for key, n in count_reasons(result.dropped).items():
            counts[key] = counts.get(key, 0) + n
        fields += [e["field"] for e in drop_examples(result.dropped, len(rows))]
    assert counts == {
        "bad tool call": 9,
        "unknown tool": 4,
        "bad tools": 3,
        "bad tool result": 1,
        "bad arguments": 1,
        "bad loss_weight": 2,
        "bad content": 1,
        "nothing to train": 1,
        "non-text content": 2,
    }
    assert fields[:2] == ["conversations[2].value", "conversations[2].value"]
    assert "images" in fields and "videos" in fields and "messages[2].loss_weight" in fields


def test_a_media_part_is_a_counted_drop_even_under_error(tmp_path):
    image = llamafactory_with(lambda m: m[1]["content"].append(part("image_url", "x.png")))
    path = write(tmp_path / "d.jsonl", [LLAMAFACTORY, image])
    result = load_conversations(path)
    assert result.dropped == [
        {"source": path, "row": 2, "reason": "non-text content: messages[1].content[1] is image_url"}
    ]


@pytest.mark.parametrize("label", [False])
def test_kto_rows_labelled_undesirable_are_dropped_and_counted(tmp_path, label):
    def kto(answer, value):
        return {
            "prompt": [{"role": "user", "content": "Is 7 prime?"}],
            "completion": [{"role": "assistant", "content": answer}],
            "label": value,
        }

    path = write(tmp_path / "kto.jsonl", [kto("Yes.", True), kto("No.", label), kto("Yes, 7 is prime.", 1)])
    for invalid_rows in ("error", "drop"):  # not wrong data, only not SFT data: dropped either way
        result = load_conversations(path, invalid_rows=invalid_rows)
        assert [r["messages"][1]["content"] for r in result.rows] == ["Yes.", "Yes, 7 is prime."]
        assert result.dropped == [
            {
                "source": path,
                "row": 2,
                "reason": (
                    f"kto label false: label is {str(label).lower()}: an undesirable answer, which SFT would teach as a "
                    "good one; train.method: kto trains on both labels"
                ),
            }
        ]
        assert count_reasons(result.dropped) == {"kto label false": 1}
        assert drop_examples(result.dropped)[0]["field"] == "label"


REFUSAL = (
    "preference data (fields {}) and train.method sft: set train.method: dpo to train on the pairs; or, to "
    "fine-tune on the preferred answers alone, {}"
)
PREFERENCE = [
    (
        {"prompt": "Is 7 prime?", "chosen": "Yes.", "rejected": "No."},
        REFUSAL.format(
            "prompt, chosen, rejected",
            "data.columns: {completion: chosen} reads prompt and chosen as prompt_completion",
        ),
    ),
    (
        {
            "chosen": [{"role": "user", "content": "Is 7 prime?"}, {"role": "assistant", "content": "Yes."}],
            "rejected": [{"role": "user", "content": "Is 7 prime?"}, {"role": "assistant", "content": "No."}],
        },
        REFUSAL.format(
            "chosen, rejected", "data.columns: {messages: chosen} reads each chosen conversation as messages"
        ),
    ),
    (
        {"question": "Is 7 prime?", "response_j": "Yes.", "response_k": "No."},
        REFUSAL.format(
            "question, response_j, response_k",
            "data.columns: {instruction: question, output: response_j} "
            "reads the question and the preferred answer as alpaca",
        ),
    ),
    (
        {
            "input": {"messages": [{"role": "user", "content": "Is 7 prime?"}]},
            "preferred_output": [{"role": "assistant", "content": "Yes."}],
            "non_preferred_output": [{"role": "assistant", "content": "No."}],
        },
        REFUSAL.format(
            "input, preferred_output, non_preferred_output",
            "write each row as messages: input's messages followed by preferred_output",
        ),
    ),
    (
        {
            "conversations": [{"from": "human", "value": "Is 7 prime?"}],
            "chosen": {"from": "gpt", "value": "Yes."},
            "rejected": {"from": "gpt", "value": "No."},
        },
        REFUSAL.format(
            "conversations, chosen, rejected",
            "data.columns: {completion: chosen} is no help here: write "
            "each row's conversations followed by its chosen turn",
        ),
    ),
]


@pytest.mark.parametrize(
    "row, message",
    PREFERENCE,
    ids=["prompt-chosen-rejected", "chosen-rejected", "stack-exchange", "openai-dpo", "llamafactory-sharegpt"],
)
def test_preference_data_is_refused_in_one_line(tmp_path, row, message):
    path = write(tmp_path / "pref.jsonl", [row, row])
    with pytest.raises(DataError) as e:
        load_conversations(path)
    assert str(e.value) == f"{path}: row 1: {message}" and "\n" not in str(e.value)


def test_the_suggested_mappings_train_the_preferred_answers(tmp_path):
    [with_prompt, conversations, stack, *_] = [row for row, _ in PREFERENCE]
    assert load_conversations(write(tmp_path / "a.jsonl", [with_prompt]), columns={"completion": "chosen"}).rows == [
        {"messages": [{"role": "user", "content": "Is 7 prime?"}, {"role": "assistant", "content": "Yes."}]}
    ]
    assert load_conversations(write(tmp_path / "b.jsonl", [conversations]), columns={"messages": "chosen"}).rows == [
        {"messages": conversations["chosen"]}
    ]
    assert load_conversations(
        write(tmp_path / "c.jsonl", [stack]), columns={"instruction": "question", "output": "response_j"}
    ).rows == [{"messages": [{"role": "user", "content": "Is 7 prime?"}, {"role": "assistant", "content": "Yes."}]}]


def test_detection_of_the_existing_layouts_is_unchanged():
    from kit.data.formats import detect

    assert detect({"messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}]}) == "messages"
    assert detect({"messages": [{"role": "assistant", "tool_calls": []}], "tools": []}) == "messages"
    assert (
        detect({"conversations": [{"from": "function_call", "value": "{}"}, {"from": "observation", "value": "4"}]})
        == "sharegpt"
    )
    assert detect({"instruction": "q", "output": "a", "query": "x"}) == "alpaca"
    assert detect({"prompt": "q", "completion": "a", "label": False}) == "prompt_completion"


# The example row of each layout in docs/data-formats.md, and what it becomes.
DOC_TOOL = {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}
DOC_CALL = {"name": "get_weather", "arguments": {"city": "Oslo"}}
DOC_ROWS = {
    "hermes": {
        "conversations": [
            {"from": "system", "value": "You help travellers.\n<tools>\n" + json.dumps(DOC_TOOL) + "\n</tools>"},
            {"from": "human", "value": "Weather in Oslo?"},
            {"from": "gpt", "value": "Let me look.\n<tool_call>\n" + json.dumps(DOC_CALL) + "\n</tool_call>"},
            {
                "from": "tool",
                "value": '<tool_response>\n{"name": "get_weather", "content": {"temp": 4}}\n</tool_response>',
            },
            {"from": "gpt", "value": "It is 4 degrees in Oslo."},
        ]
    },
    "openai_functions": {
        "messages": [
            {"role": "user", "content": "Weather in Oslo?"},
            {
                "role": "assistant",
                "content": None,
                "function_call": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
            },
            {"role": "function", "name": "get_weather", "content": '{"temp": 4}'},
            {"role": "assistant", "content": "It is 4 degrees in Oslo."},
        ],
        "functions": [DOC_TOOL],
    },
    "xlam": {
        "id": 7,
        "query": "Weather in Oslo?",
        "tools": json.dumps(
            [
                {
                    "name": "get_weather",
                    "description": "Current weather",
                    "parameters": {
                        "city": {"type": "str", "description": "City name"},
                        "units": {"type": "str, optional", "description": "C or F", "default": "C"},
                    },
                }
            ]
        ),
        "answers": json.dumps([DOC_CALL]),
    },
    "llamafactory": {
        "messages": [
            {"role": "user", "content": [part("text", "Hi")]},
            {"role": "assistant", "content": [part("text", "Hello! How can I help?")], "loss_weight": 0},
            {"role": "user", "content": [part("text", "Weather in Oslo?")]},
            {
                "role": "assistant",
                "content": [part("reasoning", "The weather tool knows."), part("tool_call", json.dumps(DOC_CALL))],
                "loss_weight": 1,
            },
            {"role": "tool", "content": [part("text", "4 C")]},
            {"role": "assistant", "content": [part("text", "It is 4 degrees in Oslo.")], "loss_weight": 1},
        ],
        "tools": json.dumps([DOC_TOOL]),
    },
}
ASKED, ANSWERED = (
    {"role": "user", "content": "Weather in Oslo?"},
    {"role": "assistant", "content": "It is 4 degrees in Oslo."},
)
CALLED = {"role": "assistant", "content": "", "tool_calls": [DOC_CALL]}
DOC_EXPECTED = {
    "hermes": [
        {"role": "system", "content": "You help travellers."},
        ASKED,
        {**CALLED, "content": "Let me look."},
        {"role": "tool", "content": '{"temp": 4}', "name": "get_weather"},
        ANSWERED,
    ],
    "openai_functions": [ASKED, CALLED, {"role": "tool", "content": '{"temp": 4}', "name": "get_weather"}, ANSWERED],
    "xlam": [ASKED, CALLED],
    "llamafactory": [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello! How can I help?", "train": False},
        ASKED,
        {**CALLED, "reasoning": "The weather tool knows."},
        {"role": "tool", "content": "4 C", "name": "get_weather"},
        ANSWERED,
    ],
}
DOC_TOOLS = {
    "xlam": {
        "name": "get_weather",
        "description": "Current weather",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "City name"},
                "units": {"type": "string", "description": "C or F", "default": "C"},
            },
            "required": ["city"],
        },
    }
}


def test_the_docs_example_rows(tmp_path):
    """docs/data-formats.md shows one row per layout: these, read as written here."""
    text = (PROJECT_ROOT / "docs" / "data-formats.md").read_text()
    examples = dict(re.findall(r"An? `(\w+)` row:\n\n```json\n(.*?)\n```", text, re.S))
    assert {name: json.loads(row) for name, row in examples.items()} == DOC_ROWS
    for name, row in DOC_ROWS.items():
        conversation, fmt = load_one(tmp_path, row)
        tool = {
            "type": "function",
            "function": DOC_TOOLS.get(
                name, {"name": "get_weather", "description": "", "parameters": DOC_TOOL["parameters"]}
            ),
        }
        assert (fmt, conversation) == (name, {"messages": DOC_EXPECTED[name], "tools": [tool]})


def test_every_turn_makes_no_example_for_an_untrained_turn():
    """data.reasoning: every_turn gives one example per trained assistant turn: a turn with
    loss_weight 0 (train: false) stays history in the later examples but gets none of its own."""
    from kit.data.tokenize import expand_turns

    messages = [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b", "train": False},
        {"role": "user", "content": "c"},
        {"role": "assistant", "content": "d"},
    ]
    assert expand_turns(messages) == [messages]


def test_a_class_id_label_column_is_not_a_kto_label(tmp_path):
    """Only a boolean false is KTO's "undesirable": a dataset's class-id column (0, 1, 2) is data."""
    rows = [
        {"instruction": "Sort this review", "output": "negative", "label": 0},
        {"instruction": "Sort this one", "output": "positive", "label": 1},
    ]
    result = load_conversations(write(tmp_path / "d.jsonl", rows))
    assert len(result.rows) == 2 and result.dropped == []


def test_sft_rows_beside_preference_fields_are_read_as_sft(tmp_path):
    """UltraFeedback's SFT split: messages beside prompt/chosen/rejected is SFT data, read as messages."""
    messages = [{"role": "user", "content": "Is 7 prime?"}, {"role": "assistant", "content": "Yes."}]
    row = {
        "prompt": "Is 7 prime?",
        "messages": messages,
        "chosen": messages,
        "rejected": [messages[0], {"role": "assistant", "content": "No."}],
    }
    conversation, fmt = load_one(tmp_path, row)
    assert fmt == "messages" and conversation["messages"] == messages
    conversation, fmt = load_one(tmp_path, row, fmt="messages")
    assert fmt == "messages" and conversation["messages"] == messages


def test_a_user_who_writes_a_tool_tag_does_not_make_sharegpt_hermes(tmp_path):
    rows = [
        {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]},
        {
            "conversations": [
                {"from": "human", "value": "What does <tools> mean in a prompt?"},
                {"from": "gpt", "value": "It marks tool definitions."},
            ]
        },
    ]
    result = load_conversations(write(tmp_path / "d.jsonl", rows))
    assert result.sources[0]["format"] == "sharegpt" and len(result.rows) == 2
    assert result.rows[1]["messages"][0]["content"] == "What does <tools> mean in a prompt?"


def test_last_assistant_on_an_untrained_last_turn_drops_the_row(tokenizer):
    """data.train_on: last_assistant picks the last turn; loss_weight 0 there leaves nothing to
    train, so the row is dropped and counted rather than kept with every label ignored."""
    from kit.data.tokenize import tokenize_rows
    from kit.families import family_for
    from kit.recipes import apply_overrides, load_recipe

    _, recipe = load_recipe("tiny-demo")
    recipe = apply_overrides(recipe, {"data.train_on": "last_assistant"})
    trained = [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b"},
        {"role": "user", "content": "c"},
        {"role": "assistant", "content": "d"},
    ]
    untrained_last = [*trained[:3], {**trained[3], "train": False}]
    tokenized = tokenize_rows(
        tokenizer, family_for(recipe), [{"messages": trained}, {"messages": untrained_last}], recipe
    )
    assert tokenized.kept == [0] and len(tokenized.examples) == 1
    assert tokenized.dropped == [
        {
            "source": "rows",
            "row": 2,
            "reason": (
                "nothing to train: the assistant turns data.train_on (last_assistant) picks are marked not trained (loss_weight 0)"
            ),
        }
    ]
