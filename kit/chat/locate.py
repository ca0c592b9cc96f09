"""Where a conversation's fields (a turn's answer, reasoning, tool calls) lie in its rendered text,
found by structure (see ``kit.chat.render``): tracked through one rendering with templates the kit
compiles itself (``locate_in_one_render``), or by rendering again with each field replaced by a
unique marker and aligning the two renderings (``locate``). A rendering that does not line up
raises ``MaskError``.
"""

from __future__ import annotations

import json
import re
from itertools import accumulate


class MaskError(ValueError):
    pass


# Private-use code points around a number: a marker no real conversation contains (checked).
_MARK_OPEN, _MARK_CLOSE, _MARK_END = "\ue000", "\ue001", "\ue002"
_PRIVATE = (_MARK_OPEN, _MARK_CLOSE, _MARK_END)
_MARK = re.compile(f"{_MARK_OPEN}(\\d+){_MARK_CLOSE}")
_WRAPPED = re.compile(f"{_MARK_OPEN}(\\d+){_MARK_CLOSE}([^{_MARK_END}]*){_MARK_END}")


def _call_fields(message: dict) -> list[str]:
    return [
        f"tool_calls.{j}.{key}" for j in range(len(message.get("tool_calls") or [])) for key in ("name", "arguments")
    ]


def _field(message: dict, key: str):
    if key.startswith("tool_calls."):
        _, j, name = key.split(".")
        return message["tool_calls"][int(j)].get(name)
    return message.get(key)


def _with_fields(messages: list[dict], values: dict[tuple[int, str], object]) -> list[dict]:
    """Copies of ``messages`` with the fields ``(turn, key)`` set to ``values`` (calls copied as needed)."""
    out = [dict(m) for m in messages]
    for (i, key), value in values.items():
        if key.startswith("tool_calls."):
            _, j, name = key.split(".")
            if out[i]["tool_calls"] is messages[i]["tool_calls"]:
                out[i]["tool_calls"] = [dict(c) for c in messages[i]["tool_calls"]]
            out[i]["tool_calls"][int(j)][name] = value
        else:
            out[i][key] = value
    return out


def _tracked_fields(messages: list[dict], trained: set[int]):
    """(turn, field, value) of what ``locate`` finds: trained turns' reasoning, answer and tool calls
    (name and arguments of each), and every non-assistant turn's content (untrained assistant turns
    are left as they are: templates rewrite history, e.g. R1 strips its reasoning)."""
    for i, m in enumerate(messages):
        keys = (
            ("reasoning", "content", *_call_fields(m))
            if i in trained
            else ("content",)
            if m["role"] != "assistant"
            else ()
        )
        for key in keys:
            value = _field(m, key)
            if value is None or value == "":
                continue
            written = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
            if not written.isascii() and any(c in written for c in _PRIVATE):
                raise MaskError(f"{m['role']} turn {i}: its {key} holds a private-use character U+E000-U+E002")
            yield i, key, value


def _required_fields(messages: list[dict], trained: set[int]):
    """What every trained turn must have rendered: its tool calls, else its answer."""
    for i in trained:
        yield from ((i, key) for key in (_call_fields(messages[i]) or ["content"]))


def _marked(key: int, text: str) -> str:
    return f"{_MARK_OPEN}{key}{_MARK_CLOSE}{text}{_MARK_END}"


class _Tracked(str):
    """A field whose place in a rendering is wanted. A template's tests see its plain value (so the
    rendering's control flow is the real one); written out, alone, concatenated, formatted or as
    JSON (``tojson``), it carries markers around it. Trimming keeps it tracked; other
    transformations lose the markers (then the two-render ``locate`` is used)."""

    def __new__(cls, value: str, key: int):
        obj = super().__new__(cls, value)
        obj.key = key
        return obj

    def __str__(self):
        return _marked(self.key, str.__str__(self))

    def __add__(self, other):
        return str(self) + other

    def __radd__(self, other):
        return other + str(self)

    def strip(self, chars=None):
        return _Tracked(str.strip(self, chars), self.key)

    def lstrip(self, chars=None):
        return _Tracked(str.lstrip(self, chars), self.key)

    def rstrip(self, chars=None):
        return _Tracked(str.rstrip(self, chars), self.key)

    def marked_json(self, **options):  # called by the kit's ``tojson`` filter (kit.chat.templates)
        # The field is the escaped text between the quotes, as ``locate`` finds it.
        return f'"{_marked(self.key, json.dumps(str.__str__(self), **options)[1:-1])}"'


class _TrackedObject(dict):
    """Tool-call arguments whose place in a rendering is wanted: a plain dict to the template,
    written with markers around it by the kit's ``tojson`` filter."""

    def __init__(self, value: dict, key: int):
        super().__init__(value)
        self.key = key

    def marked_json(self, **options):
        return _marked(self.key, json.dumps(dict(self), **options))


