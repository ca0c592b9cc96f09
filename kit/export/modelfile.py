"""An Ollama Modelfile for an exported GGUF, derived from the same chat template used in training.

Families whose chat template renders tools get the TEMPLATE written for them in
``kit.export.ollama_templates`` (over Ollama's ``.Messages`` and ``.Tools``). For the others the TEMPLATE
is found by rendering the model's chat template with placeholder strings, with and without a
system prompt, and putting Ollama's ``{{ .System }}``, ``{{ .Prompt }}`` and ``{{ .Response }}``
where the placeholders landed.

``ollama_prompt`` renders a conversation as Ollama's chat endpoint would (the Modelfile's SYSTEM
put first where the conversation has none, messages collated, the TEMPLATE executed by
``kit.export.gotemplate``), so ``check`` can compare it with the chat template's prompt.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from kit.chat.render import render_prompt
from kit.families import Family
from kit.export.gotemplate import Struct, execute, uses
from kit.export.ollama_templates import TEMPLATES
from kit.files import write_text_atomic

SYSTEM, PROMPT = "\x00SYSTEM\x00", "\x00PROMPT\x00"


class ModelfileError(ValueError):
    pass


def ollama_template(tokenizer, family: Family) -> str:
    if renders_history(family):
        return TEMPLATES[family.name]
    return derived_template(tokenizer, family)


def renders_history(family: Family) -> bool:
    """Does the family's TEMPLATE render whole conversations (tools included), so that any held-out
    prompt can be checked, not only single-turn ones?"""
    return family.tools is not None and family.name in TEMPLATES


def runner_bos(tokenizer, rendered: str) -> str:
    """The BOS that Ollama's runner adds itself (the GGUF says so), if ``rendered`` starts with one: a
    literal one in the template would double it. A BOS token that also opens later turns
    (SmolLM2's is ChatML's <|im_start|>) is part of the template's text instead."""
    bos = tokenizer.bos_token or ""
    return bos if bos and rendered.startswith(bos) and rendered.count(bos) == 1 else ""


def derived_template(tokenizer, family: Family) -> str:
    """A single-turn TEMPLATE (``.System``, ``.Prompt``, ``.Response``) from placeholder renderings."""
    with_system = render_prompt(
        tokenizer, family, [{"role": "system", "content": SYSTEM}, {"role": "user", "content": PROMPT}]
    )
    without = render_prompt(tokenizer, family, [{"role": "user", "content": PROMPT}])
    shared = 0  # the common tail, from where the two renderings agree to the end
    while shared < min(len(with_system), len(without)) and with_system[-1 - shared] == without[-1 - shared]:
        shared += 1
    head_sys, head_plain, tail = with_system[:-shared], without[:-shared], with_system[-shared:]
    if PROMPT not in tail or SYSTEM not in head_sys:
        raise ModelfileError(f"{family.name}: cannot place the system and user text in an Ollama template")
    bos = runner_bos(tokenizer, with_system)
    if bos and head_plain.startswith(bos):
        head_sys, head_plain = head_sys[len(bos) :], head_plain[len(bos) :]
    system_part = head_sys.replace(SYSTEM, "{{ .System }}")
    otherwise = f"{{{{ else }}}}{head_plain}" if head_plain else ""
    template = f"{{{{ if .System }}}}{system_part}{otherwise}{{{{ end }}}}"
    return template + tail.replace(PROMPT, "{{ .Prompt }}") + "{{ .Response }}" + family.end_of_turn


def render_template(template: str, values: dict) -> str:
    """``template`` executed with ``values`` (the fields Ollama passes), as Ollama would."""
    return execute(template, values)


