"""What a recipe may hold: one frozen dataclass per section, written out so editors and type checkers
see every key (``recipe.train.max_steps`` is an ``int``).

This is the one declaration of the recipe format. Each field's annotation is the type a recipe value
must have (``X | None``: null is allowed; ``list[str]``: every element is checked too; a ``float``
also accepts an int); its default is the value a recipe that leaves the key out gets (no default:
the key is required); ``setting``'s metadata holds the help text and the allowed values or bounds.
``kit.recipes`` validates recipes against these classes and generates docs/recipes.md from them.
Like ``kit.recipes``, this imports only the standard library, the family and method tables and the
value lists (``kit.recipe_values``).
"""

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any

from kit.families import FAMILIES
from kit.methods import METHODS  # train.method's values: the method table

# The values recipe keys may take (layouts, losses, schedulers, optimizers, bounds): kit.recipe_values.
from kit.recipe_values import (  # noqa: F401 (FORMATS ... are read from here too)
    FORMATS,
    PREFERENCE_FORMATS,
    UNPAIRED_FORMATS,
    DPO_LOSSES,
    KTO_LOSSES,
    GRPO_LOSSES,
    LR_SCHEDULERS,
    OPTIMIZERS,
    SEED_MAX,
)

REQUIRED: Any = dataclasses.MISSING  # a field without a default: the recipe must give the key


def setting(
    default: Any = REQUIRED,
    help: str = "",
    *,
    choices=None,
    min: float | None = None,
    max: float | None = None,
    above: float | None = None,
    below: float | None = None,
    forbid: dict | None = None,
) -> Any:
    """A recipe key's dataclass field. ``min``/``max`` are inclusive bounds, ``above``/``below``
    exclusive ones (a rate or a fraction that must be > 0); ``forbid`` maps a value the bounds let
    through to why it is refused."""
    meta = {
        "help": help,
        "choices": tuple(choices) if choices else None,
        "min": min,
        "max": max,
        "above": above,
        "below": below,
        "forbid": forbid or {},
    }
    if isinstance(default, (list, dict)):  # a dataclass may not share one mutable default
        return field(default_factory=lambda: copy.deepcopy(default), metadata=meta)
    return field(default=default, metadata=meta)


class RecipeSection:
    """A resolved recipe, or one of its sections: read-only attributes, one per recipe key."""

    def to_dict(self) -> dict:
        """As plain data (a copy): what recipe.yaml holds."""
        return dataclasses.asdict(self)


# kw_only: a required key may follow keys with defaults; sections are built by keyword anyway.
# The decorator is written out on each class, as type checkers recognize only a direct @dataclass.
@dataclass(frozen=True, kw_only=True)
class ModelSection(RecipeSection):
    """The base model and how it is loaded."""

    id: str = setting(help="Hugging Face repo id, local directory, or builtin:tiny-qwen3")
    family: str = setting(choices=sorted(FAMILIES), help="chat format family (kit/families.py)")
    max_seq_length: int = setting(2048, min=1, help="longest example in tokens (longer ones: data.overlength)")
    load_in_4bit: bool = setting(True, help="load the base model quantized to 4 bits (QLoRA)")
    dtype: str | None = setting(
        None,
        choices=["float32", "bfloat16", "float16"],
        help="the dtype the model computes in; null: Unsloth's choice (bfloat16 where the GPU or "
        "CPU has it, else float16 on a GPU and float32 on a CPU)",
    )


