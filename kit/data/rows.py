"""Chat data → canonical conversations (``kit.data.sources`` reads, ``kit.data.formats`` converts), checked
row by row, and split.

Every rejected row is either an error naming source, row and field (``invalid_rows: error``, the
default) or a counted drop with the same reason in the prepare report (``invalid_rows: drop``).
A reason reads ``key: field detail`` ("empty content: messages[1].content is empty"): drops are
counted by key, and an error about dropped rows shows the counts and the first few rows.
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass, field

from kit.data import formats, preference
from kit.data.screen import check_record, preference_data, screened_fields
from kit.bulk import gc_paused
from kit.files import sha256_file
from kit.data.sources import DataError, Record, decode_cells, expand, read_source, sample, sources_of
from kit.chat.tool_data import answered_call
from kit.methods import Method, get_method

ROLES = ("system", "user", "assistant", "tool")


@dataclass
class LoadResult:
    rows: list[dict]  # canonical conversations: {"messages", "tools"?}
    origins: list[tuple[str, int]]  # (source, row) of each kept row
    total: int  # records read
    sources: list[dict] = field(default_factory=list)  # per source: format, weight, counts, sha256
    dropped: list[dict] = field(default_factory=list)  # {"source", "row", "reason"}
    unused_fields: dict = field(default_factory=dict)  # field the kit does not read -> rows that have it


def check_messages(messages: object, training: bool = True, tools: list[dict] | None = None) -> str | None:
    """The reason canonical ``messages`` are not a usable conversation, or None. ``training``: it
    must contain and end with an assistant turn; otherwise (prompts) it needs a user turn. ``tools``:
    the conversation's tools, which every call must name (calls are not checked when it has none)."""
    if not isinstance(messages, list) or not messages:
        return "no messages: messages is empty, expected a non-empty list of messages"
    for i, m in enumerate(messages):
        reason = _check_message(messages, i, tools)
        if reason:
            return reason
    if not training:
        return (
            None if any(m["role"] == "user" for m in messages) else "no user turn: messages has none, nothing to answer"
        )
    if not any(m["role"] == "assistant" for m in messages):
        return "no assistant turn: messages has none, nothing to train on"
    if not any(m["role"] == "assistant" and m.get("train", True) for m in messages):
        return "nothing to train: messages has no assistant turn to train (each has loss_weight 0)"
    if messages[-1]["role"] != "assistant":
        return (
            f"ends with {messages[-1]['role']}: messages[{len(messages) - 1}] is the last message and "
            f"must be the assistant's"
        )
    return None


def _check_message(messages: list, i: int, tools: list[dict] | None) -> str | None:
    m, where = messages[i], f"messages[{i}]"
    if not isinstance(m, dict):
        return f"bad message: {where} is not an object"
    if m.get("role") not in ROLES:
        return f"unknown role: {where}.role is {m.get('role')!r} (expected one of {', '.join(ROLES)})"
    if not isinstance(m.get("content"), str):
        return f"bad content: {where}.content is {type(m.get('content')).__name__}, expected a string"
    if not m["content"].strip() and not _may_be_empty(m):
        return f"empty content: {where}.content is {'empty' if not m['content'] else 'whitespace only'}"
    if "reasoning" in m and not isinstance(m["reasoning"], str):
        return f"bad reasoning: {where}.reasoning is {type(m['reasoning']).__name__}, expected a string"
    if m["role"] == "system" and i != 0:
        return f"misplaced system: {where} is a system message but not the first"
    if m["role"] == "tool":  # results follow the calls they answer; parallel results follow each other
        return answered_call(messages, i)[1]
    if i and m["role"] == messages[i - 1]["role"]:
        return f"repeated role: {where} has the same role as the message before it"
    if tools is not None:
        names = [t["function"]["name"] for t in tools]
        for j, call in enumerate(m.get("tool_calls") or ()):
            if call["name"] not in names:
                return (
                    f"unknown tool: {where}.tool_calls[{j}].name is {call['name']!r}, which is not in tools "
                    f"({', '.join(names)})"
                )
    return None


def _may_be_empty(m: dict) -> bool:
    # An explicit empty system prompt is legal: the template renders it (and Qwen2.5 then leaves out
    # its default one). An assistant turn may be calls alone, and a tool may return nothing. An empty
    # user turn, or an assistant turn without calls, is a data error.
    return (m["role"] == "system" and m["content"] == "") or m["role"] == "tool" or bool(m.get("tool_calls"))


# "empty content: messages[1].content is empty" → key "empty content", field "messages[1].content".
_REASON_KEY = re.compile(r"([a-z][a-z0-9_ -]*): ")
_REASON_FIELD = re.compile(r"([A-Za-z_][\w.]*(?:\[\d+\]|\.\w+)*)(?: (?:is|has|must|names)\b|: )")


def reason_key(reason: str) -> str:
    """What kind of problem a drop reason is, for counting: the short phrase before its first
    colon; reasons without one (structural ones from kit.data.formats) count as "bad structure"."""
    found = _REASON_KEY.match(reason)
    return found.group(1) if found else "bad structure"