def ollama_messages(messages: list[dict]) -> list[Struct]:
    """Canonical messages as Ollama's API hands them to a template (``api.Message``)."""

    def call(j, c):
        arguments = Struct("ToolCallFunctionArguments", {}, json_value=c["arguments"], stringer=True)
        function = Struct(
            "ToolCallFunction",
            {"Index": j, "Name": c["name"], "Arguments": arguments},
            json_value={"index": j, "name": c["name"], "arguments": c["arguments"]},
        )
        return Struct(
            "ToolCall",
            {"ID": c.get("id") or "", "Function": function},
            json_value={**({"id": c["id"]} if c.get("id") else {}), "function": function.json_value},
        )

    out = []
    for m in messages:
        calls = [call(j, c) for j, c in enumerate(m.get("tool_calls") or [])]
        fields = {
            "Role": m["role"],
            "Content": m.get("content") or "",
            "Thinking": m.get("reasoning") or "",
            "Images": [],
            "ToolCalls": calls,
            "ToolName": m.get("name") or "",
            "ToolCallID": m.get("tool_call_id") or "",
        }
        out.append(Struct("Message", fields, json_value={"role": m["role"], "content": fields["Content"]}))
    return out


def ollama_tools(tools: list[dict] | None) -> list[Struct]:
    """Tool definitions as Ollama's API hands them to a template (``api.Tool``); they print as their JSON."""
    out = []
    for tool in tools or []:
        function = tool.get("function", {})
        schema = function.get("parameters") or {}
        parameters = Struct(
            "ToolFunctionParameters",
            {
                "Type": schema.get("type", ""),
                "Defs": schema.get("$defs"),
                "Items": schema.get("items"),
                "Required": schema.get("required", []),
                "Properties": schema.get("properties", {}),
            },
            json_value=schema,
        )
        fields = {
            "Name": function.get("name", ""),
            "Description": function.get("description", ""),
            "Parameters": parameters,
        }
        out.append(
            Struct(
                "Tool",
                {
                    "Type": tool.get("type", ""),
                    "Items": tool.get("items"),
                    "Function": Struct("ToolFunction", fields, json_value=function, stringer=True),
                },
                json_value=tool,
                stringer=True,
            )
        )
    return out


def _collate(messages: list[Struct]) -> tuple[str, list[Struct]]:
    """Ollama's collation: every system message's text joined (``.System``), and consecutive
    messages of one role other than ``tool`` merged into one, their texts joined by a blank line."""
    systems = [m.fields["Content"] for m in messages if m.fields["Role"] == "system"]
    collated: list[Struct] = []
    for m in messages:
        if collated and collated[-1].fields["Role"] == m.fields["Role"] and m.fields["Role"] != "tool":
            last = collated[-1]
            collated[-1] = Struct(
                "Message",
                {**last.fields, "Content": last.fields["Content"] + "\n\n" + m.fields["Content"]},
                json_value=last.json_value,
            )
        else:
            collated.append(m)
    return "\n\n".join(systems), collated


def ollama_prompt(
    template: str, messages: list[dict], tools: list[dict] | None = None, modelfile_system: str | None = None
) -> str:
    """The prompt Ollama's chat endpoint builds from ``messages`` (and ``tools``) with ``template``."""
    if modelfile_system and (not messages or messages[0]["role"] != "system"):
        messages = [{"role": "system", "content": modelfile_system}, *messages]
    system, collated = _collate(ollama_messages(messages))
    if uses(template, "Messages"):
        return execute(
            template,
            {
                "System": system,
                "Messages": collated,
                "Tools": ollama_tools(tools),
                "Response": "",
                "Think": False,
                "IsThinkSet": False,
            },
        )
    # A single-turn template runs once per exchange; the last ends where the response would start.
    out, values = [], {"System": "", "Prompt": "", "Response": ""}
    for m in collated:
        role, content = m.fields["Role"], m.fields["Content"]
        if (role == "system" and (values["Prompt"] or values["Response"])) or (role == "user" and values["Response"]):
            out.append(execute(template, values))
            values = {"System": "", "Prompt": "", "Response": ""}
        values[{"system": "System", "user": "Prompt", "assistant": "Response"}.get(role, "")] = content
    values.pop("", None)
    head = template.split("{{ .Response }}", 1)[0]
    return "".join(out) + execute(head, values)


