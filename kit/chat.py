"""Render conversations with the model's chat template and build assistant-only loss labels.

Supervised spans come from rendering, not from marker strings: for assistant turn *i*, the
conversation up to *i* rendered with a generation prompt is the prompt; from there up to and
including the family's end-of-turn token is the answer. A rendering that does not line up that
way raises instead of silently training on the wrong tokens.
"""
from __future__ import annotations

from dataclasses import dataclass

from .bulk import gc_paused
from .families import Family
from .offsets import ByteTable, byte_length_table
from .templates import TrainingRenderer

IGNORE_INDEX = -100


class MaskError(ValueError):
    pass


@dataclass
class Rendered:
    text: str
    spans: list[tuple[int, int]]  # character spans of supervised text


def template_messages(family: Family, messages: list[dict]) -> list[dict]:
    """Canonical messages as the family's chat template reads them: ``reasoning`` moves to the
    family's reasoning field, into the content (``reasoning_inline``), or is left out."""
    if not family.reasoning_inline and not any("reasoning" in m for m in messages):
        return messages
    out = []
    for m in messages:
        reasoning = m.get("reasoning")
        m = {k: v for k, v in m.items() if k != "reasoning"}
        if m["role"] == "assistant" and family.reasoning_inline:
            m["content"] = f"<think>\n{reasoning or ''}\n</think>\n\n{m['content']}"
        elif reasoning and family.reasoning_field:
            m[family.reasoning_field] = reasoning
        out.append(m)
    return out


def render(tokenizer, messages: list[dict], **kwargs) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, **kwargs)


def render_prompt(tokenizer, family: Family, messages: list[dict], **overrides) -> str:
    """The text a model sees at inference when asked to answer ``messages``."""
    return render(tokenizer, template_messages(family, messages), add_generation_prompt=True,
                  **{**family.inference_kwargs, **overrides})


def _close_span(text: str, family: Family, message: dict, i: int, start: int) -> tuple[int, int]:
    """From ``start`` through the first end-of-turn token after the (canonical) message's answer."""
    content = message["content"].strip()
    at = text.find(content, start)
    if at < 0:
        raise MaskError(f"assistant turn {i}: its content is not inside the supervised span")
    after = at + len(content)
    stops = [(text.find(t, after), t) for t in family.end_tokens]
    stops = [(p, t) for p, t in stops if p >= 0]
    if not stops:
        raise MaskError(f"assistant turn {i}: end-of-turn token {family.end_of_turn!r} not found after it")
    stop, token = min(stops)
    return start, stop + len(token)


def trained_turns(messages: list[dict], train_on: str) -> set[int]:
    if train_on not in ("all_assistant", "last_assistant"):
        raise ValueError(f"train_on must be all_assistant or last_assistant, got {train_on!r}")
    turns = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    return set(turns[-1:] if train_on == "last_assistant" else turns)


def render_training_text(tokenizer, family: Family, messages: list[dict], renderer: TrainingRenderer | None = None) -> str:
    """The conversation as trained: the chat template's rendering, with the family's declared
    differences (``training_patch``, ``training_suffix``). Without a ``renderer``: transformers'
    ``apply_chat_template``, the reference."""
    renderer = renderer or TrainingRenderer(tokenizer, family, fast=False)
    return renderer(messages) + family.training_suffix


def render_with_spans(tokenizer, family: Family, messages: list[dict], train_on: str = "all_assistant") -> Rendered:
    """The exact method: each trained assistant turn starts where the conversation before it,
    rendered with a generation prompt (the longest matching variant), ends."""
    canonical, messages = messages, template_messages(family, messages)
    text = render_training_text(tokenizer, family, messages)
    spans: list[tuple[int, int]] = []
    cursor = 0
    for i in sorted(trained_turns(messages, train_on)):
        prompts = [render(tokenizer, messages[:i], add_generation_prompt=True, **kw) for kw in family.prompt_variants]
        matching = [p for p in prompts if len(p) >= cursor and text.startswith(p)]
        if not matching:
            raise MaskError(f"assistant turn {i}: the chat template does not render it after its own generation prompt")
        spans.append(_close_span(text, family, canonical[i], i, len(max(matching, key=len))))
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