@dataclass(frozen=True, kw_only=True)
class DataSection(RecipeSection):
    """The training data: where it is, its layout, and how rows become examples."""

    source: str | list = setting(
        help="file, folder, glob or Hub id, or a list of them / of {path, weight}; "
        "relative paths start at the project root"
    )
    format: str = setting(
        "auto",
        choices=["auto", *FORMATS, *PREFERENCE_FORMATS, *UNPAIRED_FORMATS],
        help="the rows' layout; auto: detected (preference layouts: with train.method dpo, kto "
        "or orpo; unpaired: with kto)",
    )
    columns: dict = setting({}, help="canonical field name -> the name your data uses, e.g. {instruction: question}")
    eval_fraction: float = setting(
        0.1,
        min=0,
        below=1,
        forbid={0: "holds out no rows; evaluate and the merge checks need some"},
        help="share of rows held out for evaluation",
    )
    seed: int = setting(
        3407, min=0, max=SEED_MAX, help="seed of the train/eval split and of weighted sources' sampling"
    )
    invalid_rows: str = setting(
        "error",
        choices=["error", "drop"],
        help="error: stop at the first bad row, naming it; drop: leave it out, counted in the prepare report",
    )
    train_on: str | None = setting(
        None,
        choices=["all_assistant", "last_assistant"],
        help="which assistant turns carry loss; null: the family's default",
    )
    reasoning: str = setting(
        "as_template",
        choices=["as_template", "every_turn", "inline"],
        help="as_template: as the model sees it at inference; every_turn: one example per "
        "assistant turn so every turn's reasoning is rendered; inline: <think> blocks in "
        "the answer for families without a reasoning channel",
    )
    overlength: str = setting(
        "drop",
        choices=["drop", "truncate"],
        help="what an example longer than model.max_seq_length does; truncate keeps its whole answers (a cut answer "
        "is context; a pair over the limit is dropped)",
    )


@dataclass(frozen=True, kw_only=True)
class LoraSection(RecipeSection):
    """The LoRA adapter, passed to Unsloth's FastLanguageModel.get_peft_model."""

    r: int = setting(16, min=1, help="rank")
    alpha: int = setting(16, min=1, help="lora_alpha: the update is scaled by alpha / r")
    dropout: float = setting(0.0, min=0, below=1, help="lora_dropout")
    target_modules: list = setting(
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        help="the projections that get adapters",
    )
    use_gradient_checkpointing: bool | str = setting("unsloth", help='true, false or "unsloth" (offloaded)')
    use_rslora: bool = setting(False, help="rank-stabilized LoRA (scale alpha / sqrt(r))")


@dataclass(frozen=True, kw_only=True)
class DpoSection(RecipeSection):
    """Direct preference optimisation (train.method: dpo), through TRL's DPOTrainer."""

    beta: float = setting(
        0.1, above=0, help="how far the tuned model may move from the reference (the base): higher stays closer"
    )
    loss_type: str = setting(
        "sigmoid", choices=DPO_LOSSES, help="TRL's DPO loss: sigmoid (the DPO paper), ipo, hinge, robust ..."
    )
    label_smoothing: float = setting(
        0.0, min=0, below=0.5, help="the share of pairs assumed flipped (robust, exo_pair)"
    )


@dataclass(frozen=True, kw_only=True)
class KtoSection(RecipeSection):
    """Kahneman-Tversky optimisation (train.method: kto), through TRL's KTOTrainer: completions labelled
    desirable or not, unpaired."""

    beta: float = setting(
        0.1, above=0, help="how far the tuned model may move from the reference (the base): higher stays closer"
    )
    loss_type: str = setting("kto", choices=KTO_LOSSES, help="TRL's KTO loss: kto (the KTO paper) or apo_zero_unpaired")
    desirable_weight: float = setting(
        1.0, above=0, help="weight of the desirable completions' loss (raise it when they are the fewer)"
    )
    undesirable_weight: float = setting(1.0, above=0, help="weight of the undesirable completions' loss")


@dataclass(frozen=True, kw_only=True)
class OrpoSection(RecipeSection):
    """Odds-ratio preference optimisation (train.method: orpo), through TRL's experimental ORPOTrainer: the
    chosen answer's supervised loss plus an odds-ratio term against the rejected one, with no reference model."""

    beta: float = setting(0.1, above=0, help="weight of the odds-ratio term (the paper's lambda)")


