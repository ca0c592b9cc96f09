"""The one table of what differs between training methods (``train.method``), beside the family table.

sft, dpo, kto, orpo and grpo share the data sources, the rendering and masks, the run directory and
export. What differs is what prepare writes a row as, what the trainer is given, TRL's trainer and
config, and what evaluate adds: every such difference is a field here, and the stages ask the method
(``method_of(config).rewards``), never its name. Adding a method is one entry here plus its own
functions (docs/architecture.md#adding-a-method).

This module sits at the bottom of the layers (it imports nothing of the kit, nor TRL): the data
stage reads it before any model or trainer exists, so trainers and configs are named, and
``kit.training.trainers`` resolves the names.
"""

from __future__ import annotations

from dataclasses import dataclass

# What prepare writes for a method, one canonical row a line of data/{train,eval}.jsonl:
CONVERSATIONS = "conversations"  # {"messages", "tools"?}: kit.data.formats
PAIRS = "pairs"  # {"prompt", "chosen", "rejected", "tools"?} or a labelled completion: kit.data.preference


@dataclass(frozen=True)
class Method:
    name: str
    # The canonical row prepare writes (CONVERSATIONS or PAIRS); both are rendered with the family's
    # template and masks. A PAIRS method reads the preference layouts, a CONVERSATIONS one the chat layouts.
    rows: str
    # The data it trains on, in words, for the one-line refusals of other data.
    wants: str
    # Also reads completions labelled desirable or not (TRL's unpaired layout), and trains each pair as
    # two of them (the chosen desirable, the rejected not), as TRL unpairs them (KTO).
    labelled: bool
    # What its trainer is given per row (kit.data.tokenize): "turns" (input_ids, assistant-only labels),
    # "pairs" (prompt, chosen and rejected ids), "completions" (prompt and completion ids, a label),
    # "prompts" (the prompt rendered as at inference; its answers are sampled while training).
    examples: str
    # The kit's trainer class, by its name in kit.training.trainers (TRL's trainer with KitTrainer mixed in).
    trainer: str
    # TRL's config class for it, by its name in kit.training.trainers.
    config: str
    # Config fields its trainer needs beside the recipe's (a recipe value still wins).
    config_defaults: tuple[tuple[str, object], ...] = ()
    # Sequences bounded by model.max_seq_length (TRL's max_length); False: it samples answers of its
    # own length (prepare bounded the prompts).
    max_length: bool = True
    # Its answers are scored by train.grpo.rewards: checked by prepare before any data is read, weighted
    # in the config, called by the trainer, and scored on held-out prompts by evaluate.
    rewards: bool = False
    # evaluate adds the held-out pairs' reward accuracy and margin (and labelled completions' margin).
    # (The loss plot follows what the trainer logged: TRL's reward margins, GRPO's rewards; kit.plots.)
    scores_preference: bool = False

    @property
    def reads_pairs(self) -> bool:
        return self.rows == PAIRS


PAIRS_WANTED = "preference pairs, a chosen and a rejected answer per prompt"

TABLE: dict[str, Method] = {
    m.name: m
    for m in (
        Method(
            "sft",
            CONVERSATIONS,
            "conversations",
            labelled=False,
            examples="turns",
            trainer="KitSFTTrainer",
            config="SFTConfig",
        ),
        Method(
            "dpo",
            PAIRS,
            PAIRS_WANTED,
            labelled=False,
            examples="pairs",
            trainer="KitDPOTrainer",
            config="DPOConfig",
            scores_preference=True,
        ),
        Method(
            "kto",
            PAIRS,
            "preference pairs or completions labelled desirable or not",
            labelled=True,
            examples="completions",
            trainer="KitKTOTrainer",
            config="KTOConfig",
            scores_preference=True,
        ),
        # ORPO's collator needs its own columns, which the model's forward signature lacks.
        Method(
            "orpo",
            PAIRS,
            PAIRS_WANTED,
            labelled=False,
            examples="pairs",
            trainer="KitORPOTrainer",
            config="ORPOConfig",
            config_defaults=(("remove_unused_columns", False),),
            scores_preference=True,
        ),
        Method(
            "grpo",
            CONVERSATIONS,
            "conversations (their prompts; each first answer is the row's answer)",
            labelled=False,
            examples="prompts",
            trainer="KitGRPOTrainer",
            config="GRPOConfig",
            max_length=False,
            rewards=True,
        ),
    )
}

# train.method's values, in the order the docs list them.
METHODS = tuple(TABLE)


def get_method(name: str) -> Method:
    """The method ``train.method`` names (the recipe check has already refused any other)."""
    return TABLE[name]


def method_of(config) -> Method:
    """The method of a resolved recipe (``kit.recipes.Recipe``)."""
    return TABLE[config.train.method]
