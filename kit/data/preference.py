"""Preference layouts → the canonical pair (or labelled completion), once, in prepare (``train.method``
dpo, orpo or kto).

Canonical pair: ``{"prompt": [messages], "chosen": message, "rejected": message, "tools"?: [...]}``. The
prompt is the shared conversation (system, user, earlier turns, tool results) in the canonical message
shape of ``kit.data.turns``; chosen and rejected are one assistant turn each, with ``reasoning`` and
``tool_calls`` where the source has them (a leading ``<think>…</think>`` in the content is reasoning,
as for SFT). Layouts (``data.format``, or ``auto``: detected per source from its first record):

- ``chosen_rejected``: ``chosen`` and ``rejected`` as whole conversations (message lists, or objects
  holding ``messages``) that share every turn but the last, or as answers (text, one message, a list
  ending with it) to an explicit ``prompt`` (text or messages), as in TRL's and UltraFeedback's files.
- ``hh_text``: ``chosen`` and ``rejected`` as text of ``Human:`` / ``Assistant:`` turns (Anthropic HH).
- ``sharegpt_preference``: LLaMA-Factory's ``conversations`` (with ``system``?) and ``chosen`` /
  ``rejected`` turns ``{"from": "gpt", "value"}``.
- ``paired_responses``: ``question``, ``response_j`` (preferred) and ``response_k``.
- ``openai_preference``: OpenAI's ``input.messages`` (``input.tools``?), ``preferred_output`` and
  ``non_preferred_output`` (each a list holding the assistant's message).

Every layout takes an optional ``tools`` field; ``data.columns`` renames fields first. A pair whose two
answers are the same is a ``Tie``: dropped and counted.

For ``kto`` also the unpaired layout (TRL's "unpaired preference"), read into the canonical labelled
completion ``{"prompt": [messages], "completion": message, "label": bool, "tools"?}``:

- ``unpaired``: a ``label`` (true: desirable; a boolean, "true"/"false" in any case, or 0/1) with
  ``prompt`` and ``completion`` (text or messages, as ``chosen_rejected``'s prompt and answers), or with
  ``messages`` ending on the labelled assistant turn. Any other label is refused.
"""

from __future__ import annotations

import re

from kit.chat.tool_data import FormatError, read_tools
from kit.data import formats
from kit.data.screen import kto_label
from kit.data.turns import UnsupportedContent, from_messages, kind, message

# The fields each layout is told apart by, in detection order (chosen_rejected's are a subset of others').
SIGNATURES = (
    ("openai_preference", ("input", "preferred_output", "non_preferred_output")),
    ("paired_responses", ("question", "response_j", "response_k")),
    ("sharegpt_preference", ("conversations", "chosen", "rejected")),
    ("hh_text", ("chosen", "rejected")),
    ("chosen_rejected", ("chosen", "rejected")),
    ("unpaired", ("label",)),
)
ROW_FIELDS = {
    "openai_preference": ("input", "preferred_output", "non_preferred_output"),
    "paired_responses": ("question", "response_j", "response_k"),
    "sharegpt_preference": ("conversations", "system", "chosen", "rejected"),
    "hh_text": ("chosen", "rejected"),
    "chosen_rejected": ("prompt", "chosen", "rejected"),
    "unpaired": ("prompt", "completion", "messages", "label"),
}
HH_TURN = re.compile(r"(?:^|\n\n)(Human|Assistant): ?")


class Tie(UnsupportedContent):
    """A pair whose chosen and rejected answers are the same: nothing to prefer; dropped and counted."""


def _looks_hh(record: dict) -> bool:
    return "prompt" not in record and all(
        isinstance(record[k], str) and HH_TURN.search(record[k]) for k in ("chosen", "rejected")
    )


def detect(record: object) -> str | None:
    """The preference layout of ``record`` (column-mapped), or None."""
    if not isinstance(record, dict):
        return None
    for name, fields in SIGNATURES:
        if (
            all(f in record for f in fields)
            and (name != "hh_text" or _looks_hh(record))
            and (name != "unpaired" or "completion" in record or "messages" in record)
        ):
            return name
    return None


