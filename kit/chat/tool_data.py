"""Tool definitions, tool calls and tool results in the canonical conversation.

Canonical shapes (what ``kit.data.formats`` produces and ``kit.chat.render`` renders):

- a tool: ``{"type": "function", "function": {"name", "description"?, "parameters": {schema}}}``;
- a call, in an assistant turn's ``tool_calls``: ``{"name", "arguments": {object}, "id"?}``;
- a result: ``{"role": "tool", "content", "name", "tool_call_id"?}``.

Readers raise ``FormatError`` with a ``key: field detail`` reason ("bad arguments: messages[2].tool_calls[0]
.arguments is not valid JSON ..."); ``answered_call`` finds the call a result answers, for the name of a
result that has none and for the check that every result answers a call.
"""

from __future__ import annotations

import json

# A function with no declared parameters takes none (what OpenAI assumes when parameters is left out).
NO_PARAMETERS = {"type": "object", "properties": {}}


class FormatError(ValueError):
    """A record that is not in the expected format (the message names the field). Defined here,
    where the tool readers raise it, and used as ``kit.data.formats.FormatError``."""


def _type(value) -> str:
    return "null" if value is None else type(value).__name__


class NotJson(ValueError):
    """Text Python's json reads but JSON is not: ``NaN``, ``Infinity``, ``-Infinity`` (json accepts
    them by default; a model trained on them learns to write non-JSON)."""


def reject_constant(name: str):
    """json's ``parse_constant``: NaN and the infinities are not JSON."""
    raise NotJson(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):  # 1e999: json reads it as infinity
        raise NotJson(f"{text} is not a JSON number a program can read (it overflows to infinity)")
    return value


def loads(text: str, **kwargs):
    """``json.loads`` that refuses NaN, Infinity, -Infinity and numbers that overflow to infinity (NotJson)."""
    return json.loads(text, parse_constant=reject_constant, parse_float=_finite_float, **kwargs)


def parse_json(text: str, where: str, key: str):
    """``text`` as JSON; else a FormatError "``key``: ``where`` is not valid JSON (why at character N)"."""
    try:
        return loads(text)
    except json.JSONDecodeError as e:
        raise FormatError(f"{key}: {where} is not valid JSON ({e.msg} at character {e.pos})") from None
    except NotJson as e:
        raise FormatError(f"{key}: {where} is not valid JSON ({e})") from None
    except RecursionError:
        raise FormatError(f"{key}: {where} is not usable JSON (nested too deep)") from None


def json_list(value, where: str, key: str) -> list:
    """A list given as such or as JSON text holding one (CSV cells, Arrow string columns)."""
    if isinstance(value, str):
        value = parse_json(value, where, key)
    if not isinstance(value, list):
        raise FormatError(f"{key}: {where} is {_type(value)}, expected a list")
    return value


def read_tools(value, where: str = "tools") -> list[dict] | None:
    """A row's tool definitions, normalised; None when it has none (absent, null, "" or [])."""
    if value is None or value == "" or value == []:
        return None
    items = json_list(value, where, "bad tools")
    tools, names = [], set()
    for i, item in enumerate(items):
        tool = _read_tool(item, f"{where}[{i}]")
        name = tool["function"]["name"]
        if name in names:
            raise FormatError(f"bad tools: {where}[{i}].function.name is {name!r}, which an earlier tool has too")
        names.add(name)
        tools.append(tool)
    return tools or None


def _read_tool(item, where: str) -> dict:
    if not isinstance(item, dict):
        raise FormatError(f"bad tools: {where} is {_type(item)}, expected an object")
    if "function" in item:  # OpenAI / Hugging Face: {"type": "function", "function": {...}}
        if item.get("type", "function") != "function":
            raise FormatError(f"bad tools: {where}.type is {item['type']!r}; only function tools are supported")
        function, where = item["function"], f"{where}.function"
        if not isinstance(function, dict):
            raise FormatError(f"bad tools: {where} is {_type(function)}, expected an object")
    else:  # a bare {"name", "description", "parameters"}
        function = item
    name = function.get("name")
    if not isinstance(name, str) or not name.strip():
        raise FormatError(
            f"bad tools: {where}.name is {'missing' if name in (None, '') else _type(name)}, "
            "expected the function's name"
        )
    description = function.get("description")
    if description is not None and not isinstance(description, str):
        raise FormatError(f"bad tools: {where}.description is {_type(description)}, expected a string")
    parameters = function.get("parameters")
    if isinstance(parameters, str):
        parameters = parse_json(parameters, f"{where}.parameters", "bad tools")
    if parameters is None:
        parameters = dict(NO_PARAMETERS)
    if not isinstance(parameters, dict):
        raise FormatError(f"bad tools: {where}.parameters is {_type(parameters)}, expected a JSON schema object")
    if _flat(parameters):
        parameters = _schema(parameters)
    # Other keys ("strict", "returns" ...) are kept: templates that print the tool print them too.
    # Always a description: gpt-oss's official template reads it unconditionally.
    out = {"name": name, "description": description or ""}
    out["parameters"] = parameters
    out.update((k, v) for k, v in function.items() if k not in out and v is not None)
    return {"type": "function", "function": out}


# Python type names (xLAM, glaive) as JSON Schema types.
SCHEMA_TYPES = {
    "str": "string",
    "int": "integer",
    "float": "number",
    "bool": "boolean",
    "list": "array",
    "tuple": "array",
    "set": "array",
    "dict": "object",
    "none": "null",
}


