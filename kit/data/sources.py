"""Read raw records from where users keep chat data: JSON arrays (or one JSON object), JSONL, CSV, Parquet, a
``datasets.save_to_disk`` folder, globs of those, several sources with sampling weights, or a
Hugging Face Hub dataset id. Each record keeps its origin (file, 1-based row) for error messages.

What is not a file of records is refused in one line naming file and line (or row and field): a FIFO,
socket or device (before it is opened), a symlink loop, an unreadable file, bytes that are not UTF-8,
JSON's non-numbers (NaN, Infinity), nesting deeper than Python recurses, a lone surrogate escape.
JSON Lines end at "\\n" only. CSV cells are text (``Cell``): ``decode_cells`` reads JSON only in the
structured fields a layout reads as lists or objects.
"""

from __future__ import annotations

import errno
import glob
import io
import json
import math
import os
import random
import stat
from dataclasses import dataclass
from pathlib import Path

from kit.chat.tool_data import NotJson
from kit.data.json_text import SURROGATE_ESCAPE, DataError, DuplicateKey, decoded, lone_surrogate, strict_loads
from kit.paths import PROJECT_ROOT

FILE_TYPES = (".json", ".jsonl", ".csv", ".parquet")


@dataclass
class Record:
    source: str  # file (or dataset id) it came from
    row: int  # 1-based: the line in JSONL, the record's position elsewhere
    data: object

    @property
    def where(self) -> str:
        return f"{self.source}: row {self.row}"


def resolve(path: str) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else PROJECT_ROOT / p


def _check_text(record: Record, text: str) -> None:
    if SURROGATE_ESCAPE.search(text):
        why = lone_surrogate(record.data)
        if why:
            raise DataError(f"{record.where}: {why}")


def _read_json(path: Path, text: str) -> list[Record]:
    data = decoded(path, "", text)
    if isinstance(data, dict):  # a file holding one conversation: one record
        records = [Record(str(path), 1, data)]
    elif isinstance(data, list):
        records = [Record(str(path), i + 1, r) for i, r in enumerate(data)]
    else:
        raise DataError(f"{path}: expected a JSON array of records (or one record), got {type(data).__name__}")
    if SURROGATE_ESCAPE.search(text):
        for record in records:
            why = lone_surrogate(record.data)
            if why:
                raise DataError(f"{record.where}: {why}")
    return records


def _read_jsonl(path: Path, text: str) -> list[Record]:
    """One record a line. Lines end at "\\n" only (a "\\r" before it is JSON whitespace): U+2028,
    U+0085 and the other separators str.splitlines() knows may stand in a JSON string."""
    records = []
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip(" \t\r"):
            continue
        record = Record(str(path), lineno, decoded(path, f"line {lineno}: ", line))
        _check_text(record, line)
        records.append(record)
    return records


class UndecodedJson(str):
    """A CSV cell of a structured field that starts like JSON but does not parse: kept as text, with
    the parse error, so a layout that needed a list can say why it got a string."""

    json_error: str


class Cell(str):
    """A CSV cell: text as written. ``kit.data.rows`` decodes the cells of structured fields (after
    ``data.columns``: ``STRUCTURED_FIELDS``) as JSON and turns the rest into plain text."""


# The fields a layout reads as lists or objects (messages, tool definitions, calls ...): a CSV cell
# of one of these holds JSON. Every other cell (an alpaca output, a prompt, a label) is text.
STRUCTURED_FIELDS = (
    "messages",
    "conversations",
    "conversation_pair",
    "history",
    "tools",
    "functions",
    "answers",
    "preferred_output",
    "non_preferred_output",
    "images",
    "videos",
    "audios",
)
# Fields that hold text or messages (a prompt, an answer, a preference side, OpenAI's input): a cell of
# one of these is decoded only where its JSON is messages (a list of {"role", ...}, one message, or an
# object holding "messages"); any other cell, ["red", "white"] included, is text.
TEXT_OR_MESSAGES_FIELDS = ("prompt", "completion", "chosen", "rejected", "input")


def _is_messages(value) -> bool:
    if isinstance(value, dict):
        return "role" in value or isinstance(value.get("messages"), list)
    return bool(value) and isinstance(value, list) and all(isinstance(m, dict) and "role" in m for m in value)


