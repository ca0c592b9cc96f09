"""Preference pairs: every layout a user brings (written here as public files write them) reads into
the canonical pair, and every family's template renders and masks it: the prompt is context, each
answer (with the reasoning its template renders) is what DPO scores. Bad pairs fail in one line.
KTO's labelled completions (unpaired, or pairs unpaired) likewise."""

import pytest

from kit.data.rows import DataError, count_reasons, load_conversations
from kit.data.tokenize import tokenize_pairs
from kit.families import FAMILIES, get_family
from kit.recipes import resolve
from tests.chat.test_masks import expected_piece
from tests.data.test_layouts import write

SYSTEM, QUESTION = "Answer in one sentence.", "Is 7 a prime number?"
CHOSEN, REJECTED = "Yes, 7 is prime: only 1 and 7 divide it.", "No."
PROMPT = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTION}]


def assistant(content):
    return {"role": "assistant", "content": content}


PAIR = {"prompt": PROMPT, "chosen": assistant(CHOSEN), "rejected": assistant(REJECTED)}
NO_SYSTEM = {**PAIR, "prompt": PROMPT[1:]}
# Each layout as its public files write it, and the canonical pair it must read into.
LAYOUTS = {
    "message-lists": ({"chosen": PROMPT + [assistant(CHOSEN)], "rejected": PROMPT + [assistant(REJECTED)]}, PAIR),
    "prompt-and-answers": ({"prompt": PROMPT, "chosen": [assistant(CHOSEN)], "rejected": [assistant(REJECTED)]}, PAIR),
    "text-prompt": ({"prompt": QUESTION, "chosen": CHOSEN, "rejected": REJECTED}, NO_SYSTEM),
    "ultrafeedback": (
        {
            "prompt": QUESTION,
            "chosen": PROMPT[1:] + [assistant(CHOSEN)],
            "rejected": PROMPT[1:] + [assistant(REJECTED)],
            "score_chosen": 9.0,
        },
        NO_SYSTEM,
    ),
    "hh-rlhf-text": (
        {
            "chosen": f"\n\nHuman: {QUESTION}\n\nAssistant: {CHOSEN}",
            "rejected": f"\n\nHuman: {QUESTION}\n\nAssistant: {REJECTED}",
        },
        NO_SYSTEM,
    ),
    "llamafactory-sharegpt": (
        {
            "conversations": [{"from": "human", "value": QUESTION}],
            "system": SYSTEM,
            "chosen": {"from": "gpt", "value": CHOSEN},
            "rejected": {"from": "gpt", "value": REJECTED},
        },
        PAIR,
    ),
    "stack-exchange": ({"question": QUESTION, "response_j": CHOSEN, "response_k": REJECTED}, NO_SYSTEM),
    "openai-dpo": (
        {
            "input": {"messages": PROMPT},
            "preferred_output": [assistant(CHOSEN)],
            "non_preferred_output": [assistant(REJECTED)],
        },
        PAIR,
    ),
    "messages-with-think": (
        {
            "chosen": {"messages": PROMPT + [assistant(f"<think>\nOnly 1 and 7 divide 7.\n</think>\n\n{CHOSEN}")]},
            "rejected": {"messages": PROMPT + [assistant(f"<think>\n7 is odd.\n</think>\n\n{REJECTED}")]},
        },
        {
            "prompt": PROMPT,
            "chosen": {**assistant(CHOSEN), "reasoning": "Only 1 and 7 divide 7."},
            "rejected": {**assistant(REJECTED), "reasoning": "7 is odd."},
        },
    ),
}
FORMAT_OF = {
    "message-lists": "chosen_rejected",
    "prompt-and-answers": "chosen_rejected",
    "text-prompt": "chosen_rejected",
    "ultrafeedback": "chosen_rejected",
    "hh-rlhf-text": "hh_text",
    "llamafactory-sharegpt": "sharegpt_preference",
    "stack-exchange": "paired_responses",
    "openai-dpo": "openai_preference",
    "messages-with-think": "chosen_rejected",
}
RECIPE = {
    "model": {"id": "builtin:tiny-qwen3", "family": "qwen3", "max_seq_length": 512},
    "data": {"source": "x"},
    "train": {"method": "dpo"},
}


def load_pairs(tmp_path, rows, method="dpo", **kwargs):
    return load_conversations(write(tmp_path / "pairs.jsonl", rows), method=method, **kwargs)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_each_layout_reads_into_the_canonical_pair(tmp_path, layout):
    row, expected = LAYOUTS[layout]
    result = load_pairs(tmp_path, [row, row])
    assert result.rows == [expected, expected]
    assert result.sources[0]["format"] == FORMAT_OF[layout]
    assert result.unused_fields == ({"score_chosen": 2} if layout == "ultrafeedback" else {})


