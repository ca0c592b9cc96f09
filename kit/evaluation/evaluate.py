"""evaluate: base vs tuned (any checkpoint) on the held-out split — assistant-token loss and
perplexity, answers to held-out prompts scored against the references, batch predictions; for a
preference run also the reward accuracy and margin on held-out pairs, and (kto) the mean
log-probabilities of held-out completions labelled desirable and undesirable (the SFT metrics then read
the chosen, or desirable, answer as the reference); for a GRPO run the mean reward of the answers to
the held-out prompts (``train.grpo.rewards``)."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from kit import backend  # first: Unsloth patches transformers/peft on import
from kit import metrics
from kit.backend import FastLanguageModel
from kit.checkpoints import Checkpoint, find_checkpoint
from kit.data.prompts import as_conversations, held_out_prompts, load_prompts
from kit.data.tokenize import tokenize_pairs
from kit.families import family_for
from kit.models import model_note
from kit.inference import answer_logps, generate, generation_prompt, labelled_scores, preference_scores, token_loss
from kit.plots import plot_losses, plot_margins, plot_metrics
from kit.runs import Run
from kit.files import keep_replaced, read_jsonl, write_json, write_text_atomic
from kit.chat.tool_calls import ParsedAnswer, render_calls_for_display, tool_call_scores
from kit.methods import method_of
from kit.recipes import Recipe
from kit.rewards import mean_rewards

# What the manifest keeps of each model's scores (report.json has them all).
MANIFEST_SCORES = ("eval_loss", "behavior", "rouge_l", "facts", "tool_calls", "preference", "labelled", "rewards")


@dataclass
class EvalReport:
    """Base vs tuned on the held-out split; written once, as report.json, whose keys are these fields
    (a run evaluated by an earlier version reads back with ``from_dict``)."""

    method: str  # train.method
    base: dict  # the base model's scores: eval_loss, perplexity, answer metrics, generation speed, and
    tuned: dict  # (where they apply) facts, tool_calls, preference, labelled, rewards
    checkpoint: dict  # the tuned adapter: name, step, eval_loss_in_training
    model_id: str
    decoding: str  # eval.decoding
    behavior_description: str
    eval_rows: int
    examples: list[dict] = field(default_factory=list)  # per held-out prompt: prompt, reference, both answers

    @property
    def results(self) -> dict:
        """{"base": scores, "tuned": scores}, as the plots take them."""
        return {"base": self.base, "tuned": self.tuned}

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "EvalReport":
        return cls(**{"method": "sft", **data})  # runs evaluated before train.method existed: SFT

    @classmethod
    def read(cls, run: Run) -> "EvalReport":
        return cls.from_dict(json.loads((run.path / "report.json").read_text(encoding="utf-8")))

    def manifest_summary(self) -> dict:
        """What manifest.json records of the evaluation: each model's headline scores (a preference
        result without its per-pair margins)."""

        def headline(scores: dict) -> dict:
            out = {k: scores[k] for k in MANIFEST_SCORES if k in scores}
            if "preference" in out:
                out["preference"] = {k: out["preference"][k] for k in ("pairs", "accuracy", "margin")}
            return out

        return {name: headline(scores) for name, scores in self.results.items()}


def load(run: Run, config: Recipe, checkpoint: str = "final"):
    """Base model + the chosen adapter (``final``, ``latest``, ``best`` or ``checkpoint-N``), ready
    for inference; the base model is the same object with the adapter disabled."""
    ckpt = find_checkpoint(run, checkpoint)
    m = config.model
    model, tokenizer = backend.load_model(str(ckpt.path), m.max_seq_length, m.load_in_4bit, m.dtype)
    FastLanguageModel.for_inference(model)
    return model, tokenizer, ckpt


def score(answers, references: list[str], behavior, family, thinking: bool = False, facts: list[str] = ()) -> dict:
    texts = [a.text for a in answers]
    out = {
        "exact_match": metrics.exact_match(texts, references),
        "bleu": metrics.bleu(texts, references),
        "rouge_l": metrics.rouge_l(texts, references),
        "mean_answer_tokens": sum(a.tokens for a in answers) / len(answers),
        "behavior": sum(metrics.shows_behavior(t, behavior) for t in texts) / len(texts),
    }
    if facts:
        out["facts"] = metrics.facts_stated(texts, references, list(facts))
    if thinking:
        out["reasoning_well_formed"] = sum(
            metrics.reasoning_well_formed(a.raw, *family.reasoning_tags) for a in answers
        ) / len(answers)
    return out


def thinking_on(family, thinking: bool | None) -> bool:
    """Whether answers are expected to carry a reasoning block (the recipe's switch or the family default)."""
    if not family.reasoning_tags:
        return False
    if thinking is None:
        return bool(family.inference_kwargs.get(family.thinking_kwarg, True))
    return thinking


def _generation_options(config: Recipe, progress) -> dict:
    ev = config.eval
    # batch_size None: generate() sizes batches from free memory (inference.batch_size_for)
    return {
        "max_new_tokens": ev.max_new_tokens,
        "batch_size": ev.batch_size,
        "sampling": ev.decoding == "recommended",
        "thinking": ev.thinking,
        "seed": config.train.seed,
        "progress": progress,
    }


def evaluate(run: Run, config: Recipe, model, tokenizer, checkpoint: Checkpoint, progress=None) -> EvalReport:
    m, ev = config.model, config.eval
    family = family_for(config)
    rows = read_jsonl(run.data_dir / "eval.jsonl")
    prompts = held_out_prompts(rows, ev.num_prompts)
    references = [p.reference for p in prompts]
    options = _generation_options(config, progress)
    method = method_of(config)
    preference = method.scores_preference
    pairs = [r for r in rows if "chosen" in r] if preference else []
    pairs = tokenize_pairs(tokenizer, family, pairs, config).examples if pairs else None
    labelled = [r for r in rows if "completion" in r] if preference else []
    labelled = tokenize_pairs(tokenizer, family, labelled, config).examples if labelled else None
    rows = as_conversations(rows)  # a pair: the loss is its chosen answer's (what SFT on it would train)

    def measure(label: str) -> tuple[dict, list]:
        loss = token_loss(model, tokenizer, family, rows, config.data.train_on)
        answers, speed = generate(
            model, tokenizer, family, [p.messages for p in prompts], **options, tools=[p.tools for p in prompts]
        )
        result = {
            "checkpoint": label,
            "eval_loss": loss,
            "perplexity": math.exp(loss),
            **score(answers, references, ev.behavior, family, thinking_on(family, ev.thinking), ev.facts),
            "generation": speed,
        }
        calls = tool_scores(answers, prompts)
        if calls["rows"]:
            result["tool_calls"] = calls
        if method.rewards:
            result["rewards"] = reward_scores(config, tokenizer, prompts, answers)
        if pairs is not None:
            result["preference"] = preference_scores(answer_logps(model, pairs))
        if labelled is not None:
            result["labelled"] = labelled_scores(model, labelled)
        return result, answers

    with model.disable_adapter():
        base, base_answers = measure(f"base ({m.id})")
    tuned, tuned_answers = measure(checkpoint.name)
    report = EvalReport(
        method=method.name,
        base=base,
        tuned=tuned,
        checkpoint={"name": checkpoint.name, "step": checkpoint.step, "eval_loss_in_training": checkpoint.eval_loss},
        model_id=m.id,
        decoding=ev.decoding,
        behavior_description=ev.behavior.description,
        eval_rows=len(rows),
        examples=[
            {
                "prompt": p.messages[-1]["content"],
                "reference": p.reference,
                "base": b.text,
                "tuned": t.text,
                "base_reasoning": b.reasoning,
                "tuned_reasoning": t.reasoning,
                **(
                    {"reference_calls": p.reference_calls, "base_calls": b.calls, "tuned_calls": t.calls}
                    if p.reference_calls
                    else {}
                ),
            }
            for p, b, t in zip(prompts, base_answers, tuned_answers)
        ],
    )
    import matplotlib.pyplot as plt

    # Everything is computed before anything is written; an earlier report is kept, not overwritten.
    markdown = report_markdown(run, report)
    figures = [plot_losses(run), plot_metrics(run, report.results)] + (
        [plot_margins(run, report.results)] if pairs else []
    )
    for figure in figures:  # saved as PNG for report.md
        plt.close(figure)  # the notebook shows them where it wants them
    for name in ("report.json", "report.md"):
        keep_replaced(run.path / name)
    write_json(run.path / "report.json", report.to_dict())
    write_text_atomic(run.path / "report.md", markdown)
    run.update_manifest({"evaluate": report.manifest_summary()})
    return report


def reward_scores(config: Recipe, tokenizer, prompts: list[dict], answers) -> dict:
    """GRPO's rewards (``kit.rewards.mean_rewards``) of the answers to held-out prompts, each function
    given what it gets in training: the rendered prompt, the answer decoded as TRL decodes its samples
    (special tokens skipped), and the row's ``answer`` (the reference) and ``tools``."""
    family = family_for(config)
    rendered = [generation_prompt(tokenizer, family, p.messages, p.tools, config.eval.thinking) for p in prompts]
    completions = tokenizer.batch_decode([a.ids for a in answers], skip_special_tokens=True)
    rows = {"answer": [p.reference for p in prompts], "tools": [p.tools for p in prompts]}
    return mean_rewards(config.train.grpo.rewards, family, rendered, completions, rows)


def comparison_rows(report: EvalReport) -> list[dict]:
    """Base and tuned side by side, a row each: the reward accuracy and margin on held-out pairs
    (preference runs) or the mean reward (GRPO), the loss and answer metrics, and the facts stated
    (``eval.facts``)."""
    keys = ["eval_loss", "perplexity", "behavior", "exact_match", "bleu", "rouge_l", "mean_answer_tokens"]
    rows = []
    for name in ("base", "tuned"):
        result, row = report.results[name], {"": name}
        if "preference" in result:
            row.update({"reward accuracy": result["preference"]["accuracy"], "margin": result["preference"]["margin"]})
        if "labelled" in result:
            row["desirable - undesirable"] = result["labelled"]["margin"]
        if "rewards" in result:
            row["mean reward"] = result["rewards"]["mean"]
        row.update({k: result[k] for k in keys})
        if report.tuned.get("facts", {}).get("rows"):  # answers stating every fact their reference states
            row["facts stated"] = result["facts"]["stated"]
        rows.append(row)
    return rows


def tool_scores(answers, prompts: list[dict]) -> dict:
    """Valid-call, right-name and exact-arguments rates over the prompts whose reference answer is
    a tool call (``{"rows": 0}`` when none is)."""
    parsed = [ParsedAnswer(a.text, a.calls, a.invalid_calls) for a in answers]
    return tool_call_scores(parsed, [p.reference_calls or [] for p in prompts], [p.tools for p in prompts])


def check_predict_file(source: str | None) -> None:
    """Read ``predict_file`` before any model is loaded: a bad one fails in a second, naming file and row."""
    if source:
        load_prompts(Path(source))


def predict(
    run: Run, config: Recipe, model, tokenizer, checkpoint: Checkpoint, source: str | None = None, progress=None
) -> Path:
    """Answers to every conversation of ``source`` (JSONL/JSON of messages; default: the eval split)
    → ``predictions/<source>.<checkpoint>.jsonl`` in the run, answer and reasoning separated."""
    family = family_for(config)
    if source:
        prompts, stem = load_prompts(Path(source)), Path(source).stem
    else:
        rows = read_jsonl(run.data_dir / "eval.jsonl")  # a row gives one prompt, or none (undesirable completions)
        prompts = [replace(p, row=i + 1) for i, row in enumerate(rows) for p in held_out_prompts([row])]
        stem = "eval"
    answers, speed = generate(
        model,
        tokenizer,
        family,
        [p.messages for p in prompts],
        **_generation_options(config, progress),
        tools=[p.tools for p in prompts],
    )
    out = run.path / "predictions" / f"{stem}.{checkpoint.name}.jsonl"
    out.parent.mkdir(exist_ok=True)
    kept = keep_replaced(out)
    if kept:
        print(f"{out} existed (same input and checkpoint); kept as {kept.name}")
    write_text_atomic(
        out,
        "".join(
            json.dumps(
                {
                    "row": p.row,
                    "messages": p.messages,
                    "answer": a.text,
                    "reasoning": a.reasoning,
                    "reference": p.reference,
                    "tokens": a.tokens,
                    **({"calls": a.calls, "invalid_calls": a.invalid_calls} if a.calls or a.invalid_calls else {}),
                },
                ensure_ascii=False,
            )
            + "\n"
            for p, a in zip(prompts, answers)
        ),
    )
    print(
        f"{len(answers)} predictions → {out} ({speed['tokens']} tokens in {speed['seconds']} s: "
        f"{speed['tokens_per_s']} tokens/s, batches of {speed['batch_size']})"
    )
    return out


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def report_markdown(run: Run, report: EvalReport) -> str:
    b, t = report.base, report.tuned
    rows = [
        ("eval loss (assistant tokens)", "eval_loss", "{:.4f}"),
        ("perplexity", "perplexity", "{:.2f}"),
        ("behaviour", "behavior", "{:.0%}"),
        ("exact match", "exact_match", "{:.0%}"),
        ("BLEU", "bleu", "{:.1f}"),
        ("ROUGE-L", "rouge_l", "{:.3f}"),
        ("mean answer tokens", "mean_answer_tokens", "{:.1f}"),
    ]
    if "reasoning_well_formed" in t:
        rows.append(("well-formed reasoning", "reasoning_well_formed", "{:.0%}"))
    ck = report.checkpoint
    lines = [
        f"# Evaluation: {run.recipe_name} / {run.path.name}",
        "",
        f"Tuned model: `{ck['name']}` (step {ck['step']}). Held-out conversations: {report.eval_rows}; "
        f"answers decoded {report.decoding}. Behaviour: {report.behavior_description}.",
        "",
        "| | base | tuned |",
        "|---|---|---|",
    ]
    note = model_note(report.model_id)
    if note:
        lines[4:4] = [f"> **Note.** {note}", ""]
    if "preference" in t:  # before the SFT metrics: what preference training is judged by
        lines += [
            f"| reward accuracy ({t['preference']['pairs']} held-out pairs) | {b['preference']['accuracy']:.0%} | "
            f"{t['preference']['accuracy']:.0%} |",
            f"| mean margin, log p(chosen) - log p(rejected) | {b['preference']['margin']:.2f} | "
            f"{t['preference']['margin']:.2f} |",
        ]
    if "rewards" in t:  # GRPO: what it trained for, on held-out prompts
        lines.append(
            f"| mean reward ({t['rewards']['prompts']} held-out prompts) | {b['rewards']['mean']:.3f} | "
            f"{t['rewards']['mean']:.3f} |"
        )
        lines += [
            f"| reward: {fb['function']} (weight {fb['weight']:g}) | {_number(fb['mean'])} | {_number(ft['mean'])} |"
            for fb, ft in zip(b["rewards"]["by_function"], t["rewards"]["by_function"])
        ]
    if "labelled" in t and t["labelled"]["margin"] is not None:
        lines.append(
            f"| mean log p(desirable) - log p(undesirable) ({t['labelled']['completions']} held-out completions) | "
            f"{b['labelled']['margin']:.2f} | {t['labelled']['margin']:.2f} |"
        )
    lines += [f"| {label} | {fmt.format(b[key])} | {fmt.format(t[key])} |" for label, key, fmt in rows]
    if t.get("facts", {}).get("rows"):
        lines.append(
            f"| facts stated ({t['facts']['rows']} prompts) | {b['facts']['stated']:.0%} | {t['facts']['stated']:.0%} |"
        )
    if "tool_calls" in t:
        lines += [
            f"| tool calls: {label} ({t['tool_calls']['rows']} prompts) | {b['tool_calls'][key]:.0%} | "
            f"{t['tool_calls'][key]:.0%} |"
            for label, key in (
                ("valid call", "valid_call"),
                ("right function", "right_name"),
                ("exact arguments", "exact_arguments"),
            )
        ]
    lines += [
        f"| generation tokens/s | {b['generation']['tokens_per_s']} | {t['generation']['tokens_per_s']} |",
        "",
        "![base vs tuned](metrics.png)",
        "",
        "![loss curves](loss.png)",
        "",
        *(["![preference margins](margins.png)", ""] if "preference" in t else []),
        "## Answers to held-out prompts",
        "",
        "| prompt | base | tuned | reference |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {_cell(e['prompt'])} | {_cell(e['base'])} | {_cell(e['tuned'])} | "
        f"{_cell(' '.join(filter(None, [e['reference'], render_calls_for_display(e.get('reference_calls', []))])))} |"
        for e in report.examples
    ]
    return "\n".join(lines) + "\n"