@dataclass(frozen=True, kw_only=True)
class GrpoSection(RecipeSection):
    """Group relative policy optimisation (train.method: grpo), through TRL's GRPOTrainer: for each prompt
    the model samples ``num_generations`` answers, the reward functions score them, and each answer is
    reinforced by how far its reward stands above its group's mean."""

    rewards: list = setting(
        [],
        help="the reward functions, each {function: NAME, weight?, ...settings}: format, "
        "json_schema, exact_answer, contains_answer, tool_call or module:function "
        "(kit/rewards.py)",
    )
    num_generations: int = setting(
        4,
        min=2,
        help="answers sampled per prompt (a group); per_device_train_batch_size "
        "x gradient_accumulation_steps must be a multiple of it",
    )
    max_completion_length: int = setting(64, min=1, help="tokens sampled per answer at most")
    temperature: float = setting(1.0, above=0, help="sampling temperature of the answers")
    beta: float = setting(
        0.0, min=0, help="weight of the KL term to the reference model (the base); 0: no reference model is kept"
    )
    loss_type: str = setting(
        "dapo", choices=GRPO_LOSSES, help="TRL's GRPO loss: dapo (TRL's default), grpo, dr_grpo, bnpo"
    )
    scale_rewards: str = setting(
        "group",
        choices=["group", "batch", "none"],
        help="advantages divided by the rewards' standard deviation in the group, the batch, or not at all",
    )


@dataclass(frozen=True, kw_only=True)
class TrainSection(RecipeSection):
    """How the adapter is trained: ``method`` and its sections (``dpo``, ``kto``, ``orpo``, ``grpo``) are the
    kit's; every other key is a field of TRL's config for the method (SFTConfig, DPOConfig, KTOConfig,
    ORPOConfig, GRPOConfig), passed through as given. Under grpo the batch sizes count answers, not prompts."""

    method: str = setting(
        "sft",
        choices=METHODS,
        help="sft: supervised answers (conversations); dpo, orpo: preference pairs (a chosen and "
        "a rejected answer per prompt); kto: completions labelled desirable or not (or pairs); "
        "grpo: the conversations' prompts, sampled answers scored by train.grpo.rewards",
    )
    max_steps: int = setting(
        -1,
        min=-1,
        forbid={0: "trains nothing; give at least 1, or -1 to train num_train_epochs"},
        help="-1: train num_train_epochs; otherwise at least 1",
    )
    num_train_epochs: float = setting(1.0, above=0, help="passes over the training split, where max_steps is -1")
    per_device_train_batch_size: int = setting(2, min=1, help="training examples per batch")
    per_device_eval_batch_size: int = setting(8, min=1, help="examples per batch when computing eval loss")
    gradient_accumulation_steps: int = setting(4, min=1, help="batches per optimizer step")
    learning_rate: float = setting(2e-4, above=0, help="peak learning rate, reached after warmup")
    warmup_steps: int = setting(5, min=0, help="steps of linear warmup from 0")
    lr_scheduler_type: str = setting("linear", choices=LR_SCHEDULERS, help="a transformers scheduler name")
    weight_decay: float = setting(0.01, min=0, help="the optimizer's weight decay")
    optim: str | None = setting(
        None, choices=OPTIMIZERS, help="a transformers optimizer name; null: adamw_8bit on GPU, adamw_torch on CPU"
    )
    logging_steps: int = setting(1, min=1, help="steps between training-loss logs")
    eval_steps: int = setting(50, min=1, help="steps between evaluations (eval loss, live samples)")
    save_steps: int = setting(100, min=1, help="steps between checkpoints")
    save_total_limit: int = setting(2, min=1, help="checkpoints kept; older ones are deleted")
    seed: int = setting(3407, min=0, max=SEED_MAX, help="seed of training and of the LoRA weights' initialization")
    init_adapter: str | None = setting(
        None,
        help="train on top of an earlier run's adapter (SFT, then DPO): its "
        "recipe (newest run), recipe/run-id, a run's directory or an "
        "adapter directory; null: a new adapter on the base model",
    )
    dpo: DpoSection = field(default_factory=DpoSection)
    kto: KtoSection = field(default_factory=KtoSection)
    orpo: OrpoSection = field(default_factory=OrpoSection)
    grpo: GrpoSection = field(default_factory=GrpoSection)

    def trainer_args(self) -> dict:
        """The keys that are TRL config fields (all but the kit's ``method``, ``init_adapter`` and method
        sections), with the section of ``method``'s own (but GRPO's ``rewards``: functions, not config)."""
        sections = ("method", "init_adapter", *METHODS)
        own = {k: v for k, v in self.to_dict().get(self.method, {}).items() if k != "rewards"}
        return {**{k: v for k, v in self.to_dict().items() if k not in sections}, **own}


