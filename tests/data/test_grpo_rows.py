"""GRPO's rows (kit.data.tokenize.grpo_rows): each conversation's prompt rendered as every family's
official template renders a generation prompt (what evaluate and the chat prompt the model with), the
first trained answer as the row's ``answer``, and the row's tools as JSON text."""

import json

import pytest

from kit.data.tokenize import grpo_rows
from kit.families import FAMILIES, get_family
from kit.recipes import resolve

RECIPE = {
    "model": {"id": "builtin:tiny-qwen3", "family": "qwen3", "max_seq_length": 512},
    "data": {"source": "x"},
    "train": {"method": "grpo", "grpo": {"rewards": [{"function": "contains_answer"}]}},
}
SYSTEM = {"role": "system", "content": "You answer with the capital."}
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "lookup",
            "description": "Look a city up.",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_the_prompt_is_the_familys_generation_prompt_and_the_first_answer_the_rows_answer(family_tokenizers, family):
    tokenizer, fam = family_tokenizers[family], get_family(family)
    recipe = resolve({**RECIPE, "model": {**RECIPE["model"], "family": family}})
    conversation = [
        SYSTEM,
        {"role": "user", "content": "France?"},
        {"role": "assistant", "content": "Paris"},
        {"role": "user", "content": "Spain?"},
        {"role": "assistant", "content": "Madrid"},
    ]
    [row] = grpo_rows(tokenizer, fam, [{"messages": conversation}], recipe)
    official = tokenizer.apply_chat_template(
        conversation[:2], tokenize=False, add_generation_prompt=True, **fam.inference_kwargs
    )
    assert row == {"prompt": official, "answer": "Paris", "tools": None}


def test_tools_travel_as_json_and_the_thinking_switch_is_evaluates(family_tokenizers):
    tokenizer, fam = family_tokenizers["qwen3"], get_family("qwen3")
    conversation = [{"role": "user", "content": "France?"}, {"role": "assistant", "content": "Paris"}]
    (on,) = grpo_rows(
        tokenizer, fam, [{"messages": conversation, "tools": TOOLS}], resolve({**RECIPE, "eval": {"thinking": True}})
    )
    (off,) = grpo_rows(
        tokenizer, fam, [{"messages": conversation, "tools": TOOLS}], resolve({**RECIPE, "eval": {"thinking": False}})
    )
    assert json.loads(on["tools"]) == TOOLS and '"name": "lookup"' in on["prompt"]
    assert off["prompt"] == tokenizer.apply_chat_template(
        conversation[:1], tools=TOOLS, tokenize=False, add_generation_prompt=True, enable_thinking=False
    )
    assert off["prompt"] != on["prompt"]


def test_grpo_prompts_are_tokenized_as_rendered_without_a_second_bos(family_tokenizers):
    """Llama 3.1's template writes <|begin_of_text|> itself. TRL tokenizes text prompts with the
    tokenizer's special tokens added: a tokenizer that adds a BOS (the Hub's Llama 3.1, Gemma 3) would
    put a second one in front. The kit's trainer tokenizes the prompt as rendered."""
    from types import SimpleNamespace

    from kit.training.trainers import KitGRPOTrainer

    tokenizer, fam = family_tokenizers["llama-3.1"], get_family("llama-3.1")
    conversation = [{"role": "user", "content": "France?"}, {"role": "assistant", "content": "Paris"}]
    [row] = grpo_rows(
        tokenizer,
        fam,
        [{"messages": conversation}],
        resolve({**RECIPE, "model": {**RECIPE["model"], "family": "llama-3.1"}}),
    )
    bos = tokenizer.bos_token_id
    [ids], images, fields = KitGRPOTrainer._tokenize_prompts(
        SimpleNamespace(processing_class=tokenizer), [row["prompt"]]
    )
    assert ids.count(bos) == 1 and ids[0] == bos and tokenizer.decode(ids) == row["prompt"]
    assert images is None and fields == {}
