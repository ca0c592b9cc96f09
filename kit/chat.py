"""Render conversations with the model's chat template and build assistant-only loss labels.

Supervised spans come from rendering, not from marker strings: for assistant turn *i*, the
conversation up to *i* rendered with a generation prompt is the prompt; from there up to and
including the family's end-of-turn token is the answer. A rendering that does not line up that
way raises instead of silently training on the wrong tokens.
"""
from __future__ import annotations

from dataclasses import dataclass

from .families import Family

IGNORE_INDEX = -100


class MaskError(ValueError):
    pass


@dataclass
class Rendered:
    text: str
    spans: list[tuple[int, int]]  # character spans of supervised text


def template_messages(family: Family, messages: list[dict]) -> list[dict]:
    """Canonical messages as the family's chat template reads them: ``reasoning`` moves to the
    family's reasoning field, or is left out where the family has none."""
    out = []
    for m in messages:
        m = {k: v for k, v in m.items() if k != "reasoning"} | (
            {family.reasoning_field: m["reasoning"]} if m.get("reasoning") and family.reasoning_field else {})
        out.append(m)
    return out


def render(tokenizer, messages: list[dict], **kwargs) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, **kwargs)


def render_prompt(tokenizer, family: Family, messages: list[dict], **overrides) -> str:
    """The text a model sees at inference when asked to answer ``messages``."""
    return render(tokenizer, template_messages(family, messages), add_generation_prompt=True,
                  **{**family.inference_kwargs, **overrides})


def render_with_spans(tokenizer, family: Family, messages: list[dict]) -> Rendered:
    messages = template_messages(family, messages)
    text = render(tokenizer, messages)
    spans: list[tuple[int, int]] = []
    cursor = 0
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prompts = [render(tokenizer, messages[:i], add_generation_prompt=True, **kw) for kw in family.prompt_variants]
        matching = [p for p in prompts if len(p) >= cursor and text.startswith(p)]
        if not matching:
            raise MaskError(f"assistant turn {i}: the chat template does not render it after its own generation prompt")
        start = len(max(matching, key=len))
        stop = text.find(family.end_of_turn, start)
        if stop < 0:
            raise MaskError(f"assistant turn {i}: end-of-turn token {family.end_of_turn!r} not found after it")
        end = stop + len(family.end_of_turn)
        if message["content"].strip() not in text[start:end]:
            raise MaskError(f"assistant turn {i}: its content is not inside the supervised span")
        spans.append((start, end))
        cursor = end
    return Rendered(text, spans)


def tokenize_with_labels(tokenizer, family: Family, messages: list[dict]) -> dict:
    """``input_ids`` of the rendered conversation and ``labels`` with -100 outside assistant spans."""
    rendered = render_with_spans(tokenizer, family, messages)
    # The template already writes any BOS; adding special tokens again would double it.
    enc = tokenizer(rendered.text, add_special_tokens=False, return_offsets_mapping=True)
    labels = []
    span_iter = iter(rendered.spans)
    span = next(span_iter, None)
    for token_id, (s, _e) in zip(enc["input_ids"], enc["offset_mapping"]):
        while span is not None and s >= span[1]:
            span = next(span_iter, None)
        labels.append(token_id if span is not None and span[0] <= s < span[1] else IGNORE_INDEX)
    return {"input_ids": enc["input_ids"], "labels": labels}
