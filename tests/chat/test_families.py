"""Every family: rendering is the official template's, no doubled BOS, and TRL's generation-marked
training templates agree where they exist (what exactly is trained: tests/chat/test_masks.py)."""

import pytest

from kit.chat.render import render_prompt, tokenize_with_labels
from kit.display import label_segments
from kit.families import FAMILIES, get_family

from tests.conftest import trl_only_pieces

CONVERSATIONS = {
    "single": [{"role": "user", "content": "Where is my order?"}, {"role": "assistant", "content": "It ships today."}],
    "system": [
        {"role": "system", "content": "You are a support agent."},
        {"role": "user", "content": "Can I return it?"},
        {"role": "assistant", "content": "Yes, within 30 days."},
    ],
    "multi_turn_cjk_emoji": [
        {"role": "user", "content": "你好 👋"},
        {"role": "assistant", "content": "你好！有什么可以帮您？😊"},
        {"role": "user", "content": "退货政策？"},
        {"role": "assistant", "content": "三十天内可以退货。"},
    ],
    "empty_system": [
        {"role": "system", "content": ""},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
    ],
}
# Reasoning in canonical form; each family renders it by its own convention (or drops it).
REASONING = {
    "reasoning": [
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "4", "reasoning": "Add two and two."},
    ],
    "reasoning_multi_turn": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "4", "reasoning": "Add."},
        {"role": "user", "content": "再乘以 3？🤔"},
        {"role": "assistant", "content": "12", "reasoning": "4 × 3 = 12."},
    ],
}


@pytest.fixture(params=sorted(FAMILIES))
def family(request):
    return get_family(request.param)


def trained(tokenizer, family, messages):
    ex = tokenize_with_labels(tokenizer, family, messages)
    return [t for t, sup in label_segments(tokenizer, ex["input_ids"], ex["labels"]) if sup], ex


def test_family_table_is_complete_for_shipped_recipes():
    from kit.recipes import available, load_recipe

    assert {load_recipe(name)[1].model.family for name in available()} <= set(FAMILIES)


def declared_training_text(family, official: str, messages: list[dict]) -> str:
    """The official rendering with the differences the family table declares, written out."""
    declared = official + family.training_suffix
    if family.name == "deepseek-r1-distill":
        # The official template keeps what follows </think> ("\n\n" + answer); the kit's trained
        # (last) turn keeps its think block before that.
        head, answer = declared.rsplit("<｜Assistant｜>", 1)
        declared = f"{head}<｜Assistant｜><think>\n{messages[-1].get('reasoning', '')}\n</think>{answer}"
    return declared


@pytest.mark.parametrize("name", sorted({**CONVERSATIONS, **REASONING}))
def test_text_is_the_official_templates_and_bos_is_not_doubled(family_tokenizers, family, name):
    from kit.chat.render import template_messages

    tokenizer, messages = family_tokenizers[family.name], {**CONVERSATIONS, **REASONING}[name]
    ex = tokenize_with_labels(tokenizer, family, messages)
    official = tokenizer.apply_chat_template(template_messages(family, messages), tokenize=False)
    # The only differences from the official rendering are the ones the family table declares.
    declared = declared_training_text(family, official, messages)
    assert tokenizer.decode(ex["input_ids"]) == declared
    assert (declared == official) == (family.training_patch is None and not family.training_suffix)
    if tokenizer.bos_token and official.startswith(tokenizer.bos_token):
        # Tokenizing adds no BOS of its own (SmolLM2's BOS is <|im_start|>, which opens every turn).
        assert ex["input_ids"].count(tokenizer.bos_token_id) == official.count(tokenizer.bos_token)
    # Reasoning appears where the family has a channel for it, never for families without one.
    last = messages[-1]
    if last.get("reasoning"):
        assert (last["reasoning"] in declared) == bool(family.reasoning_field or family.reasoning_inline)
    # The inference prompt (thinking on for a reasoning answer) is the untrained prefix of the text.
    thinking = {family.thinking_kwarg: True} if last.get("reasoning") and family.thinking_kwarg else {}
    prompt = render_prompt(tokenizer, family, messages[:-1], **thinking)
    assert declared.startswith(prompt)


@pytest.mark.parametrize(
    "name, training_template, trl_only",
    [
        ("qwen2.5", "qwen2_5_training", ["\n", "\n"]),  # the prompt's last newline, the one after <|im_end|>
        ("gemma-3", "gemma3_training", ["\n"]),  # the newline after <end_of_turn>
        ("gpt-oss", "gptoss_training", ["<|start|>assistant"]),  # the generation prompt itself
    ],
)
def test_masks_match_trls_training_templates(family_tokenizers, name, training_template, trl_only):
    """TRL's {% generation %} masks cover ours; what only TRL trains is declared, per turn."""
    family, tokenizer = get_family(name), family_tokenizers[name]
    reasoning = [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4", "reasoning": "Add."}]
    for messages in [*CONVERSATIONS.values(), reasoning]:
        turns = sum(m["role"] == "assistant" for m in messages)
        assert trl_only_pieces(tokenizer, family, messages, training_template) == trl_only * turns


def test_a_tokenizer_without_template_gets_the_official_one(family_tokenizers):
    from kit.families import ensure_chat_template, official_template
    from kit.demos.tiny import vocab_tokenizer

    bare = vocab_tokenizer("llama-bpe")
    bare.chat_template = None
    family = get_family("llama-3.1")
    assert ensure_chat_template(bare, family).chat_template == official_template(family)


def test_fast_spans_equal_the_exact_method(family_tokenizers, family):
    """tokenize_many's one-render path agrees with rendering every turn's prompt, including
    reasoning turns and a user message that types a generation prompt itself."""
    from kit.chat.render import generation_prompts, render_with_spans, spans_from_prompts, tokenize_many

    tokenizer = family_tokenizers[family.name]
    prompts = generation_prompts(tokenizer, family)
    assert prompts
    tricky = [
        {"role": "user", "content": "What does " + prompts[0].strip() + " mean?"},
        {"role": "assistant", "content": "A turn header."},
    ]
    reasoning = [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4", "reasoning": "Add."}]
    conversations = list(CONVERSATIONS.values()) + [tricky, reasoning]
    for messages in conversations:
        exact = render_with_spans(tokenizer, family, messages, family.default_train_on)
        fast = spans_from_prompts(tokenizer, family, messages, prompts, family.default_train_on)
        assert (fast.text, fast.spans) == (exact.text, exact.spans)
    assert tokenize_many(tokenizer, family, conversations) == [
        tokenize_with_labels(tokenizer, family, m) for m in conversations
    ]
