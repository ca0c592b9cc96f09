"""Common chat-data layouts → the canonical conversation, once, in prepare.

Canonical: ``{"messages": [...], "tools": [...]?}`` with messages ``{"role": "system"|"user"|"assistant"|"tool",
"content": str}``, assistant turns with ``reasoning``? and ``tool_calls``?, tool results with ``name`` and
``tool_call_id``? (shapes in ``kit.chat.tool_data``). Formats (``data.format``, or ``auto`` to detect per source
from its first record):

- ``messages`` (ChatML / OpenAI / Hugging Face): ``{"messages": [{"role", "content"}]}``; assistant reasoning
  as ``reasoning_content``, ``thinking``, ``reasoning`` or a leading ``<think>…</think>`` in content;
  ``tool_calls`` on assistant turns, ``role: tool`` results.
- ``sharegpt``: ``{"conversations": [{"from": "system|human|gpt|function_call|observation", "value"}],
  "system"?}``; a ``function_call`` value is a call or a list of calls, and joins the ``gpt`` turn right
  before it (its text) as one assistant turn.
- ``alpaca``: ``instruction``, ``input``, ``output``, optional ``system`` and ``history``
  (``[[user, assistant], ...]``); a non-empty input joins the instruction after a blank line.
- ``conversation_pair``: ``{"conversation_id", "system_prompt", "conversation_pair": [{"role",
  "content", "thinking"?}]}``.
- ``prompt_completion``: ``prompt`` and ``completion``, each a string or a list of messages.

Every format takes an optional ``tools`` field (a list, or JSON text holding one). Content given as a
list of typed parts becomes their text joined with "" (as chat templates concatenate parts); a
non-text part (image, audio ...) is ``UnsupportedContent``: the row is dropped and counted.
``data.columns`` renames source fields to these names (``{"instruction": "question", "tools": "functions"}``).
Fields a format does not read are listed by ``unused_fields`` for the prepare report.
"""
from __future__ import annotations

import json

from kit.chat.tool_data import FormatError, json_list, name_results, read_call, read_calls, read_tools
from kit.recipes import FORMATS  # noqa: F401  (the names a recipe may give; each is read below)

# The field(s) whose presence identifies each format, in detection order.
SIGNATURES = (("messages", ("messages",)), ("sharegpt", ("conversations",)),
              ("conversation_pair", ("conversation_pair",)), ("alpaca", ("instruction", "output")),
              ("prompt_completion", ("prompt", "completion")))