def test_custom_field_names_map_with_data_columns(tmp_path):
    row = {"instruction": QUESTION, "better": CHOSEN, "worse": REJECTED}
    result = load_pairs(tmp_path, [row], columns={"prompt": "instruction", "chosen": "better", "rejected": "worse"})
    assert result.rows == [NO_SYSTEM]


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("layout", ["openai-dpo", "messages-with-think"])
def test_every_family_masks_the_prompt_and_scores_each_answer(tmp_path, family_tokenizers, family, layout):
    """The prompt is the family's generation prompt for the shared conversation (and what the template
    writes before an answer without reasoning: Qwen3's empty <think> block); each answer
    is exactly what SFT would train for that turn (the mask tests' expected pieces, written from the
    official templates), so DPO's log-probabilities cover the answer and nothing of the context."""
    tokenizer, fam = family_tokenizers[family], get_family(family)
    row, pair = LAYOUTS[layout]
    rows = load_pairs(tmp_path, [row]).rows
    recipe = resolve({**RECIPE, "model": {**RECIPE["model"], "family": family}})
    tokenized = tokenize_pairs(tokenizer, fam, rows, recipe)
    [example] = tokenized.examples
    assert (tokenized.kept, tokenized.dropped, tokenized.truncated) == ([0], [], 0)
    decode = lambda ids: tokenizer.decode(ids, skip_special_tokens=False)  # noqa: E731
    prompt = tokenizer.apply_chat_template(pair["prompt"], tokenize=False, add_generation_prompt=True)
    chosen, rejected = decode(example["chosen_ids"]), decode(example["rejected_ids"])
    assert decode(example["prompt_ids"]).startswith(prompt)
    assert decode(example["prompt_ids"])[len(prompt) :] in ("", "<think>\n\n</think>\n\n")
    assert chosen == expected_piece(family, "as_template", CHOSEN, pair["chosen"].get("reasoning"), last=True)
    assert rejected == expected_piece(family, "as_template", REJECTED, pair["rejected"].get("reasoning"), last=True)


def test_a_side_without_reasoning_keeps_the_shared_prompt(tmp_path, tokenizer):
    """Qwen3 writes an empty <think> block before an answer without reasoning, as prompt; beside a
    chosen answer with reasoning, that block becomes part of the rejected answer (the model's choice
    not to think), and the prompt stays the same tokens on both sides."""
    row = {
        "prompt": PROMPT,
        "chosen": [{**assistant(CHOSEN), "reasoning": "Only 1 and 7 divide 7."}],
        "rejected": [assistant(REJECTED)],
    }
    tokenized = tokenize_pairs(tokenizer, get_family("qwen3"), load_pairs(tmp_path, [row]).rows, resolve(RECIPE))
    [example] = tokenized.examples
    assert tokenized.dropped == []
    assert tokenizer.decode(example["rejected_ids"]) == f"<think>\n\n</think>\n\n{REJECTED}<|im_end|>"
    assert tokenizer.decode(example["chosen_ids"]) == f"<think>\nOnly 1 and 7 divide 7.\n</think>\n\n{CHOSEN}<|im_end|>"


def test_over_length_pairs_are_dropped_and_counted_even_under_truncate(tmp_path, tokenizer):
    """A pair over the limit is dropped: cut, its answer would be trained as if whole (no end of turn)."""
    long = {"prompt": QUESTION, "chosen": "Yes. " * 60, "rejected": REJECTED}
    rows = load_pairs(tmp_path, [LAYOUTS["text-prompt"][0], long]).rows
    short = resolve({**RECIPE, "model": {**RECIPE["model"], "max_seq_length": 64}})
    dropping = tokenize_pairs(tokenizer, get_family("qwen3"), rows, short)
    assert dropping.kept == [0] and dropping.truncated == 0 and dropping.dropped[0]["row"] == 2
    assert dropping.dropped[0]["reason"].startswith("over max_seq_length: ")
    cut = resolve(
        {
            **RECIPE,
            "model": {**RECIPE["model"], "max_seq_length": 64},
            "data": {"source": "x", "overlength": "truncate"},
        }
    )
    cutting = tokenize_pairs(tokenizer, get_family("qwen3"), rows, cut)
    assert cutting.kept == [0] and cutting.truncated == 0 and cutting.dropped[0]["row"] == 2
    assert "truncate keeps no cut answer" in cutting.dropped[0]["reason"]
    assert all(ex["chosen_ids"][-1] == tokenizer.convert_tokens_to_ids("<|im_end|>") for ex in cutting.examples)


