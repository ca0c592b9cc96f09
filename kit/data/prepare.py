"""prepare: recipe + dataset → a new run directory with train/eval splits and a report."""

from __future__ import annotations

import dataclasses
import statistics
from dataclasses import dataclass

from kit.chat.render import IGNORE_INDEX, tokenize_with_labels, trained_turns
from kit.data.rows import DataError, count_reasons, describe_drops, drop_examples, load_conversations, split
from kit.data.preference import conversations
from kit.data.tokenize import grpo_rows, load_tokenizer, tokenize_for
from kit.families import family_for, get_family
from kit.methods import get_method, method_of
from kit.recipes import Recipe, load_recipe
from kit.rewards import reward_functions
from kit.runs import Run, check_run_id, create_run
from kit.files import read_jsonl, write_json, write_jsonl


def _stats(values: list[int]) -> dict:
    if not values:
        return {}
    ordered = sorted(values)
    return {
        "min": ordered[0],
        "mean": round(statistics.fmean(ordered), 1),
        "p50": ordered[len(ordered) // 2],
        "p95": ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))],
        "max": ordered[-1],
    }


@dataclass
class PrepareReport:
    """What prepare read, kept, dropped and why; written once, as prepare_report.json (its keys are
    these fields, so runs prepared by earlier versions read back with ``from_dict``)."""

    method: str  # train.method
    sources: list[dict]  # per source: its layout, weight, counts, unused fields, sha256
    rows_total: int  # records read
    rows_kept: int
    reasoning: dict  # assistant turns with reasoning, and how many the template renders
    rows_dropped: int
    dropped_by_reason: dict  # reason key -> count, most frequent first
    dropped_examples: list[dict]  # the first drops with file, row, field and reason
    dropped: list[dict]  # every drop: {"source", "row", "reason"}
    unused_fields: dict  # fields of the rows that no layout reads -> rows that have them
    overlength_policy: str  # data.overlength
    rows_truncated: int
    max_seq_length: int
    split: dict  # {"train", "eval", "seed"}
    tokens_per_row: dict  # min, mean, p50, p95, max
    trained_tokens_per_row: dict
    fully_supervised_turns: int  # trained assistant turns, each checked to be inside the supervised tokens
    pairs: dict | None = None  # preference rows: kept, ties and over-length drops, truncations
    completions: dict | None = None  # labelled completions (kto): desirable and undesirable counts

    def to_dict(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None or k not in ("pairs", "completions")}

    @classmethod
    def from_dict(cls, data: dict) -> "PrepareReport":
        return cls(**data)


@dataclass
class Prepared:
    run: Run
    report: PrepareReport
    examples: list[dict]  # tokenized rows with labels, for display
    tokenizer: object


