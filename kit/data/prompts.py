"""Rows read back after prepare: held-out prompts (a conversation cut before its first trained answer,
with that answer as the reference), prompt files for batch inference, and preference rows read as
the conversations SFT on them would train."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from kit.data import formats
from kit.data.rows import check_messages
from kit.data.sources import DataError, decode_cells, read_file, resolve


@dataclass(frozen=True)
class Prompt:
    """A held-out conversation cut before its first trained answer: what evaluate, the merge checks,
    the live samples and GRPO ask a model, with the answer it is compared against."""

    messages: list[dict]  # the conversation up to that answer
    reference: str | None  # that answer's content (None: a prompt file's row without one)
    tools: list[dict] | None = None  # the conversation's tool definitions
    reference_calls: list[dict] | None = None  # that answer's tool calls ({"name", "arguments"}), if any
    row: int | None = None  # its row in the eval split (1-based), where a caller numbers them

    def to_dict(self) -> dict:
        """As plain data, the fields that are set."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


def load_prompts(path: Path) -> list[Prompt]:
    """Conversations to answer (batch inference): ``{"messages": [...], "tools"?}`` per row, ending
    with the user's turn (or a tool result), or with an assistant turn kept as the reference. Any bad
    row is an error."""
    path = resolve(str(path))
    if not path.exists() and not path.is_symlink():  # a broken link or a loop: check_readable says which
        raise DataError(f"{path} does not exist")
    records = read_file(path)
    if not records:
        raise DataError(f"{path}: no prompts")
    prompts = []
    for rec in records:
        try:
            conversation = formats.to_conversation(decode_cells(rec.data), "messages", explicit=True)
            messages = conversation["messages"]
            reason = check_messages(messages, training=False, tools=conversation.get("tools"))
        except ValueError as e:  # a FormatError, or a CSV messages cell whose JSON is not usable
            reason = str(e)
        if reason:
            raise DataError(f"{rec.where}: {reason}")
        reference = messages[-1]["content"] if messages[-1]["role"] == "assistant" else None
        prompts.append(
            Prompt(
                messages[:-1] if reference is not None else messages,
                reference,
                tools=conversation.get("tools"),
                row=rec.row,
            )
        )
    return prompts


def as_conversations(rows: list[dict]) -> list[dict]:
    """Rows as conversations: a preference pair as its prompt and chosen answer, a labelled completion
    as its prompt and completion where it is desirable (what SFT on them would train; the loss and logits
    checks, the Modelfile's system prompt read these; undesirable ones are left out), others as they are."""
    out = []
    for r in rows:
        if "prompt" not in r:
            out.append(r)
        elif preferred_answer(r) is not None:
            out.append(
                {"messages": r["prompt"] + [preferred_answer(r)], **({"tools": r["tools"]} if r.get("tools") else {})}
            )
    return out


def preferred_answer(row: dict) -> dict | None:
    """A preference row's answer to learn from: a pair's chosen answer, a desirable completion (an
    undesirable one: None)."""
    return row.get("chosen") or (row["completion"] if row.get("label") is True else None)


def held_out_prompts(rows: list[dict], n: int | None = None) -> list[Prompt]:
    """The first ``n`` (default all) conversations cut before their first assistant turn (a preference
    pair: its prompt and chosen answer; a labelled completion: its prompt and completion where it is
    desirable, else it is passed over): the prompt, that turn's content as the reference answer, its
    tool calls as ``reference_calls`` and the conversation's ``tools``, where it has them."""
    prompts = []
    for row in rows:
        if n is not None and len(prompts) >= n:
            break
        if "prompt" in row:  # a preference pair: its prompt, and the chosen answer as the reference
            answer = preferred_answer(row)
            if answer is None:  # an undesirable completion is no reference
                continue
            prompts.append(Prompt(row["prompt"], answer["content"], tools=row.get("tools") or None))
            continue
        messages = row["messages"]
        # the first trained turn: a context-only one (``train: false``) is history, not a reference
        first = next(i for i, m in enumerate(messages) if m["role"] == "assistant" and m.get("train", True))
        calls = messages[first].get("tool_calls")  # the reference answer is (also) a tool call
        prompts.append(
            Prompt(
                messages[:first],
                messages[first]["content"],
                tools=row.get("tools") or None,
                reference_calls=[{"name": c["name"], "arguments": c["arguments"]} for c in calls] if calls else None,
            )
        )
    return prompts
