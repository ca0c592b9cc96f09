"""Assistant-only labels on the real Qwen tokenizer with Qwen3's official chat template."""

import pytest

from kit.chat.render import MaskError, render, render_prompt, tokenize_with_labels
from kit.display import label_segments
from kit.families import Family, get_family

from tests.conftest import trl_only_pieces

QWEN3 = get_family("qwen3")


def trained_segments(tokenizer, messages, family=QWEN3):
    ex = tokenize_with_labels(tokenizer, family, messages)
    return [text for text, supervised in label_segments(tokenizer, ex["input_ids"], ex["labels"]) if supervised]


def test_single_turn_trains_answer_and_end_of_turn_only(tokenizer):
    messages = [
        {"role": "user", "content": "Where is my order?"},
        {"role": "assistant", "content": "Dear customer, it ships today."},
    ]
    assert trained_segments(tokenizer, messages) == ["Dear customer, it ships today.<|im_end|>"]


def test_every_assistant_turn_is_trained_and_nothing_else(tokenizer):
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "你好 👋"},
        {"role": "assistant", "content": "你好！有什么可以帮您？"},
        {"role": "user", "content": "Return policy?"},
        {"role": "assistant", "content": "Thirty days."},
    ]
    assert trained_segments(tokenizer, messages) == ["你好！有什么可以帮您？<|im_end|>", "Thirty days.<|im_end|>"]
    ex = tokenize_with_labels(tokenizer, QWEN3, messages)
    text = "".join(t for t, sup in label_segments(tokenizer, ex["input_ids"], ex["labels"]) if not sup)
    assert "Be brief." in text and "Return policy?" in text and "<think>" in text  # context, never trained


def test_reasoning_is_trained_when_rendered(tokenizer):
    messages = [
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "4", "reasoning_content": "Add two and two."},
    ]
    assert trained_segments(tokenizer, messages) == ["<think>\nAdd two and two.\n</think>\n\n4<|im_end|>"]


def test_ids_are_the_rendered_text_without_extra_special_tokens(tokenizer):
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    ex = tokenize_with_labels(tokenizer, QWEN3, messages)
    assert ex["input_ids"] == tokenizer(render(tokenizer, messages), add_special_tokens=False)["input_ids"]
    assert tokenizer.convert_ids_to_tokens(ex["input_ids"][0]) == "<|im_start|>"
    assert len(ex["labels"]) == len(ex["input_ids"])


def test_inference_prompt_is_the_untrained_prefix(tokenizer):
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    prompt = render_prompt(tokenizer, QWEN3, messages[:1])
    assert prompt.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert render(tokenizer, messages) == prompt + "hello<|im_end|>\n"


def test_matches_trl_training_template_except_declared_differences(tokenizer):
    """TRL's qwen3_training.jinja marks assistant tokens with {% generation %} (and renders a think
    block in every turn, so only single-turn conversations compare). Ours differ in two declared
    places: the empty think block is prompt (it is in the enable_thinking=False generation prompt)
    and the newline after <|im_end|> is not trained (generation stops at <|im_end|>)."""
    messages = [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "Can I return it?"},
        {"role": "assistant", "content": "Dear customer, yes within 30 days."},
    ]
    assert trl_only_pieces(tokenizer, QWEN3, messages, "qwen3_training") == ["<think>\n\n</think>\n\n", "\n"]


def test_misaligned_templates_raise_instead_of_training_the_wrong_tokens(tokenizer):
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    with pytest.raises(MaskError, match="end-of-turn token '<\\|eot_id\\|>' not found"):
        tokenize_with_labels(tokenizer, Family(name="x", end_of_turn="<|eot_id|>", official_template="x"), messages)
    hides_content = (
        "{% for m in messages %}<|im_start|>{{ m.role }}\n"
        "{% if m.role == 'assistant' %}[answer]{% else %}{{ m.content }}{% endif %}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    original = tokenizer.chat_template
    try:
        tokenizer.chat_template = hides_content
        with pytest.raises(MaskError, match="does not render its content"):
            tokenize_with_labels(tokenizer, QWEN3, messages)
    finally:
        tokenizer.chat_template = original


def test_last_assistant_strategy_trains_only_the_final_turn(tokenizer):
    messages = [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "first"},
        {"role": "user", "content": "b"},
        {"role": "assistant", "content": "second"},
    ]
    ex = tokenize_with_labels(tokenizer, QWEN3, messages, train_on="last_assistant")
    assert [t for t, s in label_segments(tokenizer, ex["input_ids"], ex["labels"]) if s] == ["second<|im_end|>"]
    assert ex["input_ids"] == tokenize_with_labels(tokenizer, QWEN3, messages)["input_ids"]


def test_batch_encoding_equals_the_tokenizer_call(tokenizer, family_tokenizers):
    from kit.chat.labels import encode_batch

    texts = ["<|im_start|>user\n你好 👋<|im_end|>\n", "  leading spaces and\ttabs", "Dear customer,", ""]
    for tok in (tokenizer, family_tokenizers["llama-3.1"], family_tokenizers["gemma-3"]):
        assert encode_batch(tok, texts) == tok(texts, add_special_tokens=False)["input_ids"]


def test_a_tokenizer_left_padding_from_generation_does_not_pad_training_examples(tiny_model_dir):
    """HF keeps batch padding switched on in the Rust backend after a padded call (and saves it
    with the tokenizer); batched tokenization must still give each conversation its own length."""
    from transformers import AutoTokenizer

    from kit.chat.render import tokenize_many

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.padding_side = "left"
    tok(["short", "a much longer text than the first one"], padding=True)
    padding = tok.backend_tokenizer.padding
    assert padding is not None  # the state this test is about
    conversations = [
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
        [{"role": "user", "content": "a longer question " * 5}, {"role": "assistant", "content": "ok"}],
    ]
    assert tokenize_many(tok, QWEN3, conversations) == [tokenize_with_labels(tok, QWEN3, c) for c in conversations]
    assert tok.backend_tokenizer.padding == padding  # restored for the caller


def test_rows_the_byte_table_refuses_fall_back_to_the_tokenizers_offsets(tokenizer):
    """A decomposed accent (NFC changes its bytes) after rows that use byte lengths: same labels as
    the offsets-only path, and the cycle collector is back on afterwards."""
    import gc

    from kit.chat.render import tokenize_many

    plain = [[{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}] for i in range(3)]
    decomposed = [{"role": "user", "content": "Cafe\u0301?"}, {"role": "assistant", "content": "Un cafe\u0301."}]
    conversations = [*plain, decomposed]
    assert tokenize_many(tokenizer, QWEN3, conversations, verify=2) == [
        tokenize_with_labels(tokenizer, QWEN3, c) for c in conversations
    ]
    assert gc.isenabled()