SHAREGPT_ROLES = {"system": "system", "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "function_call": "assistant", "observation": "tool"}
REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
# Canonical fields a missing source column may leave out (data.columns maps them when rows have them).
OPTIONAL_FIELDS = ("tools", "system", "input", "history", "system_prompt")
# What each format reads: row fields, the lists of turns in a row, and the fields of a turn.
ROW_FIELDS = {"messages": ("messages",), "sharegpt": ("conversations", "system"),
              "alpaca": ("instruction", "input", "output", "system", "history"),
              "conversation_pair": ("conversation_pair", "system_prompt"), "prompt_completion": ("prompt", "completion")}
TURN_LISTS = {"messages": ("messages",), "sharegpt": ("conversations",), "conversation_pair": ("conversation_pair",),
              "prompt_completion": ("prompt", "completion")}
MESSAGE_FIELDS = ("role", "content", *REASONING_FIELDS, "tool_calls")
TOOL_RESULT_FIELDS = ("name", "tool_call_id")
SHAREGPT_FIELDS = ("from", "value", "role", "content")


class UnsupportedContent(FormatError):
    """Content the kit cannot train on (an image, audio ...): the row is dropped and counted, also
    under ``invalid_rows: error``, since the data is not wrong, only beyond a text model."""


def detect(record: object) -> str | None:
    if not isinstance(record, dict):
        return None
    for name, fields in SIGNATURES:
        if all(f in record for f in fields):
            return name
    return None


def apply_columns(record: object, columns: dict) -> object:
    """Rename source fields to canonical ones; an optional canonical field (``tools``, ``system`` ...)
    may be missing from a row (kit.data.rows checks that some row of the source has it)."""
    if not columns or not isinstance(record, dict):
        return record
    out = {k: v for k, v in record.items() if k not in columns.values()}
    for canonical, source in columns.items():
        if source in record:
            out[canonical] = record[source]
        elif canonical not in OPTIONAL_FIELDS:
            raise FormatError(f"data.columns.{canonical} names the field {source!r}, which this row does not have "
                              f"(its fields: {', '.join(map(str, record))})")
    return out


def _split_inline_reasoning(content):
    """A leading <think>…</think> in an assistant's content becomes its reasoning."""
    if isinstance(content, str) and content.lstrip().startswith(THINK_OPEN) and THINK_CLOSE in content:
        head, _, answer = content.partition(THINK_CLOSE)
        return head.lstrip()[len(THINK_OPEN):].strip(), answer.lstrip("\n")
    return None, content


def _kind(value) -> str:
    """What a value is, for an error: a CSV cell's JSON that did not parse says why."""
    error = getattr(value, "json_error", None)
    return f"text that is not valid JSON ({error})" if error else type(value).__name__


def _text(content, where: str):
    """Content as text: a list of typed parts is joined; anything else is left for the checks."""
    if not isinstance(content, list):
        return content
    texts = []
    for j, part in enumerate(content):
        if isinstance(part, str):
            texts.append(part)
            continue
        kind = part.get("type", "text" if "text" in part else None) if isinstance(part, dict) else _kind(part)
        if kind != "text":
            raise UnsupportedContent(f"non-text content: {where}[{j}] is {kind}")
        if not isinstance(part.get("text"), str):
            raise FormatError(f"bad content: {where}[{j}].text is {_kind(part.get('text'))}, expected a string")
        texts.append(part["text"])
    return "".join(texts)


def _message(role, content, reasoning=None, where: str = "content", calls=(), result_of: dict | None = None) -> dict:
    """One canonical message. ``calls``: an assistant's tool calls (read); ``result_of``: the
    source turn of a tool result, for its name and tool_call_id."""
    content = _text(content, where)
    if role == "tool" and isinstance(content, dict):  # a structured result: the model reads it as JSON
        content = json.dumps(content, ensure_ascii=False)
    message = {"role": role, "content": "" if content is None and calls else content}
    if role == "assistant":
        inline, message["content"] = _split_inline_reasoning(message["content"])
        reasoning = reasoning if reasoning not in (None, "") else inline
        if reasoning not in (None, ""):
            message["reasoning"] = reasoning
        if calls:
            message["tool_calls"] = list(calls)
    if role == "tool":
        result_of = result_of or {}
        message["name"] = result_of.get("name")
        if result_of.get("tool_call_id") is not None:
            message["tool_call_id"] = result_of["tool_call_id"]
    return message


def _from_messages(items, where: str) -> list[dict]:
    if not isinstance(items, list):
        raise FormatError(f"{where} must be a list, got {_kind(items)}")
    out = []
    for i, m in enumerate(items):
        if not isinstance(m, dict):
            raise FormatError(f"{where}[{i}] is not an object")
        role = m.get("role")
        reasoning = next((m[f] for f in REASONING_FIELDS if m.get(f) not in (None, "")), None)
        calls = read_calls(m.get("tool_calls"), f"{where}[{i}].tool_calls")
        if calls and role != "assistant":
            raise FormatError(f"bad tool call: {where}[{i}].tool_calls is on a {role} turn; "
                              "only assistant turns call tools")
        out.append(_message(role, m.get("content"), reasoning, f"{where}[{i}].content", calls, m))
    return out


def _sharegpt_calls(value, where: str) -> list[dict]:
    """A function_call turn's value: one call or a list of calls, as objects or JSON text."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as e:
            raise FormatError(f"bad tool call: {where} is not valid JSON ({e.msg} at character {e.pos})") from None
    if isinstance(value, dict):
        return [read_call(value, where)]
    return [read_call(call, f"{where}[{j}]") for j, call in enumerate(json_list(value, where, "bad tool call"))]


def _from_sharegpt(record) -> list[dict]:
    turns = record["conversations"]
    if not isinstance(turns, list):
        raise FormatError(f"conversations must be a list, got {_kind(turns)}")
    out = [_message("system", record["system"])] if record.get("system") else []
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict):
            raise FormatError(f"conversations[{i}] is not an object")
        speaker = turn.get("from", turn.get("role"))
        if speaker not in SHAREGPT_ROLES:
            raise FormatError(f"unknown role: conversations[{i}].from is {speaker!r} "
                              f"(expected one of {', '.join(SHAREGPT_ROLES)})")
        value, where = turn.get("value", turn.get("content")), f"conversations[{i}].value"
        if speaker == "system" and out and i == 0:
            raise FormatError("system twice: conversations[0] is a system turn and the row's system field is given too")
        if speaker != "function_call":
            out.append(_message(SHAREGPT_ROLES[speaker], value, where=where))
        elif out and out[-1]["role"] == "assistant" and "tool_calls" not in out[-1]:
            # The gpt turn just before a call is the text the assistant says with it: one turn.
            out[-1]["tool_calls"] = _sharegpt_calls(value, where)
        else:
            out.append(_message("assistant", "", calls=_sharegpt_calls(value, where)))
    return out


def _from_alpaca(record) -> list[dict]:
    instruction, extra = record["instruction"], record.get("input")
    if not isinstance(instruction, str):
        raise FormatError(f"bad content: instruction is {type(instruction).__name__}, expected a string")
    user = instruction + (f"\n\n{extra}" if isinstance(extra, str) and extra.strip() else "")
    out = [_message("system", record["system"])] if record.get("system") else []
    history = record.get("history") or []
    if not isinstance(history, list):
        raise FormatError(f"history must be a list of [user, assistant] pairs, got {_kind(history)}")
    for i, pair in enumerate(history):
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2):
            raise FormatError(f"history[{i}] is not a [user, assistant] pair")
        out += [_message("user", pair[0]), _message("assistant", pair[1])]
    return out + [_message("user", user), _message("assistant", record["output"])]


def _from_conversation_pair(record) -> list[dict]:
    out = [_message("system", record["system_prompt"])] if record.get("system_prompt") else []
    return out + _from_messages(record["conversation_pair"], "conversation_pair")


def _from_prompt_completion(record) -> list[dict]:
    prompt, completion = record["prompt"], record["completion"]
    messages = ([_message("user", prompt)] if isinstance(prompt, str) else _from_messages(prompt, "prompt"))
    return messages + ([_message("assistant", completion)] if isinstance(completion, str)
                       else _from_messages(completion, "completion"))


CONVERTERS = {"messages": lambda r: _from_messages(r["messages"], "messages"), "sharegpt": _from_sharegpt,
              "alpaca": _from_alpaca, "conversation_pair": _from_conversation_pair,
              "prompt_completion": _from_prompt_completion}


def to_conversation(record: object, fmt: str) -> dict:
    """Convert one record known to be in ``fmt`` to ``{"messages", "tools"?}``; FormatError names
    what is wrong (UnsupportedContent: a non-text part)."""
    seen = detect(record)
    if seen != fmt:
        fields = dict(SIGNATURES)[fmt]
        if seen is None:
            raise FormatError(f"not {fmt}: expected the field(s) {', '.join(fields)}"
                              + (f"; got {', '.join(map(str, record))}" if isinstance(record, dict) else ""))
        raise FormatError(f"mixed formats: this row looks like {seen}, the rest of the source is {fmt}")
    messages = CONVERTERS[fmt](record)
    name_results(messages)
    for m in messages:  # a result whose call is not found keeps no name; the checks report it
        if m.get("role") == "tool" and m.get("name") is None:
            del m["name"]
    tools = read_tools(record.get("tools"))
    return {"messages": messages, "tools": tools} if tools else {"messages": messages}


def to_messages(record: object, fmt: str) -> list[dict]:
    """The canonical messages of one record (``to_conversation`` without its tools)."""
    return to_conversation(record, fmt)["messages"]


def unused_fields(record: object, fmt: str) -> list[str]:
    """The fields of a (column-mapped) record that ``fmt`` does not read, as ``id`` or
    ``messages[].weight``, in the record's order; fields holding null do not count."""
    if not isinstance(record, dict):
        return []
    read = ROW_FIELDS[fmt] + ("tools",)
    unused = [k for k, v in record.items() if k not in read and v is not None]
    for name in TURN_LISTS.get(fmt, ()):
        turns = record.get(name)
        for turn in turns if isinstance(turns, list) else ():
            if isinstance(turn, dict):
                known = SHAREGPT_FIELDS if fmt == "sharegpt" else MESSAGE_FIELDS + (
                    TOOL_RESULT_FIELDS if turn.get("role") == "tool" else ())
                unused += [f"{name}[].{k}" for k, v in turn.items() if k not in known and v is not None]
    return list(dict.fromkeys(unused))
