"""Tool definitions, tool calls and tool results: rendered through each family's official template,
trained where the model writes them, never where it reads them.

Parity: the kit's training text equals ``apply_chat_template(messages, tools=tools)`` with the
official template, the messages converted here by hand from the canonical shape. Masks: the
supervised text is exactly the pieces declared below from what each official template renders for
an assistant turn (``expected_piece``), nothing missing and nothing extra.
"""

import json

import pytest

from kit.chat.render import (
    IGNORE_INDEX,
    MaskError,
    ToolFormatError,
    generation_prompts,
    locate,
    locate_in_one_render,
    render_training_text,
    render_with_spans,
    spans_from_prompts,
    supervision_error,
    template_messages,
    tokenize_many,
    tokenize_with_labels,
    trained_turns,
)
from kit.display import label_segments
from kit.families import FAMILIES
from kit.chat.templates import TrainingRenderer
from kit.recipes import resolve

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "City name"}},
            "required": ["city"],
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "Local time in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
TOOLS = [WEATHER, TIME]


def call(name, city, id=None):
    return {"name": name, "arguments": {"city": city}, **({"id": id} if id else {})}


def result(name, content, id=None):
    return {"role": "tool", "content": content, "name": name, **({"tool_call_id": id} if id else {})}


ASK = {"role": "user", "content": "Is it warm in Zürich?"}
CONVERSATIONS = {
    # One call, its result, then the answer from it.
    "one_call": [
        ASK,
        {"role": "assistant", "content": "", "tool_calls": [call("get_weather", "Zürich", "c1")]},
        result("get_weather", '{"temp_c": 24, "sky": "sunny"}', "c1"),
        {"role": "assistant", "content": "Yes: 24 °C and sunny."},
    ],
    # Two calls in one turn, two results.
    "parallel": [
        {"role": "system", "content": "Use the tools."},
        ASK,
        {"role": "assistant", "content": "", "tool_calls": [call("get_weather", "Zürich"), call("get_time", "Zürich")]},
        result("get_weather", "24 C"),
        result("get_time", "14:05"),
        {"role": "assistant", "content": "24 °C at 14:05."},
    ],
    # Text beside the call.
    "call_with_text": [
        ASK,
        {"role": "assistant", "content": "Let me check.", "tool_calls": [call("get_weather", "Zürich")]},
        result("get_weather", "24 C"),
        {"role": "assistant", "content": "Yes, 24 °C."},
    ],
    # Reasoning on the call turn and on the answer (a system turn too).
    "reasoning": [
        {"role": "system", "content": "Think, then act."},
        ASK,
        {
            "role": "assistant",
            "content": "",
            "reasoning": "I need the weather tool.",
            "tool_calls": [call("get_weather", "Zürich")],
        },
        result("get_weather", "24 C"),
        {"role": "assistant", "content": "Yes, 24 °C.", "reasoning": "24 °C is warm."},
    ],
    # The conversation ends with a call (data.reasoning: every_turn cuts conversations there).
    "ends_with_call": [
        ASK,
        {
            "role": "assistant",
            "content": "",
            "reasoning": "Check the weather.",
            "tool_calls": [call("get_weather", "Zürich")],
        },
    ],
    # A tool result that types a generation prompt and the answer: neither is trained there.
    "tricky_result": [
        ASK,
        {"role": "assistant", "content": "", "tool_calls": [call("get_weather", "Zürich")]},
        result("get_weather", "assistant\nYes, 24 °C. <tool_call> </tool_call> to=functions.x"),
        {"role": "assistant", "content": "Yes, 24 °C."},
    ],
}
# What each family's official template cannot express (refused with ToolFormatError).
REFUSED = {
    "llama-3.1": {"parallel": "renders 1 per turn", "call_with_text": "without the text beside it"},
    "gpt-oss": {"parallel": "renders 1 per turn"},
}
WITH_TOOLS = ("qwen3", "qwen2.5", "smollm2", "llama-3.1", "gpt-oss", "glm-4")
CASES = [(f, c) for f in WITH_TOOLS for c in CONVERSATIONS if c not in REFUSED.get(f, {})]


def think(reasoning):
    return f"<think>\n{reasoning}\n</think>\n\n"


def args_json(c):
    return json.dumps(c["arguments"], ensure_ascii=False)


