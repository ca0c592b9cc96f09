"""The Modelfile's TEMPLATE renders like the chat template, for every family (tools included for
the families whose template has them); its stops are the family's end tokens."""

import pytest

from kit.chat.render import render, render_prompt
from kit.families import FAMILIES, get_family
from kit.export.modelfile import (
    as_json_values,
    check,
    derived_template,
    ollama_prompt,
    ollama_template,
    read_modelfile,
    render_template,
    write_modelfile,
)
from kit.export.ollama_templates import TEMPLATES

from tests.chat.test_tool_masks import CONVERSATIONS, REFUSED, TOOLS

WITH_OLLAMA_TOOLS = sorted(TEMPLATES)  # gpt-oss: not yet (its TEMPLATE stays single-turn, without tools)


def leading_bos(tokenizer):
    """The BOS a runner adds: one at the start only (SmolLM2's BOS, <|im_start|>, opens every turn)."""
    text = render(tokenizer, [{"role": "user", "content": "x"}])
    bos = tokenizer.bos_token or "\0"
    return bos if text.startswith(bos) and text.count(bos) == 1 else ""


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_template_renders_like_the_chat_template(family_tokenizers, name):
    family, tokenizer = get_family(name), family_tokenizers[name]
    template, bos = ollama_template(tokenizer, family), leading_bos(family_tokenizers[name])
    for system in ("You are terse.", None):
        messages = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": "Où est ma commande ? 📦"}
        ]
        ollama = ollama_prompt(template, messages)
        assert bos + ollama == render_prompt(tokenizer, family, messages)
        assert not ollama.startswith(bos or "\0")  # Ollama adds BOS itself
        if name not in TEMPLATES:  # a single-turn TEMPLATE: the response, then the end of turn
            expected = render_prompt(tokenizer, family, messages) + "Elle arrive." + family.end_of_turn
            assert (
                bos
                + render_template(
                    template, {"System": system, "Prompt": messages[-1]["content"], "Response": "Elle arrive."}
                )
                == expected
            )


@pytest.mark.parametrize("name", sorted(set(FAMILIES) - set(TEMPLATES)))
def test_families_without_an_ollama_tool_template_keep_the_derived_one(family_tokenizers, name):
    from kit.export.modelfile import renders_history

    family, tokenizer = get_family(name), family_tokenizers[name]
    assert not renders_history(family)
    assert ollama_template(tokenizer, family) == derived_template(tokenizer, family)
    assert "{{ .Prompt }}" in ollama_template(tokenizer, family)


def tool_prompts(name):
    """Every prompt a tool conversation asks for (the history up to a user turn or a tool result),
    with the conversation's tools, and without them where it makes no call."""
    for conversation, messages in CONVERSATIONS.items():
        if conversation in REFUSED.get(name, {}):
            continue
        for k in range(1, len(messages) + 1):
            history = messages[:k]
            if history[-1]["role"] == "assistant" or not any(m["role"] == "user" for m in history):
                continue
            yield f"{conversation}[:{k}]", {"messages": history, "tools": TOOLS}
            if not any(m.get("tool_calls") for m in history):
                yield f"{conversation}[:{k}] no tools", {"messages": history}


MULTI_TURN = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello."},
    {"role": "user", "content": "Weather?"},
]


@pytest.mark.parametrize("name", WITH_OLLAMA_TOOLS)
def test_tool_prompts_render_like_the_chat_template(tmp_path, family_tokenizers, name):
    """One call then the answer from its result, parallel calls where the family allows them, text
    and reasoning beside calls: the TEMPLATE gives the chat template's prompt, the generation prompt
    included, differing only in JSON layout (Go's compact JSON) where there are tools."""
    family, tokenizer = get_family(name), family_tokenizers[name]
    template, bos = ollama_template(tokenizer, family), leading_bos(tokenizer)
    prompts = dict(tool_prompts(name))
    assert any("parallel" in k for k in prompts) == (name != "llama-3.1")
    for label, row in prompts.items():
        ollama = bos + ollama_prompt(template, row["messages"], row.get("tools"))
        expected = render_prompt(tokenizer, family, row["messages"], tools=row.get("tools"))
        if row.get("tools"):
            assert as_json_values(ollama) == as_json_values(expected), label
            assert "get_time" in ollama and ollama != expected  # definitions there, in Go's layout
        else:
            assert ollama == expected, label
    # multi-turn conversations without tools render identically
    assert bos + ollama_prompt(template, MULTI_TURN) == render_prompt(tokenizer, family, MULTI_TURN)
    # and the export check agrees, prompt for prompt
    path = write_modelfile(tmp_path / "Modelfile", tmp_path / "m.gguf", tokenizer, family)
    report = check(path, tokenizer, family, [*prompts.values(), MULTI_TURN])
    assert report["ok"] and report["prompts_equal"] == report["prompts_checked"] == len(prompts) + 1
    assert report["prompts_identical"] == sum("tools" not in row for row in prompts.values()) + 1


def test_qwen_tool_turns_as_ollama_renders_them():
    """The Ollama side written out once: a call with text, its result, Go's JSON."""
    messages = CONVERSATIONS["call_with_text"][:3]
    text = ollama_prompt(TEMPLATES["qwen2.5"], messages, [TOOLS[1]])
    assert text.endswith(
        '{"type":"function","function":{"name":"get_time","description":"Local time in a city.","parameters":'
        '{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}}}\n</tools>\n\n'
        "For each function call, return a json object with function name and arguments within <tool_call></tool_call> "
        'XML tags:\n<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call><|im_end|>\n'
        "<|im_start|>user\nIs it warm in Zürich?<|im_end|>\n"
        '<|im_start|>assistant\nLet me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city":"Zürich"}}\n'
        "</tool_call><|im_end|>\n<|im_start|>user\n<tool_response>\n24 C\n</tool_response><|im_end|>\n<|im_start|>assistant\n"
    )