def prepare(recipe: str, overrides=None, run_id: str | None = None) -> Prepared:
    """Validate and split the recipe's data into a new run directory (``run_id`` or a timestamp)."""
    name, resolved = load_recipe(recipe, overrides)
    if run_id:
        check_run_id(run_id)  # before any data is read
    data_cfg, model_cfg = resolved.data, resolved.model
    method = method_of(resolved)
    pairs = method.reads_pairs  # preference rows: pairs, or (kto) labelled completions
    if method.rewards:  # a reward that cannot run fails here, before any data or model is read
        reward_functions(resolved.train.grpo.rewards, family_for(resolved))
    loaded = load_conversations(
        data_cfg.source, data_cfg.format, data_cfg.columns, data_cfg.invalid_rows, data_cfg.seed, method=method.name
    )
    family = family_for(resolved)
    tokenizer = load_tokenizer(model_cfg.id, family)

    tokenized = tokenize_for(method, tokenizer, family, loaded.rows, resolved, loaded.origins)
    examples, dropped, truncated = tokenized.examples, tokenized.dropped, tokenized.truncated
    all_dropped = loaded.dropped + dropped
    rows = [loaded.rows[i] for i in tokenized.kept]
    if not rows:
        what = "pair" if pairs else "conversation"
        raise DataError(f"data.source: no {what} left after tokenization: {describe_drops(all_dropped)}")
    train_rows, eval_rows = split(rows, data_cfg.eval_fraction, data_cfg.seed)

    run = create_run(name, resolved, run_id, overrides=overrides)
    write_jsonl(run.data_dir / "train.jsonl", train_rows)
    write_jsonl(run.data_dir / "eval.jsonl", eval_rows)
    if pairs:
        answers = [[e[k] for k in ("chosen_ids", "rejected_ids", "completion_ids") if k in e] for e in examples]
        lengths = [len(e["prompt_ids"]) + max(map(len, ids)) for e, ids in zip(examples, answers)]
        supervised = [sum(map(len, ids)) for ids in answers]
        as_conversations = [
            {"messages": c, **({"tools": r["tools"]} if r.get("tools") else {})} for r in rows for c in conversations(r)
        ]
    else:
        lengths = [len(e["input_ids"]) for e in examples]
        supervised = [sum(1 for label in e["labels"] if label != IGNORE_INDEX) for e in examples]
        as_conversations = rows
    report = PrepareReport(
        method=method.name,
        sources=loaded.sources,
        rows_total=loaded.total,
        rows_kept=len(rows),
        reasoning=reasoning_stats(tokenizer, family, as_conversations, resolved),
        rows_dropped=len(all_dropped),
        dropped_by_reason=count_reasons(all_dropped),
        dropped_examples=drop_examples(all_dropped),
        dropped=all_dropped,
        # Fields of the rows that no format reads: counted, so nothing is left out unseen.
        unused_fields=loaded.unused_fields,
        overlength_policy=data_cfg.overlength,
        rows_truncated=truncated,
        max_seq_length=model_cfg.max_seq_length,
        split={"train": len(train_rows), "eval": len(eval_rows), "seed": data_cfg.seed},
        tokens_per_row=_stats(lengths),
        trained_tokens_per_row=_stats(supervised),
        # Every trained turn passed the check that its answer (and rendered reasoning) is supervised.
        fully_supervised_turns=len(as_conversations) if pairs else supervised_turns(family, rows, resolved),
    )
    if pairs:  # tokens_per_row: the prompt and its longer answer; trained tokens: both answers
        by_reason = report.dropped_by_reason
        report.pairs = {
            "kept": sum("chosen" in r for r in rows),
            "ties_dropped": by_reason.get("tie", 0),
            "over_length_dropped": by_reason.get("over max_seq_length", 0),
            "over_length_truncated": truncated,
        }
    if method.labelled:  # what KTO trains on (a pair is two: its chosen desirable, its rejected not)
        labels = [e["label"] for e in examples]
        report.completions = {"desirable": sum(labels), "undesirable": len(labels) - sum(labels)}
    write_json(run.path / "prepare_report.json", report.to_dict())
    run.update_manifest(
        {
            "data": {
                "sources": [{k: s[k] for k in ("source", "sha256", "format", "used")} for s in loaded.sources],
                "train_rows": len(train_rows),
                "eval_rows": len(eval_rows),
            }
        }
    )
    return Prepared(run, report, examples, tokenizer)


def example_to_show(prepared: Prepared, first: int = 50) -> dict:
    """The example among the first ``first`` with the most trained tokens (a multi-turn one if any;
    a pair: the one with the longest answers); under grpo, the first training prompt as GRPO sees it
    (nothing of it trained: the answers are sampled)."""
    if get_method(prepared.report.method).examples == "prompts":
        config = prepared.run.config()
        rows = read_jsonl(prepared.run.data_dir / "train.jsonl")[:1]
        return grpo_rows(prepared.tokenizer, family_for(config), rows, config)[0]

    def trained(e: dict) -> int:
        if "chosen_ids" in e:
            return len(e["chosen_ids"]) + len(e["rejected_ids"])
        if "completion_ids" in e:
            return len(e["completion_ids"])
        return sum(label != IGNORE_INDEX for label in e["labels"])

    return max(prepared.examples[:first], key=trained)


def supervised_turns(family, rows: list[dict], config: Recipe) -> int:
    """Assistant turns trained, each checked to be fully supervised (tokenize_many's check)."""
    if config.data.reasoning == "every_turn":
        return sum(m["role"] == "assistant" and m.get("train", True) for row in rows for m in row["messages"])
    train_on = config.data.train_on or family.default_train_on
    return sum(len(trained_turns(row["messages"], train_on)) for row in rows)


