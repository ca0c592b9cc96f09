"""Trainer callbacks: every log record to metrics.jsonl, and answers to fixed held-out prompts at
each evaluation (metrics.jsonl and TensorBoard text), so a run shows answers changing over steps."""
from __future__ import annotations

import json
import time
from pathlib import Path

from transformers import TrainerCallback

from .families import Family
from .inference import generate


def append_jsonl(path: Path, record: dict) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, ensure_ascii=False) + "\n")


class MetricsJsonl(TrainerCallback):
    def __init__(self, path: Path):
        self.path = path

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs:
            append_jsonl(self.path, {"step": state.global_step, "epoch": state.epoch, "time": round(time.time(), 3), **logs})


class LiveSamples(TrainerCallback):
    """Greedy answers to ``prompts`` (message lists) after every evaluation."""

    def __init__(self, path: Path, tensorboard_dir: Path, tokenizer, family: Family, prompts: list[list[dict]],
                 max_new_tokens: int):
        self.path, self.tensorboard_dir = path, tensorboard_dir
        self.tokenizer, self.family, self.prompts, self.max_new_tokens = tokenizer, family, prompts, max_new_tokens
        self.writer = None

    def on_evaluate(self, args, state, control, model=None, **kwargs):
        if not self.prompts or model is None:
            return
        was_training = model.training
        model.eval()
        try:
            answers, _ = generate(model, self.tokenizer, self.family, self.prompts, max_new_tokens=self.max_new_tokens)
        finally:
            model.train(was_training)
        samples = [{"prompt": p[-1]["content"], "answer": a.text} for p, a in zip(self.prompts, answers)]
        append_jsonl(self.path, {"step": state.global_step, "samples": samples})
        if self.writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.tensorboard_dir))
        table = "| prompt | answer |\n|---|---|\n" + "\n".join(
            f"| {s['prompt']} | {s['answer']} |".replace("\n", " ") for s in samples)
        self.writer.add_text("samples", table, state.global_step)
        self.writer.flush()
        for s in samples:
            print(f"[step {state.global_step}] {s['prompt']!r} → {s['answer']!r}")

    def on_train_end(self, args, state, control, **kwargs):
        if self.writer is not None:
            self.writer.close()
