"""Trainer callbacks: every log record to metrics.jsonl, and answers to fixed held-out prompts at
each evaluation (metrics.jsonl and TensorBoard text), so a run shows answers changing over steps."""

from __future__ import annotations

import time
from pathlib import Path

from transformers import TrainerCallback

from kit.display import readable, show_table
from kit.families import Family
from kit.files import append_jsonl
from kit.inference import generate


def readable_progress_tables() -> None:
    """transformers' notebook progress table with readable numbers (3.395, 76,303), not 6 decimals.
    It replaces a transformers function, so it is called where a trainer is built, not on import."""
    from transformers.utils import notebook

    def text_to_html_table(items):
        head = "".join(f"<th>{h}</th>" for h in items[0])
        rows = "".join("<tr>" + "".join(f"<td>{readable(v)}</td>" for v in line) + "</tr>" for line in items[1:])
        return (
            f'<table border="1" class="dataframe"><thead><tr style="text-align: left;">{head}</tr></thead>'
            f"<tbody>{rows}</tbody></table><p>"
        )

    notebook.text_to_html_table = text_to_html_table


class MetricsJsonl(TrainerCallback):
    def __init__(self, path: Path):
        self.path = path

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and state.is_world_process_zero:
            append_jsonl(
                self.path, {"step": state.global_step, "epoch": state.epoch, "time": round(time.time(), 3), **logs}
            )


class CheckpointTimes(TrainerCallback):
    """Each checkpoint's write time and size, in metrics.jsonl: whether the runs root (a network
    mount such as Google Drive) slows training is read off the run, not guessed. Listed last among
    the callbacks, its mark is the last event before transformers saves (after evaluation and samples)."""

    def __init__(self, path: Path):
        self.path = path
        self.mark = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.mark = time.perf_counter()

    on_log = on_evaluate = on_step_end

    def on_save(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        seconds = time.perf_counter() - self.mark
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) if folder.is_dir() else 0
        append_jsonl(
            self.path,
            {"step": state.global_step, "checkpoint_save_s": round(seconds, 3), "checkpoint_mb": round(size / 1e6, 1)},
        )
        self.mark = time.perf_counter()


class LiveSamples(TrainerCallback):
    """Greedy answers to ``prompts`` (message lists) after every evaluation."""

    def __init__(
        self,
        path: Path,
        tensorboard_dir: Path,
        tokenizer,
        family: Family,
        prompts: list[list[dict]],
        max_new_tokens: int,
        tools: list[list[dict] | None] | None = None,
    ):
        self.path, self.tensorboard_dir = path, tensorboard_dir
        self.tokenizer, self.family, self.prompts, self.max_new_tokens = tokenizer, family, prompts, max_new_tokens
        self.tools = tools
        self.writer = None
        self.last_step = None

    def on_evaluate(self, args, state, control, model=None, **kwargs):
        if not self.prompts or model is None or state.global_step == self.last_step or not state.is_world_process_zero:
            return  # an evaluation repeated at the same step samples the same answers: shown once; rank 0 alone
        self.last_step = state.global_step
        was_training = model.training
        model.eval()
        try:
            answers, _ = generate(
                model, self.tokenizer, self.family, self.prompts, max_new_tokens=self.max_new_tokens, tools=self.tools
            )
        finally:
            model.train(was_training)
        samples = [{"prompt": p[-1]["content"], "answer": a.text} for p, a in zip(self.prompts, answers)]
        append_jsonl(self.path, {"step": state.global_step, "samples": samples})
        if self.writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.tensorboard_dir))
        table = "| prompt | answer |\n|---|---|\n" + "\n".join(
            f"| {s['prompt']} | {s['answer']} |".replace("\n", " ") for s in samples
        )
        self.writer.add_text("samples", table, state.global_step)
        self.writer.flush()
        # Shown as display output, not printed: a notebook can send library prints to run.log
        show_table(
            [{"prompt": s["prompt"], "answer": s["answer"]} for s in samples],
            ["prompt", "answer"],
            title=f"Answers at step {state.global_step}",
            max_chars=120,
            widths={"prompt": "35%"},
        )

    def on_train_end(self, args, state, control, **kwargs):
        if self.writer is not None:
            self.writer.close()
