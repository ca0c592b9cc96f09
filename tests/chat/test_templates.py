"""The fast renderer: trusted templates (the kit's and TRL's copies of the official ones) render
outside jinja's sandbox, exactly as transformers renders them; any other template stays sandboxed."""

import jinja2
import pytest

from kit.families import FAMILIES, get_family
from kit.chat.templates import TrainingRenderer

CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "你好 👋"},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": "Bye"},
    {"role": "assistant", "content": "Bye."},
]


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_official_templates_render_fast_and_identically(family_tokenizers, name):
    family, tokenizer = get_family(name), family_tokenizers[name]
    fast, reference = TrainingRenderer(tokenizer, family), TrainingRenderer(tokenizer, family, fast=False)
    assert fast.fast and not reference.fast
    for kwargs in ({}, {"add_generation_prompt": True}, *family.prompt_variants):
        assert fast(CONVERSATION, **kwargs) == reference(CONVERSATION, **kwargs)


def test_any_other_template_stays_in_the_sandbox(tokenizer):
    family = get_family("qwen3")
    original = tokenizer.chat_template
    try:
        tokenizer.chat_template = original + " "  # one byte from trusted: not trusted
        renderer = TrainingRenderer(tokenizer, family)
        assert not renderer.fast
        assert renderer(CONVERSATION) == tokenizer.apply_chat_template(CONVERSATION, tokenize=False)
        tokenizer.chat_template = "{{ messages.__class__.__mro__ }}"
        with pytest.raises(jinja2.exceptions.SecurityError):
            TrainingRenderer(tokenizer, family)(CONVERSATION)
    finally:
        tokenizer.chat_template = original


def test_trls_training_templates_render_fast_too(tokenizer):
    """TRL's *_training templates mark answers with {% generation %}: trusted, rendered outside the
    sandbox to the same text (the blocks' bodies)."""
    from pathlib import Path

    import trl

    family = get_family("qwen3")
    original = tokenizer.chat_template
    try:
        tokenizer.chat_template = (Path(trl.__file__).parent / "chat_templates" / "qwen3_training.jinja").read_text()
        fast = TrainingRenderer(tokenizer, family)
        assert fast.fast
        assert fast(CONVERSATION) == tokenizer.apply_chat_template(CONVERSATION, tokenize=False)
    finally:
        tokenizer.chat_template = original
