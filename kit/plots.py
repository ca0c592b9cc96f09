"""Plots saved into the run (PNG) and returned for inline display."""
from __future__ import annotations

import json

from kit.runs import Run


def read_metrics(run: Run) -> list[dict]:
    if not run.metrics_path.exists():
        return []
    return [json.loads(line) for line in run.metrics_path.read_text(encoding="utf-8").splitlines() if line.strip()]


def plot_losses(run: Run):
    """Train and eval loss against step → loss.png."""
    import matplotlib.pyplot as plt

    records = read_metrics(run)
    train_pts = [(r["step"], r["loss"]) for r in records if "loss" in r]
    eval_pts = [(r["step"], r["eval_loss"]) for r in records if "eval_loss" in r]
    fig, ax = plt.subplots(figsize=(7, 4))
    if train_pts:
        ax.plot(*zip(*train_pts), label="train loss")
    if eval_pts:
        ax.plot(*zip(*eval_pts), "o-", label="eval loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (assistant tokens)")
    ax.set_title(f"{run.recipe_name} / {run.path.name}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(run.path / "loss.png", dpi=120)
    return fig


BAR_METRICS = (("behavior", "behaviour"), ("exact_match", "exact match"), ("rouge_l", "ROUGE-L"), ("bleu", "BLEU / 100"))


def plot_metrics(run: Run, report: dict):
    """Base vs tuned bars for the 0-1 metrics → metrics.png. Every bar carries its value; a bar at 0
    is drawn as a short line on the axis, so it reads as 0 rather than as missing."""
    import matplotlib.pyplot as plt

    with_facts = bool(report["tuned"].get("facts", {}).get("rows"))  # eval.facts: the share of facts stated
    metrics = BAR_METRICS + ((("facts", "facts stated"),) if with_facts else ())
    labels = [label for _, label in metrics]
    fig, ax = plt.subplots(figsize=(7, 3.8))
    width = 0.38
    for offset, name in ((-width / 2, "base"), (width / 2, "tuned")):
        values = [report[name]["facts"]["stated"] if key == "facts" else report[name][key] / (100 if key == "bleu" else 1)
                  for key, _ in metrics]
        xs = [i + offset for i in range(len(labels))]
        bars = ax.bar(xs, values, width, label=name)
        ax.bar_label(bars, labels=[f"{v:.2f}" for v in values], fontsize=8, padding=2)
        zeros = [x for x, v in zip(xs, values) if v == 0]
        if zeros:
            ax.hlines([0] * len(zeros), [x - width / 2 for x in zeros], [x + width / 2 for x in zeros],
                      colors=bars.patches[0].get_facecolor(), linewidth=3, zorder=3)
    ax.set_xticks(range(len(labels)), labels)
    ax.set_xlabel("metric (held-out prompts)")
    ax.set_ylabel("score (0 to 1, higher is better)")
    ax.set_ylim(-0.02, 1.25)
    ax.axhline(0, color="#444", linewidth=0.8)
    ax.set_title(f"base vs tuned: {run.recipe_name} / {run.path.name}")
    ax.legend(loc="upper center", ncols=2, frameon=False)
    fig.tight_layout()
    fig.savefig(run.path / "metrics.png", dpi=120)
    return fig