def reason_field(reason: str) -> str | None:
    """The field a reason is about (its detail starts with it), or None (a whole-row reason)."""
    key = _REASON_KEY.match(reason)
    found = _REASON_FIELD.match(reason[key.end() :] if key else reason)
    return found.group(1) if found else None


def count_reasons(dropped: list[dict]) -> dict:
    """Drops per reason key, the most frequent first."""
    counts: dict = {}
    for d in dropped:
        key = reason_key(d["reason"])
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


def drop_examples(dropped: list[dict], n: int = 3) -> list[dict]:
    """The first ``n`` drops with their file, row, field and reason."""
    return [
        {"source": d["source"], "row": d["row"], "field": reason_field(d["reason"]), "reason": d["reason"]}
        for d in dropped[:n]
    ]


def describe_drops(dropped: list[dict], n: int = 3) -> str:
    """One line for an error: how many rows were dropped for what, and the first ``n`` of them."""
    counts = ", ".join(f"{count} {key}" for key, count in count_reasons(dropped).items())
    first = "; ".join(f"{d['source']}: row {d['row']}: {d['reason']}" for d in dropped[:n])
    return f"{len(dropped)} dropped ({counts}); first: {first}"


def _mapped(data: object, columns: dict) -> object:
    """A record with ``data.columns`` applied and its CSV cells read (``decode_cells``: a structured
    field's JSON decoded, the rest text as written)."""
    try:
        return decode_cells(formats.apply_columns(data, columns))
    except formats.FormatError:
        raise
    except ValueError as e:  # a structured cell whose JSON is not usable
        raise formats.FormatError(str(e)) from None


def _source_format(records: list[Record], fmt: str, columns: dict, method: Method) -> str:
    first = records[0]
    try:
        mapped = _mapped(first.data, columns)  # a bad mapping fails the whole source
    except formats.FormatError as e:
        raise DataError(f"{first.where}: {e}") from None
    if method.reads_pairs:
        return _pair_format(first, mapped, fmt, method)
    if fmt == "unpaired":
        raise DataError(
            f"{first.where}: data.format unpaired holds completions labelled desirable or not: set "
            "train.method: kto to train on them"
        )
    if fmt in preference.READERS:
        raise DataError(
            f"{first.where}: data.format {fmt} is a preference layout: set train.method: dpo (or kto, "
            "orpo) to train on the pairs"
        )
    # A record the SFT readers can read (messages beside chosen/rejected, as in UltraFeedback's SFT
    # split) is SFT data; only one they cannot, or LLaMA-Factory's pair (its conversations end on the
    # user's turn), is refused as preference data.
    readable = (
        formats.detect(mapped) is not None
        if fmt == "auto"
        else (isinstance(mapped, dict) and all(f in mapped for f in dict(formats.SIGNATURES)[fmt]))
    )
    pair = preference.detect(mapped) == "sharegpt_preference"
    why = None if readable and not pair else preference_data(mapped)
    if why:
        raise DataError(f"{first.where}: {why}")
    if fmt != "auto":
        return fmt
    detected = formats.detect(mapped)
    if detected is None:
        fields = ", ".join(map(str, mapped)) if isinstance(mapped, dict) else type(mapped).__name__
        raise DataError(
            f"{first.where}: cannot tell the data format from the fields ({fields}); set data.format to "
            f"one of {', '.join(formats.FORMATS)} and map field names with data.columns"
        )
    return detected


def _pair_format(first: Record, mapped: object, fmt: str, method: Method) -> str:
    """The preference layout of a source (``train.method`` dpo, orpo: pairs; kto: pairs or labelled
    completions); SFT data, or labelled completions for a method that compares pairs, is refused in one line."""
    layouts = [name for name in preference.READERS if method.labelled or name != "unpaired"]
    wanted = method.wants
    if fmt != "auto" and fmt not in layouts:
        what = (
            "labelled completions (KTO data: set train.method: kto)" if fmt == "unpaired" else "a conversation layout"
        )
        raise DataError(
            f"{first.where}: data.format {fmt} is {what}, and train.method {method.name} trains on "
            f"{wanted} ({', '.join(layouts)})"
        )
    detected = preference.detect(mapped)
    fields = ", ".join(map(str, mapped)) if isinstance(mapped, dict) else type(mapped).__name__
    if detected == "unpaired" and not method.labelled:
        raise DataError(
            f"{first.where}: train.method {method.name} needs {wanted}, but the rows hold single "
            f"completions labelled desirable or not (fields: {fields}): set train.method: kto to train "
            "on them"
        )
    if detected is not None:
        return detected if fmt == "auto" else fmt
    sft = formats.detect(mapped)
    what = f"conversations ({sft}), SFT data" if sft else "no preference layout"
    raise DataError(
        f"{first.where}: train.method {method.name} needs {wanted}, but the rows hold {what} (fields: "
        f"{fields}); see docs/data-formats.md#preference-pairs for the layouts, and data.columns to name "
        "your fields"
    )


