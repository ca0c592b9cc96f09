"""Canonical messages built from a source's turns: the pieces every layout reader shares
(``kit.data.formats`` for the chat layouts, ``kit.data.tool_layouts`` for the function-calling ones).

A message is ``{"role", "content": str}``; an assistant turn may carry ``reasoning``, ``tool_calls``
and ``train: false`` (context only: never trained, e.g. LLaMA-Factory's ``loss_weight: 0``); a tool
result carries ``name`` and ``tool_call_id``? (shapes in ``kit.chat.tool_data``).
"""

from __future__ import annotations

import json

from kit.chat.tool_data import FormatError, read_call, read_calls

REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
# Content parts that are media, not text: a row holding one is a counted drop (a text model cannot
# train on it); any other part that is not text is malformed content, an error.
MEDIA_PARTS = ("image", "image_url", "video", "video_url", "audio", "audio_url", "input_audio", "file")


class UnsupportedContent(FormatError):
    """Content the kit cannot train on (an image, audio ...): the row is dropped and counted, also
    under ``invalid_rows: error``, since the data is not wrong, only beyond a text model."""


def split_inline_reasoning(content):
    """A leading <think>…</think> in an assistant's content becomes its reasoning."""
    if isinstance(content, str) and content.lstrip().startswith(THINK_OPEN) and THINK_CLOSE in content:
        head, _, answer = content.partition(THINK_CLOSE)
        return head.lstrip()[len(THINK_OPEN) :].strip(), answer.lstrip("\n")
    return None, content


def kind(value) -> str:
    """What a value is, for an error: a CSV cell's JSON that did not parse says why."""
    error = getattr(value, "json_error", None)
    return f"text that is not valid JSON ({error})" if error else type(value).__name__


def text_of(content, where: str):
    """Content as text: a list of typed parts is joined; anything else is left for the checks."""
    if not isinstance(content, list):
        return content
    texts = []
    for j, part in enumerate(content):
        if isinstance(part, str):
            texts.append(part)
            continue
        if not isinstance(part, dict):
            raise FormatError(f"bad content: {where}[{j}] is {kind(part)}, expected text or a text part")
        part_kind = part.get("type", "text" if "text" in part else None)
        if part_kind in MEDIA_PARTS:
            raise UnsupportedContent(f"non-text content: {where}[{j}] is {part_kind}")
        if part_kind != "text":
            raise FormatError(
                f"bad content: {where}[{j}].type is {part_kind!r}, expected a text part (or a media part: "
                f"{', '.join(MEDIA_PARTS)})"
            )
        if not isinstance(part.get("text"), str):
            raise FormatError(f"bad content: {where}[{j}].text is {kind(part.get('text'))}, expected a string")
        texts.append(part["text"])
    return "".join(texts)


def message(role, content, reasoning=None, where: str = "content", calls=(), result_of: dict | None = None) -> dict:
    """One canonical message. ``calls``: an assistant's tool calls (read); ``result_of``: the
    source turn of a tool result, for its name and tool_call_id."""
    content = text_of(content, where)
    if role == "tool" and isinstance(content, dict):  # a structured result: the model reads it as JSON
        content = json.dumps(content, ensure_ascii=False)
    out = {"role": role, "content": "" if content is None and calls else content}
    if role == "assistant":
        inline, out["content"] = split_inline_reasoning(out["content"])
        reasoning = reasoning if reasoning not in (None, "") else inline
        if reasoning not in (None, ""):
            out["reasoning"] = reasoning
        if calls:
            out["tool_calls"] = list(calls)
    if role == "tool":
        result_of = result_of or {}
        out["name"] = result_of.get("name")
        if result_of.get("tool_call_id") is not None:
            out["tool_call_id"] = result_of["tool_call_id"]
    return out


def from_messages(items, where: str, legacy_functions: bool = False) -> list[dict]:
    """OpenAI / Hugging Face messages. ``legacy_functions``: also OpenAI's older function calling,
    an assistant's ``function_call: {name, arguments}`` and ``role: function`` results."""
    if not isinstance(items, list):
        raise FormatError(f"{where} must be a list, got {kind(items)}")
    out = []
    for i, m in enumerate(items):
        if not isinstance(m, dict):
            raise FormatError(f"{where}[{i}] is not an object")
        role = m.get("role")
        given = [f for f in REASONING_FIELDS if m.get(f) not in (None, "")]
        if len({repr(m[f]) for f in given}) > 1:  # one would be lost: which is the turn's reasoning?
            raise FormatError(f"two reasoning fields: {where}[{i}] has {' and '.join(given)}, which differ; keep one")
        reasoning = m[given[0]] if given else None
        calls = read_calls(m.get("tool_calls"), f"{where}[{i}].tool_calls")
        if legacy_functions:
            role = "tool" if role == "function" else role
            if m.get("function_call") is not None:
                calls.append(read_call(m["function_call"], f"{where}[{i}].function_call"))
        if calls and role != "assistant":
            raise FormatError(
                f"bad tool call: {where}[{i}].{'tool_calls' if m.get('tool_calls') else 'function_call'} "
                f"is on a {role} turn; only assistant turns call tools"
            )
        out.append(message(role, m.get("content"), reasoning, f"{where}[{i}].content", calls, m))
    return out
