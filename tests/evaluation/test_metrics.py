from types import SimpleNamespace

import pytest
import sacrebleu
from rouge_score import rouge_scorer

from kit import metrics
from kit.families import get_family
from kit.inference import split_reasoning

PRED = ["Dear customer, your order ships today.", "The cat sat on the mat.", "完全不同的答案"]
REF = ["Dear customer, your order ships tomorrow.", "The cat sat on the mat.", "一个完全不同的回答"]


def test_bleu_is_sacrebleu_corpus_bleu():
    english = sacrebleu.corpus_bleu(PRED[:2], [REF[:2]]).score
    assert metrics.bleu(PRED[:2], REF[:2]) == pytest.approx(english)
    chinese = sacrebleu.corpus_bleu(PRED, [REF], tokenize="zh").score
    assert metrics.bleu(PRED, REF) == pytest.approx(chinese)  # CJK references switch to the zh tokenizer
    assert 0 < metrics.bleu(PRED, REF) < 100


def test_rouge_l_is_rouge_score_with_cjk_aware_tokens():
    default = rouge_scorer.RougeScorer(["rougeL"])
    for p, r in zip(PRED[:2], REF[:2]):  # on English text the tokenizers agree
        assert metrics.rouge_l([p], [r]) == pytest.approx(default.score(r, p)["rougeL"].fmeasure)
    assert default.score(REF[2], PRED[2])["rougeL"].fmeasure == 0.0  # default drops every CJK character
    # 完全不同的答 (6 characters) is the longest common subsequence of 7 and 9: P = 6/7, R = 6/9.
    p, r = 6 / 7, 6 / 9
    assert metrics.rouge_l(PRED[2:], REF[2:]) == pytest.approx(2 * p * r / (p + r))
    assert metrics.CjkAwareTokenizer().tokenize("Hello, 世界 OK") == ["hello", "世", "界", "ok"]


def test_exact_match_normalizes_whitespace_only():
    assert metrics.exact_match([" a  b\n", "A b"], ["a b", "a b"]) == 0.5


def test_behavior_prefix_and_regex():
    assert metrics.shows_behavior("  Dear customer, hi", SimpleNamespace(prefix="Dear customer,", regex=None))
    assert not metrics.shows_behavior("dear customer, hi", SimpleNamespace(prefix="Dear customer,", regex=None))
    assert metrics.shows_behavior("Order #123", SimpleNamespace(prefix=None, regex=r"#\d+"))


@pytest.mark.parametrize(
    "text, ok",
    [
        ("no reasoning here", True),
        ("<think>plan</think>answer", True),
        ("plan</think>answer", True),  # opening tag prefilled by the prompt
        ("<think>plan", False),  # never closed
        ("<think>plan</think>", False),  # no answer after it
        ("</think>x<think>y", False),
        ("<think>a</think><think>b</think>c", False),
    ],
)
def test_reasoning_well_formed(text, ok):
    assert metrics.reasoning_well_formed(text, "<think>", "</think>") is ok


def test_split_reasoning():
    qwen3 = get_family("qwen3")
    assert split_reasoning("<think>\nplan\n</think>\n\nanswer", qwen3) == ("plan", "answer")
    assert split_reasoning("<think>\n\n</think>\n\nanswer", qwen3) == (None, "answer")
    assert split_reasoning("just an answer", qwen3) == (None, "just an answer")


def test_gpt_oss_channels_are_split_and_checked(family_tokenizers):
    from kit.inference import decode

    gpt_oss = get_family("gpt-oss")
    raw = "<|channel|>analysis<|message|>User wants a refund.<|end|><|start|>assistant<|channel|>final<|message|>Yes."
    assert split_reasoning(raw, gpt_oss) == ("User wants a refund.", "Yes.")
    assert split_reasoning("<|channel|>final<|message|>Yes.", gpt_oss) == (None, "Yes.")
    assert metrics.reasoning_well_formed(raw, *gpt_oss.reasoning_tags)
    assert not metrics.reasoning_well_formed("<|channel|>analysis<|message|>never ends", *gpt_oss.reasoning_tags)
    tokenizer = family_tokenizers["gpt-oss"]
    ids = tokenizer(raw, add_special_tokens=False)["input_ids"]
    assert decode(tokenizer, gpt_oss, ids) == raw  # the markers survive decoding for this family
    qwen3_ids = tokenizer("<|im_end|>hi", add_special_tokens=False)["input_ids"]
    assert decode(tokenizer, get_family("qwen3"), qwen3_ids) == "hi"


def test_facts_stated_scores_the_facts_each_reference_states():
    from kit.metrics import facts_stated

    facts = ["$24", "9 am to 1 pm", "Mara Quill"]
    references = [
        "A city bike is $24 a day.",
        "Saturdays 9 am to 1 pm.",
        "Mara  quill owns it; a bike is $24.",
        "We love bikes.",
    ]
    predictions = ["It costs $24.", "We open 9 am to 5 pm.", "MARA QUILL runs it.", "Anything."]
    # the third answer names the owner but not the price its reference also states; the fourth is not scored
    assert facts_stated(predictions, references, facts) == {"rows": 3, "stated": 1 / 3}
    assert facts_stated(references, references, facts) == {"rows": 3, "stated": 1.0}
    assert facts_stated(predictions, references, ["$99"]) == {"rows": 0}


def test_recipe_facts_must_be_strings():
    import pytest

    from kit.recipes import RecipeError, validate

    base = {"model": {"id": "x", "family": "smollm2"}, "data": {"source": "d.jsonl"}}
    assert validate({**base, "eval": {"facts": ["$24"]}})["eval"]["facts"] == ["$24"]
    with pytest.raises(RecipeError, match=r"eval.facts: every element must be str, got int \(24\)"):
        validate({**base, "eval": {"facts": [24]}})
