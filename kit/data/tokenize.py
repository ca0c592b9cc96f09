"""Conversations to training examples: the model's tokenizer with the family's chat template, and
rows tokenized with assistant-only labels under the recipe's over-length policy (preference pairs: as
prompt, chosen and rejected token ids; GRPO: rendered prompts). Used alike by prepare (which counts and
reports) and training (which must see exactly the examples prepare counted)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from kit.bulk import gc_paused
from kit.chat.render import IGNORE_INDEX, MaskError, SupervisionError, generation_prompt, tokenize_many
from kit.data.preference import conversations, sides
from kit.data.rows import DataError
from kit.data.prompts import held_out_prompts
from kit.families import ensure_chat_template
from kit.methods import Method
from kit.recipes import Recipe


@dataclass
class Tokenized:
    """Rows tokenized for training, and what became of each row (what prepare counts and reports, and
    training must see again unchanged)."""

    examples: list[dict]  # the trainer's examples: input_ids and labels, or a pair's / completion's ids
    kept: list[int] = field(default_factory=list)  # indices of the rows kept (whole: every example of a row)
    dropped: list[dict] = field(default_factory=list)  # {"source", "row", "reason"}, named by the origins given
    truncated: int = 0  # rows cut to model.max_seq_length (data.overlength: truncate)


def tokenize_for(method: Method, tokenizer, family, rows: list[dict], config: Recipe, origins=None) -> Tokenized:
    """Prepared rows tokenized as ``method``'s trainer takes them: conversations with assistant-only labels
    (``tokenize_rows``), or preference rows as pairs or labelled completions (``tokenize_pairs``; KTO's
    pairs unpaired into two). GRPO's trainer takes rendered prompts (``grpo_rows``); its conversations
    tokenize here as SFT's, which is what prepare checks and counts."""
    if method.reads_pairs:
        return tokenize_pairs(tokenizer, family, rows, config, origins, unpair=method.labelled)
    return tokenize_rows(tokenizer, family, rows, config, origins)


def load_tokenizer(model_id: str, family):
    from transformers import AutoTokenizer

    from kit.models import resolve_model_id

    path = resolve_model_id(model_id)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except OSError as e:
        raise OSError(
            f"model.id: could not load the tokenizer of {model_id!r} "
            f"(no local copy and the Hugging Face Hub is unreachable?): {e}"
        ) from None
    return ensure_chat_template(tokenizer, family)


def expand_turns(messages: list[dict]) -> list[list[dict]]:
    """One conversation per trained assistant turn, each ending at that turn (history as at
    inference); a turn marked ``train: false`` (LLaMA-Factory's loss_weight 0) is history only."""
    return [messages[: i + 1] for i, m in enumerate(messages) if m["role"] == "assistant" and m.get("train", True)]


def tokenize_rows(tokenizer, family, rows: list[dict], config: Recipe, origins=None) -> Tokenized:
    """Tokenize with labels (``data.train_on``, ``data.reasoning``) and apply the over-length
    policy (``data.overlength``, ``model.max_seq_length``); drops name their rows by ``origins``
    [(source, row)]. With ``data.reasoning: every_turn`` a row gives one example per assistant turn."""
    with gc_paused():
        return _tokenize_rows(tokenizer, family, rows, config, origins)


def cut_to(example: dict, max_len: int) -> dict:
    """A tokenized example cut to its first ``max_len`` tokens (``data.overlength: truncate``). An answer
    the cut runs through is never trained as if whole (the model would learn to stop mid-sentence,
    without its end-of-turn token): what is left of it becomes context, like the turns before it."""
    labels = example["labels"]
    cut = {k: v[:max_len] for k, v in example.items()}
    if labels[max_len - 1] != IGNORE_INDEX and labels[max_len] != IGNORE_INDEX:  # inside a trained span
        start = max_len - 1
        while start > 0 and cut["labels"][start - 1] != IGNORE_INDEX:
            start -= 1
        cut["labels"] = cut["labels"][:start] + [IGNORE_INDEX] * (max_len - start)
    return cut