BAD_PAIRS = [
    (
        {"prompt": QUESTION, "chosen": "", "rejected": REJECTED},
        "missing answer: chosen is empty; a pair needs an answer on both sides",
    ),
    (
        {"prompt": QUESTION, "chosen": CHOSEN},
        "not chosen_rejected: expected the field(s) chosen, rejected; got prompt, chosen",
    ),
    (
        {
            "chosen": PROMPT + [assistant(CHOSEN)],
            "rejected": [PROMPT[0], {"role": "user", "content": "Is 9 prime?"}, assistant(REJECTED)],
        },
        "different prompts: chosen[1] and rejected[1] differ; the two sides of a pair must answer the same conversation",
    ),
    (
        {
            "conversations": [{"from": "human", "value": QUESTION}],
            "chosen": {"from": "gpt", "value": CHOSEN},
            "rejected": {"from": "human", "value": REJECTED},
        },
        "not an assistant turn: rejected.from is 'human'; a pair compares two answers of the assistant (from: gpt)",
    ),
    (
        {"chosen": PROMPT + [assistant(CHOSEN)], "rejected": PROMPT + [{"role": "user", "content": REJECTED}]},
        "not an assistant turn: rejected ends with a user turn; a pair compares two answers of the assistant",
    ),
    (
        {"prompt": PROMPT, "chosen": [assistant(CHOSEN)], "rejected": [{"role": "user", "content": REJECTED}]},
        "not an assistant turn: rejected ends with a user turn; a pair compares two answers of the assistant",
    ),
]


@pytest.mark.parametrize(
    "row, reason",
    BAD_PAIRS,
    ids=[
        "empty-side",
        "missing-side",
        "different-prompts",
        "rejected-from-human",
        "rejected-turn-is-user",
        "rejected-role-user",
    ],
)
def test_a_bad_pair_is_one_line_naming_file_row_and_field(tmp_path, row, reason):
    good = LAYOUTS["prompt-and-answers"][0] if "conversations" not in row else LAYOUTS["llamafactory-sharegpt"][0]
    path = write(tmp_path / "pairs.jsonl", [good, row])
    with pytest.raises(DataError) as e:
        load_conversations(path, method="dpo")
    assert str(e.value) == f"{path}: row 2: {reason}" and "\n" not in str(e.value)
    dropped = load_conversations(path, method="dpo", invalid_rows="drop").dropped
    assert dropped == [{"source": path, "row": 2, "reason": reason}]


def test_ties_are_dropped_and_counted_even_under_invalid_rows_error(tmp_path):
    tie = {"prompt": QUESTION, "chosen": CHOSEN, "rejected": CHOSEN}
    result = load_pairs(tmp_path, [LAYOUTS["text-prompt"][0], tie, tie])
    assert len(result.rows) == 1 and count_reasons(result.dropped) == {"tie": 2}


def test_dpo_with_sft_data_and_sft_with_a_preference_format_are_refused_in_one_line(tmp_path):
    path = write(tmp_path / "chat.jsonl", [{"messages": PROMPT + [assistant(CHOSEN)]}])
    with pytest.raises(DataError) as e:
        load_conversations(path, method="dpo")
    assert str(e.value) == (
        f"{path}: row 1: train.method dpo needs preference pairs, a chosen and a rejected answer per prompt, but the "
        "rows hold conversations (messages), SFT data (fields: messages); see docs/data-formats.md#preference-pairs "
        "for the layouts, and data.columns to name your fields"
    )
    pairs = write(tmp_path / "pairs.jsonl", [LAYOUTS["openai-dpo"][0]])
    with pytest.raises(DataError, match="data.format openai_preference is a preference layout: set train.method: dpo"):
        load_conversations(pairs, fmt="openai_preference")


def test_every_preference_format_a_recipe_may_name_has_its_reader():
    from kit.data.preference import READERS, SIGNATURES
    from kit.recipes import PREFERENCE_FORMATS, UNPAIRED_FORMATS

    assert set(PREFERENCE_FORMATS + UNPAIRED_FORMATS) == set(READERS) == {name for name, _ in SIGNATURES}
    assert set(FORMAT_OF.values()) | {"unpaired"} == set(READERS)  # every layout is exercised here


# KTO: a completion labelled desirable or not, as TRL's unpaired files write it, and the canonical row.
def labelled(answer, label, prompt=NO_SYSTEM["prompt"]):
    return {"prompt": prompt, "completion": assistant(answer), "label": label}


UNPAIRED = {
    "text": ({"prompt": QUESTION, "completion": CHOSEN, "label": True}, labelled(CHOSEN, True)),
    "conversational": (
        {"prompt": PROMPT, "completion": [assistant(REJECTED)], "label": False},
        labelled(REJECTED, False, PROMPT),
    ),
    "messages-and-label": (
        {"messages": PROMPT + [assistant(REJECTED)], "label": False},
        labelled(REJECTED, False, PROMPT),
    ),
}


