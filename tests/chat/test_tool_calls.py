"""Tool calls parsed back from generated answers: for each family, an assistant turn rendered by
the kit's own training path is taken as generation returns it (its supervised tokens up to the
first stop token, decoded and split into reasoning and answer) and parsed back into exactly the
canonical calls. Then broken calls, families without tools, and the tool-call scores.
"""

import copy

import pytest

from kit.chat.render import tokenize_with_labels
from kit.families import FAMILIES
from kit.inference import decode, split_reasoning
from kit.chat.tool_calls import (
    ParsedAnswer,
    keeps_special_tokens,
    parse_answer,
    render_calls_for_display,
    tool_call_scores,
)

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city"],
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "Local time in a city.",  # gpt-oss's template reads a description
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
TOOLS = [WEATHER, TIME]
ASK = {"role": "user", "content": "Is it warm in Zürich?"}
# Arguments with what JSON can hold: non-ASCII text, numbers, booleans, null, lists, objects.
RICH = {
    "name": "get_weather",
    "arguments": {
        "city": "Zürich",
        "days": 3,
        "hourly": [True, None, 2.5],
        "units": {"temp": "°C"},
        "note": 'say "hi"\n',
    },
}
WEATHER_CALL = {"name": "get_weather", "arguments": {"city": "Zürich"}}
TIME_CALL = {"name": "get_time", "arguments": {"city": "Zürich"}}
RESULT = {"role": "tool", "name": "get_weather", "content": "24 C"}


def turn(content="", calls=None, reasoning=None):
    out = {"role": "assistant", "content": content}
    if calls:
        out["tool_calls"] = [{**c, "id": f"c{k}"} for k, c in enumerate(calls)]  # ids are not generated back
    if reasoning:
        out["reasoning"] = reasoning
    return out


WITH_TOOLS = ("qwen3", "qwen2.5", "smollm2", "llama-3.1", "gpt-oss", "glm-4")
# name: (conversation ending in the turn under test, families that render it)
CASES = {
    "one_call": ([ASK, turn(calls=[RICH])], WITH_TOOLS),
    "parallel": ([ASK, turn(calls=[WEATHER_CALL, TIME_CALL])], ("qwen3", "qwen2.5", "smollm2", "glm-4")),
    "call_with_text": (
        [ASK, turn("Let me check.", [WEATHER_CALL])],
        ("qwen3", "qwen2.5", "smollm2", "gpt-oss", "glm-4"),
    ),
    "call_with_reasoning": (
        [ASK, turn(calls=[WEATHER_CALL], reasoning="I need the weather tool.")],
        ("qwen3", "gpt-oss"),
    ),
    "call_after_a_result": ([ASK, turn(calls=[WEATHER_CALL]), RESULT, turn(calls=[TIME_CALL])], WITH_TOOLS),
    "answer": ([ASK, turn("Yes: 24 °C, sunny.")], WITH_TOOLS),
}
ROUND_TRIPS = [(f, name) for name, (_, families) in CASES.items() for f in families]


def generated_ids(tokenizer, family, messages) -> list[int]:
    """The last assistant turn as a model generates it: its supervised tokens, cut at the first
    stop token (which generate() leaves out)."""
    ex = tokenize_with_labels(tokenizer, family, messages, "last_assistant", tools=TOOLS)
    ids = [t for t, label in zip(ex["input_ids"], ex["labels"]) if label != -100]
    stops = {tokenizer.convert_tokens_to_ids(t) for t in family.stops}
    return ids[: next(k for k, t in enumerate(ids) if t in stops)]


def answer_as_generated(tokenizer, family, ids) -> tuple[str | None, str]:
    """(reasoning, answer text) as parse_answer's contract has them: ``answer_of``'s split of ids
    decoded with special tokens kept where ``keeps_special_tokens`` says so."""
    return split_reasoning(tokenizer.decode(ids, skip_special_tokens=not keeps_special_tokens(family)), family)


