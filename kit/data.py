"""Load chat data in the canonical ``messages`` form, validate it row by row, and split it.

Every rejected row is either an error naming file, row and field (``invalid_rows: error``, the
default) or a counted drop with the same reason in the prepare report (``invalid_rows: drop``).
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path

from .paths import PROJECT_ROOT

ROLES = ("system", "user", "assistant")


class DataError(ValueError):
    pass


@dataclass
class LoadResult:
    rows: list[dict]
    source: Path
    total: int
    row_numbers: list[int] = field(default_factory=list)  # source row of each kept row
    dropped: list[dict] = field(default_factory=list)  # {"row": n, "reason": str}


def resolve_source(source: str) -> Path:
    path = Path(source)
    return path if path.is_absolute() else (PROJECT_ROOT / path)


def _read_records(path: Path) -> list[tuple[int, object]]:
    """(row number, parsed record). Row numbers are 1-based lines for JSONL, indices for JSON."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text (byte {e.start})") from None
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: invalid JSON at line {e.lineno}: {e.msg}") from None
        if not isinstance(data, list):
            raise DataError(f"{path}: expected a JSON array of conversations")
        return list(enumerate(data))
    records = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append((lineno, json.loads(line)))
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: line {lineno}: invalid JSON: {e.msg}") from None
    return records


def check_conversation(record: object, training: bool = True) -> str | None:
    """The reason a record is not a usable conversation, or None. ``training``: it must contain
    and end with an assistant turn; otherwise (prompts) it must end with a user turn, or with an
    assistant turn that is then the reference answer."""
    if not isinstance(record, dict) or "messages" not in record:
        return "no messages: expected an object with a 'messages' list"
    messages = record["messages"]
    if not isinstance(messages, list) or not messages:
        return "no messages: 'messages' must be a non-empty list"
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            return f"bad message: {where} is not an object"
        if m.get("role") not in ROLES:
            return f"unknown role: {where}.role is {m.get('role')!r} (expected one of {', '.join(ROLES)})"
        if not isinstance(m.get("content"), str):
            return f"bad content: {where}.content is {type(m.get('content')).__name__}, expected a string"
        if not m["content"].strip():
            return f"empty content: {where}.content is empty"
        if m["role"] == "system" and i != 0:
            return f"misplaced system: {where} is a system message but not the first"
        if i and m["role"] == messages[i - 1]["role"]:
            return f"repeated role: {where} has the same role as the message before it"
    if not training:
        if not any(m["role"] == "user" for m in messages):
            return "no user turn: nothing to answer"
        return None
    if not any(m["role"] == "assistant" for m in messages):
        return "no assistant turn: nothing to train on"
    if messages[-1]["role"] != "assistant":
        return f"ends with {messages[-1]['role']}: the last message must be the assistant's"
    return None


def load_conversations(source: str, invalid_rows: str = "error") -> LoadResult:
    path = resolve_source(source)
    if not path.exists():
        raise DataError(f"data.source: {path} does not exist")
    if path.suffix not in (".json", ".jsonl"):
        raise DataError(f"data.source: {path}: unsupported file type {path.suffix!r} (use .json or .jsonl)")
    records = _read_records(path)
    if not records:
        raise DataError(f"{path}: the dataset is empty")
    result = LoadResult(rows=[], source=path, total=len(records))
    for row, record in records:
        reason = check_conversation(record)
        if reason is None:
            result.rows.append({"messages": [{"role": m["role"], "content": m["content"]} for m in record["messages"]]})
            result.row_numbers.append(row)
        elif invalid_rows == "error":
            raise DataError(f"{path}: row {row}: {reason}")
        else:
            result.dropped.append({"row": row, "reason": reason})
    if not result.rows:
        raise DataError(f"{path}: no usable conversations among {len(records)} rows")
    return result


def load_prompts(path: Path) -> list[dict]:
    """Conversations to answer (batch inference): ``{"messages": [...]}`` per row, ending with the
    user's turn, or with an assistant turn kept as the reference. Any bad row is an error."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path} does not exist")
    records = _read_records(path)
    if not records:
        raise DataError(f"{path}: no prompts")
    prompts = []
    for row, record in records:
        reason = check_conversation(record, training=False)
        if reason:
            raise DataError(f"{path}: row {row}: {reason}")
        messages = record["messages"]
        reference = messages[-1]["content"] if messages[-1]["role"] == "assistant" else None
        prompts.append({"row": row, "messages": messages[:-1] if reference is not None else messages,
                        "reference": reference})
    return prompts


def held_out_prompts(rows: list[dict], n: int | None = None) -> list[dict]:
    """The first ``n`` (default all) conversations cut before their first assistant turn: the prompt, and that
    turn's content as the reference answer."""
    prompts = []
    for row in rows[:n]:
        messages = row["messages"]
        first = next(i for i, m in enumerate(messages) if m["role"] == "assistant")
        prompts.append({"messages": messages[:first], "reference": messages[first]["content"]})
    return prompts


def split(rows: list[dict], eval_fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """Deterministic shuffle-and-cut; at least one row on each side."""
    if len(rows) < 2:
        raise DataError(f"need at least 2 conversations to make a train/eval split, got {len(rows)}")
    if not 0 < eval_fraction < 1:
        raise DataError(f"data.eval_fraction must be between 0 and 1, got {eval_fraction}")
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    n_eval = min(len(rows) - 1, max(1, round(len(rows) * eval_fraction)))
    eval_idx = set(order[:n_eval])
    return [r for i, r in enumerate(rows) if i not in eval_idx], [r for i, r in enumerate(rows) if i in eval_idx]


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