def spans_from_prompts(tokenizer, family: Family, messages: list[dict], prompts: list[str],
                       train_on: str = "all_assistant", renderer: TrainingRenderer | None = None) -> Rendered:
    """The fast method, one render per conversation (by ``renderer``, default: the fast one): each
    trained assistant turn starts after the first generation prompt that follows the previous
    turn's text (the longest one at that place)."""
    canonical, messages = messages, template_messages(family, messages)
    text = render_training_text(tokenizer, family, messages, renderer or TrainingRenderer(tokenizer, family))
    trained = trained_turns(messages, train_on)
    spans: list[tuple[int, int]] = []
    cursor = 0
    for i, message in enumerate(messages):
        if i not in trained:
            # Skip past this turn's text, so a generation prompt typed inside it is never taken.
            at = text.find(message["content"].strip(), cursor)
            if at >= 0:
                cursor = at + len(message["content"].strip())
            elif message["role"] != "assistant":  # untrained assistant turns may be re-rendered
                raise MaskError(f"{message['role']} turn {i}: its content is not in the rendered text")
            continue
        found = [(text.find(p, cursor), -len(p), p) for p in prompts]
        found = [f for f in found if f[0] >= 0]
        if not found:
            raise MaskError(f"assistant turn {i}: no generation prompt before it")
        at, _, prompt = min(found)
        spans.append(_close_span(text, family, canonical[i], i, at + len(prompt)))
        cursor = spans[-1][1]
    return Rendered(text, spans)


def tokenize_with_labels(tokenizer, family: Family, messages: list[dict], train_on: str | None = None) -> dict:
    """``input_ids`` of the rendered conversation and ``labels`` with -100 outside the trained
    assistant spans: every assistant turn (``all_assistant``) or the last one (``last_assistant``);
    None: the family's default."""
    [result] = tokenize_many(tokenizer, family, [messages], train_on, verify=0)
    if isinstance(result, MaskError):
        raise result
    return result


VERIFY_ROWS = 32


def encode_whole(tokenizer, texts: list[str], offsets: bool = True) -> list:
    """Each whole text encoded: ``tokenizers.Encoding`` objects (ids, and with ``offsets`` the
    character positions of tokens) from a fast tokenizer, bare id lists from a slow one. Never
    padded or truncated, whatever padding a tokenizer kept from earlier batched calls (HF leaves it
    set on the Rust backend, and a tokenizer saved after generation carries it in tokenizer.json)."""
    if not texts:
        return []
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return tokenizer(texts, add_special_tokens=False)["input_ids"]
    padding, truncation = backend.padding, backend.truncation
    backend.no_padding()
    backend.no_truncation()
    try:
        return (backend.encode_batch if offsets else backend.encode_batch_fast)(texts, add_special_tokens=False)
    finally:
        if padding:
            backend.enable_padding(**padding)
        if truncation:
            backend.enable_truncation(**truncation)


def encode_batch(tokenizer, texts: list[str]) -> list[list[int]]:
    """Token ids of each text, no special tokens added. Fast tokenizers go straight to their Rust
    backend (the Python wrapper around it doubles the time on short texts)."""
    return [e if isinstance(e, list) else e.ids for e in encode_whole(tokenizer, texts)]


def tokenize_many(tokenizer, family: Family, conversations: list[list[dict]], train_on: str | None = None,
                  verify: int = VERIFY_ROWS) -> list[dict | MaskError]:
    """Tokenize with labels; a conversation that cannot be masked yields its MaskError instead.

    The fast method is used when it agrees with the exact one on the first ``verify``
    conversations (both are rendering-based; the exact one renders once per assistant turn with
    transformers' sandboxed ``apply_chat_template``, the fast one once per conversation, with the
    template compiled outside the sandbox when the kit trusts it); ``verify=0`` uses the exact
    method throughout."""
    with gc_paused():
        return _tokenize_many(tokenizer, family, conversations, train_on or family.default_train_on, verify)