def as_json_values(text: str) -> str:
    """``text`` with every JSON object or array written one way (compact, keys sorted) and Go's
    HTML-safe escapes undone: two renderings that agree here hold the same JSON values, differing
    at most in layout (the declared difference between Ollama's ``json`` and the chat templates')."""
    for escape, char in (("\\u003c", "<"), ("\\u003e", ">"), ("\\u0026", "&")):
        text = text.replace(escape, char)
    decoder, out, pos = json.JSONDecoder(), [], 0
    while pos < len(text):
        if text[pos] in "{[":
            try:
                value, end = decoder.raw_decode(text, pos)
            except ValueError:
                value = None
            if isinstance(value, (dict, list)):
                out.append(json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":")))
                pos = end
                continue
        out.append(text[pos])
        pos += 1
    return "".join(out)


def write_modelfile(path: Path, gguf_file: Path, tokenizer, family: Family, system: str | None = None) -> Path:
    template = ollama_template(tokenizer, family)
    if '"""' in template:
        raise ModelfileError(f"{family.name}: the template contains triple quotes")
    lines = [f"FROM ./{gguf_file.name}", f'TEMPLATE """{template}"""']
    if system:
        if '"""' in system:
            raise ModelfileError('export.system: a Modelfile SYSTEM cannot contain triple quotes (""")')
        lines.append(f'SYSTEM """{system}"""')
    lines += [f'PARAMETER stop "{token}"' for token in family.stops]
    lines += [f"PARAMETER {key} {value}" for key, value in family.sampling.items()]
    write_text_atomic(path, "\n".join(lines) + "\n")
    return path


def read_modelfile(path: Path) -> dict:
    """TEMPLATE, SYSTEM and the stop parameters of a Modelfile this module wrote."""
    text = path.read_text(encoding="utf-8")
    template = re.search(r'^TEMPLATE """(.*?)"""$', text, re.S | re.M)
    system = re.search(r'^SYSTEM """(.*?)"""$', text, re.S | re.M)
    return {
        "from": re.search(r"^FROM (.+)$", text, re.M).group(1),
        "template": template.group(1) if template else None,
        "system": system.group(1) if system else None,
        "stop": re.findall(r'^PARAMETER stop "(.*)"$', text, re.M),
    }


def check(path: Path, tokenizer, family: Family, conversations: list) -> dict:
    """Does the Modelfile's TEMPLATE give the chat template's prompt for each conversation (a list
    of messages, or a row ``{"messages", "tools"?}``; Ollama fills in the Modelfile's SYSTEM where
    it has none), and are its stops the family's end tokens? ``prompts_identical`` counts prompts
    equal to the character; ``prompts_equal`` also those that differ only in JSON layout
    (``as_json_values``: Ollama's ``json`` writes Go's compact JSON)."""
    parsed = read_modelfile(path)
    identical = same = 0
    first_difference = None
    for row in conversations:
        messages, tools = (row["messages"], row.get("tools")) if isinstance(row, dict) else (row, None)
        ollama = ollama_prompt(parsed["template"], messages, tools, parsed["system"])
        if messages[0]["role"] != "system" and parsed["system"]:
            messages = [{"role": "system", "content": parsed["system"]}, *messages]
        expected = render_prompt(tokenizer, family, messages, tools=tools)
        bos = runner_bos(tokenizer, expected)
        if bos and not ollama.startswith(bos):
            ollama = bos + ollama  # Ollama's runner adds BOS itself
        identical += ollama == expected
        equal = ollama == expected or as_json_values(ollama) == as_json_values(expected)
        same += equal
        if not equal and first_difference is None:
            first_difference = _first_difference(ollama, expected)
    stops_ok = parsed["stop"] == list(family.stops)
    return {
        "path": str(path),
        "prompts_checked": len(conversations),
        "prompts_equal": same,
        "prompts_identical": identical,
        "first_difference": first_difference,
        "stops_ok": stops_ok,
        "ok": stops_ok and same == len(conversations),
    }


def _first_difference(ollama: str, expected: str) -> dict:
    at = next((i for i, (a, b) in enumerate(zip(ollama, expected)) if a != b), min(len(ollama), len(expected)))
    return {"at": at, "ollama": ollama[max(0, at - 40) : at + 80], "chat_template": expected[max(0, at - 40) : at + 80]}