# Each family's TEMPLATE broken one way: (what, the fragment, its replacement).
BREAKS = {
    "qwen3": [
        ("results dropped", "\n<tool_response>\n{{ .Content }}\n</tool_response>", ""),
        ("definitions dropped", "{{ json . }}", ""),
        ("arguments dropped", "{{ json .Function.Arguments }}", "{}"),
    ],
    "qwen2.5": [
        ("results dropped", "\n<tool_response>\n{{ .Content }}\n</tool_response>", ""),
        ("definitions dropped", "{{ json . }}", ""),
        ("only the first call", "{{ range .ToolCalls }}", "{{ range slice .ToolCalls 0 1 }}"),
    ],
    "llama-3.1": [
        ("results dropped", "{{ json .Content }}", ""),
        ("results unquoted", "{{ json .Content }}", "{{ .Content }}"),
        ("definitions dropped", "{{ json . }}", ""),
    ],
    "glm-4": [
        ("results dropped", "<|observation|>\n{{ .Content }}", ""),
        ("definitions dropped", "{{ json .Function }}", ""),
        ("call names dropped", "<|assistant|>{{ .Function.Name }}", "<|assistant|>"),
    ],
}


@pytest.mark.parametrize("name, what", [(n, w) for n, breaks in BREAKS.items() for w, _, _ in breaks])
def test_a_broken_tool_template_fails_the_check(tmp_path, family_tokenizers, name, what):
    family, tokenizer = get_family(name), family_tokenizers[name]
    fragment, replacement = next((f, r) for w, f, r in BREAKS[name] if w == what)
    path = write_modelfile(tmp_path / "Modelfile", tmp_path / "m.gguf", tokenizer, family)
    text = path.read_text()
    assert fragment in text
    path.write_text(text.replace(fragment, replacement))
    prompts = [row for _, row in tool_prompts(name) if row.get("tools")]
    report = check(path, tokenizer, family, prompts)
    assert not report["ok"] and report["prompts_equal"] < report["prompts_checked"]
    assert report["first_difference"]["ollama"] != report["first_difference"]["chat_template"]


def test_json_layout_is_the_only_difference_allowed():
    assert as_json_values('x {"a": 1, "b": [1, 2]} y') == as_json_values('x {"b":[1,2],"a":1} y')
    assert as_json_values('"\\u003ctool_call\\u003e"') == as_json_values('"<tool_call>"')
    assert as_json_values('{"a": 1}') != as_json_values('{"a": 2}')
    assert as_json_values('{"a": 1}') != as_json_values('{"a": 1} ')
    assert as_json_values('{"name": <function-name>}') == '{"name": <function-name>}'  # not JSON: left as it is


def test_modelfile_file(tmp_path, family_tokenizers):
    family = get_family("qwen3")
    path = write_modelfile(
        tmp_path / "Modelfile",
        tmp_path / "demo-q4_k_m.gguf",
        family_tokenizers["qwen3"],
        family,
        system="Answer as support.",
    )
    parsed = read_modelfile(path)
    assert parsed["from"] == "./demo-q4_k_m.gguf"
    assert parsed["stop"] == list(family.stops)
    assert parsed["system"] == "Answer as support."
    assert parsed["template"] == ollama_template(family_tokenizers["qwen3"], family)
    assert "PARAMETER temperature 0.7" in path.read_text()


@pytest.mark.parametrize("name", ["qwen3", "gemma-3"])
def test_the_modelfile_system_is_what_the_model_was_trained_with(tmp_path, family_tokenizers, name):
    """SYSTEM: the training data's system prompt when every row shares one; the check renders
    prompts without one as Ollama does, with SYSTEM filled in."""
    from kit.export.packaging import shared_system_prompt
    from kit.export.modelfile import ModelfileError

    def row(system):
        return {
            "messages": ([{"role": "system", "content": system}] if system else [])
            + [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
        }

    assert shared_system_prompt([row("Be brief."), row("Be brief.")]) == "Be brief."
    assert shared_system_prompt([row("Be brief."), row(None)]) is None
    assert shared_system_prompt([row("A"), row("B")]) is None
    family, tokenizer = get_family(name), family_tokenizers[name]
    path = write_modelfile(tmp_path / "Modelfile", tmp_path / "m.gguf", tokenizer, family, system="Be brief.")
    assert check(path, tokenizer, family, [[{"role": "user", "content": "Hi"}]])["ok"]
    # A request's own system message replaces SYSTEM, in Ollama and in the check.
    other = write_modelfile(tmp_path / "Other", tmp_path / "m.gguf", tokenizer, family, system="Be long.")
    conversation = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    assert check(other, tokenizer, family, [conversation])["ok"]
    template = read_modelfile(other)["template"]
    assert "Be long." in ollama_prompt(template, [{"role": "user", "content": "Hi"}], modelfile_system="Be long.")
    assert "Be long." not in ollama_prompt(template, conversation, modelfile_system="Be long.")
    with pytest.raises(ModelfileError, match="triple quotes"):
        write_modelfile(tmp_path / "Bad", tmp_path / "m.gguf", tokenizer, family, system='say """')
