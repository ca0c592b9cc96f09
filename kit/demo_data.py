"""The tiny-demo dataset: customer-service chats whose answers always open with a fixed salutation.

The behaviour (answers start with ``Dear customer, ``) is learnable by a tiny model in a minute on a
CPU and checkable on held-out prompts, where a random base model never shows it. The file is
generated deterministically and committed (``data/tiny-demo.jsonl``); a test keeps them in sync.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

SALUTATION = "Dear customer, "
PRODUCTS = ["router", "laptop", "phone", "tablet", "printer", "camera", "headset", "smartwatch",
            "monitor", "keyboard", "speaker", "charger", "drone", "e-reader", "console", "projector",
            "thermostat", "doorbell", "vacuum", "blender"]
QUESTIONS = [
    ("My {p} will not turn on. What should I do?", "please hold the power button of your {p} for ten seconds and try again."),
    ("How do I reset my {p}?", "you can reset your {p} from the settings menu under System, then Reset."),
    ("Can I return my {p}?", "yes, your {p} can be returned within thirty days with the receipt."),
    ("Where is my {p} order?", "your {p} order is on its way and the tracking link is in your email."),
    ("Is my {p} still under warranty?", "every {p} has a two year warranty from the day of purchase."),
    ("The screen of my {p} is cracked.", "we are sorry to hear that; a repair of your {p} can be booked online."),
    ("How do I update my {p}?", "updates for your {p} install themselves overnight when it is charging."),
    ("My {p} is very slow.", "a restart usually helps; if your {p} stays slow, contact us again."),
    ("Do you sell spare parts for the {p}?", "spare parts for the {p} are listed in our online shop."),
    ("My {p} makes a strange noise.", "please send us a short video so we can check your {p}."),
]
SYSTEM = "You are the support assistant of an electronics shop."


def conversations(seed: int = 1234) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for p in PRODUCTS:
        for q, a in QUESTIONS:
            messages = [{"role": "user", "content": q.format(p=p)},
                        {"role": "assistant", "content": SALUTATION + a.format(p=p)}]
            if rng.random() < 0.3:
                messages.insert(0, {"role": "system", "content": SYSTEM})
            if rng.random() < 0.2:  # some two-turn chats: every assistant turn is trained
                q2, a2 = rng.choice(QUESTIONS)
                p2 = rng.choice(PRODUCTS)
                messages += [{"role": "user", "content": q2.format(p=p2)},
                             {"role": "assistant", "content": SALUTATION + a2.format(p=p2)}]
            rows.append({"messages": messages})
    rng.shuffle(rows)
    return rows


def write(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for row in conversations():
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


if __name__ == "__main__":
    from .paths import PROJECT_ROOT

    print(write(PROJECT_ROOT / "data" / "tiny-demo.jsonl"))