@pytest.mark.parametrize("layout", UNPAIRED)
def test_each_unpaired_layout_reads_into_a_labelled_completion(tmp_path, layout):
    row, expected = UNPAIRED[layout]
    result = load_pairs(tmp_path, [row, row], method="kto")
    assert result.rows == [expected, expected] and result.sources[0]["format"] == "unpaired"


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_kto_masks_each_completion_as_sft_and_unpairs_pairs(tmp_path, family_tokenizers, family):
    """A labelled completion is tokenized as a pair's side: the prompt is the family's generation
    prompt, the completion exactly what SFT trains; a pair under kto gives two of them, chosen
    desirable and rejected not (TRL's unpairing), over the same prompt."""
    tokenizer, fam = family_tokenizers[family], get_family(family)
    recipe = resolve({**RECIPE, "model": {**RECIPE["model"], "family": family}, "train": {"method": "kto"}})
    sources = [
        write(tmp_path / "kto.jsonl", [UNPAIRED["conversational"][0]]),
        write(tmp_path / "pairs.jsonl", [LAYOUTS["openai-dpo"][0]]),
    ]  # a layout per source
    rows = load_conversations(sources, method="kto").rows
    tokenized = tokenize_pairs(tokenizer, fam, rows, recipe, unpair=True)
    examples = tokenized.examples
    assert (tokenized.kept, tokenized.dropped) == ([0, 1], [])
    decode = lambda ids: tokenizer.decode(ids, skip_special_tokens=False)  # noqa: E731
    prompt = tokenizer.apply_chat_template(PROMPT, tokenize=False, add_generation_prompt=True)
    assert [e["label"] for e in examples] == [False, True, False]
    for example, answer in zip(examples, (REJECTED, CHOSEN, REJECTED)):
        assert decode(example["prompt_ids"]).startswith(prompt)
        assert decode(example["prompt_ids"])[len(prompt) :] in ("", "<think>\n\n</think>\n\n")
        assert decode(example["completion_ids"]) == expected_piece(family, "as_template", answer, None, last=True)
    assert examples[1]["prompt_ids"] == examples[2]["prompt_ids"]


@pytest.mark.parametrize("label", ["yes", 2, None, 0.5])
def test_a_kto_label_that_is_not_a_boolean_is_one_line(tmp_path, label):
    path = write(tmp_path / "kto.jsonl", [UNPAIRED["text"][0], {**UNPAIRED["text"][0], "label": label}])
    with pytest.raises(DataError) as e:
        load_conversations(path, method="kto")
    kind = {"yes": "str", 2: "int", None: "NoneType", 0.5: "float"}[label]
    assert str(e.value) == (
        f"{path}: row 2: bad label: label is {kind} ({label!r}), expected true (a desirable "
        'completion) or false (an undesirable one): a boolean, "true"/"false" or 0/1'
    )


def test_labelled_completions_are_refused_for_methods_that_compare_pairs(tmp_path):
    path = write(tmp_path / "kto.jsonl", [UNPAIRED["messages-and-label"][0]])
    for method in ("dpo", "orpo"):
        with pytest.raises(DataError) as e:
            load_conversations(path, method=method)
        assert str(e.value) == (
            f"{path}: row 1: train.method {method} needs preference pairs, a chosen and a rejected answer per "
            "prompt, but the rows hold single completions labelled desirable or not (fields: messages, label): set "
            "train.method: kto to train on them"
        )
    with pytest.raises(
        DataError, match="data.format unpaired holds completions labelled desirable or not: set train.method: kto"
    ):
        load_conversations(path, fmt="unpaired")


def test_a_desirable_completion_is_a_reference_and_an_undesirable_one_is_passed_over():
    """Evaluate's prompts, the train notebook's live answers and the merge checks read labelled rows
    as conversations: a desirable completion is the reference answer, an undesirable one none."""
    from kit.data.prompts import Prompt, as_conversations, held_out_prompts

    rows = [labelled(REJECTED, False), labelled(CHOSEN, True), PAIR]
    assert held_out_prompts(rows, 1) == [Prompt(NO_SYSTEM["prompt"], CHOSEN)]
    assert [p.reference for p in held_out_prompts(rows)] == [CHOSEN, CHOSEN]
    assert as_conversations(rows) == [
        {"messages": NO_SYSTEM["prompt"] + [assistant(CHOSEN)]},
        {"messages": PROMPT + [assistant(CHOSEN)]},
    ]
