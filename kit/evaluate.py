"""evaluate: base vs tuned on the held-out split — assistant-token loss and perplexity, greedy
answers to held-out prompts, and the recipe's behaviour metric."""
from __future__ import annotations

import json
import math
import re

import torch

from . import backend  # first: Unsloth patches transformers/peft on import
from .backend import FastLanguageModel
from .chat import IGNORE_INDEX, render_prompt, tokenize_with_labels
from .data import read_jsonl
from .families import get_family
from .runs import Run, RunError


def shows_behavior(answer: str, behavior: dict) -> bool:
    if behavior.get("prefix") is not None and answer.lstrip().startswith(behavior["prefix"]):
        return True
    return behavior.get("regex") is not None and re.search(behavior["regex"], answer) is not None


def held_out_prompts(rows: list[dict], n: int) -> list[dict]:
    """The first ``n`` eval conversations cut before their first assistant turn: the prompt, and
    that turn's content as the reference answer."""
    prompts = []
    for row in rows[:n]:
        messages = row["messages"]
        first = next(i for i, m in enumerate(messages) if m["role"] == "assistant")
        prompts.append({"messages": messages[:first], "reference": messages[first]["content"]})
    return prompts


@torch.no_grad()
def token_loss(model, tokenizer, family, rows: list[dict]) -> float:
    """Mean cross-entropy over all supervised (assistant) tokens of ``rows``, token-weighted."""
    total, count = 0.0, 0
    for row in rows:
        ex = tokenize_with_labels(tokenizer, family, row["messages"])
        input_ids = torch.tensor([ex["input_ids"]], device=model.device)
        labels = torch.tensor([ex["labels"]], device=model.device)
        logits = model(input_ids=input_ids).logits.float()
        shift_logits, shift_labels = logits[0, :-1], labels[0, 1:]
        loss = torch.nn.functional.cross_entropy(shift_logits, shift_labels, ignore_index=IGNORE_INDEX, reduction="sum")
        total += loss.item()
        count += int((shift_labels != IGNORE_INDEX).sum())
    return total / count


@torch.no_grad()
def greedy_answer(model, tokenizer, family, messages: list[dict], max_new_tokens: int) -> str:
    prompt = render_prompt(tokenizer, family, messages)
    inputs = tokenizer(prompt, return_tensors="pt", add_special_tokens=False).to(model.device)
    eot = tokenizer.convert_tokens_to_ids(family.end_of_turn)
    out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=eot,
                         pad_token_id=tokenizer.pad_token_id)
    return tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)


def evaluate(run: Run, recipe: dict, progress=None) -> dict:
    if not run.adapter_dir.exists():
        raise RunError(f"{run.path} has no adapter/: run the train notebook on this run first")
    m, ev = recipe["model"], recipe["eval"]
    family = get_family(m["family"])
    model, tokenizer = backend.load_model(str(run.adapter_dir), m["max_seq_length"], m["load_in_4bit"])
    FastLanguageModel.for_inference(model)
    rows = read_jsonl(run.data_dir / "eval.jsonl")
    prompts = held_out_prompts(rows, ev["num_prompts"])
    wrap = progress or (lambda it, **kw: it)

    def measure(label: str) -> tuple[dict, list[str]]:
        loss = token_loss(model, tokenizer, family, rows)
        answers = [greedy_answer(model, tokenizer, family, p["messages"], ev["max_new_tokens"])
                   for p in wrap(prompts, desc=f"{label}: answering held-out prompts")]
        behavior = sum(shows_behavior(a, ev["behavior"]) for a in answers) / len(answers)
        return {"eval_loss": loss, "perplexity": math.exp(loss), "behavior": behavior}, answers

    with model.disable_adapter():
        base, base_answers = measure("base")
    tuned, tuned_answers = measure("tuned")
    report = {
        "base": base,
        "tuned": tuned,
        "behavior_description": ev["behavior"]["description"],
        "eval_rows": len(rows),
        "examples": [{"prompt": p["messages"][-1]["content"], "reference": p["reference"],
                      "base": b, "tuned": t} for p, b, t in zip(prompts, base_answers, tuned_answers)],
    }
    (run.path / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (run.path / "report.md").write_text(report_markdown(run, report), encoding="utf-8")
    run.update_manifest({"evaluate": {"base": base, "tuned": tuned}})
    return report


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def report_markdown(run: Run, report: dict) -> str:
    b, t = report["base"], report["tuned"]
    lines = [f"# Evaluation: {run.recipe_name} / {run.path.name}", "",
             f"Held-out conversations: {report['eval_rows']}. Behaviour: {report['behavior_description']}.", "",
             "| | base | tuned |", "|---|---|---|",
             f"| eval loss (assistant tokens) | {b['eval_loss']:.4f} | {t['eval_loss']:.4f} |",
             f"| perplexity | {b['perplexity']:.2f} | {t['perplexity']:.2f} |",
             f"| behaviour | {b['behavior']:.0%} | {t['behavior']:.0%} |", ""]
    if (run.path / "loss.png").exists():
        lines += ["![loss curves](loss.png)", ""]
    lines += ["## Greedy answers to held-out prompts", "", "| prompt | base | tuned | reference |", "|---|---|---|---|"]
    lines += [f"| {_cell(e['prompt'])} | {_cell(e['base'])} | {_cell(e['tuned'])} | {_cell(e['reference'])} |"
              for e in report["examples"]]
    return "\n".join(lines) + "\n"