def expected(messages) -> tuple[ParsedAnswer, str | None]:
    last = messages[-1]
    calls = [{"name": c["name"], "arguments": c["arguments"]} for c in last.get("tool_calls", [])]
    return ParsedAnswer(last["content"], calls, []), last.get("reasoning")


@pytest.mark.parametrize("family_name, name", ROUND_TRIPS)
def test_rendered_calls_parse_back_to_the_canonical_calls(family_tokenizers, family_name, name):
    family, tokenizer, messages = FAMILIES[family_name], family_tokenizers[family_name], CASES[name][0]
    reasoning, text = answer_as_generated(tokenizer, family, generated_ids(tokenizer, family, messages))
    want, want_reasoning = expected(messages)
    if family_name == "gpt-oss" and want.calls and want.content:
        # gpt-oss writes a call turn's text on its analysis channel: it comes back as reasoning
        want, want_reasoning = ParsedAnswer("", want.calls, []), want.content
    assert parse_answer(text, family) == want
    assert reasoning == want_reasoning


@pytest.mark.parametrize("family_name", WITH_TOOLS)
def test_decode_keeps_what_parse_answer_needs(family_tokenizers, family_name):
    """kit.inference.decode gives parse_answer the text its contract names (for glm-4 this needs
    decode to keep special tokens: ``skip_special_tokens=not keeps_special_tokens(family)``)."""
    family, tokenizer = FAMILIES[family_name], family_tokenizers[family_name]
    messages, families = CASES["call_with_text"]
    ids = generated_ids(tokenizer, family, messages if family_name in families else CASES["one_call"][0])
    assert decode(tokenizer, family, ids) == tokenizer.decode(ids, skip_special_tokens=not keeps_special_tokens(family))


def test_glm4_calls_need_their_special_tokens(family_tokenizers):
    """Without <|assistant|> (a special token) the text before a call runs into the call's name."""
    family, tokenizer = FAMILIES["glm-4"], family_tokenizers["glm-4"]
    ids = generated_ids(tokenizer, family, CASES["call_with_text"][0])
    skipped = tokenizer.decode(ids, skip_special_tokens=True).strip()
    assert skipped == 'Let me check.get_weather\n{"city": "Zürich"}'
    assert parse_answer(skipped, family).calls == []
    assert [f for f in FAMILIES if keeps_special_tokens(FAMILIES[f])] == ["gpt-oss", "glm-4"]


def test_qwen_tool_call_tokens_survive_decoding_as_qwen_marks_them(family_tokenizers):
    """Qwen's vocabulary has <tool_call> and </tool_call> as added tokens that are not special, so
    answers decoded without special tokens keep them (as one token each here, as in Qwen's own)."""
    from transformers import AddedToken

    family = FAMILIES["qwen2.5"]
    for special, parsed in ((False, [WEATHER_CALL]), (True, [])):
        tokenizer = copy.deepcopy(family_tokenizers["qwen2.5"])
        markup = [AddedToken(t, special=special, normalized=False) for t in ("<tool_call>", "</tool_call>")]
        tokenizer.add_tokens(markup, special_tokens=special)
        ids = generated_ids(tokenizer, family, [ASK, turn(calls=[WEATHER_CALL])])
        assert tokenizer.convert_tokens_to_ids("<tool_call>") in ids
        _, text = answer_as_generated(tokenizer, family, ids)
        assert parse_answer(text, family).calls == parsed


def without_last_brace(text: str) -> str:
    """The first call's arguments left unclosed: `{"city": "Zürich"` instead of `{"city": "Zürich"}`."""
    assert '"Zürich"}' in text
    return text.replace('"Zürich"}', '"Zürich"', 1)


