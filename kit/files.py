"""Files written so that nothing is lost or half-written: atomic writes (temporary name, then
rename), a replaced file kept beside the new one, content hashes, and the timestamped ids that
name kept files and runs; JSONL rows read, written and appended."""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
from pathlib import Path


def new_run_id() -> str:
    """A timestamp to the microsecond: a new run's id, and the suffix of a kept file."""
    return _dt.datetime.now().strftime("%Y%m%d-%H%M%S-%f")


def write_text_atomic(path: Path, text: str) -> None:
    """Write under a temporary name, then rename: readers never see a half-written file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def keep_replaced(path: Path) -> Path | None:
    """Before ``path`` is written anew: an existing file there is kept as
    ``<stem>.replaced-<time><suffix>`` beside it, never overwritten."""
    if not path.exists():
        return None
    return path.rename(path.with_name(f"{path.stem}.replaced-{new_run_id()}{path.suffix}"))


def write_json(path: Path, data) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def append_jsonl(path: Path, record: dict) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, ensure_ascii=False) + "\n")
