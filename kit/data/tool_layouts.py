"""Function-calling layouts → the canonical conversation (``kit.data.formats`` detects and dispatches):

- ``hermes`` (its pieces; the turn loop is ShareGPT's, in ``kit.data.formats``): calls as
  ``<tool_call>{json}</tool_call>`` blocks in ``gpt`` turns, results as ``tool`` turns or
  ``<tool_response>`` blocks, tool definitions as a ``<tools>`` block in the system turn;
- ``openai_functions``: OpenAI's legacy ``functions`` / ``function_call`` / ``role: function``;
- ``xlam``: ``{query, tools, answers}`` rows (Salesforce's APIGen / xLAM data);
- ``llamafactory``: LLaMA-Factory's messages of typed parts ``{"type", "value"}`` with a
  per-message ``loss_weight`` (0: the turn is context, never trained).

Each reader returns ``(messages, tools)``; a bad row raises ``FormatError`` naming the field.
Hermes data writes its JSON as Python literals at times (``{'name': 'f', 'arguments': {...}}``):
a block that is not JSON is read as a Python literal before it is refused.
"""

from __future__ import annotations

import ast
import json
import re

from kit.chat.tool_data import FormatError, json_list, parse_json, read_call, read_calls, read_tools
from kit.data.turns import MEDIA_PARTS, UnsupportedContent, from_messages, kind, message

TOOL_CALL = re.compile(r"<tool_call>(.*?)</tool_call>", re.S)
TOOL_RESPONSE = re.compile(r"<tool_response>(.*?)</tool_response>", re.S)
TOOLS_BLOCK = re.compile(r"<tools>(.*?)</tools>", re.S)
# LLaMA-Factory's part types the kit reads, and those it cannot train on (dropped, counted).
PART_TYPES = ("text", "reasoning", "tool_call", "tool_calls", "tools")


def _empty(value) -> bool:
    return value is None or value == "" or value == []


def _parse(text: str, where: str, key: str):
    """JSON, else a Python literal (dicts with single quotes); neither: a FormatError."""
    try:
        return parse_json(text, where, key)
    except FormatError as not_json:
        try:
            return ast.literal_eval(text)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            raise not_json from None


# -- Hermes -----------------------------------------------------------------------------------


def hermes_calls(value: str, where: str) -> tuple[str, list[dict]]:
    """A gpt turn's text and its ``<tool_call>`` blocks (several: parallel calls)."""
    blocks = list(TOOL_CALL.finditer(value))
    if value.count("<tool_call>") != len(blocks):
        raise FormatError(f"bad tool call: {where}: <tool_call> block {len(blocks) + 1} has no closing </tool_call>")
    calls, pieces, start = [], [], 0
    for k, block in enumerate(blocks, start=1):
        at = f"{where}: <tool_call> block {k}"
        call = _parse(block.group(1).strip(), at, "bad tool call")
        if not isinstance(call, dict):
            raise FormatError(
                f"bad tool call: {at} is {type(call).__name__}, expected an object with name and arguments"
            )
        if "arguments" not in call and "parameters" in call:  # Llama's spelling
            call = {**call, "arguments": call["parameters"]}
        calls.append(read_call(call, at))
        pieces.append(value[start : block.start()])
        start = block.end()
    pieces.append(value[start:])
    return "\n".join(p.strip() for p in pieces if p.strip()), calls


def hermes_results(value, where: str) -> list[tuple[object, str | None]]:
    """A tool turn's results: each ``<tool_response>`` block (its ``{"name", "content"}`` unwrapped),
    or the whole value."""
    blocks = list(TOOL_RESPONSE.finditer(value)) if isinstance(value, str) else []
    if not blocks:
        return [(value, None)]
    if TOOL_RESPONSE.sub("", value).strip():
        raise FormatError(f"bad tool result: {where} has text outside its <tool_response> blocks")
    results = []
    for block in blocks:
        body, name = block.group(1).strip(), None
        try:
            parsed = _parse(body, where, "bad tool result")
        except FormatError:  # plain text
            parsed = None
        if isinstance(parsed, dict) and isinstance(parsed.get("name"), str) and "content" in parsed:
            name, body = parsed["name"], parsed["content"]
            body = body if isinstance(body, str) else json.dumps(body, ensure_ascii=False)
        results.append((body, name))
    return results


def only_results(value) -> bool:
    """A user turn holding nothing but ``<tool_response>`` blocks (Qwen writes results in user turns)."""
    return isinstance(value, str) and bool(TOOL_RESPONSE.search(value)) and not TOOL_RESPONSE.sub("", value).strip()


