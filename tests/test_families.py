"""Every family: rendering is the official template's, masks are exactly the assistant turns
(content + end-of-turn token), no doubled BOS; and TRL's generation-marked training templates
agree where they exist."""
from pathlib import Path

import pytest

from kit.chat import IGNORE_INDEX, render, render_prompt, tokenize_with_labels
from kit.display import label_segments
from kit.families import FAMILIES, get_family

CONVERSATIONS = {
    "single": [{"role": "user", "content": "Where is my order?"},
               {"role": "assistant", "content": "It ships today."}],
    "system": [{"role": "system", "content": "You are a support agent."},
               {"role": "user", "content": "Can I return it?"},
               {"role": "assistant", "content": "Yes, within 30 days."}],
    "multi_turn_cjk_emoji": [{"role": "user", "content": "你好 👋"},
                             {"role": "assistant", "content": "你好！有什么可以帮您？😊"},
                             {"role": "user", "content": "退货政策？"},
                             {"role": "assistant", "content": "三十天内可以退货。"}],
}


@pytest.fixture(params=sorted(FAMILIES))
def family(request):
    return get_family(request.param)


def trained(tokenizer, family, messages):
    ex = tokenize_with_labels(tokenizer, family, messages)
    return [t for t, sup in label_segments(tokenizer, ex["input_ids"], ex["labels"]) if sup], ex


def test_family_table_is_complete_for_shipped_recipes():
    from kit.recipes import available, load_recipe

    assert {load_recipe(name)[1]["model"]["family"] for name in available()} <= set(FAMILIES)


@pytest.mark.parametrize("name", sorted(CONVERSATIONS))
def test_masks_are_the_assistant_turns(family_tokenizers, family, name):
    tokenizer, messages = family_tokenizers[family.name], CONVERSATIONS[name]
    segments, ex = trained(tokenizer, family, messages)
    answers = [m["content"] for m in messages if m["role"] == "assistant"]
    assert segments == [a + family.end_of_turn for a in answers]
    # Everything else is context: the text of every non-assistant turn sits in unsupervised tokens.
    context = "".join(t for t, sup in label_segments(tokenizer, ex["input_ids"], ex["labels"]) if not sup)
    assert all(m["content"] in context for m in messages if m["role"] != "assistant")


def test_text_is_the_official_templates_and_bos_is_not_doubled(family_tokenizers, family):
    tokenizer = family_tokenizers[family.name]
    messages = CONVERSATIONS["system"]
    ex = tokenize_with_labels(tokenizer, family, messages)
    official = tokenizer.apply_chat_template(messages, tokenize=False)
    assert tokenizer.decode(ex["input_ids"]) == official
    if tokenizer.bos_token and official.startswith(tokenizer.bos_token):
        assert ex["input_ids"].count(tokenizer.bos_token_id) == 1
    # The inference prompt is the untrained prefix of the rendered conversation.
    prompt = render_prompt(tokenizer, family, messages[:-1])
    assert official.startswith(prompt)
    assert render(tokenizer, messages).startswith(prompt)


@pytest.mark.parametrize("name, training_template", [("qwen2.5", "qwen2_5_training"), ("gemma-3", "gemma3_training")])
def test_masks_match_trls_training_templates(family_tokenizers, name, training_template):
    import trl

    family, tokenizer = get_family(name), family_tokenizers[name]
    template = (Path(trl.__file__).parent / "chat_templates" / f"{training_template}.jinja").read_text()
    for messages in CONVERSATIONS.values():
        ref = tokenizer.apply_chat_template(messages, chat_template=template, tokenize=True, return_dict=True,
                                            return_assistant_tokens_mask=True)
        ours = tokenize_with_labels(tokenizer, family, messages)
        assert ours["input_ids"] == ref["input_ids"]
        mask = [label != IGNORE_INDEX for label in ours["labels"]]
        # Declared difference: TRL also marks the newline after the end-of-turn token.
        extra = [i for i, (o, r) in enumerate(zip(mask, ref["assistant_masks"])) if r and not o]
        assert all(r for o, r in zip(mask, ref["assistant_masks"]) if o)
        assert all(tokenizer.decode([ref["input_ids"][i]]) == "\n" for i in extra)


def test_a_tokenizer_without_template_gets_the_official_one(family_tokenizers):
    from kit.families import ensure_chat_template, official_template
    from kit.tiny import vocab_tokenizer

    bare = vocab_tokenizer("llama-bpe")
    bare.chat_template = None
    family = get_family("llama-3.1")
    assert ensure_chat_template(bare, family).chat_template == official_template(family)


def test_fast_spans_equal_the_exact_method(family_tokenizers, family):
    """tokenize_many's one-render path agrees with rendering every turn's prompt, including
    reasoning turns and a user message that types a generation prompt itself."""
    from kit.chat import generation_prompts, render_with_spans, spans_from_prompts, tokenize_many

    tokenizer = family_tokenizers[family.name]
    prompts = generation_prompts(tokenizer, family)
    assert prompts
    tricky = [{"role": "user", "content": "What does " + prompts[0].strip() + " mean?"},
              {"role": "assistant", "content": "A turn header."}]
    reasoning = [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4", "reasoning": "Add."}]
    conversations = list(CONVERSATIONS.values()) + [tricky, reasoning]
    for messages in conversations:
        exact = render_with_spans(tokenizer, family, messages)
        fast = spans_from_prompts(tokenizer, family, messages, prompts)
        assert (fast.text, fast.spans) == (exact.text, exact.spans)
    assert tokenize_many(tokenizer, family, conversations) == [tokenize_with_labels(tokenizer, family, m)
                                                                for m in conversations]
