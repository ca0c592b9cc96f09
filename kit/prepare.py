"""prepare: recipe + dataset → a new run directory with train/eval splits and a report."""
from __future__ import annotations

import json
import statistics
from dataclasses import dataclass

from .chat import IGNORE_INDEX, MaskError, tokenize_with_labels
from .data import DataError, load_conversations, split, write_jsonl
from .families import get_family
from .recipes import load_recipe
from .runs import Run, create_run, sha256_file


def load_tokenizer(model_id: str):
    from transformers import AutoTokenizer

    from .tiny import resolve_model_id

    path = resolve_model_id(model_id)
    try:
        return AutoTokenizer.from_pretrained(path)
    except OSError as e:
        raise OSError(f"model.id: could not load the tokenizer of {model_id!r} "
                      f"(no local copy and the Hugging Face Hub is unreachable?): {e}") from None


def _stats(values: list[int]) -> dict:
    if not values:
        return {}
    ordered = sorted(values)
    return {"min": ordered[0], "mean": round(statistics.fmean(ordered), 1),
            "p50": ordered[len(ordered) // 2], "p95": ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))],
            "max": ordered[-1]}


def tokenize_rows(tokenizer, family, rows: list[dict], max_len: int, overlength: str, row_numbers=None):
    """Tokenize with labels and apply the over-length policy. Returns (examples, kept indices,
    dropped [{row, reason}] with rows numbered as in ``row_numbers``, truncated count)."""
    row_numbers = row_numbers or list(range(1, len(rows) + 1))
    examples, kept, dropped, truncated = [], [], [], 0
    for i, row in enumerate(rows):
        where = row_numbers[i]
        try:
            ex = tokenize_with_labels(tokenizer, family, row["messages"])
        except MaskError as e:
            dropped.append({"row": where, "reason": f"mask: {e}"})
            continue
        if len(ex["input_ids"]) > max_len:
            if overlength == "drop":
                dropped.append({"row": where, "reason": f"over max_seq_length: {len(ex['input_ids'])} > {max_len} tokens"})
                continue
            ex = {k: v[:max_len] for k, v in ex.items()}
            truncated += 1
            if all(label == IGNORE_INDEX for label in ex["labels"]):
                dropped.append({"row": where, "reason": f"nothing to train after truncation to {max_len} tokens"})
                continue
        examples.append(ex)
        kept.append(i)
    return examples, kept, dropped, truncated


@dataclass
class Prepared:
    run: Run
    report: dict
    examples: list[dict]  # tokenized rows with labels, for display
    tokenizer: object


def prepare(recipe: str, overrides=None, run_id: str | None = None) -> Prepared:
    """Validate and split the recipe's data into a new run directory (``run_id`` or a timestamp)."""
    name, resolved = load_recipe(recipe, overrides)
    data_cfg, model_cfg = resolved["data"], resolved["model"]
    loaded = load_conversations(data_cfg["source"], data_cfg["invalid_rows"])
    tokenizer = load_tokenizer(model_cfg["id"])
    family = get_family(model_cfg["family"])

    examples, kept, dropped, truncated = tokenize_rows(
        tokenizer, family, loaded.rows, model_cfg["max_seq_length"], data_cfg["overlength"], loaded.row_numbers)
    all_dropped = loaded.dropped + dropped
    rows = [loaded.rows[i] for i in kept]
    if not rows:
        raise DataError(f"{loaded.source}: no conversation left after tokenization ({len(dropped)} dropped)")
    train_rows, eval_rows = split(rows, data_cfg["eval_fraction"], data_cfg["seed"])

    run = create_run(name, resolved, run_id)
    write_jsonl(run.data_dir / "train.jsonl", train_rows)
    write_jsonl(run.data_dir / "eval.jsonl", eval_rows)
    lengths = [len(e["input_ids"]) for e in examples]
    supervised = [sum(1 for label in e["labels"] if label != IGNORE_INDEX) for e in examples]
    report = {
        "source": str(loaded.source),
        "source_sha256": sha256_file(loaded.source),
        "rows_total": loaded.total,
        "rows_kept": len(rows),
        "rows_dropped": len(all_dropped),
        "dropped_by_reason": _count(all_dropped),
        "dropped": all_dropped,
        "overlength_policy": data_cfg["overlength"],
        "rows_truncated": truncated,
        "max_seq_length": model_cfg["max_seq_length"],
        "split": {"train": len(train_rows), "eval": len(eval_rows), "seed": data_cfg["seed"]},
        "tokens_per_row": _stats(lengths),
        "trained_tokens_per_row": _stats(supervised),
    }
    (run.path / "prepare_report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    run.update_manifest({"data": {"source": report["source"], "sha256": report["source_sha256"],
                                  "train_rows": len(train_rows), "eval_rows": len(eval_rows)}})
    return Prepared(run, report, examples, tokenizer)


def _count(dropped: list[dict]) -> dict:
    out: dict = {}
    for d in dropped:
        key = d["reason"].split(":")[0]
        out[key] = out.get(key, 0) + 1
    return out


def summary(report: dict) -> str:
    lines = [f"{report['rows_total']} rows read from {report['source']}",
             f"  kept {report['rows_kept']}, dropped {report['rows_dropped']} {report['dropped_by_reason'] or ''}",
             f"  truncated {report['rows_truncated']} (policy for rows over {report['max_seq_length']} tokens: {report['overlength_policy']})",
             f"  split: {report['split']['train']} train / {report['split']['eval']} eval (seed {report['split']['seed']})",
             f"  tokens per row: {report['tokens_per_row']}",
             f"  trained tokens per row: {report['trained_tokens_per_row']}"]
    for d in report["dropped"][:10]:
        lines.append(f"  dropped row {d['row']}: {d['reason']}")
    return "\n".join(lines)
