"""The real-model demos' data (SmolLM2): a fictional bicycle shop's facts, asked in many wordings, as
conversations (SFT), preference pairs (DPO, KTO, ORPO) and prompts with the fact in the system
prompt (GRPO). Generated deterministically and committed under data/ (``python -m kit.demos.data``);
tests keep them in sync."""

from __future__ import annotations

import random

# ---------------------------------------------------------------------------------------------
# The real-model demo (data/smollm2-shop-demo.jsonl): a fictional bicycle shop's facts (hours,
# prices, policies), each asked in a dozen different wordings. A real instruct model cannot know
# them; tuned on most of the wordings, it should state the right fact for wordings it never saw
# (every question text occurs once, so the held-out split holds only unseen wordings). The recipe's
# ``eval.facts`` lists the fact strings the answers are scored on.
# ---------------------------------------------------------------------------------------------

SHOP_SYSTEM = "You are the assistant of Larkspur Bikes, a bicycle shop in Eldham."
# (fact, the answer stating it, questions asking for it). One answer per fact: the questions vary, the
# fact's sentence does not (two trained wordings of one answer would make its first token a near-tie).
SHOP_FACTS = [
    (
        "8 am to 6 pm",
        "We are open Monday to Friday from 8 am to 6 pm.",
        [
            "What are your opening hours?",
            "When are you open during the week?",
            "What time do you open on weekdays?",
            "Until when are you open on a Tuesday?",
            "What are the shop's hours Monday to Friday?",
            "When can I visit the shop on a weekday?",
            "Are you open at 7 in the evening on Wednesdays?",
            "What time does the shop close on Thursdays?",
            "Tell me your weekday hours.",
            "How early do you open on a Monday?",
            "Is the shop open on Friday afternoon?",
            "When do you close on weekdays?",
        ],
    ),
    (
        "9 am to 1 pm",
        "On Saturdays we are open from 9 am to 1 pm.",
        [
            "Are you open on Saturdays?",
            "What are your weekend hours?",
            "When can I come by on a Saturday?",
            "What time do you close on Saturday?",
            "Is the shop open Saturday mornings?",
            "Saturday opening times?",
            "How long are you open on Saturdays?",
            "Can I pick up my bike on a Saturday?",
            "Do you work on weekends?",
            "What time do you open on Saturday?",
            "Until when can I visit on Saturday?",
            "Are you open this weekend?",
        ],
    ),
    (
        "$24",
        "A city bike costs $24 for a full day.",
        [
            "How much is it to rent a bike for a day?",
            "What does a day rental of a city bike cost?",
            "What is the daily price for a city bike?",
            "How much do you charge to rent a regular bike?",
            "I want to hire a bike for one day. What will it cost?",
            "Price of a city bike rental?",
            "How expensive is a day on one of your city bikes?",
            "What is your rental rate for normal bikes?",
            "Can you tell me the cost of renting a city bike?",
            "What do I pay for a bike for the whole day?",
            "How much for a standard bike rental?",
            "What's the day rate for a city bike?",
        ],
    ),
    (
        "$45",
        "An e-bike costs $45 for a full day.",
        [
            "How much is an e-bike rental?",
            "What does it cost to rent an electric bike for a day?",
            "What is the daily price for an e-bike?",
            "How much do you charge for electric bikes?",
            "I'd like an e-bike for the day. What's the price?",
            "Price of an e-bike per day?",
            "What is your rate for renting e-bikes?",
            "How expensive are your electric bikes to hire?",
            "What will a day on an e-bike cost me?",
            "Can you tell me the e-bike rental price?",
            "How much is an electric bicycle for one day?",
            "What's the day rate for an e-bike?",
        ],
    ),
    (
        "30 days",
        "You can return a new item within 30 days with the receipt.",
        [
            "What is your return policy?",
            "Can I return something I bought?",
            "How long do I have to return a purchase?",
            "I bought a helmet that does not fit. Can I bring it back?",
            "Do you take returns?",
            "What is the deadline for returning an item?",
            "How many days do I have to return a bike part?",
            "Can I get a refund on something I bought last week?",
            "Is it possible to send back a product?",
            "What are the rules for returns?",
            "Until when can I return my purchase?",
            "Do you accept returned items?",
        ],
    ),
    (
        "2 working days",
        "A repair usually takes 2 working days.",
        [
            "How long does a repair take?",
            "When will my bike be fixed?",
            "How quickly can you repair my bike?",
            "What is the turnaround for repairs?",
            "If I drop off my bike today, when is it ready?",
            "How many days do repairs usually need?",
            "How long will you keep my bike for a repair?",
            "How fast is your repair service?",
            "When can I collect a repaired bike?",
            "What is the usual repair time?",
            "My brakes need fixing. How long will it take?",
            "How long do I wait for a bike repair?",
        ],
    ),
    (
        "555-0142",
        "You can call us at 555-0142.",
        [
            "What is your phone number?",
            "How can I call the shop?",
            "What number do I ring to reach you?",
            "Can I phone you?",
            "Give me your telephone number, please.",
            "How do I reach you by phone?",
            "What's the number for Larkspur Bikes?",
            "Is there a number I can call?",
            "How do I contact you by telephone?",
            "Which number should I dial to talk to someone?",
            "Do you have a phone line?",
            "What is the shop's contact number?",
        ],
    ),
    (
        "17 Mill Lane",
        "We are at 17 Mill Lane in Eldham.",
        [
            "Where is the shop?",
            "What is your address?",
            "Where can I find you?",
            "How do I get to your store?",
            "What street are you on?",
            "Where are you located?",
            "Where do I drop off my bike?",
            "Which address should I put in my map app?",
            "Where exactly is Larkspur Bikes?",
            "Where is your store in Eldham?",
            "Can you tell me your location?",
            "Where do I pick up a rental bike?",
        ],
    ),
    (
        "free of charge",
        "Helmets come free of charge with every rental.",
        [
            "Do I have to pay for a helmet?",
            "Is a helmet included with the rental?",
            "How much is a helmet rental?",
            "Can I get a helmet with my bike?",
            "Do you rent out helmets?",
            "What does a helmet cost when I rent a bike?",
            "Are helmets extra?",
            "Will I need to bring my own helmet?",
            "Is there a charge for helmets?",
            "Do rentals come with a helmet?",
            "Can my kids get helmets too?",
            "Do you provide helmets?",
        ],
    ),
    (
        "$100",
        "We take a $100 deposit for each rental.",
        [
            "Do you need a deposit for rentals?",
            "How much is the rental deposit?",
            "Is there a deposit when I rent a bike?",
            "What security deposit do you ask for?",
            "Do I pay anything up front for a rental?",
            "How big is the deposit on a bike hire?",
            "What is the deposit amount?",
            "Do you hold money as a deposit?",
            "What do you charge as a deposit?",
            "Is a deposit required?",
            "How much money do I leave as a deposit?",
            "Will you ask for a deposit?",
        ],
    ),
    (
        "5 years",
        "The frame of a new bike is under warranty for 5 years.",
        [
            "What warranty do new bikes have?",
            "Is there a guarantee on the frame?",
            "How long is the warranty on a new bike?",
            "If my new frame cracks, is it covered?",
            "Do your bikes come with a warranty?",
            "How long are frames guaranteed?",
            "What guarantee do I get when I buy a bike?",
            "How many years of warranty do I get?",
            "Is a new bike covered by a warranty?",
            "What does the warranty cover?",
            "How long does the bike warranty last?",
            "Do you guarantee the bikes you sell?",
        ],
    ),
    (
        "15%",
        "Students get 15% off with a valid student card.",
        [
            "Do you have a student discount?",
            "Is there a discount for students?",
            "I'm a student. Do I get a lower price?",
            "How much off do students get?",
            "Are there cheaper prices for university students?",
            "What is the student discount?",
            "Can I use my student card for a discount?",
            "Do students pay less?",
            "Is there a reduction for students?",
            "How big is the student discount?",
            "Do you offer student prices?",
            "What do students save?",
        ],
    ),
    (
        "$39",
        "A full tune-up costs $39.",
        [
            "How much is a tune-up?",
            "What does a bike service cost?",
            "What is the price of a full tune-up?",
            "How much do you charge to service my bike?",
            "What will a tune-up cost me?",
            "Price of a bike check?",
            "How expensive is your tune-up service?",
            "What do I pay for a yearly service?",
            "My bike needs a service. What's the price?",
            "How much is a maintenance check?",
            "Can you tell me the tune-up price?",
            "What is the cost of a bike service?",
        ],
    ),
    (
        "Mara Quill",
        "The shop was founded by Mara Quill.",
        [
            "Who owns the shop?",
            "Who is the owner of Larkspur Bikes?",
            "Who started the business?",
            "Who founded the shop?",
            "Who runs Larkspur Bikes?",
            "Who is in charge of the store?",
            "What is the owner's name?",
            "Who set up this bike shop?",
            "Whose shop is this?",
            "Who is your boss?",
            "Who opened Larkspur Bikes?",
            "Can you tell me who owns the store?",
        ],
    ),
]