def _tokenize_rows(tokenizer, family, rows: list[dict], config: Recipe, origins):
    max_len, overlength = config.model.max_seq_length, config.data.overlength
    origins = origins or [("rows", i + 1) for i in range(len(rows))]
    train_on = config.data.train_on
    if config.data.reasoning == "every_turn":
        pairs = [(i, c) for i, row in enumerate(rows) for c in expand_turns(row["messages"])]
        train_on = "last_assistant"
    else:
        pairs = [(i, row["messages"]) for i, row in enumerate(rows)]
    examples, dropped, dropped_rows, truncated = [], [], set(), 0
    tools = [rows[i].get("tools") for i, _ in pairs]  # each row's tool definitions reach its rendering
    for (i, _), ex in zip(pairs, tokenize_many(tokenizer, family, [c for _, c in pairs], train_on, tools=tools)):
        reason = None
        if isinstance(ex, SupervisionError):  # the kit's bug, not the row's: fail rather than drop
            raise DataError(
                f"{origins[i][0]}: row {origins[i][1]}: {ex}; this is a masking bug in the kit, "
                "not in your data: please report it"
            )
        if isinstance(ex, MaskError):
            reason = f"mask: {ex}"
        elif all(label == IGNORE_INDEX for label in ex["labels"]):  # data.train_on picked only loss_weight-0 turns
            reason = f"nothing to train: the assistant turns data.train_on ({train_on}) picks are marked not trained (loss_weight 0)"
        elif len(ex["input_ids"]) > max_len and overlength == "drop":
            reason = f"over max_seq_length: {len(ex['input_ids'])} > {max_len} tokens"
        elif len(ex["input_ids"]) > max_len:
            ex = cut_to(ex, max_len)
            truncated += 1
            if all(label == IGNORE_INDEX for label in ex["labels"]):
                reason = f"nothing to train: no whole trained turn within the first {max_len} tokens (truncated)"
        if reason:
            dropped.append({"source": origins[i][0], "row": origins[i][1], "reason": reason})
            dropped_rows.add(i)
        else:
            examples.append((i, ex))
    # A row is kept whole or not at all (with every_turn, one failing turn drops the row), so
    # training re-tokenizes exactly the examples prepare counted.
    kept = sorted({i for i, _ in examples} - dropped_rows)
    return Tokenized([ex for i, ex in examples if i not in dropped_rows], kept, dropped, truncated)


def _split_pair(chosen: dict, rejected: dict) -> tuple[list[int], list[int], list[int]] | None:
    """Two tokenized sides split into (prompt, chosen answer, rejected answer): the prompt ends where
    the first trained token of either side starts, and must be the same tokens on both sides (None:
    it is not); each answer runs to its last trained token (what a template writes after it is not
    the answer's). A side's answer may so begin with tokens the other side's template writes as
    prompt (Qwen3's empty <think> block before an answer without reasoning): the model's choice too."""
    first, last = [], []
    for ex in (chosen, rejected):
        trained = [k for k, label in enumerate(ex["labels"]) if label != IGNORE_INDEX]
        first.append(trained[0])
        last.append(trained[-1])
    start = min(first)
    if chosen["input_ids"][:start] != rejected["input_ids"][:start]:
        return None
    return (
        chosen["input_ids"][:start],
        chosen["input_ids"][start : last[0] + 1],
        rejected["input_ids"][start : last[1] + 1],
    )


def _split_one(ex: dict) -> tuple[list[int], list[int]]:
    """One tokenized labelled completion split into (prompt, completion): the completion runs from its
    first trained token to its last, as each side of a pair (``_split_pair``)."""
    trained = [k for k, label in enumerate(ex["labels"]) if label != IGNORE_INDEX]
    return ex["input_ids"][: trained[0]], ex["input_ids"][trained[0] : trained[-1] + 1]