def _tokenize_many(tokenizer, family: Family, conversations: list[list[dict]], train_on: str,
                   verify: int) -> list[dict | MaskError]:
    prompts = generation_prompts(tokenizer, family) if verify else None
    renderer = TrainingRenderer(tokenizer, family) if prompts is not None else None

    def attempt(method, *args):
        try:
            return method(tokenizer, family, *args)
        except MaskError as e:
            return e

    for messages in conversations[:verify] if prompts is not None else []:
        exact = attempt(render_with_spans, messages, train_on)
        fast = attempt(spans_from_prompts, messages, prompts, train_on, renderer)
        agree = (isinstance(exact, MaskError) and isinstance(fast, MaskError)) or (
            isinstance(exact, Rendered) and isinstance(fast, Rendered) and (fast.text, fast.spans) == (exact.text, exact.spans))
        if not agree:
            prompts = None
            break
    rendered = [attempt(spans_from_prompts, m, prompts, train_on, renderer) if prompts is not None
                else attempt(render_with_spans, m, train_on) for m in conversations]
    masked = [r for r in rendered if isinstance(r, Rendered)]
    table = byte_length_table(tokenizer) if verify and masked else None
    if table is not None and not _byte_offsets_agree(tokenizer, table, masked[:verify]):
        table = None
    encoded = iter(_ids_and_labels(tokenizer, table, r, e)
                   for r, e in zip(masked, encode_whole(tokenizer, [r.text for r in masked], offsets=table is None)))
    return [r if isinstance(r, MaskError) else next(encoded) for r in rendered]


def _byte_offsets_agree(tokenizer, table: ByteTable, rendered: list[Rendered]) -> bool:
    """Token starts from byte lengths equal the tokenizer's own offsets on these conversations."""
    for r, encoding in zip(rendered, encode_whole(tokenizer, [r.text for r in rendered])):
        ids = encoding.ids
        by_bytes = table.token_at(ids, r.text)
        if by_bytes is None or any(by_bytes(c) != _offsets_token_at(encoding, ids, r.text)(c)
                                   for span in r.spans for c in span):
            return False
    return True


def _ids_and_labels(tokenizer, table: ByteTable | None, r: Rendered, encoding) -> dict:
    if isinstance(encoding, list):  # a slow tokenizer: no character positions
        ids, labels = encoding, None
    else:
        ids = encoding.ids  # converts from Rust on every access: once
        token_at = table.token_at(ids, r.text) if table is not None else None
        if token_at is None:
            if table is not None:  # the byte lengths do not add up for this text: ask the tokenizer
                [encoding] = encode_whole(tokenizer, [r.text])
            token_at = _offsets_token_at(encoding, ids, r.text)
        labels = _labels(ids, r.spans, token_at)
    if labels is None:
        # A token straddles a span boundary ("<think>\n" + "\n</think>" in R1): tokenize the
        # pieces separately, as TRL does with prompt and completion, so the prompt's tokens
        # are exactly those the model sees at inference.
        cuts = [0, *[c for span in r.spans for c in span], len(r.text)]
        ids, labels = [], []
        for k, piece in enumerate(encode_batch(tokenizer, [r.text[a:b] for a, b in zip(cuts, cuts[1:])])):
            ids += piece
            labels += piece if k % 2 else [IGNORE_INDEX] * len(piece)
    return {"input_ids": ids, "labels": labels}


def _offsets_token_at(encoding, ids: list[int], text: str):
    """``token_at(cut)`` from the tokenizer's character offsets (None if a token crosses ``cut``
    or the tokenizer cannot say where a character went)."""
    def token_at(cut: int) -> int | None:
        if cut >= len(text):
            return len(ids)
        k = encoding.char_to_token(cut)
        return k if k is not None and encoding.token_to_chars(k)[0] == cut else None
    return token_at


def _labels(ids: list[int], spans: list[tuple[int, int]], token_at) -> list[int] | None:
    """Labels from character spans, or None if a token crosses a span boundary."""
    labels = [IGNORE_INDEX] * len(ids)
    for a, b in spans:
        i, j = token_at(a), token_at(b)
        if i is None or j is None:
            return None
        labels[i:j] = ids[i:j]
    return labels