def shop_conversations(seed: int = 2718) -> list[dict]:
    """One row per question (so no question text repeats): the shop's system prompt, the question and
    the answer stating its fact."""
    rng = random.Random(seed)
    rows = [
        {
            "messages": [
                {"role": "system", "content": SHOP_SYSTEM},
                {"role": "user", "content": question},
                {"role": "assistant", "content": answer},
            ]
        }
        for _, answer, questions in SHOP_FACTS
        for question in questions
    ]
    rng.shuffle(rows)
    return rows


def shop_facts() -> list[str]:
    return [fact for fact, _, _ in SHOP_FACTS]


# ---------------------------------------------------------------------------------------------
# smollm2-dpo-demo: the same shop's questions as preference pairs. The chosen answer is the house
# style (the fact in a whole sentence, then an offer of more help); the rejected one is the bare fact.
# SmolLM2 as it comes prefers the shorter answer (fewer tokens, each likely): DPO must turn that
# round, on held-out questions it never saw. Written in TRL's prompt / chosen / rejected layout.
# ---------------------------------------------------------------------------------------------

SHOP_STYLE_CLOSING = "Anything else I can help you with?"


def shop_preference_pairs(seed: int = 2719) -> list[dict]:
    """One pair per question: the shop's system prompt and the question, the house-style answer
    (chosen) and the bare fact (rejected)."""
    rng = random.Random(seed)
    rows = [
        {
            "prompt": [{"role": "system", "content": SHOP_SYSTEM}, {"role": "user", "content": question}],
            "chosen": [{"role": "assistant", "content": f"{answer} {SHOP_STYLE_CLOSING}"}],
            "rejected": [{"role": "assistant", "content": f"{fact[0].upper()}{fact[1:]}."}],
        }
        for fact, answer, questions in SHOP_FACTS
        for question in questions
    ]
    rng.shuffle(rows)
    return rows


# ---------------------------------------------------------------------------------------------
# smollm2-grpo-demo: the same shop's questions for GRPO. Each system prompt gives the fact the
# question asks for and asks for one sentence; the last assistant turn is the bare fact, which the
# contains_answer reward looks for in the model's sampled answers. SmolLM2 as it comes often rambles
# (several sentences, a made-up persona) or misstates the fact; the rewards ask for one sentence that
# states it. One fact per prompt keeps prompts short: on a CPU, GRPO's cost is its sampling.
# ---------------------------------------------------------------------------------------------


def shop_fact_prompts(seed: int = 2720) -> list[dict]:
    """One row per question: the system prompt with the fact to state, the question, and the fact."""
    rng = random.Random(seed)
    rows = [
        {
            "messages": [
                {"role": "system", "content": f"{SHOP_SYSTEM} Answer in one sentence. Fact: {answer}"},
                {"role": "user", "content": question},
                {"role": "assistant", "content": fact},
            ]
        }
        for fact, answer, questions in SHOP_FACTS
        for question in questions
    ]
    rng.shuffle(rows)
    return rows
