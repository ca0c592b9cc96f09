"""The tiny-demo dataset: customer-service chats whose answers always open with a fixed salutation.

The behaviour (answers start with ``Dear customer, ``) is learnable by a tiny model in a minute on a
CPU and checkable on held-out prompts, where a random base model never shows it. The file is
generated deterministically and committed (``data/tiny-demo.jsonl``); a test keeps them in sync.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from kit.files import write_jsonl

SALUTATION = "Dear customer, "
PRODUCTS = [
    "router",
    "laptop",
    "phone",
    "tablet",
    "printer",
    "camera",
    "headset",
    "smartwatch",
    "monitor",
    "keyboard",
    "speaker",
    "charger",
    "drone",
    "e-reader",
    "console",
    "projector",
    "thermostat",
    "doorbell",
    "vacuum",
    "blender",
]
QUESTIONS = [
    (
        "My {p} will not turn on. What should I do?",
        "please hold the power button of your {p} for ten seconds and try again.",
    ),
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
            messages = [
                {"role": "user", "content": q.format(p=p)},
                {"role": "assistant", "content": SALUTATION + a.format(p=p)},
            ]
            if rng.random() < 0.3:
                messages.insert(0, {"role": "system", "content": SYSTEM})
            if rng.random() < 0.2:  # some two-turn chats: every assistant turn is trained
                q2, a2 = rng.choice(QUESTIONS)
                p2 = rng.choice(PRODUCTS)
                messages += [
                    {"role": "user", "content": q2.format(p=p2)},
                    {"role": "assistant", "content": SALUTATION + a2.format(p=p2)},
                ]
            rows.append({"messages": messages})
    rng.shuffle(rows)
    return rows


def preference_pairs(seed: int = 1235) -> list[dict]:
    """tiny-dpo-demo: the tiny demo's chats as pairs in the chosen / rejected message-list layout (the
    shared turns written on both sides): the answer with the salutation is chosen, the same answer
    without it rejected."""
    rows = []
    for row in conversations(seed):
        messages, answer = row["messages"][:-1], row["messages"][-1]["content"]
        bare = answer[len(SALUTATION) :]
        rows.append(
            {
                "chosen": messages + [{"role": "assistant", "content": answer}],
                "rejected": messages + [{"role": "assistant", "content": bare[:1].upper() + bare[1:]}],
            }
        )
    return rows


def write(path: Path, rows: list[dict]) -> Path:
    """``rows`` as JSONL at ``path``."""
    write_jsonl(path, rows)
    return path


# ---------------------------------------------------------------------------------------------
# The tool-calling demo (data/tiny-tools-demo.jsonl): four small tools and requests that each call
# for one of them. Every row offers all four tools; its first assistant turn is one call to the
# right tool with the arguments the request names. Some rows go on with the tool's result and a
# short answer from it, so both patterns are trained (a call; an answer after a result). A random
# base model never writes a ``<tool_call>`` block; the tuned one learns to, on held-out requests.
# Terse tools: the Qwen3 template prints every tool's JSON in the system turn of every row.
# ---------------------------------------------------------------------------------------------


def _tool(name: str, description: str, properties: dict, required: list[str]) -> dict:
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {"type": "object", "properties": properties, "required": required},
        },
    }


TOOLS = [
    _tool("get_weather", "Current weather in a city.", {"city": {"type": "string"}}, ["city"]),
    _tool(
        "convert_currency",
        "Convert an amount of money.",
        {"amount": {"type": "number"}, "from": {"type": "string"}, "to": {"type": "string"}},
        ["amount", "from", "to"],
    ),
    _tool("set_timer", "Start a timer.", {"minutes": {"type": "integer"}}, ["minutes"]),
    _tool("lookup_order", "Status of a shop order.", {"order_id": {"type": "string"}}, ["order_id"]),
]
TOOL_SYSTEM = "You are a helpful assistant. Use a tool when one fits."
CITIES = [
    "Paris",
    "Berlin",
    "Tokyo",
    "Madrid",
    "Rome",
    "Oslo",
    "Lima",
    "Cairo",
    "Delhi",
    "Sydney",
    "Toronto",
    "Dublin",
    "Vienna",
    "Seoul",
    "Boston",
    "Lisbon",
]
CURRENCIES = ["USD", "EUR", "GBP", "JPY", "CHF", "CAD"]
AMOUNTS = [5, 10, 20, 25, 40, 50, 75, 100, 150, 200, 250, 500, 1000]
MINUTES = [1, 2, 3, 5, 8, 10, 12, 15, 20, 25, 30, 40, 45, 60, 90]
SKIES = ["sunny", "cloudy", "rainy", "windy", "foggy"]
ORDER_STATES = ["shipped", "delivered", "packed", "delayed"]
# (request templates, arguments from slot values, a tool result, the answer from it) per tool.
WEATHER_ASKS = [
    "What is the weather in {city}?",
    "Is it raining in {city} right now?",
    "How warm is it in {city} today?",
    "Weather for {city}, please.",
    "Should I take an umbrella in {city}?",
    "Tell me the current weather in {city}.",
]
CURRENCY_ASKS = [
    "Convert {amount} {src} to {dst}.",
    "How much is {amount} {src} in {dst}?",
    "What are {amount} {src} worth in {dst}?",
    "Change {amount} {src} into {dst}, please.",
    "I have {amount} {src}. How many {dst} is that?",
    "{amount} {src} to {dst}?",
]
TIMER_ASKS = [
    "Set a timer for {minutes} minutes.",
    "Start a {minutes} minute timer.",
    "Remind me in {minutes} minutes.",
    "Timer, {minutes} minutes please.",
    "Can you count down {minutes} minutes for me?",
    "Wake me up in {minutes} minutes.",
]
ORDER_ASKS = [
    "Where is my order {order_id}?",
    "What is the status of order {order_id}?",
    "Has order {order_id} shipped yet?",
    "Track order {order_id}, please.",
    "Any news on my order {order_id}?",
    "Check order {order_id} for me.",
]
ROWS_PER_TOOL = 80


def _weather(rng: random.Random):
    city = rng.choice(CITIES)
    temp, sky = rng.randint(-5, 35), rng.choice(SKIES)
    return (
        rng.choice(WEATHER_ASKS).format(city=city),
        {"city": city},
        {"temp_c": temp, "sky": sky},
        f"It is {temp} °C and {sky} in {city}.",
    )


def _currency(rng: random.Random):
    amount = rng.choice(AMOUNTS)
    src, dst = rng.sample(CURRENCIES, 2)
    result = round(amount * rng.uniform(0.5, 2.0), 2)
    return (
        rng.choice(CURRENCY_ASKS).format(amount=amount, src=src, dst=dst),
        {"amount": amount, "from": src, "to": dst},
        {"amount": result, "currency": dst},
        f"{amount} {src} is {result} {dst}.",
    )


def _timer(rng: random.Random):
    minutes = rng.choice(MINUTES)
    return (
        rng.choice(TIMER_ASKS).format(minutes=minutes),
        {"minutes": minutes},
        {"status": "started", "minutes": minutes},
        f"Your {minutes} minute timer is running.",
    )


def _order(rng: random.Random):
    order_id = f"A{rng.randint(1000, 9999)}"
    state = rng.choice(ORDER_STATES)
    return (
        rng.choice(ORDER_ASKS).format(order_id=order_id),
        {"order_id": order_id},
        {"order_id": order_id, "status": state},
        f"Order {order_id} is {state}.",
    )


TOOL_REQUESTS = {"get_weather": _weather, "convert_currency": _currency, "set_timer": _timer, "lookup_order": _order}


def tool_conversations(seed: int = 4321) -> list[dict]:
    """Rows ``{"messages", "tools"}``: a request, one call to the right tool, and for about 40% of
    rows the tool's result and a one-line answer from it; about 30% open with a system turn."""
    rng = random.Random(seed)
    rows = []
    for name, request in TOOL_REQUESTS.items():
        for _ in range(ROWS_PER_TOOL):
            ask, arguments, result, answer = request(rng)
            messages = [
                {"role": "user", "content": ask},
                {"role": "assistant", "content": "", "tool_calls": [{"name": name, "arguments": arguments}]},
            ]
            if rng.random() < 0.3:
                messages.insert(0, {"role": "system", "content": TOOL_SYSTEM})
            if rng.random() < 0.4:
                messages += [
                    {"role": "tool", "name": name, "content": json.dumps(result, ensure_ascii=False)},
                    {"role": "assistant", "content": answer},
                ]
            rows.append({"messages": messages, "tools": TOOLS})
    rng.shuffle(rows)
    return rows


if __name__ == "__main__":
    from kit.demos.shop import shop_conversations, shop_fact_prompts, shop_preference_pairs
    from kit.paths import PROJECT_ROOT

    print(write(PROJECT_ROOT / "data" / "tiny-demo.jsonl", conversations()))
    print(write(PROJECT_ROOT / "data" / "tiny-tools-demo.jsonl", tool_conversations()))
    print(write(PROJECT_ROOT / "data" / "tiny-dpo-demo.jsonl", preference_pairs()))
    print(write(PROJECT_ROOT / "data" / "smollm2-shop-demo.jsonl", shop_conversations()))
    print(write(PROJECT_ROOT / "data" / "smollm2-dpo-demo.jsonl", shop_preference_pairs()))
    print(write(PROJECT_ROOT / "data" / "smollm2-grpo-demo.jsonl", shop_fact_prompts()))