@pytest.mark.parametrize("family_name", WITH_TOOLS)
def test_broken_json_is_an_invalid_call(family_tokenizers, family_name):
    family, tokenizer = FAMILIES[family_name], family_tokenizers[family_name]
    ids = generated_ids(tokenizer, family, [ASK, turn(calls=[WEATHER_CALL])])
    _, text = answer_as_generated(tokenizer, family, ids)
    parsed = parse_answer(without_last_brace(text), family)
    assert parsed.calls == [] and len(parsed.invalid) == 1
    assert "not valid JSON" in parsed.invalid[0]


@pytest.mark.parametrize("family_name", ["qwen3", "glm-4"])
def test_a_broken_call_beside_a_good_one(family_tokenizers, family_name):
    family, tokenizer = FAMILIES[family_name], family_tokenizers[family_name]
    messages = [ASK, turn("Let me check.", [WEATHER_CALL, TIME_CALL])]
    _, text = answer_as_generated(tokenizer, family, generated_ids(tokenizer, family, messages))
    parsed = parse_answer(without_last_brace(text), family)
    assert (parsed.content, parsed.calls, len(parsed.invalid)) == ("Let me check.", [TIME_CALL], 1)


@pytest.mark.parametrize(
    "family_name, text, reason",
    [
        ("qwen3", '<tool_call>\n{"arguments": {"city": "Zürich"}}\n</tool_call>', "name is missing"),
        (
            "qwen3",
            '<tool_call>\n{"name": "get_weather", "arguments": ["Zürich"]}\n</tool_call>',
            "expected a JSON object",
        ),
        ("qwen3", '<tool_call>\n["get_weather"]\n</tool_call>', "expected an object"),
        ("qwen3", '<tool_call>\n{"name": "get_weather", "arguments": {"ci', "not closed"),
        ("llama-3.1", '{"name": "", "parameters": {"city": "Zürich"}}', "name is missing"),
        ("gpt-oss", "to=functions.get_weather<|channel|>commentary json<|message|>[1]", "expected a JSON object"),
        ("gpt-oss", "<|channel|>commentary to=browser.search<|message|>{}", "is not a function"),
        ("glm-4", 'Checking.<|assistant|>get weather now\n{"city": "Zürich"}', "neither an answer"),
    ],
)
def test_call_like_blocks_that_do_not_parse_say_why(family_name, text, reason):
    parsed = parse_answer(text, FAMILIES[family_name])
    assert parsed.calls == [] and len(parsed.invalid) == 1 and reason in parsed.invalid[0]


def test_calls_as_models_also_write_them():
    # gpt-oss puts the recipient after the channel too, with <|constrain|>
    text = '<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{"city": "Zürich"}'
    assert parse_answer(text, FAMILIES["gpt-oss"]) == ParsedAnswer("", [WEATHER_CALL], [])
    # the whole raw answer, analysis included: the analysis is not content
    raw = (
        "<|channel|>analysis<|message|>Use the tool.<|end|><|start|>assistant"
        ' to=functions.get_time<|channel|>commentary json<|message|>{"city": "Zürich"}'
    )
    assert parse_answer(raw, FAMILIES["gpt-oss"]) == ParsedAnswer("", [TIME_CALL], [])
    # Llama 3.1 with "arguments" instead of "parameters", after <|python_tag|>
    text = '<|python_tag|>{"name": "get_weather", "arguments": {"city": "Zürich"}}'
    assert parse_answer(text, FAMILIES["llama-3.1"]) == ParsedAnswer("", [WEATHER_CALL], [])


@pytest.mark.parametrize("text", ['{"answer": 42}', '{"name": "Ada"}', "{not json at all", "Sure: 42."])
def test_llama_json_answers_that_are_not_calls_stay_answers(text):
    assert parse_answer(text, FAMILIES["llama-3.1"]) == ParsedAnswer(text, [], [])


@pytest.mark.parametrize("family_name", ["gemma-3", "deepseek-r1-distill"])
def test_families_without_tools_leave_the_text_alone(family_name):
    text = ' Here: <tool_call>\n{"name": "get_weather", "arguments": {}}\n</tool_call> '
    assert parse_answer(text, FAMILIES[family_name]) == ParsedAnswer(text, [], [])


