"""Where each token starts, for byte-level BPE tokenizers (Qwen, Llama 3, gpt-oss, GLM-4), without
asking the tokenizer to track offsets.

A byte-level BPE token is a fixed run of bytes of the text, so cumulative byte lengths of the ids
give each token's start. Encoding without offsets (``encode_batch_fast``) is 15-20% faster, and
for label masks only a few boundaries per conversation are needed. The table applies only when
the text reaches the model unchanged (no normalizer, or NFC on NFC text); each conversation's
byte total is checked, and ``kit.chat.render.tokenize_many`` compares the labels with those from the
tokenizer's own offsets on the first rows before relying on it.
"""

from __future__ import annotations

import json
import unicodedata
import weakref
from bisect import bisect_left
from itertools import accumulate

_IDENTITY_NORMALIZERS = (None, {"type": "Sequence", "normalizers": []})
_tables: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def byte_length_table(tokenizer) -> "ByteTable | None":
    """Bytes of text each token id stands for, or None when the tokenizer is not byte-level BPE
    or normalizes text in ways that move bytes."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or backend.pre_tokenizer is None or b'"ByteLevel"' not in backend.pre_tokenizer.__getstate__():
        return None
    normalizer = json.loads(backend.normalizer.__getstate__()) if backend.normalizer is not None else None
    if normalizer not in (*_IDENTITY_NORMALIZERS, {"type": "NFC"}):
        return None
    size = backend.get_vocab_size(with_added_tokens=True)
    cached = _tables.get(tokenizer)
    if cached is not None and cached.size == size:
        return cached
    lengths = [0] * size
    for token, i in backend.get_vocab(with_added_tokens=False).items():
        if i < size:
            lengths[i] = len(token)  # one character of the byte-level alphabet per byte
    for i, added in backend.get_added_tokens_decoder().items():
        if i < size:
            lengths[i] = len(added.content.encode("utf-8"))  # matched in the raw text
    table = ByteTable(lengths, nfc=normalizer == {"type": "NFC"}, size=size)
    _tables[tokenizer] = table
    return table


class ByteTable:
    def __init__(self, lengths: list[int], nfc: bool, size: int):
        self.lengths, self.nfc, self.size = lengths, nfc, size

    def token_at(self, ids: list[int], text: str):
        """``token_at(cut)``: index of the token starting at character ``cut`` (the token count at
        the text's end), None if a token crosses it. None instead of the function if the ids do not
        add up to the text (a normalizer changed it, an added token swallowed spaces)."""
        try:
            starts = list(accumulate(map(self.lengths.__getitem__, ids), initial=0))
        except IndexError:
            return None
        ascii_text = text.isascii()
        if not ascii_text and self.nfc and not unicodedata.is_normalized("NFC", text):
            return None
        if starts[-1] != (len(text) if ascii_text else len(text.encode("utf-8"))):
            return None

        def token_at(cut: int) -> int | None:
            at = cut if ascii_text else len(text[:cut].encode("utf-8"))
            k = bisect_left(starts, at)
            return k if k < len(starts) and starts[k] == at else None

        return token_at