def reasoning_stats(tokenizer, family, rows: list[dict], config: Recipe) -> dict:
    """How many assistant turns carry reasoning and how many of those appear in the training text
    (Qwen3, for one, renders reasoning only after the last user turn; some families have none)."""
    from kit.chat.render import render_training_text, template_messages
    from kit.chat.templates import TrainingRenderer

    renderer = TrainingRenderer(tokenizer, family)
    every_turn = config.data.reasoning == "every_turn"
    total = rendered = 0
    for row in rows:
        messages = row["messages"]
        for i, m in enumerate(messages):
            if m["role"] == "assistant" and m.get("reasoning"):
                conversation = template_messages(family, messages[: i + 1] if every_turn else messages)
                text = render_training_text(tokenizer, family, conversation, renderer, row.get("tools"))
                total += 1
                rendered += m["reasoning"].strip() in text
    return {"assistant_turns_with_reasoning": total, "rendered": rendered, "not_rendered": total - rendered}


def _readable(stats: dict) -> str:
    return ", ".join(f"{k} {v:g}" for k, v in stats.items()) if stats else "none"


def summary(report: PrepareReport) -> str:
    """The report in a few lines, as the prepare notebook prints it."""
    sources = ", ".join(f"{s['source']} ({s['format']}, {s['used']} used)" for s in report.sources)
    by_reason = ", ".join(f"{n} {reason}" for reason, n in report.dropped_by_reason.items())
    pairs = report.pairs
    lines = [
        f"{report.rows_total} rows read from {sources}",
        *(
            [
                f"  preference pairs ({report.method}): {pairs['kept']} kept; ties dropped {pairs['ties_dropped']}; "
                f"over {report.max_seq_length} tokens: {pairs['over_length_dropped']} dropped, "
                f"{pairs['over_length_truncated']} truncated"
            ]
            if pairs
            else []
        ),
        *(
            [
                f"  completions for kto: {report.completions['desirable']} desirable, "
                f"{report.completions['undesirable']} undesirable (a pair gives one of each)"
            ]
            if report.completions
            else []
        ),
        f"  kept {report.rows_kept}, dropped {report.rows_dropped}" + (f" ({by_reason})" if by_reason else ""),
        f"  unused fields (not read, not trained on): {_readable(report.unused_fields)}",
        f"  truncated {report.rows_truncated} (policy for rows over {report.max_seq_length} tokens: {report.overlength_policy})",
        f"  split: {report.split['train']} train / {report.split['eval']} eval (seed {report.split['seed']})",
        f"  tokens per row: {_readable(report.tokens_per_row)}",
        f"  trained tokens per row{' (its answers)' if pairs else ''}: {_readable(report.trained_tokens_per_row)}",
        f"  {report.fully_supervised_turns} trained assistant turns, each checked: answer (and rendered reasoning) "
        "fully inside the trained tokens",
    ]
    r = report.reasoning
    if r["assistant_turns_with_reasoning"]:
        lines.append(
            f"  reasoning: {r['assistant_turns_with_reasoning']} assistant turns have it; the chat template "
            f"renders {r['rendered']}, leaves out {r['not_rendered']}"
        )
        if r["not_rendered"]:
            lines.append(
                "  WARNING: reasoning left out of training; data.reasoning: every_turn trains each turn's "
                "reasoning (one example per turn), inline writes it into answers for families without a channel"
            )
    for d in report.dropped[:10]:
        lines.append(f"  dropped {d['source']}: row {d['row']}: {d['reason']}")
    return "\n".join(lines)


# The answer occurs inside its reasoning: both must be trained (a label view for the notebook).
REASONING_EXAMPLE = [
    {"role": "user", "content": "What is 17 * 23?"},
    {"role": "assistant", "content": "391", "reasoning": "17*23=391."},
]


def reasoning_example(family_name: str) -> tuple:
    """(tokenizer, example): a reasoning turn in the family's format with its labels, through an
    offline stand-in for the family's tokenizer (``kit.models.stand_in_tokenizer``)."""
    from kit.models import stand_in_tokenizer

    tokenizer = stand_in_tokenizer(family_name)
    return tokenizer, tokenize_with_labels(tokenizer, get_family(family_name), REASONING_EXAMPLE)