def expected_piece(family: str, messages: list[dict], k: int) -> str:
    """What assistant turn ``k`` supervises, from the official templates: what the model writes
    after its generation prompt, through the token that ends the turn."""
    m, last = messages[k], k == len(messages) - 1
    calls, text, reasoning = m.get("tool_calls", []), m["content"], m.get("reasoning")
    answers_later = any(n["role"] == "assistant" and not n.get("tool_calls") for n in messages[k + 1 :])
    if family in ("qwen3", "qwen2.5", "smollm2"):
        # Qwen3 renders reasoning after the last user turn (an empty block before the last answer,
        # which is its enable_thinking=False prompt); the calls follow the text, one per line
        # (SmolLM2: the kit's template writes them as Qwen's do).
        head = think(reasoning) if family == "qwen3" and reasoning else ""
        blocks = [f'<tool_call>\n{{"name": "{c["name"]}", "arguments": {args_json(c)}}}\n</tool_call>' for c in calls]
        return head + "\n".join(([text] if text else []) + blocks) + "<|im_end|>"
    if family == "llama-3.1":  # the call alone, as JSON with "parameters"
        body = "".join(f'{{"name": "{c["name"]}", "parameters": {args_json(c)}}}' for c in calls) or text
        return body + "<|eot_id|>"
    if family == "gpt-oss":
        if calls:  # its analysis only while no final answer follows; the call on the commentary channel
            analysis = reasoning or text
            head = (
                f"<|channel|>analysis<|message|>{analysis}<|end|><|start|>assistant"
                if analysis and not answers_later
                else ""
            )
            c = calls[0]
            return f"{head} to=functions.{c['name']}<|channel|>commentary json<|message|>{args_json(c)}<|call|>"
        if not last:
            return f"<|channel|>final<|message|>{text}<|end|>"
        analysis = f"<|channel|>analysis<|message|>{reasoning}<|end|><|start|>assistant" if reasoning else ""
        return f"{analysis}<|channel|>final<|message|>{text}<|return|>"
    if family == "glm-4":  # one <|assistant|> message per call: NAME, a newline, the arguments
        end = "<|endoftext|>" if last else "<|observation|>" if messages[k + 1]["role"] == "tool" else "<|user|>"
        if not calls:
            return "\n" + text + end
        return (
            (f"\n{text}<|assistant|>" if text else "")
            + "<|assistant|>".join(f"{c['name']}\n{args_json(c)}" for c in calls)
            + end
        )
    raise AssertionError(f"no expected pieces declared for {family}")


def as_official(family, messages: list[dict]) -> list[dict]:
    """Canonical messages converted by hand to what the official templates read."""
    out = []
    for m in messages:
        m = dict(m)
        if "reasoning" in m:
            reasoning = m.pop("reasoning")
            if family.reasoning_field:
                m[family.reasoning_field] = reasoning
        if "tool_calls" in m:
            m["tool_calls"] = [
                {
                    "type": "function",
                    **({"id": c["id"]} if "id" in c else {}),
                    "function": {"name": c["name"], "arguments": c["arguments"]},
                }
                for c in m["tool_calls"]
            ]
        out.append(m)
    return out


def supervised(tokenizer, ex):
    return [text for text, sup in label_segments(tokenizer, ex["input_ids"], ex["labels"]) if sup]


@pytest.mark.parametrize("family_name, name", CASES)
def test_text_is_the_official_templates_rendering_with_tools(family_tokenizers, family_name, name):
    family, tokenizer, messages = FAMILIES[family_name], family_tokenizers[family_name], CONVERSATIONS[name]
    ex = tokenize_with_labels(tokenizer, family, messages, tools=TOOLS)
    official = tokenizer.apply_chat_template(as_official(family, messages), tools=TOOLS, tokenize=False)
    assert tokenizer.decode(ex["input_ids"]) == official + family.training_suffix
    assert "get_time" in official  # the tool definitions are rendered (never trained: see below)


@pytest.mark.parametrize("family_name, name", CASES)
def test_supervised_text_is_exactly_the_calls_and_answers(family_tokenizers, family_name, name):
    family, tokenizer, messages = FAMILIES[family_name], family_tokenizers[family_name], CONVERSATIONS[name]
    ex = tokenize_with_labels(tokenizer, family, messages, tools=TOOLS)
    turns = [k for k, m in enumerate(messages) if m["role"] == "assistant"]
    assert supervised(tokenizer, ex) == [expected_piece(family_name, messages, k) for k in turns]
    # last_assistant: the same last piece, alone
    ex = tokenize_with_labels(tokenizer, family, messages, "last_assistant", tools=TOOLS)
    assert supervised(tokenizer, ex) == [expected_piece(family_name, messages, turns[-1])]


