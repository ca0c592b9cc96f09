"""Tool calls read back from generated answers, per family, and scored against reference calls.

A model writes a call the way its family's chat template renders one (``kit.chat.render``; the pieces are
spelled out in tests/chat/test_tool_masks.py):

- qwen3, qwen2.5, smollm2: ``<tool_call>\\n{"name": …, "arguments": {…}}\\n</tool_call>`` blocks after any
  text, one per call;
- llama-3.1: the whole answer is one JSON object ``{"name": …, "parameters": {…}}``;
- gpt-oss: a commentary message `` to=functions.NAME<|channel|>commentary json<|message|>{…}``
  (generation stops at its ``<|call|>``);
- glm-4: one ``<|assistant|>NAME\\n{…}`` message per call, after the turn's text message.

What ``parse_answer`` reads is ``Answer.text`` (``kit.inference.answer_of``: reasoning split off)
of ids decoded with special tokens kept where call markup is made of them: gpt-oss's channel
markers and glm-4's ``<|assistant|>`` are special tokens (``keeps_special_tokens``). Qwen's
``<tool_call>`` is an added token that its tokenizers mark non-special, so it survives
``skip_special_tokens``; llama-3.1's calls are plain text.

A call that parses is checked like a call in the data (``kit.chat.tool_data.read_call``): a name, and
arguments that are a JSON object.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field

from kit.families import Family
from kit.chat.tool_data import FormatError, read_call


@dataclass
class ParsedAnswer:
    content: str  # the answer text without the call markup
    calls: list[dict] = field(default_factory=list)  # canonical calls {"name", "arguments"} that parsed
    invalid: list[str] = field(default_factory=list)  # one reason per call-like block that did not parse


def keeps_special_tokens(family: Family) -> bool:
    """Whether generated ids must be decoded with special tokens kept for ``parse_answer`` (and
    ``split_reasoning``) to see the structure: gpt-oss's channels, glm-4's message boundaries."""
    return family.answer_marker is not None or (family.tools is not None and family.name in _SPECIAL_MARKUP)


def parse_answer(text: str, family: Family) -> ParsedAnswer:
    """The calls in ``text``, an answer as ``kit.inference.answer_of`` returns it (``Answer.text``:
    reasoning removed; decoded with special tokens kept when ``keeps_special_tokens(family)``). Not
    the streamed text (``TextStreamer`` skips special tokens): what ``stream_answer`` returns.

    ``content`` is the text beside the calls (gpt-oss writes a call turn's text on its analysis
    channel, so it comes back as ``Answer.reasoning`` and ``content`` is empty); ``calls`` carry
    no ids (models do not write them). Families without a tool format give the text unchanged
    and no calls."""
    parser = _PARSERS.get(family.name) if family.tools is not None else None
    if parser is None:
        return ParsedAnswer(text)
    return parser(text)


def render_calls_for_display(calls: list[dict]) -> str:
    """One line per call: ``name({"arg":value})``."""
    return "\n".join(
        f"{c['name']}({json.dumps(c['arguments'], ensure_ascii=False, separators=(',', ':'))})" for c in calls
    )


class _Calls:
    """Calls and reasons collected while reading one answer."""

    def __init__(self):
        self.calls: list[dict] = []
        self.invalid: list[str] = []

    def add(self, call, where: str) -> None:
        try:
            checked = read_call(call, where)
        except FormatError as e:
            self.invalid.append(str(e))
            return
        self.calls.append({"name": checked["name"], "arguments": checked["arguments"]})

    def add_json(self, text: str, where: str) -> None:
        """A call written as one JSON object holding its name and its arguments."""
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            self.invalid.append(f"bad tool call: {where} is not valid JSON ({e.msg} at character {e.pos})")
            return
        if not isinstance(obj, dict):
            self.invalid.append(f"bad tool call: {where} is {type(obj).__name__}, expected an object")
            return
        self.add(obj, where)

    def answer(self, content: str) -> ParsedAnswer:
        return ParsedAnswer(content, self.calls, self.invalid)


def _joined(pieces) -> str:
    return "\n".join(p.strip() for p in pieces if p.strip())


_TOOL_CALL_BLOCK = re.compile(r"<tool_call>(.*?)</tool_call>", re.DOTALL)


def _tool_call_blocks(text: str) -> ParsedAnswer:
    """qwen: every ``<tool_call>`` block is a call; an unclosed one (cut by max_new_tokens) is invalid."""
    found, rest, cursor = _Calls(), [], 0
    for k, block in enumerate(_TOOL_CALL_BLOCK.finditer(text), 1):
        rest.append(text[cursor : block.start()])
        found.add_json(block.group(1).strip(), f"<tool_call> block {k}")
        cursor = block.end()
    tail = text[cursor:]
    if "<tool_call>" in tail:
        head, _, _ = tail.partition("<tool_call>")
        found.invalid.append("bad tool call: a <tool_call> block is not closed")
        tail = head
    rest.append(tail)
    return found.answer(_joined(rest))


# What may precede the JSON: Llama 3.1 marks code-interpreter calls with <|python_tag|>, and some
# checkpoints put it before JSON calls too (it is special: gone once special tokens are skipped).
_PYTHON_TAG = "<|python_tag|>"


def _json_answer(text: str) -> ParsedAnswer:
    """llama-3.1: an answer that is one JSON object with a name and parameters is a call. JSON that
    does not parse counts as a broken call when it names one; other text is the answer."""
    body = text.strip()
    body = body[len(_PYTHON_TAG) :].strip() if body.startswith(_PYTHON_TAG) else body
    if not body.startswith("{"):
        return ParsedAnswer(text.strip())
    found = _Calls()
    try:
        obj = json.loads(body)
    except json.JSONDecodeError:
        if '"name"' not in body:
            return ParsedAnswer(text.strip())  # JSON-looking prose, not a call
        found.add_json(body, "the answer's call")
        return found.answer("")
    if not isinstance(obj, dict) or "name" not in obj or not ({"parameters", "arguments"} & obj.keys()):
        return ParsedAnswer(text.strip())  # a JSON answer (asked for by the user), not a call
    found.add({"name": obj["name"], "arguments": obj.get("parameters", obj.get("arguments"))}, "the answer's call")
    return found.answer("")


_HARMONY_SPLIT = re.compile(r"<\|start\|>|<\|end\|>|<\|call\|>|<\|return\|>")
_RECIPIENT = re.compile(r"to=([^\s<]+)")
_CHANNEL = re.compile(r"<\|channel\|>\s*(\w+)")


def _harmony(text: str) -> ParsedAnswer:
    """gpt-oss: each message ``[assistant][ to=RECIPIENT]<|channel|>CHANNEL[ json]<|message|>BODY``;
    a message to ``functions.NAME`` is a call whose body is the arguments (the recipient may come
    before or after the channel, as harmony allows), analysis is reasoning, any other text is the
    answer."""
    found, content = _Calls(), []
    for message in _HARMONY_SPLIT.split(text):
        header, marker, body = message.partition("<|message|>")
        if not marker:
            header, body = "", header  # plain text: a final answer with its marker already removed
        recipient, channel = _RECIPIENT.search(header), _CHANNEL.search(header)
        if recipient is None:
            if not (channel and channel.group(1) == "analysis"):
                content.append(body)
            continue
        name = recipient.group(1)
        if not name.startswith("functions."):
            found.invalid.append(f"bad tool call: the recipient {name!r} is not a function (functions.NAME)")
            continue
        found.add({"name": name[len("functions.") :], "arguments": body.strip()}, f"call {name}")
    return found.answer(_joined(content))


_GLM_CALL = re.compile(r"([A-Za-z_][\w.\-]*)\n(.*)", re.DOTALL)


def _glm_messages(text: str) -> ParsedAnswer:
    """glm-4: messages split at ``<|assistant|>``. A message's first line is its metadata: empty
    for an answer, the tool's name for a call, whose arguments are the JSON after it. The first
    message has lost its leading newline to ``answer_of``'s strip, so it is a call only when a
    name line is followed by a JSON object."""
    found, content = _Calls(), []
    for k, message in enumerate(text.split("<|assistant|>")):
        if message.startswith("\n") or not message.strip():
            content.append(message)
            continue
        call = _GLM_CALL.fullmatch(message.strip() if k == 0 else message)
        if k == 0 and (call is None or not call.group(2).lstrip().startswith("{")):
            content.append(message)
        elif call is None:
            found.invalid.append(
                f"bad tool call: message {k + 1} is neither an answer (an empty first line) "
                "nor a tool's name, a newline and its arguments"
            )
        else:
            found.add({"name": call.group(1), "arguments": call.group(2).strip()}, f"call {call.group(1)}")
    return found.answer(_joined(content))


# The parser of each family's call format; families with tools that are not listed have none.
_PARSERS = {
    "qwen3": _tool_call_blocks,
    "qwen2.5": _tool_call_blocks,
    "smollm2": _tool_call_blocks,
    "llama-3.1": _json_answer,
    "gpt-oss": _harmony,
    "glm-4": _glm_messages,
}
# Families whose call markup is made of special tokens (glm-4's <|assistant|> between messages);
# gpt-oss's channel markers are kept already, for its answer channel (``Family.answer_marker``).
_SPECIAL_MARKUP = {"glm-4"}


def _tool_names(tools: list[dict] | None) -> set[str]:
    """Names of a row's tools, canonical ``{"type": "function", "function": {...}}`` or bare."""
    return {(t.get("function") or t).get("name") for t in tools or []}


