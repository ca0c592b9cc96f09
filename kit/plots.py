"""Plots saved into the run (PNG) and returned for inline display."""

from __future__ import annotations

import json

from kit.runs import Run


def read_metrics(run: Run) -> list[dict]:
    if not run.metrics_path.exists():
        return []
    return [json.loads(line) for line in run.metrics_path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _curves(ax, records: list[dict], names: list[tuple[str, str]], ylabel: str) -> None:
    for key, label in names:
        points = [(r["step"], r[key]) for r in records if key in r]
        if points:
            ax.plot(*zip(*points), "o-" if key.startswith("eval_") else "-", label=label)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend()


def plot_losses(run: Run):
    """Train and eval loss against step → loss.png; for preference training (TRL logs
    ``rewards/margins``) beside it the reward margin and accuracy, train and eval; for GRPO (TRL logs
    ``reward``) the mean reward of the sampled answers, and each reward function's."""
    import matplotlib.pyplot as plt

    records = read_metrics(run)
    preference = any("rewards/margins" in r for r in records)
    grpo = any("reward" in r for r in records)
    fig, axes = plt.subplots(
        1, 2 if preference or grpo else 1, figsize=(12 if preference or grpo else 7, 4), squeeze=False
    )
    _curves(
        axes[0][0],
        records,
        [("loss", "train loss"), ("eval_loss", "eval loss")],
        "policy loss (GRPO)"
        if grpo
        else "preference loss (train.method's)"
        if preference
        else "loss (assistant tokens)",
    )
    axes[0][0].set_title(f"{run.recipe_name} / {run.path.name}")
    if grpo:
        functions = sorted({k for r in records for k in r if k.startswith("rewards/") and k.endswith("/mean")})
        _curves(
            axes[0][1],
            records,
            [
                ("reward", "train reward (weighted sum)"),
                ("eval_reward", "eval reward"),
                *[(k, k.split("/")[1]) for k in functions],
            ],
            "mean reward of sampled answers",
        )
        axes[0][1].set_title("GRPO: the reward the answers earn")
    if preference:
        _curves(
            axes[0][1],
            records,
            [
                ("rewards/margins", "train margin"),
                ("eval_rewards/margins", "eval margin"),
                ("rewards/accuracies", "train accuracy"),
                ("eval_rewards/accuracies", "eval accuracy"),
            ],
            "reward margin (β·nats) / accuracy",
        )
        axes[0][1].set_title("chosen vs rejected, relative to the reference model")
    fig.tight_layout()
    fig.savefig(run.path / "loss.png", dpi=120)
    return fig


BAR_METRICS = (
    ("behavior", "behaviour"),
    ("exact_match", "exact match"),
    ("rouge_l", "ROUGE-L"),
    ("bleu", "BLEU / 100"),
)


def plot_metrics(run: Run, results: dict):
    """Base vs tuned bars (``results``: {"base": scores, "tuned": scores}, an EvalReport's ``results``) for the 0-1 metrics → metrics.png. Every bar carries its value; a bar at 0
    is drawn as a short line on the axis, so it reads as 0 rather than as missing."""
    import matplotlib.pyplot as plt

    with_facts = bool(results["tuned"].get("facts", {}).get("rows"))  # eval.facts: the share of facts stated
    with_pairs = "preference" in results["tuned"]  # preference training: reward accuracy on held-out pairs
    # GRPO: each reward function's mean on held-out answers, where it is a 0-1 score (the built-ins are)
    rewards = [
        i
        for i, (b, t) in enumerate(
            zip(*(results[n].get("rewards", {}).get("by_function", []) for n in ("base", "tuned")))
        )
        if all(f["mean"] is not None and 0 <= f["mean"] <= 1 for f in (b, t))
    ]
    metrics = (
        ((("preference", "reward accuracy"),) if with_pairs else ())
        + tuple((i, f"reward:\n{results['tuned']['rewards']['by_function'][i]['function']}") for i in rewards)
        + BAR_METRICS
        + ((("facts", "facts stated"),) if with_facts else ())
    )
    labels = [label for _, label in metrics]
    fig, ax = plt.subplots(figsize=(7 + 1.0 * len(rewards), 3.8))
    width = 0.38

    def value(result: dict, key) -> float:
        if isinstance(key, int):
            return result["rewards"]["by_function"][key]["mean"]
        if key == "facts":
            return result["facts"]["stated"]
        if key == "preference":
            return result["preference"]["accuracy"]
        return result[key] / (100 if key == "bleu" else 1)

    for offset, name in ((-width / 2, "base"), (width / 2, "tuned")):
        values = [value(results[name], key) for key, _ in metrics]
        xs = [i + offset for i in range(len(labels))]
        bars = ax.bar(xs, values, width, label=name)
        ax.bar_label(bars, labels=[f"{v:.2f}" for v in values], fontsize=8, padding=2)
        zeros = [x for x, v in zip(xs, values) if v == 0]
        if zeros:
            ax.hlines(
                [0] * len(zeros),
                [x - width / 2 for x in zeros],
                [x + width / 2 for x in zeros],
                colors=bars.patches[0].get_facecolor(),
                linewidth=3,
                zorder=3,
            )
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


def plot_margins(run: Run, results: dict):
    """Per held-out pair, chosen minus rejected log-probability, base and tuned → margins.png: the
    pairs right of zero are those whose chosen answer the model finds the more probable."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.8))
    for name in ("base", "tuned"):
        scores = results[name]["preference"]
        ax.hist(
            scores["margins"],
            bins=20,
            alpha=0.6,
            label=f"{name}: accuracy {scores['accuracy']:.2f}, mean margin {scores['margin']:.1f}",
        )
    ax.axvline(0, color="#444", linewidth=0.8)
    ax.set_xlabel("log p(chosen) - log p(rejected), nats (held-out pairs)")
    ax.set_ylabel("pairs")
    ax.set_title(f"preference margins: {run.recipe_name} / {run.path.name}")
    ax.legend(frameon=False)
    fig.tight_layout()
    fig.savefig(run.path / "margins.png", dpi=120)
    return fig
