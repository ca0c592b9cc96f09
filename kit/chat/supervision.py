"""The check run on every tokenized conversation: each trained turn's expected texts (its rendered
reasoning, answer and tool calls, ``Rendered.expected``) must appear, in order, inside the
supervised tokens, read back from the labels and decoded. It does not trust how the spans were
found, only which tokens the labels supervise.
"""

from __future__ import annotations

import json

from kit.chat.labels import IGNORE_INDEX
from kit.chat.rendered import Rendered


class SupervisionError(RuntimeError):
    """A trained turn's answer or reasoning is not inside the supervised tokens: a masking bug,
    never a property of the data, so it fails the run rather than dropping the row."""


def supervision_error(tokenizer, rendered: Rendered, example: dict) -> SupervisionError | None:
    """Each trained turn's expected texts (rendered reasoning, answer, tool calls) must appear, in
    order, inside the supervised tokens, read back by decoding them: a check on the labels that
    does not trust how the spans were found."""
    return supervision_errors(tokenizer, [rendered], [example])[0]


def supervision_errors(
    tokenizer, rendered: list[Rendered], examples: list[dict], hints: list | None = None
) -> list[SupervisionError | None]:
    """``supervision_error`` for many conversations, their supervised runs decoded in one call.
    ``hints``: per example, the token ranges its labels were set from (``kit.chat.labels.labelled``),
    used only where the labels confirm them exactly (``supervised_runs``)."""
    hints = hints or [None] * len(examples)
    runs = [supervised_runs(ex["input_ids"], ex["labels"], hint) for ex, hint in zip(examples, hints)]
    flat = [ex["input_ids"][a:b] for ex, row in zip(examples, runs) for a, b in row]
    backend = getattr(tokenizer, "backend_tokenizer", None)
    texts = iter(
        backend.decode_batch(flat, skip_special_tokens=False)
        if backend is not None
        else tokenizer.batch_decode(flat, skip_special_tokens=False, clean_up_tokenization_spaces=False)
    )
    normalize = _normalize(getattr(backend, "normalizer", None))
    return [
        _first_unsupervised("\0".join(next(texts) for _ in row), r.expected, normalize)
        for r, row in zip(rendered, runs)
    ]


def _normalize(normalizer):
    """Decoding gives the text as the tokenizer's normalizer left it (Qwen's: NFC), so the expected
    texts are normalized alike. Unicode normal forms leave ASCII as it is: such text skips the
    call into the tokenizer (most of the check's time otherwise)."""
    if normalizer is None:
        return lambda text: text
    if json.loads(normalizer.__getstate__()).get("type") in ("NFC", "NFD", "NFKC", "NFKD"):
        return lambda text: text if text.isascii() else normalizer.normalize_str(text)
    return normalizer.normalize_str


def supervised_runs(
    ids: list[int], labels: list[int], hint: list[tuple[int, int]] | None = None
) -> list[tuple[int, int]]:
    """The maximal runs ``(start, end)`` of tokens whose label is not ignored. A ``hint`` (sorted
    token ranges) is taken when the labels prove it: equal to the ids inside the ranges and
    ignored everywhere else (a count); that costs list slices, not a Python step per token."""
    if hint is not None and len(ids) == len(labels):
        merged: list[list[int]] = []
        for a, b in hint:
            if b < a or (merged and a < merged[-1][1]):
                break  # not sorted and disjoint: scan instead
            if merged and merged[-1][1] == a:
                merged[-1][1] = b  # adjacent ranges are one run
            elif b > a:
                merged.append([a, b])
        else:
            if sum(b - a for a, b in merged) == len(labels) - labels.count(IGNORE_INDEX) and all(
                labels[a:b] == ids[a:b] for a, b in merged
            ):
                return [(a, b) for a, b in merged]
    runs, start = [], None
    for k, label in enumerate(labels[: len(ids)]):
        if label != IGNORE_INDEX:
            if start is None:
                start = k
        elif start is not None:
            runs.append((start, k))
            start = None
    if start is not None:
        runs.append((start, min(len(ids), len(labels))))
    return runs


def _first_unsupervised(supervised: str, expected, normalize) -> SupervisionError | None:
    pos = 0  # runs are joined by NUL: a piece may not run across unsupervised tokens
    for i, pieces in expected:
        for piece in map(normalize, pieces):
            at = supervised.find(piece, pos)
            if at < 0:
                shown = piece if len(piece) <= 40 else piece[:37] + "..."
                return SupervisionError(f"assistant turn {i}: {shown!r} is not inside its supervised tokens")
            pos = at + len(piece)
    return None
