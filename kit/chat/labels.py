"""Rendered text to token ids and labels: each whole text encoded once, the supervised character
spans mapped to tokens (from byte lengths, or the tokenizer's offsets), pieces tokenized separately
where a token crosses a span boundary."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from itertools import count

from kit.chat.offsets import ByteTable
from kit.chat.rendered import Rendered

IGNORE_INDEX = -100


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
    with unpadded(backend):
        return (backend.encode_batch if offsets else backend.encode_batch_fast)(texts, add_special_tokens=False)


@contextmanager
def unpadded(backend):
    """The Rust backend without padding or truncation for the block. It is changed only where
    either is set: a change needs the backend to itself, which fails while ``encoder``'s thread
    encodes with it."""
    padding, truncation = backend.padding, backend.truncation
    if padding:
        backend.no_padding()
    if truncation:
        backend.no_truncation()
    try:
        yield backend
    finally:
        if padding:
            backend.enable_padding(**padding)
        if truncation:
            backend.enable_truncation(**truncation)


# Conversations rendered per encoding call: small first, so that the second thread starts early.
CHUNKS = (128, 256, 512, 1024)


def chunk_bounds(n: int):
    """``(start, end)`` of each chunk of ``n`` rows, in ``CHUNKS`` sizes (the last size repeated)."""
    start = 0
    for k in count():
        if start >= n:
            return
        end = min(n, start + CHUNKS[min(k, len(CHUNKS) - 1)])
        yield start, end
        start = end


@contextmanager
def encoder(tokenizer, background: bool):
    """``encode(texts, offsets)``, which returns a function that returns ``encode_whole``'s
    result. With ``background`` and a fast tokenizer, each call is encoded in one second thread,
    in order, while the caller goes on (the Rust tokenizer releases the GIL as it encodes); the
    backend stays unpadded throughout, so nothing changes it while that thread reads it."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or not background:

        def encode_now(texts: list[str], offsets: bool):
            result = encode_whole(tokenizer, texts, offsets)
            return lambda: result

        yield encode_now
        return
    pool = ThreadPoolExecutor(1, thread_name_prefix="kit-encode")
    with unpadded(backend):
        try:
            yield lambda texts, offsets: pool.submit(encode_whole, tokenizer, texts, offsets).result
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def encode_batch(tokenizer, texts: list[str]) -> list[list[int]]:
    """Token ids of each text, no special tokens added. Fast tokenizers go straight to their Rust
    backend (the Python wrapper around it doubles the time on short texts)."""
    return [e if isinstance(e, list) else e.ids for e in encode_whole(tokenizer, texts)]


def byte_offsets_agree(tokenizer, table: ByteTable, rendered: list[Rendered]) -> bool:
    """Token starts from byte lengths equal the tokenizer's own offsets on these conversations."""
    for r, encoding in zip(rendered, encode_whole(tokenizer, [r.text for r in rendered])):
        ids = encoding.ids
        by_bytes = table.token_at(ids, r.text)
        if by_bytes is None or any(
            by_bytes(c) != _offsets_token_at(encoding, ids, r.text)(c) for span in r.spans for c in span
        ):
            return False
    return True


def ids_and_labels(tokenizer, table: ByteTable | None, r: Rendered, encoding) -> dict:
    return labelled(tokenizer, table, r, encoding)[0]


def labelled(tokenizer, table: ByteTable | None, r: Rendered, encoding) -> tuple[dict, list[tuple[int, int]] | None]:
    """``{"input_ids", "labels"}`` and the token ranges supervised (None for a slow tokenizer)."""
    if isinstance(encoding, list):  # a slow tokenizer: no character positions
        ids, labels = encoding, None
    else:
        ids = encoding.ids  # converts from Rust on every access: once
        token_at = table.token_at(ids, r.text) if table is not None else None
        if token_at is None:
            if table is not None:  # the byte lengths do not add up for this text: ask the tokenizer
                [encoding] = encode_whole(tokenizer, [r.text])
            token_at = _offsets_token_at(encoding, ids, r.text)
        labels, ranges = _labels(ids, r.spans, token_at)
    if labels is None:
        # A token straddles a span boundary ("<think>\n" + "\n</think>" in R1): tokenize the
        # pieces separately, as TRL does with prompt and completion, so the prompt's tokens
        # are exactly those the model sees at inference.
        cuts = [0, *[c for span in r.spans for c in span], len(r.text)]
        ids, labels, ranges = [], [], []
        for k, piece in enumerate(encode_batch(tokenizer, [r.text[a:b] for a, b in zip(cuts, cuts[1:])])):
            if k % 2:
                ranges.append((len(ids), len(ids) + len(piece)))
            ids += piece
            labels += piece if k % 2 else [IGNORE_INDEX] * len(piece)
    return {"input_ids": ids, "labels": labels}, ranges


def _offsets_token_at(encoding, ids: list[int], text: str):
    """``token_at(cut)`` from the tokenizer's character offsets (None if a token crosses ``cut``
    or the tokenizer cannot say where a character went)."""

    def token_at(cut: int) -> int | None:
        if cut >= len(text):
            return len(ids)
        k = encoding.char_to_token(cut)
        return k if k is not None and encoding.token_to_chars(k)[0] == cut else None

    return token_at


def _labels(ids: list[int], spans: list[tuple[int, int]], token_at) -> tuple[list[int] | None, list[tuple[int, int]]]:
    """Labels from character spans and the token ranges they cover; labels None if a token
    crosses a span boundary."""
    labels = [IGNORE_INDEX] * len(ids)
    ranges = []
    for a, b in spans:
        i, j = token_at(a), token_at(b)
        if i is None or j is None:
            return None, []
        labels[i:j] = ids[i:j]
        ranges.append((i, j))
    return labels, ranges