def decode_cells(record: object) -> object:
    """A record with its CSV cells as content: a structured field's JSON decoded, every other cell
    plain text; other records as they are. Raises ValueError (the reason) for a cell JSON that is
    not usable (NaN, nested too deep, a lone surrogate)."""
    if not isinstance(record, dict) or not any(isinstance(v, Cell) for v in record.values()):
        return record
    out = {}
    for key, value in record.items():
        if isinstance(value, Cell):
            value = str(value)
            if key in STRUCTURED_FIELDS and value[:1] in "[{":
                value = _decode_cell(key, value)
            elif key in TEXT_OR_MESSAGES_FIELDS and value[:1] in "[{":
                try:
                    decoded = _decode_cell(key, value)
                except ValueError:  # not usable JSON: text ("[NaN]" is a fine prompt)
                    decoded = None
                value = decoded if _is_messages(decoded) else value
        out[key] = value
    return out


def _decode_cell(key: str, text: str):
    try:
        value = strict_loads(text)
    except (json.JSONDecodeError, DuplicateKey) as e:
        value = UndecodedJson(text)
        value.json_error = f"{e.msg} at character {e.pos}" if isinstance(e, json.JSONDecodeError) else str(e)
        return value
    except NotJson as e:
        raise ValueError(f"bad {key}: {key} is not valid JSON ({e})") from None
    except RecursionError:
        raise ValueError(f"bad {key}: {key} is nested too deep to read") from None
    why = lone_surrogate(value, key) if SURROGATE_ESCAPE.search(text) else None
    if why:
        raise ValueError(why)
    return value


def _without_nulls(value):
    """Arrow has no "absent", only null: a struct column holds every key any row has, null where a
    row has none (a tool's schema gains the other tools' properties as nulls). Null-valued keys are
    dropped at any depth, so a Parquet or saved-dataset row reads as the JSON it was made from."""
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def _read_table(path: Path) -> list[Record]:
    import pyarrow
    import pyarrow.csv
    import pyarrow.parquet

    data = None if path.suffix == ".parquet" else _read_bytes(path)
    if data is not None:
        _utf8(path, data)  # pyarrow's own message names no line
    try:
        if data is None:
            rows = [_without_nulls(r) for r in pyarrow.parquet.read_table(path).to_pylist()]
        else:
            names = pyarrow.csv.open_csv(io.BytesIO(data)).schema.names
            # Every cell is text as written: no column is read as numbers, booleans or nulls.
            options = pyarrow.csv.ConvertOptions(
                column_types={name: pyarrow.string() for name in names}, strings_can_be_null=False
            )
            table = pyarrow.csv.read_csv(io.BytesIO(data), convert_options=options)
            rows = [{k: Cell(v) for k, v in r.items()} for r in table.to_pylist()]
    except (OSError, ValueError) as e:  # pyarrow's ArrowInvalid is a ValueError
        raise DataError(f"{path}: cannot read as {path.suffix[1:]}: {e}") from None
    return [Record(str(path), i + 1, r) for i, r in enumerate(rows)]


def read_file(path: Path) -> list[Record]:
    check_readable(path)
    if path.is_dir():
        return _read_saved_dataset(path)
    if path.suffix not in FILE_TYPES:
        raise DataError(
            f"{path}: unsupported file type {path.suffix!r} (use {', '.join(FILE_TYPES)} "
            "or a datasets.save_to_disk folder)"
        )
    if path.suffix in (".csv", ".parquet"):
        return _read_table(path)
    text = _utf8(path, _read_bytes(path))
    return _read_json(path, text) if path.suffix == ".json" else _read_jsonl(path, text)


_SPECIAL = (
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def check_readable(path: Path) -> None:
    """A DataError in one line unless ``path`` is a regular file or a folder: a FIFO, socket or device
    would block the read or never end, a symlink loop or a broken link has no file behind it."""
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise DataError(f"{path}: a symlink loop (its links point back at each other), not a file") from None
        if path.is_symlink():
            raise DataError(f"{path}: a symlink to {os.readlink(path)}, which does not exist") from None
        if isinstance(e, PermissionError):
            raise DataError(
                f"{path}: permission denied: cannot look at it (check the permissions of its folders)"
            ) from None
        raise DataError(f"{path} does not exist") from None
    for test, what in _SPECIAL:
        if test(mode):
            raise DataError(f"{path}: {what}, not a regular file: reading it would block or never end")


def _read_bytes(path: Path) -> bytes:
    check_readable(path)
    try:
        return path.read_bytes()
    except PermissionError:
        raise DataError(f"{path}: permission denied: the file cannot be read (check its permissions)") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e.strerror or e}") from None