def _answer(turns: list[dict], side: str) -> dict:
    """The one assistant turn a side ends with (any turns before it are the caller's to compare)."""
    if not turns:
        raise FormatError(f"missing answer: {side} is empty, a pair needs an answer on both sides")
    last = turns[-1]
    if last["role"] != "assistant":
        raise FormatError(
            f"not an assistant turn: {side} ends with a {last['role']} turn; a pair compares two "
            "answers of the assistant"
        )
    return last


def _side(record: dict, field: str) -> object:
    value = record.get(field)
    if value in (None, "", [], {}):
        raise FormatError(
            f"missing answer: {field} is {'missing' if field not in record else 'empty'}; a pair needs "
            "an answer on both sides"
        )
    return value


def _as_turns(value: object, where: str) -> list[dict]:
    """A side as canonical turns: text (one assistant turn), a message, a list of messages, or an
    object holding ``messages``."""
    if isinstance(value, str):
        return [message("assistant", value, where=where)]
    if isinstance(value, dict) and "messages" in value:
        return from_messages(value["messages"], f"{where}.messages")
    if isinstance(value, dict):
        return (
            from_messages([value], where)[:1]
            if "role" in value
            else _raise(
                f"bad answer: {where} is an object without role or messages (its fields: {', '.join(map(str, value))})"
            )
        )
    if isinstance(value, list):
        return from_messages(value, where)
    raise FormatError(f"bad answer: {where} is {kind(value)}, expected text or messages")


def _raise(reason: str):
    raise FormatError(reason)


def _shared_prompt(chosen: list[dict], rejected: list[dict]) -> list[dict]:
    """The turns both sides share before their answers; different ones are not a pair."""
    if chosen[:-1] != rejected[:-1]:
        at = next(
            (i for i, (a, b) in enumerate(zip(chosen[:-1], rejected[:-1])) if a != b),
            min(len(chosen), len(rejected)) - 1,
        )
        raise FormatError(
            f"different prompts: chosen[{at}] and rejected[{at}] differ; the two sides of a pair must "
            "answer the same conversation"
        )
    return chosen[:-1]


def _chosen_rejected(record: dict) -> tuple[list[dict], dict, dict]:
    chosen = _as_turns(_side(record, "chosen"), "chosen")
    rejected = _as_turns(_side(record, "rejected"), "rejected")
    answers = _answer(chosen, "chosen"), _answer(rejected, "rejected")
    prompt = record.get("prompt")
    if prompt is None:
        return _shared_prompt(chosen, rejected), *answers
    prompt = [message("user", prompt, where="prompt")] if isinstance(prompt, str) else from_messages(prompt, "prompt")
    for turns, side in ((chosen, "chosen"), (rejected, "rejected")):
        # UltraFeedback writes the prompt again at the start of each side; TRL's files do not.
        before = turns[:-1]
        if before and before != prompt[-len(before) :]:
            raise FormatError(
                f"different prompts: {side} repeats turns that are not the prompt's; give the answer "
                "alone, or the whole conversation"
            )
    return prompt, *answers


def _hh_turns(text: str, where: str) -> list[dict]:
    parts = HH_TURN.split(text)
    if parts[0].strip():
        raise FormatError(f"bad text: {where} starts with text before its first Human: or Assistant: turn")
    roles = {"Human": "user", "Assistant": "assistant"}
    return [message(roles[speaker], body.strip(), where=where) for speaker, body in zip(parts[1::2], parts[2::2])]


def _hh_text(record: dict) -> tuple[list[dict], dict, dict]:
    chosen = _hh_turns(_side(record, "chosen"), "chosen")
    rejected = _hh_turns(_side(record, "rejected"), "rejected")
    answers = _answer(chosen, "chosen"), _answer(rejected, "rejected")
    return _shared_prompt(chosen, rejected), *answers


def _sharegpt_turn(value: object, where: str) -> dict:
    if not isinstance(value, dict):
        raise FormatError(f"bad answer: {where} is {kind(value)}, expected a turn {{from, value}}")
    speaker = value.get("from", value.get("role"))
    if formats.SHAREGPT_ROLES.get(speaker) != "assistant":
        raise FormatError(
            f"not an assistant turn: {where}.from is {speaker!r}; a pair compares two answers of the "
            "assistant (from: gpt)"
        )
    return message("assistant", value.get("value", value.get("content")), where=f"{where}.value")