def load_conversations(
    source,
    fmt: str = "auto",
    columns: dict | None = None,
    invalid_rows: str = "error",
    seed: int = 0,
    method: str = "sft",
) -> LoadResult:
    """Read every source, convert each record to canonical messages and check it. A bad row is an
    error naming source, row and field, or (``invalid_rows="drop"``) a counted, reported drop.
    ``method`` is ``train.method``: for dpo, kto and orpo the rows are preference pairs (kto: or labelled
    completions; ``kit.data.preference``), each answer checked, a tie always a counted drop; for sft and
    grpo, conversations."""
    with gc_paused():
        return _load_conversations(source, fmt, columns or {}, invalid_rows, seed, get_method(method))


def _read_row(record: object, source_fmt: str, explicit: bool, method: Method) -> tuple[dict, str | None]:
    """A record as a canonical conversation (or pair, or labelled completion), and why it is not usable
    (None: it is)."""
    if not method.reads_pairs:  # sft, grpo: conversations
        check_record(record)
        conversation = formats.to_conversation(record, source_fmt, explicit=explicit)
        return conversation, check_messages(conversation["messages"], tools=conversation.get("tools"))
    check_record(record, labels=True)
    pair = preference.to_pair(record, source_fmt)
    reason = check_messages(pair["prompt"], training=False, tools=pair.get("tools"))
    if reason is None and pair["prompt"][-1]["role"] == "assistant":
        reason = (
            f"prompt ends with assistant: prompt[{len(pair['prompt']) - 1}] is the assistant's; the answers "
            "follow a user turn or a tool result"
        )
    for side, conversation in zip(preference.sides(pair), preference.conversations(pair)):
        if reason is None:
            found = check_messages(conversation, tools=pair.get("tools"))
            reason = f"{side}: {found}" if found else None
    return pair, reason


def _load_conversations(source, fmt: str, columns: dict, invalid_rows: str, seed: int, method: Method) -> LoadResult:
    result = LoadResult(rows=[], origins=[], total=0)
    for spec, weight in sources_of(source):
        records = read_source(spec)
        if not records:
            raise DataError(f"data.source: {spec}: the dataset is empty")
        source_fmt = _source_format(records, fmt, columns, method)
        unused_of = preference.unused_fields if method.reads_pairs else formats.unused_fields
        kept, unused, mapped = [], {}, set()
        for rec in records:
            unsupported = False
            try:
                record = _mapped(rec.data, columns)
                mapped |= {k for k in columns if isinstance(record, dict) and k in record}
                read_here = set() if method.reads_pairs else screened_fields(record)
                for name in (n for n in unused_of(record, source_fmt) if n not in read_here):
                    unused[name] = unused.get(name, 0) + 1
                conversation, reason = _read_row(record, source_fmt, fmt != "auto", method)
            except formats.FormatError as e:
                reason, unsupported = str(e), isinstance(e, formats.UnsupportedContent)
            if reason is None:
                kept.append((rec, conversation))
            elif invalid_rows == "error" and not unsupported:
                raise DataError(f"{rec.where}: {reason}")
            else:
                result.dropped.append({"source": rec.source, "row": rec.row, "reason": reason})
        _check_optional_columns(spec, columns, mapped)
        sampled = sample(kept, weight, seed)
        result.rows += [c for _, c in sampled]
        result.origins += [(r.source, r.row) for r, _ in sampled]
        result.total += len(records)
        for name, count in unused.items():
            result.unused_fields[name] = result.unused_fields.get(name, 0) + count
        result.unused_fields = dict(sorted(result.unused_fields.items(), key=lambda kv: -kv[1]))
        result.sources.append(
            {
                "source": spec,
                "format": source_fmt,
                "weight": weight,
                "rows": len(records),
                "valid": len(kept),
                "used": len(sampled),
                "unused_fields": unused,
                "sha256": fingerprint(spec),
            }
        )
    if not result.rows:
        why = f": {describe_drops(result.dropped)}" if result.dropped else " (the source weights sampled none)"
        raise DataError(f"data.source: no usable conversations among {result.total} rows{why}")
    return result


def _check_optional_columns(spec: str, columns: dict, mapped: set) -> None:
    """An optional field (``tools`` ...) may be missing from some rows, but a mapping that no row
    matches is a typo, not a choice."""
    for canonical in columns:
        if canonical in formats.OPTIONAL_FIELDS and canonical not in mapped:
            raise DataError(
                f"data.source: {spec}: data.columns.{canonical} names the field {columns[canonical]!r}, "
                "which no row of this source has"
            )


def fingerprint(spec: str) -> str | None:
    """sha256 of a source's bytes (a folder or glob: of its files' names and hashes); None for a Hub id."""
    paths = [p for p in expand(spec) if p.exists()]
    if not paths:
        return None
    files = sorted(f for p in paths for f in ([p] if p.is_file() else p.rglob("*")) if f.is_file())
    if len(files) == 1 and len(paths) == 1 and paths[0].is_file():
        return sha256_file(files[0])
    digest = hashlib.sha256()
    for f in files:
        digest.update(f"{f.name}:{sha256_file(f)}\n".encode())
    return digest.hexdigest()


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