def _flat(parameters: dict) -> bool:
    """Parameters given flat, ``{"city": {"type": "str", "description": ...}}``, not as a JSON schema."""
    return (
        bool(parameters)
        and not isinstance(parameters.get("type"), str)
        and not isinstance(parameters.get("properties"), dict)
        and all(isinstance(p, dict) and isinstance(p.get("type"), str) for p in parameters.values())
    )


def _schema(flat: dict) -> dict:
    """Flat parameters as a JSON schema: Python type names mapped (``List[str]``: an array of
    strings); a parameter is required when it says so (``required: true``), else unless its type
    says ``optional``."""
    properties, required = {}, []
    for name, spec in flat.items():
        spec = dict(spec)
        optional = spec["type"].replace(" ", "").lower().endswith(",optional")
        spec["type"] = _schema_type(spec["type"].split(",")[0].strip() if optional else spec["type"], spec)
        if spec.pop("required", not optional) is True:
            required.append(name)
        properties[name] = spec
    return {"type": "object", "properties": properties, "required": required}


def _schema_type(name: str, spec: dict) -> str:
    base, _, inner = name.partition("[")
    mapped = SCHEMA_TYPES.get(base.strip().lower(), name)
    if mapped == "array" and inner.rstrip("]").strip():
        spec.setdefault(
            "items", {"type": SCHEMA_TYPES.get(inner.rstrip("]").strip().lower(), inner.rstrip("]").strip())}
        )
    return mapped


def read_calls(value, where: str) -> list[dict]:
    """An assistant turn's tool calls (a list, or JSON text holding one), normalised; [] for none."""
    if value is None or value == "" or value == []:
        return []
    return [read_call(call, f"{where}[{j}]") for j, call in enumerate(json_list(value, where, "bad tool call"))]


def read_call(call, where: str) -> dict:
    """One call, OpenAI ``{"type": "function", "id", "function": {"name", "arguments"}}`` or flat
    ``{"name", "arguments", "id"?}``; arguments given as JSON text become the object it holds."""
    if not isinstance(call, dict):
        raise FormatError(f"bad tool call: {where} is {_type(call)}, expected an object")
    if isinstance(call.get("function"), dict):
        if call.get("type", "function") not in ("function", None):
            raise FormatError(f"bad tool call: {where}.type is {call['type']!r}; only function calls are supported")
        body, at = call["function"], f"{where}.function"
    else:
        body, at = call, where
    name = body.get("name")
    if not isinstance(name, str) or not name.strip():
        raise FormatError(
            f"bad tool call: {at}.name is {'missing' if name in (None, '') else _type(name)}, "
            "expected the called function's name"
        )
    arguments = body.get("arguments")
    if isinstance(arguments, str):
        arguments = parse_json(arguments, f"{at}.arguments", "bad arguments")
    if arguments is None:
        arguments = {}
    if not isinstance(arguments, dict):
        raise FormatError(f"bad arguments: {at}.arguments is {_type(arguments)}, expected a JSON object")
    try:  # an object from Parquet, or a Hermes block read as a Python literal, may hold NaN or infinity
        json.dumps(arguments, allow_nan=False)
    except ValueError:
        raise FormatError(
            f"bad arguments: {at}.arguments holds NaN or an infinity, which JSON has no number for"
        ) from None
    except TypeError as e:
        raise FormatError(f"bad arguments: {at}.arguments is not JSON ({e})") from None
    out = {"name": name, "arguments": arguments}
    call_id = call.get("id")
    if call_id is not None:
        if not isinstance(call_id, str):
            raise FormatError(f"bad tool call: {where}.id is {_type(call_id)}, expected a string")
        out["id"] = call_id
    return out


def answered_call(messages: list[dict], i: int) -> tuple[dict | None, str | None]:
    """(the call that tool result ``messages[i]`` answers, None) or (None, why it answers none).

    The results after an assistant turn answer its calls: by ``tool_call_id`` where both carry ids,
    else by ``name``, else in order (the k-th result answers the k-th call)."""
    a = i
    while a > 0 and messages[a - 1].get("role") == "tool":
        a -= 1
    position, a = i - a, a - 1
    calls = messages[a].get("tool_calls") if a >= 0 and messages[a].get("role") == "assistant" else None
    if not calls:
        return None, f"tool result without call: messages[{i}] is a tool result with no tool call before it"
    result = messages[i]
    if result.get("tool_call_id") is not None and any("id" in c for c in calls):
        found = next((c for c in calls if c.get("id") == result["tool_call_id"]), None)
        return (
            (found, None)
            if found
            else (
                None,
                f"tool result without call: messages[{i}].tool_call_id is "
                f"{result['tool_call_id']!r}, which no call in messages[{a}] has",
            )
        )
    if result.get("name") is not None:
        found = next((c for c in calls if c["name"] == result["name"]), None)
        return (
            (found, None)
            if found
            else (
                None,
                f"tool result without call: messages[{i}].name is "
                f"{result['name']!r}, which no call in messages[{a}] calls",
            )
        )
    if position >= len(calls):
        return None, (
            f"tool result without call: messages[{i}] is result {position + 1} after messages[{a}], "
            f"which makes {len(calls)} call{'s' if len(calls) > 1 else ''}"
        )
    return calls[position], None


def name_results(messages: list[dict]) -> None:
    """Give each tool result that has no ``name`` the name of the call it answers (in place);
    results that answer no call are left for ``kit.data.rows.check_messages`` to report."""
    for i, m in enumerate(messages):
        if m.get("role") == "tool" and m.get("name") is None:
            call, _ = answered_call(messages, i)
            if call is not None:
                m["name"] = call["name"]
