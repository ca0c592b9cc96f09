"""Render conversations with the model's chat template and build assistant-only loss labels.

Supervised spans come from rendering, not from marker strings: for assistant turn *i*, the
conversation up to *i* rendered with a generation prompt is the prompt; from there up to and
including the family's end-of-turn token is the answer. A rendering that does not line up that
way raises instead of silently training on the wrong tokens.
"""
from __future__ import annotations

from bisect import bisect_left
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
    if not any("reasoning" in m for m in messages):
        return messages
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


def _close_span(text: str, family: Family, message: dict, i: int, start: int) -> tuple[int, int]:
    stop = text.find(family.end_of_turn, start)
    if stop < 0:
        raise MaskError(f"assistant turn {i}: end-of-turn token {family.end_of_turn!r} not found after it")
    end = stop + len(family.end_of_turn)
    if message["content"].strip() not in text[start:end]:
        raise MaskError(f"assistant turn {i}: its content is not inside the supervised span")
    return start, end


def render_with_spans(tokenizer, family: Family, messages: list[dict]) -> Rendered:
    """The exact method: each assistant turn starts where the conversation before it, rendered
    with a generation prompt (the longest matching variant), ends."""
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
        spans.append(_close_span(text, family, message, i, len(max(matching, key=len))))
        cursor = spans[-1][1]
    return Rendered(text, spans)


def generation_prompts(tokenizer, family: Family) -> list[str] | None:
    """The text each generation-prompt variant appends after a user turn, found by rendering a
    probe conversation; None if the template does not append it (then only the exact method)."""
    probe = [{"role": "user", "content": "probe"}]
    base = render(tokenizer, probe)
    out = []
    for kw in family.prompt_variants:
        full = render(tokenizer, probe, add_generation_prompt=True, **kw)
        if not full.startswith(base) or len(full) == len(base):
            return None
        out.append(full[len(base):])
    return out


def spans_from_prompts(tokenizer, family: Family, messages: list[dict], prompts: list[str]) -> Rendered:
    """The fast method, one render per conversation: each assistant turn starts after the first
    generation prompt that follows the previous turn's content (the longest one at that place)."""
    messages = template_messages(family, messages)
    text = render(tokenizer, messages)
    spans: list[tuple[int, int]] = []
    cursor = 0
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            # Skip past this turn's text, so a generation prompt typed inside it is never taken.
            at = text.find(message["content"].strip(), cursor)
            if at < 0:
                raise MaskError(f"{message['role']} turn {i}: its content is not in the rendered text")
            cursor = at + len(message["content"].strip())
            continue
        found = [(text.find(p, cursor), -len(p), p) for p in prompts]
        found = [f for f in found if f[0] >= 0]
        if not found:
            raise MaskError(f"assistant turn {i}: no generation prompt before it")
        at, _, prompt = min(found)
        spans.append(_close_span(text, family, message, i, at + len(prompt)))
        cursor = spans[-1][1]
    return Rendered(text, spans)


def _labels(ids: list[int], offsets, spans: list[tuple[int, int]]) -> list[int]:
    """Each token keeps its id as label if it starts inside a span, else IGNORE_INDEX."""
    starts = [start for start, _ in offsets]
    labels = [IGNORE_INDEX] * len(ids)
    for a, b in spans:
        i, j = bisect_left(starts, a), bisect_left(starts, b)
        labels[i:j] = ids[i:j]
    return labels


def tokenize_with_labels(tokenizer, family: Family, messages: list[dict], train_on: str = "all_assistant") -> dict:
    """``input_ids`` of the rendered conversation and ``labels`` with -100 outside the trained
    assistant spans: every assistant turn (``all_assistant``) or the last one (``last_assistant``)."""
    [result] = tokenize_many(tokenizer, family, [messages], train_on, verify=0)
    if isinstance(result, MaskError):
        raise result
    return result


VERIFY_ROWS = 32


def tokenize_many(tokenizer, family: Family, conversations: list[list[dict]], train_on: str = "all_assistant",
                  verify: int = VERIFY_ROWS) -> list[dict | MaskError]:
    """Tokenize with labels; a conversation that cannot be masked yields its MaskError instead.

    The fast method is used when it agrees with the exact one on the first ``verify``
    conversations (both are rendering-based; the exact one renders once per assistant turn);
    ``verify=0`` uses the exact method throughout."""
    prompts = generation_prompts(tokenizer, family) if verify else None
    if prompts is not None:
        for messages in conversations[:verify]:
            try:
                exact = render_with_spans(tokenizer, family, messages)
            except MaskError:
                continue
            try:
                fast = spans_from_prompts(tokenizer, family, messages, prompts)
            except MaskError:
                fast = None
            if fast is None or (fast.text, fast.spans) != (exact.text, exact.spans):
                prompts = None
                break
    rendered: list[Rendered | MaskError] = []
    for messages in conversations:
        try:
            rendered.append(spans_from_prompts(tokenizer, family, messages, prompts) if prompts is not None
                            else render_with_spans(tokenizer, family, messages))
        except MaskError as e:
            rendered.append(e)
    texts = [r.text for r in rendered if isinstance(r, Rendered)]
    # One batched call (the Rust tokenizer's fast path). The template already writes any BOS;
    # adding special tokens again would double it.
    enc = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True) if texts else {}
    encoded = zip(enc.get("input_ids", []), enc.get("offset_mapping", []))
    out: list[dict | MaskError] = []
    for r in rendered:
        if isinstance(r, MaskError):
            out.append(r)
            continue
        ids, offsets = next(encoded)
        spans = r.spans[-1:] if train_on == "last_assistant" else r.spans
        out.append({"input_ids": ids, "labels": _labels(ids, offsets, spans)})
    return out