def _canonical(value):
    """A JSON value as a hashable object that compares as JSON does: keys unordered, 1 == 1.0,
    true != 1."""
    if isinstance(value, dict):
        return ("object", frozenset((k, _canonical(v)) for k, v in value.items()))
    if isinstance(value, list):
        return ("array", tuple(_canonical(v) for v in value))
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return (type(value).__name__, value)
    if isinstance(value, float) and value.is_integer():
        return ("number", int(value))
    return ("number", value)


def tool_call_scores(
    predicted: list[ParsedAnswer], references: list[list[dict]], tools: list[list[dict] | None]
) -> dict:
    """Over the rows whose reference is a tool call (a non-empty list of canonical calls):
    ``valid_call``: the answer holds at least one call, every call names one of the row's tools,
    and no call-like block failed to parse; ``right_name``: the called names equal the reference's
    (as a multiset); ``exact_arguments``: the calls equal the reference's, name and arguments
    compared as JSON objects, in any order. ``{"rows": 0}`` when no reference is a call."""
    rows = [(p, r, t) for p, r, t in zip(predicted, references, tools, strict=True) if r]
    if not rows:
        return {"rows": 0}
    valid = names = exact = 0
    for answer, reference, defined in rows:
        known = _tool_names(defined)
        valid += bool(answer.calls) and not answer.invalid and all(c["name"] in known for c in answer.calls)
        names += Counter(c["name"] for c in answer.calls) == Counter(c["name"] for c in reference)
        exact += Counter((c["name"], _canonical(c["arguments"])) for c in answer.calls) == Counter(
            (c["name"], _canonical(c["arguments"])) for c in reference
        )
    n = len(rows)
    return {"rows": n, "valid_call": valid / n, "right_name": names / n, "exact_arguments": exact / n}