def hermes_tools(text, where: str) -> tuple[object, list | None]:
    """A system prompt without its ``<tools>`` block, and the tools the block holds (a JSON list,
    or one JSON object per line); an empty ``<tools></tools>`` is prose and stays."""
    if not isinstance(text, str):
        return text, None
    blocks = [b for b in TOOLS_BLOCK.finditer(text) if b.group(1).strip()]
    if not blocks:
        return text, None
    items, kept, start = [], [], 0
    for block in blocks:
        body = block.group(1).strip()
        try:
            found = _parse(body, f"{where}: <tools> block", "bad tools")
        except FormatError:
            lines = [line.strip() for line in body.splitlines() if line.strip()]
            if len(lines) < 2:
                raise
            found = [_parse(line, f"{where}: <tools> block, line {n}", "bad tools") for n, line in enumerate(lines, 1)]
        items += found if isinstance(found, list) else [found]
        kept.append(text[start : block.start()])
        start = block.end()
    kept.append(text[start:])
    return "\n".join(p.strip() for p in kept if p.strip()), read_tools(items, f"{where}: <tools>") or None


def one_tools(found: list | None, record: dict, where: str) -> list | None:
    """The row's tools: from a ``<tools>`` block, or its ``tools`` field; both is an error."""
    if found and not _empty(record.get("tools")):
        raise FormatError(f"bad tools: {where} has a <tools> block and the row's tools field is given too; keep one")
    return found or read_tools(record.get("tools"))


# -- OpenAI legacy functions ------------------------------------------------------------------


def openai_functions(record: dict) -> tuple[list[dict], list | None]:
    messages = from_messages(record["messages"], "messages", legacy_functions=True)
    functions = record.get("functions")
    if _empty(functions):
        return messages, read_tools(record.get("tools"))
    if not _empty(record.get("tools")):
        raise FormatError("bad tools: functions and tools are both given; keep one")
    return messages, read_tools(functions, "functions")


# -- xLAM -------------------------------------------------------------------------------------


def xlam(record: dict) -> tuple[list[dict], list | None]:
    query = record["query"]
    if not isinstance(query, str):
        raise FormatError(f"bad content: query is {kind(query)}, expected a string")
    answers = json_list(record["answers"], "answers", "bad tool call")
    if not answers:
        raise FormatError("bad tool call: answers is empty, expected the calls that answer the query")
    calls = [read_call(answer, f"answers[{j}]") for j, answer in enumerate(answers)]
    return [message("user", query, where="query"), message("assistant", "", calls=calls)], read_tools(
        record.get("tools")
    )


# -- LLaMA-Factory ----------------------------------------------------------------------------


def _weight(m: dict, where: str):
    weight = m.get("loss_weight")
    if weight is not None and (
        isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 <= weight <= 1
    ):
        raise FormatError(
            f"bad loss_weight: {where}.loss_weight is {weight!r}, expected a number from 0 to 1 "
            "(0: the turn is not trained)"
        )
    return weight


def _parts(content, where: str) -> tuple[object, list[str], list[dict], object]:
    """(text, reasoning pieces, calls, tools value) of a message's content parts."""
    if not isinstance(content, list):
        return content, [], [], None
    texts, reasoning, calls, tools = [], [], [], None
    for j, part in enumerate(content):
        at = f"{where}[{j}]"
        if isinstance(part, str):
            texts.append(part)
            continue
        if not isinstance(part, dict):
            raise FormatError(f"bad content: {at} is {kind(part)}, expected a part {{type, value}}")
        part_type, value = part.get("type", "text"), part.get("value", part.get("text"))
        if part_type in MEDIA_PARTS:
            raise UnsupportedContent(f"non-text content: {at} is {part_type}")
        if part_type not in PART_TYPES:
            raise FormatError(
                f"bad content: {at}.type is {part_type!r}, a part type the kit does not know "
                f"(expected one of {', '.join(PART_TYPES)})"
            )
        if part_type in ("text", "reasoning"):
            if not isinstance(value, str):
                raise FormatError(f"bad content: {at}.value is {kind(value)}, expected a string")
            (texts if part_type == "text" else reasoning).append(value)
        elif part_type == "tool_call":
            call = _parse(value, f"{at}.value", "bad tool call") if isinstance(value, str) else value
            calls.append(read_call(call, f"{at}.value"))
        elif part_type == "tool_calls":
            calls += read_calls(value, f"{at}.value")
        else:
            tools = value
    return "".join(texts), reasoning, calls, tools


def llamafactory(record: dict) -> tuple[list[dict], list | None]:
    items = record["messages"]
    if not isinstance(items, list):
        raise FormatError(f"messages must be a list, got {kind(items)}")
    out, part_tools = [], None
    for i, m in enumerate(items):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise FormatError(f"{where} is not an object")
        role, weight = m.get("role"), _weight(m, where)
        text, reasoning, calls, tools = _parts(m.get("content"), f"{where}.content")
        if calls and role != "assistant":
            raise FormatError(
                f"bad tool call: {where}.content has a tool call on a {role} turn; only assistant turns call tools"
            )
        if tools is not None:
            if part_tools is not None or not _empty(record.get("tools")):
                raise FormatError(
                    f"bad tools: {where}.content has a tools part and the row's tools are given too; keep one"
                )
            part_tools = read_tools(tools, f"{where}.content tools") or []
        out.append(message(role, text, "".join(reasoning), f"{where}.content", calls, m))
        if role == "assistant" and weight == 0:
            out[-1]["train"] = False
    return out, part_tools or read_tools(record.get("tools"))
