"""Conversations to training examples: the model's tokenizer with the family's chat template, and
rows tokenized with assistant-only labels under the recipe's over-length policy. Used alike by
prepare (which counts and reports) and training (which must see exactly the examples prepare counted)."""
from __future__ import annotations

from kit.bulk import gc_paused
from kit.chat.render import IGNORE_INDEX, MaskError, SupervisionError, tokenize_many
from kit.data.rows import DataError
from kit.families import ensure_chat_template
from kit.recipes import Recipe


def load_tokenizer(model_id: str, family):
    from transformers import AutoTokenizer

    from kit.models import resolve_model_id

    path = resolve_model_id(model_id)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except OSError as e:
        raise OSError(f"model.id: could not load the tokenizer of {model_id!r} "
                      f"(no local copy and the Hugging Face Hub is unreachable?): {e}") from None
    return ensure_chat_template(tokenizer, family)


def expand_turns(messages: list[dict]) -> list[list[dict]]:
    """One conversation per trained assistant turn, each ending at that turn (history as at
    inference); a turn marked ``train: false`` (LLaMA-Factory's loss_weight 0) is history only."""
    return [messages[:i + 1] for i, m in enumerate(messages) if m["role"] == "assistant" and m.get("train", True)]


def tokenize_rows(tokenizer, family, rows: list[dict], recipe: Recipe, origins=None):
    """Tokenize with labels (``data.train_on``, ``data.reasoning``) and apply the over-length
    policy (``data.overlength``, ``model.max_seq_length``). Returns (examples, kept row indices,
    dropped [{source, row, reason}] with rows named by ``origins`` [(source, row)], truncated count).
    With ``data.reasoning: every_turn`` a row gives one example per assistant turn."""
    with gc_paused():
        return _tokenize_rows(tokenizer, family, rows, recipe, origins)


def _tokenize_rows(tokenizer, family, rows: list[dict], recipe: Recipe, origins):
    max_len, overlength = recipe.model.max_seq_length, recipe.data.overlength
    origins = origins or [("rows", i + 1) for i in range(len(rows))]
    train_on = recipe.data.train_on
    if recipe.data.reasoning == "every_turn":
        pairs = [(i, c) for i, row in enumerate(rows) for c in expand_turns(row["messages"])]
        train_on = "last_assistant"
    else:
        pairs = [(i, row["messages"]) for i, row in enumerate(rows)]
    examples, dropped, dropped_rows, truncated = [], [], set(), 0
    tools = [rows[i].get("tools") for i, _ in pairs]  # each row's tool definitions reach its rendering
    for (i, _), ex in zip(pairs, tokenize_many(tokenizer, family, [c for _, c in pairs], train_on, tools=tools)):
        reason = None
        if isinstance(ex, SupervisionError):  # the kit's bug, not the row's: fail rather than drop
            raise DataError(f"{origins[i][0]}: row {origins[i][1]}: {ex}; this is a masking bug in the kit, "
                            "not in your data: please report it")
        if isinstance(ex, MaskError):
            reason = f"mask: {ex}"
        elif all(label == IGNORE_INDEX for label in ex["labels"]):  # data.train_on picked only loss_weight-0 turns
            reason = f"nothing to train: the assistant turns data.train_on ({train_on}) picks are marked not trained (loss_weight 0)"
        elif len(ex["input_ids"]) > max_len and overlength == "drop":
            reason = f"over max_seq_length: {len(ex['input_ids'])} > {max_len} tokens"
        elif len(ex["input_ids"]) > max_len:
            ex = {k: v[:max_len] for k, v in ex.items()}
            truncated += 1
            if all(label == IGNORE_INDEX for label in ex["labels"]):
                reason = f"nothing to train: no trained token within the first {max_len} tokens (truncated)"
        if reason:
            dropped.append({"source": origins[i][0], "row": origins[i][1], "reason": reason})
            dropped_rows.add(i)
        else:
            examples.append((i, ex))
    # A row is kept whole or not at all (with every_turn, one failing turn drops the row), so
    # training re-tokenizes exactly the examples prepare counted.
    kept = sorted({i for i, _ in examples} - dropped_rows)
    return [ex for i, ex in examples if i not in dropped_rows], kept, dropped, truncated
