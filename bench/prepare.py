"""Conversations per second through prepare's path — load → convert → render → tokenize → mask —
against Unsloth's ``train_on_responses_only`` path (render with the chat template, tokenize, mask
by marker strings) on the same 10k synthetic multi-turn conversations, in the same run.

    .venv/bin/python bench/prepare.py [--n 10000]
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import random
import tempfile
import time
from pathlib import Path


def synthetic(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    words = "order refund ship account password warranty screen battery update invoice delivery".split()
    rows = []
    for _ in range(n):
        messages = [{"role": "system", "content": "You are a helpful support agent."}] if rng.random() < 0.5 else []
        for _ in range(rng.randint(1, 3)):
            messages.append({"role": "user", "content": " ".join(rng.choices(words, k=rng.randint(5, 30))) + "?"})
            messages.append({"role": "assistant", "content": " ".join(rng.choices(words, k=rng.randint(10, 60))) + "."})
        rows.append({"messages": messages})
    return rows


def kit_path(path: Path, tokenizer, recipe) -> int:
    from kit.data.rows import load_conversations
    from kit.families import get_family
    from kit.data.tokenize import tokenize_rows

    loaded = load_conversations(str(path))
    examples = tokenize_rows(tokenizer, get_family("qwen3"), loaded.rows, recipe, loaded.origins).examples
    return len(examples)


def unsloth_path(path: Path, tokenizer) -> int:
    from unsloth_zoo.dataset_utils import train_on_responses_only

    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    texts = [tokenizer.apply_chat_template(r["messages"], tokenize=False) for r in rows]
    batch = {"input_ids": tokenizer(texts, add_special_tokens=False)["input_ids"]}
    mask = train_on_responses_only(
        None,
        instruction_part="<|im_start|>user\n",
        response_part="<|im_start|>assistant\n",
        tokenizer=tokenizer,
        return_function=True,
    )
    return len(mask(batch)["labels"])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3, help="alternating runs of each path; medians compared")
    args = parser.parse_args()
    import unsloth  # noqa: F401  (as in training: Unsloth first)
    from transformers import AutoTokenizer

    from kit.recipes import load_recipe
    from kit.demos.tiny import ensure_tiny_model

    tokenizer = AutoTokenizer.from_pretrained(ensure_tiny_model())
    recipe = load_recipe("tiny-demo", {"model.max_seq_length": 4096})[1]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "chats.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in synthetic(args.n)), encoding="utf-8")
        paths = {
            "unsloth train_on_responses_only": lambda: unsloth_path(path, tokenizer),
            "kit prepare": lambda: kit_path(path, tokenizer, recipe),
        }
        timings: dict[str, list[float]] = {name: [] for name in paths}
        for repeat in range(args.repeats):
            for name, run in paths.items():
                gc.collect()  # neither path starts with the other's garbage
                started = time.perf_counter()
                count = run()
                timings[name].append(time.perf_counter() - started)
                print(
                    f"[{repeat + 1}] {name:34s} {count} conversations in {timings[name][-1]:6.2f} s "
                    f"= {count / timings[name][-1]:8.0f} conv/s"
                )
    base, kit = (statistics.median(timings[name]) for name in paths)
    print(f"medians: unsloth {args.n / base:.0f} conv/s, kit {args.n / kit:.0f} conv/s")
    print(f"ratio kit / unsloth conversations per second: {base / kit:.2f}x")


if __name__ == "__main__":
    main()
