"""Answer metrics: exact match, BLEU (sacrebleu), ROUGE-L (rouge-score), answer length, behaviour,
and well-formed reasoning blocks. Thin wrappers: the libraries compute, the kit picks settings.

Chinese, Japanese and Korean text has no spaces between words, so both BLEU and ROUGE-L tokenize
it per character (sacrebleu's "zh" tokenizer; a CJK-aware tokenizer for rouge-score, whose default
drops every non-ASCII character and would score Chinese answers as empty).
"""

from __future__ import annotations

import re
import unicodedata

_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")
_WORD_OR_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]|[^\W_]+", re.UNICODE)


def has_cjk(texts: list[str]) -> bool:
    return any(_CJK.search(t) for t in texts)


class CjkAwareTokenizer:
    """rouge-score tokenizer: lower-cased words, and each CJK character as its own token."""

    def tokenize(self, text: str) -> list[str]:
        return _WORD_OR_CJK.findall(unicodedata.normalize("NFKC", text).lower())


def normalize(text: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", text).split())


def exact_match(predictions: list[str], references: list[str]) -> float:
    return sum(normalize(p) == normalize(r) for p, r in zip(predictions, references)) / len(references)


def bleu(predictions: list[str], references: list[str]) -> float:
    """Corpus BLEU (0-100) with sacrebleu; the "zh" tokenizer when references contain CJK text."""
    import sacrebleu

    tokenize = "zh" if has_cjk(references) else "13a"
    return sacrebleu.corpus_bleu(predictions, [references], tokenize=tokenize).score


def rouge_l(predictions: list[str], references: list[str]) -> float:
    """Mean ROUGE-L F-measure (0-1) with rouge-score and the CJK-aware tokenizer."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], tokenizer=CjkAwareTokenizer())
    scores = [scorer.score(r, p)["rougeL"].fmeasure for p, r in zip(predictions, references)]
    return sum(scores) / len(scores)


def shows_behavior(answer: str, behavior) -> bool:
    """Does the answer show the recipe's ``eval.behavior`` (its ``prefix``, or its ``regex``)?"""
    if behavior.prefix is not None and answer.lstrip().startswith(behavior.prefix):
        return True
    return behavior.regex is not None and re.search(behavior.regex, answer) is not None


def facts_stated(predictions: list[str], references: list[str], facts: list[str]) -> dict:
    """Over the prompts whose reference answer states at least one of ``facts`` (strings such as a
    price or an address, compared case-insensitively after normalising spaces): the share of
    answers that state every fact their reference states. ``{"rows": 0}`` when no reference states one."""

    def found(fact: str, text: str) -> bool:
        return normalize(fact).casefold() in normalize(text).casefold()

    rows = [(p, [f for f in facts if found(f, r)]) for p, r in zip(predictions, references, strict=True)]
    rows = [(p, wanted) for p, wanted in rows if wanted]
    if not rows:
        return {"rows": 0}
    return {"rows": len(rows), "stated": sum(all(found(f, p) for f in wanted) for p, wanted in rows) / len(rows)}


def reasoning_well_formed(text: str, open_tag: str, close_tag: str) -> bool:
    """One reasoning block at most, opened before it is closed, with text after it."""
    opens, closes = text.count(open_tag), text.count(close_tag)
    if opens == closes == 0:
        return True
    if opens > 1 or closes != 1:
        return False
    start, end = text.find(open_tag), text.find(close_tag)
    return (opens == 0 or start < end) and bool(text[end + len(close_tag) :].strip())