def test_calls_are_displayed_one_per_line():
    assert render_calls_for_display([RICH, TIME_CALL]) == (
        'get_weather({"city":"Zürich","days":3,"hourly":[true,null,2.5],"units":{"temp":"°C"},'
        '"note":"say \\"hi\\"\\n"})\n'
        'get_time({"city":"Zürich"})'
    )
    assert render_calls_for_display([]) == ""


def calls(*pairs):
    return [{"name": name, "arguments": arguments} for name, arguments in pairs]


def scores(*rows):
    """tool_call_scores of (predicted calls, invalid reasons, reference calls, tools) rows."""
    return tool_call_scores(
        [ParsedAnswer("", p, list(bad)) for p, bad, _, _ in rows],
        [r for _, _, r, _ in rows],
        [t for _, _, _, t in rows],
    )


ZURICH = {"city": "Zürich"}


@pytest.mark.parametrize(
    "predicted, invalid, want",
    [
        (calls(("get_weather", ZURICH)), [], (1, 1, 1)),  # right
        (calls(("get_time", ZURICH)), [], (1, 0, 0)),  # a real tool, the wrong one
        (calls(("get_weather", {"city": "Bern"})), [], (1, 1, 0)),  # one value differs
        (calls(("get_weather", {"city": "Zürich", "days": 2})), [], (1, 1, 0)),  # an extra argument
        (calls(("get_stock", ZURICH)), [], (0, 0, 0)),  # a tool the row does not have
        (calls(("get_weather", ZURICH)), ["bad tool call: ..."], (0, 1, 1)),  # beside a block that did not parse
        ([], [], (0, 0, 0)),  # no call
        (calls(("get_weather", ZURICH), ("get_weather", ZURICH)), [], (1, 0, 0)),  # the same call twice
    ],
)
def test_tool_call_scores_per_row(predicted, invalid, want):
    out = scores((predicted, invalid, calls(("get_weather", ZURICH)), TOOLS))
    assert out == {"rows": 1, "valid_call": want[0], "right_name": want[1], "exact_arguments": want[2]}


def test_arguments_compare_as_json_objects():
    ref = calls(("get_weather", {"city": "Zürich", "days": 2, "opts": {"a": [1, {"b": None}], "c": True}}))
    same = calls(("get_weather", {"opts": {"c": True, "a": [1.0, {"b": None}]}, "days": 2.0, "city": "Zürich"}))
    assert scores((same, [], ref, TOOLS))["exact_arguments"] == 1
    for changed in (
        {"c": 1, "a": [1, {"b": None}]},  # true is not 1
        {"c": True, "a": [{"b": None}, 1]},  # list order matters
        {"c": True, "a": [1, {"b": "null"}]},
    ):  # null is not "null"
        other = calls(("get_weather", {"city": "Zürich", "days": 2, "opts": changed}))
        assert scores((other, [], ref, TOOLS))["exact_arguments"] == 0


def test_parallel_calls_compare_in_any_order_and_rows_without_a_reference_call_are_left_out():
    ref = calls(("get_weather", ZURICH), ("get_time", ZURICH))
    out = scores(
        (calls(("get_time", ZURICH), ("get_weather", ZURICH)), [], ref, TOOLS),
        (calls(("get_weather", ZURICH)), [], ref, TOOLS),  # one of two calls: names differ
        (calls(("get_weather", ZURICH)), [], [], TOOLS),  # a plain-answer row: not scored
        (calls(("get_weather", ZURICH), ("get_time", {"city": "Bern"})), [], ref, None),
    )  # no tools in the row
    assert out == {"rows": 3, "valid_call": 2 / 3, "right_name": 2 / 3, "exact_arguments": 1 / 3}
    assert scores((calls(("get_weather", ZURICH)), [], [], TOOLS)) == {"rows": 0}