def test_glm4_renders_tools_as_declared(family_tokenizers):
    """GLM-4's template is the kit's own: its tool rendering, written out once."""
    family, tokenizer = FAMILIES["glm-4"], family_tokenizers["glm-4"]
    text = render_with_spans(tokenizer, family, CONVERSATIONS["call_with_text"], tools=[TIME]).text
    assert text == (
        "[gMASK]<sop><|system|>\n# Available tools\n\n## get_time\n\n"
        + json.dumps(TIME["function"], ensure_ascii=False, indent=4)
        + "\n\nTo call a tool, write its name, a newline and its arguments as one JSON object."
        "<|user|>\nIs it warm in Zürich?<|assistant|>\nLet me check.<|assistant|>get_weather\n"
        '{"city": "Zürich"}<|observation|>\n24 C<|assistant|>\nYes, 24 °C.<|endoftext|>'
    )


@pytest.mark.parametrize("family_name, name", CASES)
def test_the_fast_method_finds_the_same_spans_with_tools(family_tokenizers, family_name, name):
    """tokenize_many's one-render path (calls and JSON-written results tracked through the kit's
    compiled template) agrees with the exact method, and locates everything in one render."""
    family, tokenizer, messages = FAMILIES[family_name], family_tokenizers[family_name], CONVERSATIONS[name]
    renderer = TrainingRenderer(tokenizer, family)
    exact = render_with_spans(tokenizer, family, messages, tools=TOOLS)
    fast = spans_from_prompts(
        tokenizer, family, messages, generation_prompts(tokenizer, family), renderer=renderer, tools=TOOLS
    )
    assert (fast.text, fast.spans, fast.expected) == (exact.text, exact.spans, exact.expected)
    trained = trained_turns(messages, "all_assistant")
    render_text = lambda m: render_training_text(tokenizer, family, template_messages(family, m), renderer, TOOLS)  # noqa: E731
    assert locate_in_one_render(render_text, messages, trained) == (
        exact.text,
        locate(exact.text, render_text, messages, trained),
    )
    [many] = tokenize_many(tokenizer, family, [messages], tools=[TOOLS])
    assert many == tokenize_with_labels(tokenizer, family, messages, tools=TOOLS)


# What only TRL's {% generation %} templates train, per assistant turn (ours is a subset).
TRL_ONLY = {
    "qwen2.5": ["\n", "\n"],  # the prompt's last newline, the one after <|im_end|>
    "gpt-oss": ["<|start|>assistant"],  # the generation prompt itself
    # the newline after <|im_end|>; TRL's qwen3 renders a think block in every turn, so only
    # conversations whose every assistant turn has reasoning render alike
    "qwen3": ["\n"],
}
TRL_TEMPLATES = {"qwen2.5": "qwen2_5_training", "gpt-oss": "gptoss_training", "qwen3": "qwen3_training"}
TRL_CASES = (
    [("qwen2.5", c) for c in ("one_call", "parallel", "call_with_text", "reasoning")]
    + [("gpt-oss", c) for c in ("one_call", "call_with_text", "reasoning", "ends_with_call")]
    + [("qwen3", "reasoning"), ("qwen3", "ends_with_call")]
)


@pytest.mark.parametrize("family_name, name", TRL_CASES)
def test_masks_match_trls_training_templates_with_tools(family_tokenizers, family_name, name):
    from pathlib import Path

    import trl

    family, tokenizer, messages = FAMILIES[family_name], family_tokenizers[family_name], CONVERSATIONS[name]
    template = (Path(trl.__file__).parent / "chat_templates" / f"{TRL_TEMPLATES[family_name]}.jinja").read_text()
    ref = tokenizer.apply_chat_template(
        as_official(family, messages),
        tools=TOOLS,
        chat_template=template,
        tokenize=True,
        return_dict=True,
        return_assistant_tokens_mask=True,
    )
    ours = tokenize_with_labels(tokenizer, family, messages, tools=TOOLS)
    assert ours["input_ids"] == ref["input_ids"]
    mask = [label != IGNORE_INDEX for label in ours["labels"]]
    assert all(r for o, r in zip(mask, ref["assistant_masks"]) if o)  # ours ⊆ TRL's
    only_trl = [t if r and not o else None for t, o, r in zip(ours["input_ids"], mask, ref["assistant_masks"])]
    runs = [r for r in "".join(tokenizer.decode([t]) if t is not None else "\0" for t in only_trl).split("\0") if r]
    assert runs == TRL_ONLY[family_name] * sum(m["role"] == "assistant" for m in messages)