def _sharegpt_preference(record: dict) -> tuple[list[dict], dict, dict]:
    prompt = formats.CONVERTERS["sharegpt"]({"conversations": record["conversations"], "system": record.get("system")})
    return (
        prompt,
        _sharegpt_turn(_side(record, "chosen"), "chosen"),
        _sharegpt_turn(_side(record, "rejected"), "rejected"),
    )


def _paired_responses(record: dict) -> tuple[list[dict], dict, dict]:
    return (
        [message("user", record["question"], where="question")],
        _answer(_as_turns(_side(record, "response_j"), "response_j"), "response_j"),
        _answer(_as_turns(_side(record, "response_k"), "response_k"), "response_k"),
    )


def _openai_preference(record: dict) -> tuple[list[dict], dict, dict, list | None]:
    given = record["input"]
    if not isinstance(given, dict) or not isinstance(given.get("messages"), list):
        raise FormatError(f"bad prompt: input is {kind(given)}, expected an object with messages")
    prompt = from_messages(given["messages"], "input.messages")
    sides = [_answer(_as_turns(_side(record, f), f), f) for f in ("preferred_output", "non_preferred_output")]
    return prompt, *sides, read_tools(given.get("tools"))


def _unpaired(record: dict) -> tuple[list[dict], dict, bool]:
    label = kto_label(record["label"])
    if "completion" in record:
        turns = _as_turns(_side(record, "completion"), "completion")
        prompt = record.get("prompt")
        if prompt in (None, "", []):
            raise FormatError("no prompt: prompt is missing or empty; a labelled completion answers a prompt")
        prompt = (
            [message("user", prompt, where="prompt")] if isinstance(prompt, str) else from_messages(prompt, "prompt")
        )
        return prompt + turns[:-1], _answer(turns, "completion"), label
    turns = from_messages(record["messages"], "messages")
    return turns[:-1], _answer(turns, "messages"), label


READERS = {
    "chosen_rejected": _chosen_rejected,
    "hh_text": _hh_text,
    "sharegpt_preference": _sharegpt_preference,
    "paired_responses": _paired_responses,
    "openai_preference": _openai_preference,
    "unpaired": _unpaired,
}


def to_pair(record: object, fmt: str) -> dict:
    """One record known to be in ``fmt`` as the canonical pair (``unpaired``: labelled completion);
    FormatError names the field, Tie a tie."""
    seen = detect(record)
    if seen != fmt:
        raise FormatError(
            f"not {fmt}: expected the field(s) {', '.join(dict(SIGNATURES)[fmt])}"
            + (" and completion or messages" if fmt == "unpaired" else "")
            + (f"; got {', '.join(map(str, record))}" if isinstance(record, dict) else "")
        )
    if fmt == "unpaired":
        prompt, completion, label = _unpaired(record)
        if not prompt:
            raise FormatError("no prompt: the completion has no turns before it, nothing to answer")
        row = {"prompt": prompt, "completion": completion, "label": label}
        tools = read_tools(record.get("tools"))
        return {**row, "tools": tools} if tools else row
    read = READERS[fmt](record)
    prompt, chosen, rejected = read[:3]
    tools = read[3] if len(read) > 3 else read_tools(record.get("tools"))
    if not prompt:
        raise FormatError("no prompt: the pair has no turns before its answers, nothing to answer")
    if chosen == rejected:
        raise Tie("tie: chosen and rejected are the same answer, nothing to prefer")
    pair = {"prompt": prompt, "chosen": chosen, "rejected": rejected}
    return {**pair, "tools": tools} if tools else pair


def unused_fields(record: object, fmt: str) -> list[str]:
    """The fields of a (column-mapped) record that ``fmt`` does not read, holding something."""
    if not isinstance(record, dict):
        return []
    read = ROW_FIELDS[fmt] + ("tools",)
    return [k for k, v in record.items() if k not in read and v is not None]


def sides(row: dict) -> tuple[str, ...]:
    """The answers a canonical row holds: a pair's chosen and rejected, or a labelled completion."""
    return ("completion",) if "completion" in row else ("chosen", "rejected")


def conversations(row: dict) -> tuple[list[dict], ...]:
    """A canonical row as conversations, the prompt followed by each answer (``sides``: a pair's chosen
    first, or the one labelled completion)."""
    return tuple(row["prompt"] + [row[side]] for side in sides(row))
