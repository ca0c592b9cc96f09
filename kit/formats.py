"""Common chat-data layouts → the canonical conversation, once, in prepare.

Canonical: ``[{"role": "system"|"user"|"assistant", "content": str, "reasoning": str?}]``.
Formats (``data.format``, or ``auto`` to detect per source from its first record):

- ``messages`` (ChatML / OpenAI): ``{"messages": [{"role", "content"}]}``; assistant reasoning as
  ``reasoning_content``, ``thinking``, ``reasoning`` or a leading ``<think>…</think>`` in content.
- ``sharegpt``: ``{"conversations": [{"from": "system|human|gpt", "value"}]}``.
- ``alpaca``: ``instruction``, ``input``, ``output``, optional ``system`` and ``history``
  (``[[user, assistant], ...]``); a non-empty input joins the instruction after a blank line.
- ``conversation_pair``: ``{"conversation_id", "system_prompt", "conversation_pair": [{"role",
  "content", "thinking"?}]}``.
- ``prompt_completion``: ``prompt`` and ``completion``, each a string or a list of messages.

``data.columns`` renames source fields to these names (``{"instruction": "question"}``).
"""
from __future__ import annotations

FORMATS = ("messages", "sharegpt", "alpaca", "conversation_pair", "prompt_completion")
# The field(s) whose presence identifies each format, in detection order.
SIGNATURES = (("messages", ("messages",)), ("sharegpt", ("conversations",)),
              ("conversation_pair", ("conversation_pair",)), ("alpaca", ("instruction", "output")),
              ("prompt_completion", ("prompt", "completion")))
SHAREGPT_ROLES = {"system": "system", "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant"}
REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"


class FormatError(ValueError):
    """A record that is not in the expected format (the message names the field)."""


def detect(record: object) -> str | None:
    if not isinstance(record, dict):
        return None
    for name, fields in SIGNATURES:
        if all(f in record for f in fields):
            return name
    return None


def apply_columns(record: object, columns: dict) -> object:
    if not columns or not isinstance(record, dict):
        return record
    out = {k: v for k, v in record.items() if k not in columns.values()}
    for canonical, source in columns.items():
        if source not in record:
            raise FormatError(f"data.columns.{canonical} names the field {source!r}, which this row does not have "
                              f"(its fields: {', '.join(map(str, record))})")
        out[canonical] = record[source]
    return out


def _split_inline_reasoning(content):
    """A leading <think>…</think> in an assistant's content becomes its reasoning."""
    if isinstance(content, str) and content.lstrip().startswith(THINK_OPEN) and THINK_CLOSE in content:
        head, _, answer = content.partition(THINK_CLOSE)
        return head.lstrip()[len(THINK_OPEN):].strip(), answer.lstrip("\n")
    return None, content


def _message(role, content, reasoning=None) -> dict:
    message = {"role": role, "content": content}
    if role == "assistant":
        inline, content = _split_inline_reasoning(content)
        message["content"] = content
        reasoning = reasoning if reasoning not in (None, "") else inline
        if reasoning not in (None, ""):
            message["reasoning"] = reasoning
    return message


def _kind(value) -> str:
    """What a value is, for an error: a CSV cell's JSON that did not parse says why."""
    error = getattr(value, "json_error", None)
    return f"text that is not valid JSON ({error})" if error else type(value).__name__


def _from_messages(items, where: str) -> list[dict]:
    if not isinstance(items, list):
        raise FormatError(f"{where} must be a list, got {_kind(items)}")
    out = []
    for i, m in enumerate(items):
        if not isinstance(m, dict):
            raise FormatError(f"{where}[{i}] is not an object")
        reasoning = next((m[f] for f in REASONING_FIELDS if m.get(f) not in (None, "")), None)
        out.append(_message(m.get("role"), m.get("content"), reasoning))
    return out


def _from_sharegpt(record) -> list[dict]:
    turns = record["conversations"]
    if not isinstance(turns, list):
        raise FormatError(f"conversations must be a list, got {_kind(turns)}")
    out = []
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict):
            raise FormatError(f"conversations[{i}] is not an object")
        speaker = turn.get("from", turn.get("role"))
        if speaker not in SHAREGPT_ROLES:
            raise FormatError(f"unknown role: conversations[{i}].from is {speaker!r} "
                              f"(expected one of {', '.join(SHAREGPT_ROLES)})")
        out.append(_message(SHAREGPT_ROLES[speaker], turn.get("value", turn.get("content"))))
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


def to_messages(record: object, fmt: str) -> list[dict]:
    """Convert one record known to be in ``fmt``; FormatError names what is wrong."""
    seen = detect(record)
    if seen != fmt:
        fields = dict(SIGNATURES)[fmt]
        if seen is None:
            raise FormatError(f"not {fmt}: expected the field(s) {', '.join(fields)}"
                              + (f"; got {', '.join(map(str, record))}" if isinstance(record, dict) else ""))
        raise FormatError(f"mixed formats: this row looks like {seen}, the rest of the source is {fmt}")
    return CONVERTERS[fmt](record)
