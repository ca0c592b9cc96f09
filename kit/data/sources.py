"""Read raw records from where users keep chat data: JSON arrays (or one JSON object), JSONL, CSV, Parquet, a
``datasets.save_to_disk`` folder, globs of those, several sources with sampling weights, or a
Hugging Face Hub dataset id. Each record keeps its origin (file, 1-based row) for error messages.
"""

from __future__ import annotations

import glob
import json
import math
import random
from dataclasses import dataclass
from pathlib import Path

from kit.paths import PROJECT_ROOT

FILE_TYPES = (".json", ".jsonl", ".csv", ".parquet")


class DataError(ValueError):
    pass


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


class DuplicateKey(ValueError):
    pass


def _no_duplicate_keys(pairs: list) -> dict:
    """json's object hook: a key given twice in one object is an error (json keeps the last silently)."""
    out = {}
    for key, value in pairs:
        if key in out:
            raise DuplicateKey(f"key {key!r} is given twice in one object")
        out[key] = value
    return out


def _loads(text: str):
    return json.loads(text, object_pairs_hook=_no_duplicate_keys)


def _read_json(path: Path, text: str) -> list[Record]:
    try:
        data = _loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: invalid JSON at line {e.lineno}: {e.msg}") from None
    except DuplicateKey as e:
        raise DataError(f"{path}: {e}; keep one") from None
    if isinstance(data, dict):  # a file holding one conversation: one record
        return [Record(str(path), 1, data)]
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON array of records (or one record), got {type(data).__name__}")
    return [Record(str(path), i + 1, r) for i, r in enumerate(data)]


def _read_jsonl(path: Path, text: str) -> list[Record]:
    records = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(Record(str(path), lineno, _loads(line)))
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: line {lineno}: invalid JSON: {e.msg}") from None
        except DuplicateKey as e:
            raise DataError(f"{path}: line {lineno}: {e}; keep one") from None
    return records


class UndecodedJson(str):
    """A CSV cell that starts like JSON but does not parse: kept as text (it may be text), with the
    parse error, so a layout that needed a list can say why it got a string."""

    json_error: str


def _decode_json_cells(row: dict) -> dict:
    """CSV cells holding JSON lists/objects (a messages column) are decoded; other text stays."""
    out = {}
    for key, value in row.items():
        if isinstance(value, str) and value[:1] in "[{":
            try:
                value = _loads(value)
            except (json.JSONDecodeError, DuplicateKey) as e:
                value = UndecodedJson(value)
                value.json_error = f"{e.msg} at character {e.pos}" if isinstance(e, json.JSONDecodeError) else str(e)
        out[key] = value
    return out


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
    import pyarrow.csv
    import pyarrow.parquet

    try:
        if path.suffix == ".parquet":
            rows = [_without_nulls(r) for r in pyarrow.parquet.read_table(path).to_pylist()]
        else:
            options = pyarrow.csv.ConvertOptions(strings_can_be_null=False)
            rows = [_decode_json_cells(r) for r in pyarrow.csv.read_csv(path, convert_options=options).to_pylist()]
    except (OSError, ValueError) as e:  # pyarrow's ArrowInvalid is a ValueError
        raise DataError(f"{path}: cannot read as {path.suffix[1:]}: {e}") from None
    return [Record(str(path), i + 1, r) for i, r in enumerate(rows)]


def read_file(path: Path) -> list[Record]:
    if path.is_dir():
        return _read_saved_dataset(path)
    if path.suffix not in FILE_TYPES:
        raise DataError(
            f"{path}: unsupported file type {path.suffix!r} (use {', '.join(FILE_TYPES)} "
            "or a datasets.save_to_disk folder)"
        )
    if path.suffix in (".csv", ".parquet"):
        return _read_table(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text (byte {e.start})") from None
    return _read_json(path, text) if path.suffix == ".json" else _read_jsonl(path, text)


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
    if len(paths) == 1 and not paths[0].exists():
        if _looks_like_hub_id(spec):
            return _read_hub(spec)
        raise DataError(f"data.source: {paths[0]} does not exist")
    records = []
    for path in paths:
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