@dataclass(frozen=True, kw_only=True)
class BehaviorSection(RecipeSection):
    """The behaviour the fine-tune should teach, scored on held-out answers."""

    description: str = setting("", help="what the behaviour is, for the report")
    prefix: str | None = setting(None, help="answer shows the behaviour if it starts with this")
    regex: str | None = setting(None, help="... or if this regular expression matches")


@dataclass(frozen=True, kw_only=True)
class EvalSection(RecipeSection):
    """How the base and the tuned model are compared on held-out prompts."""

    max_new_tokens: int = setting(64, min=1, help="tokens generated per answer")
    num_prompts: int = setting(20, min=1, help="held-out prompts answered by base and tuned")
    batch_size: int | None = setting(
        None,
        min=1,
        help="prompts per generate() call (left-padded); null: from free memory (kit.inference.batch_size_for)",
    )
    decoding: str = setting(
        "greedy",
        choices=["greedy", "recommended"],
        help="greedy: deterministic, for comparisons; recommended: the family's sampling",
    )
    thinking: bool | None = setting(None, help="thinking on/off for families that have a switch; null: family default")
    facts: list[str] = setting(
        [],
        help="fact strings (a price, an address); the report scores the share of held-out "
        "answers that state every fact their reference answer states",
    )
    live_samples: int = setting(3, min=0, help="held-out prompts answered at every evaluation during training (0: off)")
    behavior: BehaviorSection = field(default_factory=BehaviorSection)


@dataclass(frozen=True, kw_only=True)
class ExportSection(RecipeSection):
    """The merged model, its GGUF files and the Ollama Modelfile."""

    merged_16bit: bool = setting(True, help="not read: merged/ (16-bit) is always written")
    merge_method: str = setting(
        "auto",
        choices=["auto", "streaming", "unsloth"],
        help="auto: shard by shard where the base checkpoint is local, else Unsloth's save_pretrained_merged",
    )
    gguf: list = setting(["q8_0", "q4_k_m"], help="GGUF files to write: f16, bf16, q8_0, q4_k_m, q5_k_m")
    verify_tokens: int = setting(16, min=1, help="greedy tokens compared between each GGUF and the merged model")
    # No longer read (the logits check is judged against a noise floor each merge measures);
    # kept so that runs prepared before, whose recipe.yaml holds it, still load.
    logit_tolerance: float | None = setting(None, help="unused; kept for runs prepared by earlier versions")
    system: str | None = setting(
        None,
        help="SYSTEM of the Ollama Modelfile; null: the training data's system prompt if every row has the same one",
    )


@dataclass(frozen=True, kw_only=True)
class Recipe(RecipeSection):
    """A whole recipe (recipes/<name>.yaml)."""

    description: str = setting("", help="what this recipe is for")
    model: ModelSection = field()  # model.id, model.family and data.source are required
    data: DataSection = field()
    lora: LoraSection = field(default_factory=LoraSection)
    train: TrainSection = field(default_factory=TrainSection)
    eval: EvalSection = field(default_factory=EvalSection)
    export: ExportSection = field(default_factory=ExportSection)