def tokenize_pairs(
    tokenizer, family, pairs: list[dict], config: Recipe, origins=None, unpair: bool = False
) -> Tokenized:
    """Preference rows (``kit.data.preference``) as TRL's preference trainers take them tokenized: a pair
    as ``prompt_ids``, ``chosen_ids``, ``rejected_ids`` (DPOTrainer; ORPO's columns are made from these);
    a labelled completion as ``prompt_ids``, ``completion_ids``, ``label`` (KTOTrainer), and with
    ``unpair`` a pair as two of those (chosen desirable, rejected not: TRL's own unpairing). Each answer
    is the prompt and that answer rendered by the family's template and masked as SFT's last assistant
    turn (reasoning by the family's rules); the prompt is what precedes the trained tokens
    (``_split_pair``). A row longer than ``model.max_seq_length`` (prompt and its longer answer) is
    dropped, under ``data.overlength: truncate`` too: a cut answer is never trained."""
    convs = [(i, c) for i, row in enumerate(pairs) for c in conversations(row)]
    with gc_paused():
        tokenized = tokenize_many(
            tokenizer, family, [c for _, c in convs], "last_assistant", tools=[pairs[i].get("tools") for i, _ in convs]
        )
    by_row = [[] for _ in pairs]
    for (i, _), ex in zip(convs, tokenized):
        by_row[i].append(ex)
    max_len, overlength = config.model.max_seq_length, config.data.overlength
    origins = origins or [("rows", i + 1) for i in range(len(pairs))]
    examples, kept, dropped = [], [], []  # nothing is truncated: a pair over the limit is dropped
    for i, (row, answers) in enumerate(zip(pairs, by_row)):
        reason = None
        for side, ex in zip(sides(row), answers):
            if isinstance(ex, SupervisionError):
                raise DataError(
                    f"{origins[i][0]}: row {origins[i][1]}: {side}: {ex}; this is a masking bug in the "
                    "kit, not in your data: please report it"
                )
            if isinstance(ex, MaskError):
                reason = reason or f"mask: {side}: {ex}"
        if reason is None:
            split = _split_pair(*answers) if len(answers) == 2 else _split_one(answers[0])
            prompt, ids = (split[0], list(split[1:])) if split else ([], [])
            length = len(prompt) + max(map(len, ids), default=0)
            if split is None:
                reason = (
                    "different prompts: the template renders the prompt differently before chosen and before rejected"
                )
            elif length > max_len:  # truncate too: a cut answer would be trained as if whole, and a pair's
                # answers are all it trains (nothing of it can be left as context)
                reason = f"over max_seq_length: {length} > {max_len} tokens" + (
                    " (the prompt alone fills it)"
                    if len(prompt) >= max_len
                    else " (data.overlength truncate keeps no cut answer: a pair's answers are what it trains)"
                    if overlength == "truncate"
                    else ""
                )
        if reason:
            dropped.append({"source": origins[i][0], "row": origins[i][1], "reason": reason})
            continue
        if len(ids) == 1:
            examples.append({"prompt_ids": prompt, "completion_ids": ids[0], "label": row["label"]})
        elif unpair:
            examples += [
                {"prompt_ids": prompt, "completion_ids": answer, "label": label}
                for answer, label in zip(ids, (True, False))
            ]
        else:
            examples.append({"prompt_ids": prompt, "chosen_ids": ids[0], "rejected_ids": ids[1]})
        kept.append(i)
    return Tokenized(examples, kept, dropped)


def grpo_rows(tokenizer, family, rows: list[dict], config: Recipe) -> list[dict]:
    """GRPO's rows: each conversation's prompt (up to its first trained answer) rendered as the model
    sees it at inference (the family's template, the row's tools, ``eval.thinking``), with that answer
    as ``answer`` (what ``exact_answer`` compares with) and the row's ``tools`` as JSON text (Arrow
    holds one schema per column; ``kit.rewards`` gives reward functions lists)."""
    return [
        {
            "prompt": generation_prompt(tokenizer, family, p.messages, p.tools, config.eval.thinking),
            "answer": p.reference,
            "tools": json.dumps(p.tools) if p.tools else None,
        }
        for p in held_out_prompts(rows)
    ]