def _tracked(value, key: int):
    return _Tracked(value, key) if isinstance(value, str) else _TrackedObject(value, key)


def locate_in_one_render(render_text, messages: list[dict], trained: set[int]):
    """``(text, where)`` as ``locate`` finds them, from one rendering with tracked fields (only for
    templates the kit compiles itself, whose output goes through ``str``); None where a field was
    rendered other than as itself, trimmed or as JSON: then ``locate`` is used. A field written
    twice (gpt-oss names the call again in its result's header) is where it is written first."""
    fields = list(_tracked_fields(messages, trained))
    marked = render_text(
        _with_fields(messages, {(i, key): _tracked(value, k) for k, (i, key, value) in enumerate(fields)})
    )
    parts = _WRAPPED.split(marked)  # literal, then (field number, field text, literal) per marked field
    numbers = parts[1::3]
    del parts[1::3]  # literal, (field text, literal)*: the text without its markers
    text = "".join(parts)
    if not text.isascii() and any(c in text for c in _PRIVATE):
        return None
    ends = list(accumulate(map(len, parts)))
    where = {}
    for n, number in enumerate(numbers):
        i, key, _ = fields[int(number)]
        where.setdefault((i, key), (ends[2 * n], ends[2 * n + 1]))
    if any(f not in where for f in _required_fields(messages, trained)):
        return None
    return text, where


def locate(text: str, render_text, messages: list[dict], trained: set[int]) -> dict[tuple[int, str], tuple[int, int]]:
    """Where each trained assistant turn's answer, reasoning and tool calls, and every other
    non-assistant turn's content, lie in ``text`` (the rendering of canonical ``messages`` by
    ``render_text``), as {(turn, field): (start, end)}. The conversation is rendered again with
    those fields replaced by markers, and the literal text between markers must match ``text`` in
    order. A template may trim what it renders or write it as JSON (tool-call arguments always are:
    their marker is a string, which ``tojson`` quotes); any other change raises MaskError. A field
    written twice is where it is written first.
    (Untrained assistant turns are left as they are: templates rewrite history, e.g. R1 strips its
    reasoning.)"""
    values = list(_tracked_fields(messages, trained))
    marked = render_text(
        _with_fields(messages, {(i, key): f"{_MARK_OPEN}{k}{_MARK_CLOSE}" for k, (i, key, _) in enumerate(values)})
    )
    markers = [_marker_span(marked, match, values[int(match[1])][2]) for match in _MARK.finditer(marked)]
    head = marked[: markers[0][0]] if markers else marked
    if not text.startswith(head):
        raise MaskError("the chat template renders the conversation's start differently when its turns change")
    pos, where = len(head), {}
    for n, (_, end, k) in enumerate(markers):
        literal = marked[end : markers[n + 1][0] if n + 1 < len(markers) else len(marked)]
        i, field_name, value = values[k]
        found = next(
            (c for c in _renderings(value) if text.startswith(c, pos) and text.startswith(literal, pos + len(c))), None
        )
        if found is None:
            raise MaskError(f"turn {i}: the chat template changes its {field_name} beyond trimming it")
        where.setdefault((i, field_name), (pos, pos + len(found)))
        pos += len(found) + len(literal)
    if pos != len(text):
        raise MaskError("the chat template's rendering does not line up with the conversation's turns")
    return where


def _marker_span(marked: str, match, value) -> tuple[int, int, int]:
    """(start, end, field) of a marker in the marked rendering. An object's marker (a string
    standing for tool-call arguments) comes out JSON-quoted where the template writes it with
    ``tojson``: the quotes are the marker's, the object's JSON stands in their place."""
    start, end = match.span()
    if not isinstance(value, str) and marked[start - 1 : start] == '"' and marked[end : end + 1] == '"':
        start, end = start - 1, end + 1
    return start, end, int(match[1])


def _renderings(value):
    """What a template may have written for ``value`` where its marker came out: an object
    (tool-call arguments) as its JSON; text as it is, trimmed, or escaped inside a JSON string
    (llama-3.1 and gpt-oss write tool results with ``tojson``)."""
    if not isinstance(value, str):
        yield from dict.fromkeys((json.dumps(value, ensure_ascii=False), json.dumps(value)))
    else:
        yield from dict.fromkeys(
            (*_trimmed(value), json.dumps(value, ensure_ascii=False)[1:-1], json.dumps(value)[1:-1])
        )


def _trimmed(value: str):
    """The value as templates render it: as it is, else trimmed as jinja's ``trim`` or Python's
    ``strip`` variants would (as it is first: that is the common case)."""
    yield value
    yield from dict.fromkeys(
        v
        for v in (
            value.strip(),
            value.strip("\n"),
            value.lstrip("\n"),
            value.rstrip("\n"),
            value.lstrip(),
            value.rstrip(),
        )
        if v != value
    )