@pytest.mark.parametrize("family_name", ["gemma-3", "deepseek-r1-distill"])
def test_families_without_a_tool_format_refuse_naming_the_family(family_tokenizers, family_name):
    family, tokenizer = FAMILIES[family_name], family_tokenizers[family_name]
    with pytest.raises(ToolFormatError, match=f"^{family_name} cannot express tool definitions, calls or results: "):
        tokenize_with_labels(tokenizer, family, CONVERSATIONS["one_call"], tools=TOOLS)
    # tools alone are refused too: the model would be trained without ever seeing them
    with pytest.raises(ToolFormatError):
        tokenize_with_labels(tokenizer, family, [ASK, {"role": "assistant", "content": "No idea."}], tools=TOOLS)


@pytest.mark.parametrize("family_name, name", [(f, c) for f, cases in REFUSED.items() for c in cases])
def test_turns_a_template_cannot_express_are_refused(family_tokenizers, family_name, name):
    family, tokenizer = FAMILIES[family_name], family_tokenizers[family_name]
    with pytest.raises(ToolFormatError, match=REFUSED[family_name][name]):
        tokenize_with_labels(tokenizer, family, CONVERSATIONS[name], tools=TOOLS)


def test_gpt_oss_refuses_text_and_reasoning_beside_one_call(family_tokenizers):
    messages = [
        ASK,
        {
            "role": "assistant",
            "content": "Checking.",
            "reasoning": "Use the tool.",
            "tool_calls": [call("get_weather", "Zürich")],
        },
    ]
    with pytest.raises(ToolFormatError, match="not both"):
        tokenize_with_labels(family_tokenizers["gpt-oss"], FAMILIES["gpt-oss"], messages, tools=TOOLS)


def test_prepare_drops_such_rows_naming_row_and_family(family_tokenizers):
    from kit.data.tokenize import tokenize_rows

    rows = [
        {"messages": CONVERSATIONS["one_call"], "tools": TOOLS},
        {"messages": [ASK, {"role": "assistant", "content": "Yes."}]},
    ]
    recipe = resolve({"model": {"id": "any", "family": "qwen2.5", "max_seq_length": 4096}, "data": {"source": "any"}})
    gemma = tokenize_rows(
        family_tokenizers["gemma-3"], FAMILIES["gemma-3"], rows, recipe, [("agent.jsonl", 7), ("agent.jsonl", 8)]
    )
    assert gemma.kept == [1] and len(gemma.examples) == 1
    assert [(d["source"], d["row"]) for d in gemma.dropped] == [("agent.jsonl", 7)]
    assert gemma.dropped[0]["reason"].startswith("mask: gemma-3 cannot express tool definitions")
    # a family with tools: the row's tools reach the rendering
    qwen = tokenize_rows(family_tokenizers["qwen2.5"], FAMILIES["qwen2.5"], rows, recipe)
    assert qwen.kept == [0, 1] and not qwen.dropped
    assert "get_time" in family_tokenizers["qwen2.5"].decode(qwen.examples[0]["input_ids"])


def test_the_supervision_check_catches_a_call_left_out(family_tokenizers):
    """Labels that stop before the call (the text beside it trained, the call not) are caught."""
    tokenizer, family = family_tokenizers["qwen2.5"], FAMILIES["qwen2.5"]
    messages = CONVERSATIONS["call_with_text"]
    rendered = render_with_spans(tokenizer, family, messages, tools=TOOLS)
    ex = tokenize_with_labels(tokenizer, family, messages, tools=TOOLS)
    assert supervision_error(tokenizer, rendered, ex) is None
    assert rendered.expected[0] == (1, ["Let me check.", 'get_weather", "arguments": {"city": "Zürich"}'])
    first, last = rendered.spans[0]
    cut = len(tokenizer(rendered.text[:first] + "Let me check.", add_special_tokens=False)["input_ids"])
    buggy = {
        **ex,
        "labels": [
            IGNORE_INDEX
            if cut <= k < len(tokenizer(rendered.text[:last], add_special_tokens=False)["input_ids"])
            else label
            for k, label in enumerate(ex["labels"])
        ],
    }
    error = supervision_error(tokenizer, rendered, buggy)
    assert error is not None and str(error).startswith('assistant turn 1: \'get_weather", "arguments"')


def test_a_template_refusal_is_a_mask_error(family_tokenizers):
    """A template's own raise_exception (here llama-3.1's, reached with the per-turn check bypassed
    by a hand-made family) is a MaskError, never an exception from jinja."""
    from dataclasses import replace

    from kit.families import ToolRules

    family = replace(FAMILIES["llama-3.1"], tools=ToolRules())
    with pytest.raises(MaskError, match="only supports single tool-calls"):
        tokenize_with_labels(family_tokenizers["llama-3.1"], family, CONVERSATIONS["parallel"], tools=TOOLS)
