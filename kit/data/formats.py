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
- ``hermes``: ShareGPT with ``<tool_call>{json}</tool_call>`` blocks in ``gpt`` turns (several: parallel
  calls; the text around them is the turn's text), ``tool`` turns (or ``<tool_response>`` blocks) as
  results, and a ``<tools>`` block in the system turn as the row's tools (the system prompt loses it).
- ``openai_functions``: ``messages`` with OpenAI's legacy ``functions`` (the tools), an assistant's
  ``function_call`` and ``role: function`` results.
- ``xlam``: ``{"query", "tools", "answers"}``: the query, answered by the calls in ``answers``.
- ``llamafactory``: ``messages`` whose content is typed parts ``{"type": "text"|"reasoning"|"tool_call",
  "value"}``, with a per-message ``loss_weight`` (0: context only, never trained).

The function-calling readers are in ``kit.data.tool_layouts``. Detection is by fields, then by
content for the layouts that share their fields with another (a ``hermes`` row is a ``sharegpt``
row with tags; ``openai_functions`` and ``llamafactory`` rows are ``messages`` rows): each of those
readers reads its plain relative's rows too, and a source detected as the plain one refuses a later
row that needs the other (unless ``data.format`` names the plain one).

Every format takes an optional ``tools`` field (a list, or JSON text holding one). Content given as a
list of typed parts becomes their text joined with "" (as chat templates concatenate parts); a
non-text part (image, audio ...) is ``UnsupportedContent``: the row is dropped and counted.
``data.columns`` renames source fields to these names (``{"instruction": "question", "tools": "functions"}``).
Fields a format does not read are listed by ``unused_fields`` for the prepare report.
"""

from __future__ import annotations


from kit.chat.tool_data import FormatError, json_list, name_results, parse_json, read_call, read_tools
from kit.data import tool_layouts
from kit.data.turns import REASONING_FIELDS, UnsupportedContent  # noqa: F401  (kit.data.rows reads it here)
from kit.data.turns import from_messages as _from_messages, kind as _kind, message as _message
from kit.recipes import FORMATS  # noqa: F401  (the names a recipe may give; each is read below)

# The field(s) whose presence identifies each format, in detection order; a format with a content
# test (LOOKS) is detected only when its test passes, else the next one with those fields is.
SIGNATURES = (
    ("llamafactory", ("messages",)),
    ("openai_functions", ("messages",)),
    ("messages", ("messages",)),
    ("hermes", ("conversations",)),
    ("sharegpt", ("conversations",)),
    ("conversation_pair", ("conversation_pair",)),
    ("alpaca", ("instruction", "output")),
    ("prompt_completion", ("prompt", "completion")),
    ("xlam", ("query", "answers")),
)
# The plain layout each content-detected one extends (and whose rows its reader reads as well).
EXTENDS = {"llamafactory": "messages", "openai_functions": "messages", "hermes": "sharegpt"}
SHAREGPT_ROLES = {
    "system": "system",
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "function_call": "assistant",
    "observation": "tool",
}
HERMES_ROLES = {**SHAREGPT_ROLES, "tool": "tool", "function_response": "tool"}
# Canonical fields a missing source column may leave out (data.columns maps them when rows have them).
OPTIONAL_FIELDS = ("tools", "system", "input", "history", "system_prompt")
# What each format reads: row fields, the lists of turns in a row, and the fields of a turn.
ROW_FIELDS = {
    "messages": ("messages",),
    "sharegpt": ("conversations", "system"),
    "alpaca": ("instruction", "input", "output", "system", "history"),
    "conversation_pair": ("conversation_pair", "system_prompt"),
    "prompt_completion": ("prompt", "completion"),
    "hermes": ("conversations", "system"),
    "openai_functions": ("messages", "functions"),
    "xlam": ("query", "answers"),
    "llamafactory": ("messages",),
}
TURN_LISTS = {
    "messages": ("messages",),
    "sharegpt": ("conversations",),
    "conversation_pair": ("conversation_pair",),
    "prompt_completion": ("prompt", "completion"),
    "hermes": ("conversations",),
    "openai_functions": ("messages",),
    "llamafactory": ("messages",),
}
MESSAGE_FIELDS = ("role", "content", *REASONING_FIELDS, "tool_calls")
TOOL_RESULT_FIELDS = ("name", "tool_call_id")
SHAREGPT_FIELDS = ("from", "value", "role", "content")
TURN_FIELDS = {
    "sharegpt": SHAREGPT_FIELDS,
    "hermes": SHAREGPT_FIELDS,
    "llamafactory": ("role", "content", "loss_weight"),
    "openai_functions": MESSAGE_FIELDS + ("function_call",),
}


def _turns(record: dict, name: str) -> list[dict]:
    turns = record.get(name)
    return [t for t in turns if isinstance(t, dict)] if isinstance(turns, list) else []


def _looks_llamafactory(record: dict) -> bool:
    return any(
        "loss_weight" in m or any(isinstance(p, dict) and "value" in p for p in m["content"])
        if isinstance(m.get("content"), list)
        else "loss_weight" in m
        for m in _turns(record, "messages")
    )


def _looks_openai_functions(record: dict) -> bool:
    return record.get("functions") is not None or any(
        m.get("function_call") is not None or m.get("role") == "function" for m in _turns(record, "messages")
    )


def _looks_hermes(record: dict) -> bool:
    """Tool turns, or Hermes' tags where Hermes puts them: ``<tools>`` in the system prompt,
    ``<tool_call>`` in the model's turns (a user who writes such a tag does not make a row Hermes)."""
    turns = _turns(record, "conversations")

    def tagged(values, tag: str) -> bool:
        return any(isinstance(v, str) and tag in v for v in values)

    system = [record.get("system")] + [t.get("value", t.get("content")) for t in turns if t.get("from") == "system"]
    model = [t.get("value", t.get("content")) for t in turns if t.get("from") in ("gpt", "assistant")]
    return (
        any(t.get("from") in ("tool", "function_response") for t in turns)
        or tagged(system, "<tools>")
        or tagged(model, "<tool_call>")
    )


LOOKS = {"llamafactory": _looks_llamafactory, "openai_functions": _looks_openai_functions, "hermes": _looks_hermes}


def detect(record: object) -> str | None:
    if not isinstance(record, dict):
        return None
    for name, fields in SIGNATURES:
        if all(f in record for f in fields) and (name not in LOOKS or LOOKS[name](record)):
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
            raise FormatError(
                f"data.columns.{canonical} names the field {source!r}, which this row does not have "
                f"(its fields: {', '.join(map(str, record))})"
            )
    return out


def _sharegpt_calls(value, where: str) -> list[dict]:
    """A function_call turn's value: one call or a list of calls, as objects or JSON text."""
    if isinstance(value, str):
        value = parse_json(value, where, "bad tool call")
    if isinstance(value, dict):
        return [read_call(value, where)]
    return [read_call(call, f"{where}[{j}]") for j, call in enumerate(json_list(value, where, "bad tool call"))]


def _from_sharegpt(record, hermes: bool = False):
    """ShareGPT turns; ``hermes``: also its tags and ``tool`` turns (then ``(messages, tools)``)."""
    turns = record["conversations"]
    if not isinstance(turns, list):
        raise FormatError(f"conversations must be a list, got {_kind(turns)}")
    roles, system, tools, tools_at = HERMES_ROLES if hermes else SHAREGPT_ROLES, record.get("system"), None, "system"
    if hermes:
        system, tools = tool_layouts.hermes_tools(system, "system")
    out = [_message("system", system)] if system else []
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict):
            raise FormatError(f"conversations[{i}] is not an object")
        speaker = turn.get("from", turn.get("role"))
        if speaker not in roles:
            raise FormatError(
                f"unknown role: conversations[{i}].from is {speaker!r} (expected one of {', '.join(roles)})"
            )
        value, where, role = turn.get("value", turn.get("content")), f"conversations[{i}].value", roles[speaker]
        if speaker == "system" and record.get("system") and i == 0:
            raise FormatError("system twice: conversations[0] is a system turn and the row's system field is given too")
        if hermes and speaker == "system":
            value, found = tool_layouts.hermes_tools(value, where)
            if found and tools:
                raise FormatError(f"bad tools: {where} has a <tools> block and the system field has one too; keep one")
            tools, tools_at = (found, where) if found else (tools, tools_at)
            if found and not value:  # the system prompt was the tools alone: the template writes them
                continue
        calls_in_text = hermes and speaker != "function_call" and isinstance(value, str) and "<tool_call>" in value
        if calls_in_text and role == "assistant":
            text, calls = tool_layouts.hermes_calls(value, where)
            out.append(_message("assistant", text, where=where, calls=calls))
        elif hermes and (role == "tool" or (role == "user" and tool_layouts.only_results(value))):
            out += [
                _message("tool", content, where=where, result_of={"name": name})
                for content, name in tool_layouts.hermes_results(value, where)
            ]
        elif speaker != "function_call":
            out.append(_message(role, value, where=where))
        elif out and out[-1]["role"] == "assistant" and "tool_calls" not in out[-1]:
            # The gpt turn just before a call is the text the assistant says with it: one turn.
            out[-1]["tool_calls"] = _sharegpt_calls(value, where)
        else:
            out.append(_message("assistant", "", calls=_sharegpt_calls(value, where)))
    return (out, tool_layouts.one_tools(tools, record, tools_at)) if hermes else out


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
    messages = [_message("user", prompt)] if isinstance(prompt, str) else _from_messages(prompt, "prompt")
    return messages + (
        [_message("assistant", completion)] if isinstance(completion, str) else _from_messages(completion, "completion")
    )


