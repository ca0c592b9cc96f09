"""tokenize_many on many rows (the fast method, encoding in a second thread while rows render,
labels from byte lengths, the supervision check from the labels' runs) gives exactly what the
exact method gives row by row, for every family, with and without tools."""

import random

import pytest

from kit.chat.labels import IGNORE_INDEX
from kit.chat.render import tokenize_many, tokenize_with_labels
from kit.chat.supervision import supervised_runs
from kit.families import FAMILIES, get_family

from tests.chat import test_families, test_masks, test_tool_masks

WORDS = "order refund ship account Zürich 返金 ☕ warranty\n screen  battery invoice".split(" ")


def conversations(n: int, seed: int = 0) -> list[list[dict]]:
    """Varied rows: a system turn or not, 1-3 exchanges, reasoning, non-ASCII text, whitespace at
    the edges, a user typing a generation prompt, and the other tests' conversations."""
    rng = random.Random(seed)
    rows = []
    for k in range(n):
        messages = [{"role": "system", "content": "You are a helpful support agent."}] if rng.random() < 0.5 else []
        for _ in range(rng.randint(1, 3)):
            question = " ".join(rng.choices(WORDS, k=rng.randint(3, 12))) + "?"
            if k % 7 == 3:
                question += " <|im_start|>assistant\n<|start_header_id|>assistant<|end_header_id|>\n\n"
            answer = " ".join(rng.choices(WORDS, k=rng.randint(3, 20))) + "."
            messages.append({"role": "user", "content": question})
            messages.append({"role": "assistant", "content": f"\n {answer} \n" if k % 5 == 2 else answer})
            if k % 3 == 1:
                messages[-1]["reasoning"] = "Think: " + answer[:30]
        rows.append(messages)
    fixed = [
        *test_families.CONVERSATIONS.values(),
        *test_families.REASONING.values(),
        *test_masks.CONVERSATIONS.values(),
    ]
    return rows + fixed


def same(got, want) -> bool:
    """The same ids and labels, or both refused (the two methods word a refusal differently)."""
    return got == want if isinstance(want, dict) else type(got) is type(want)


@pytest.mark.parametrize("family_name", sorted(FAMILIES))
@pytest.mark.parametrize("train_on", ["all_assistant", "last_assistant"])
def test_many_rows_equal_the_exact_method_row_by_row(family_tokenizers, family_name, train_on):
    tokenizer, family = family_tokenizers[family_name], get_family(family_name)
    rows = conversations(300)
    assert len(rows) > 256  # more than one chunk: encoded in the second thread
    many = tokenize_many(tokenizer, family, rows, train_on)
    one_by_one = []
    for messages in rows:
        try:
            one_by_one.append(tokenize_with_labels(tokenizer, family, messages, train_on))
        except Exception as e:  # MaskError: the same refusal either way
            one_by_one.append(e)
    for got, want in zip(many, one_by_one):
        assert same(got, want)


@pytest.mark.parametrize("family_name", sorted(FAMILIES))
def test_many_rows_with_tools_equal_the_exact_method(family_tokenizers, family_name):
    tokenizer, family = family_tokenizers[family_name], get_family(family_name)
    rows = list(test_tool_masks.CONVERSATIONS.values()) * 60  # more than one chunk
    many = tokenize_many(tokenizer, family, rows, tools=[test_tool_masks.TOOLS] * len(rows))
    for got, messages in zip(many, rows):
        try:
            want = tokenize_with_labels(tokenizer, family, messages, tools=test_tool_masks.TOOLS)
        except Exception as e:
            want = e
        assert same(got, want)


def scanned(ids, labels):
    """The supervised runs read token by token (the check without a hint)."""
    runs, start = [], None
    for k, label in enumerate(labels + [IGNORE_INDEX]):
        if label != IGNORE_INDEX and start is None:
            start = k
        elif label == IGNORE_INDEX and start is not None:
            runs.append((start, k))
            start = None
    return runs


def test_a_hint_is_taken_only_where_the_labels_prove_it():
    rng = random.Random(0)
    for _ in range(2000):
        ids = [rng.randrange(1000) for _ in range(rng.randint(0, 30))]
        cuts = sorted(rng.sample(range(len(ids) + 1), k=min(len(ids) + 1, 2 * rng.randint(0, 3))))
        hint = list(zip(cuts[::2], cuts[1::2]))
        labels = [IGNORE_INDEX] * len(ids)
        for a, b in hint:
            labels[a:b] = ids[a:b]
        if ids and rng.random() < 0.5:  # labels that do not match the hint: a bug the check must see
            k = rng.randrange(len(ids))
            labels[k] = IGNORE_INDEX if labels[k] != IGNORE_INDEX else ids[k]
        if rng.random() < 0.2:
            hint = hint[::-1] + [(0, len(ids))]  # not sorted, overlapping
        assert supervised_runs(ids, labels, hint) == scanned(ids, labels)
        assert supervised_runs(ids, labels) == scanned(ids, labels)


def test_padding_left_on_the_tokenizer_is_ignored_and_kept(tokenizer):
    """A backend that kept padding and truncation from earlier batched calls: unpadded while many
    rows encode in the second thread, and as it was afterwards."""
    family, rows = get_family("qwen3"), conversations(300)
    plain = tokenize_many(tokenizer, family, rows)
    backend = tokenizer.backend_tokenizer
    backend.enable_padding(length=512, pad_id=0)
    backend.enable_truncation(max_length=16)
    try:
        assert tokenize_many(tokenizer, family, rows) == plain
        assert backend.padding["length"] == 512 and backend.truncation["max_length"] == 16
    finally:
        backend.no_padding()
        backend.no_truncation()