def _utf8(path: Path, data: bytes) -> str:
    """``data`` as UTF-8 text; else a DataError naming the line and byte column of the first bad byte."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise DataError(
            f"{path}: line {line}: not UTF-8 text (byte 0x{data[e.start]:02x} at byte column {column}); "
            "save the file as UTF-8"
        ) from None


def _read_saved_dataset(path: Path) -> list[Record]:
    import datasets

    try:
        ds = datasets.load_from_disk(str(path))
    except FileNotFoundError as e:
        raise DataError(f"{path}: a folder, but not a datasets.save_to_disk dataset ({e})") from None
    if isinstance(ds, datasets.DatasetDict):
        if "train" not in ds:
            raise DataError(f"{path}: a DatasetDict without a 'train' split (splits: {', '.join(ds)})")
        ds = ds["train"]
    return [Record(str(path), i + 1, _without_nulls(r)) for i, r in enumerate(ds)]


def _read_hub(dataset_id: str) -> list[Record]:
    import datasets

    try:
        ds = datasets.load_dataset(dataset_id, split="train")
    except Exception as e:  # offline: ConnectionError, OfflineModeIsEnabled, DatasetNotFoundError ...
        raise DataError(
            f"data.source: {dataset_id!r} is not a local file, so it was tried as a Hugging Face Hub "
            f"dataset, which could not be loaded (offline?): {type(e).__name__}: {str(e)[:300]}"
        ) from None
    return [Record(dataset_id, i + 1, _without_nulls(r)) for i, r in enumerate(ds)]


def expand(spec: str) -> list[Path]:
    if any(ch in spec for ch in "*?["):
        matches = sorted(Path(p) for p in glob.glob(str(resolve(spec)), recursive=True))
        if not matches:
            raise DataError(f"data.source: the pattern {spec!r} matches no file")
        return matches
    return [resolve(spec)]


def _looks_like_hub_id(spec: str) -> bool:
    return spec.count("/") == 1 and not spec.startswith((".", "/", "~")) and Path(spec).suffix == ""


def read_source(spec: str) -> list[Record]:
    """All records of one source string (a path, a glob, a folder or a Hub id)."""
    paths = expand(spec)
    if len(paths) == 1 and not paths[0].exists() and not paths[0].is_symlink():
        if _looks_like_hub_id(spec):
            return _read_hub(spec)
        raise DataError(f"data.source: {paths[0]} does not exist")
    records = []
    for path in paths:
        check_readable(path)
        records += read_file(path)
    return records


def sources_of(source) -> list[tuple[str, float]]:
    """``data.source`` as [(spec, weight)]: a string, or a list of strings / {path, weight}."""
    items = source if isinstance(source, list) else [source]
    out = []
    for i, item in enumerate(items):
        if isinstance(item, str):
            out.append((item, 1.0))
        elif isinstance(item, dict) and isinstance(item.get("path"), str) and set(item) <= {"path", "weight"}:
            weight = item.get("weight", 1.0)
            number = _finite(weight) if isinstance(weight, (int, float)) and not isinstance(weight, bool) else None
            if number is None or number <= 0:  # NaN, inf, and an int past a float's range too: not sampled
                raise DataError(f"data.source[{i}].weight: expected a positive finite number, got {weight!r}")
            out.append((item["path"], number))
        else:
            raise DataError(f"data.source[{i}]: expected a path or {{path: ..., weight: ...}}, got {item!r}")
    if not out:
        raise DataError("data.source: no source given")
    return out


def _finite(number: float) -> float | None:
    """``number`` as a finite float, or None (NaN, an infinity, an int too large for a float)."""
    try:
        value = float(number)
    except OverflowError:
        return None
    return value if math.isfinite(value) else None


def sample(records: list[Record], weight: float, seed: int) -> list[Record]:
    """``weight`` × the records: a deterministic subsample below 1, whole repeats plus a
    subsample above it."""
    whole, frac = int(weight), weight - int(weight)
    rng = random.Random(seed)
    picked = records * whole
    if frac:
        picked += [records[i] for i in sorted(rng.sample(range(len(records)), round(frac * len(records))))]
    return picked