CONVERTERS = {
    "messages": lambda r: _from_messages(r["messages"], "messages"),
    "sharegpt": _from_sharegpt,
    "alpaca": _from_alpaca,
    "conversation_pair": _from_conversation_pair,
    "prompt_completion": _from_prompt_completion,
    "hermes": lambda r: _from_sharegpt(r, hermes=True),
    "openai_functions": tool_layouts.openai_functions,
    "xlam": tool_layouts.xlam,
    "llamafactory": tool_layouts.llamafactory,
}


def _check_layout(record: object, fmt: str, explicit: bool) -> None:
    """A row of another layout than its source's is an error; a plain row (``messages``) is read by
    the reader that extends it (``openai_functions``), and with ``explicit`` (``data.format`` set)
    a row that looks like an extension is read as the plain layout it was told."""
    seen = detect(record)
    if seen is not None and (seen == fmt or seen == EXTENDS.get(fmt) or (explicit and EXTENDS.get(seen) == fmt)):
        return
    if seen is None:
        raise FormatError(
            f"not {fmt}: expected the field(s) {', '.join(dict(SIGNATURES)[fmt])}"
            + (f"; got {', '.join(map(str, record))}" if isinstance(record, dict) else "")
        )
    hint = f"; set data.format: {seen} to read the source as {seen}" if EXTENDS.get(seen) == fmt else ""
    raise FormatError(f"mixed formats: this row looks like {seen}, the rest of the source is {fmt}{hint}")


def to_conversation(record: object, fmt: str, explicit: bool = False) -> dict:
    """Convert one record known to be in ``fmt`` to ``{"messages", "tools"?}``; FormatError names
    what is wrong (UnsupportedContent: a non-text part). ``explicit``: ``fmt`` was set, not detected."""
    _check_layout(record, fmt, explicit)
    converted = CONVERTERS[fmt](record)
    messages, tools = converted if isinstance(converted, tuple) else (converted, read_tools(record.get("tools")))
    name_results(messages)
    for m in messages:  # a result whose call is not found keeps no name; the checks report it
        if m.get("role") == "tool" and m.get("name") is None:
            del m["name"]
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
                known = TURN_FIELDS.get(fmt, MESSAGE_FIELDS) + (
                    TOOL_RESULT_FIELDS
                    if turn.get("role") in ("tool", "function") and fmt not in ("sharegpt", "hermes")
                    else ()
                )
                unused += [f"{name}[].{k}" for k, v in turn.items() if k not in known and v is not None]
    return list(dict.fromkeys(unused))
