"""The values recipe keys may take: the data layouts, the TRL losses, transformers' schedulers and
optimizers (tests/test_recipes.py keeps these lists equal to transformers' own enums, which this
module does not import), and the bounds of seeds. ``kit.recipe_schema`` declares the keys."""

# The data layouts kit.data.formats reads (a test checks each has its reader there).
FORMATS = (
    "messages",
    "sharegpt",
    "alpaca",
    "conversation_pair",
    "prompt_completion",
    "hermes",
    "openai_functions",
    "xlam",
    "llamafactory",
)
# The preference layouts kit.data.preference reads into a prompt and a chosen and a rejected answer.
PREFERENCE_FORMATS = ("chosen_rejected", "hh_text", "sharegpt_preference", "paired_responses", "openai_preference")
# The unpaired layout kit.data.preference reads for kto: a prompt, one completion and a boolean label.
UNPAIRED_FORMATS = ("unpaired",)
# DPO losses of TRL's DPOTrainer that need nothing beyond a pair and beta.
DPO_LOSSES = (
    "sigmoid",
    "ipo",
    "hinge",
    "robust",
    "exo_pair",
    "nca_pair",
    "bco_pair",
    "sppo_hard",
    "apo_zero",
    "apo_down",
    "sigmoid_norm",
)
# KTO losses of TRL's KTOTrainer.
KTO_LOSSES = ("kto", "apo_zero_unpaired")
# GRPO losses of TRL's GRPOTrainer that need no more than a group's rewards.
GRPO_LOSSES = ("dapo", "grpo", "dr_grpo", "bnpo")

# transformers' SchedulerType values (train.lr_scheduler_type), as of transformers 5.17; written out so
# kit.recipes need not import transformers. tests/test_recipes.py checks they equal transformers' enum.
LR_SCHEDULERS = (
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "constant",
    "constant_with_warmup",
    "inverse_sqrt",
    "reduce_lr_on_plateau",
    "cosine_with_min_lr",
    "cosine_warmup_with_min_lr",
    "warmup_stable_decay",
    "greedy",
)
# transformers.training_args.OptimizerNames values (train.optim), checked by the same test.
OPTIMIZERS = (
    "adamw_torch",
    "adamw_torch_fused",
    "adamw_torch_xla",
    "adamw_torch_npu_fused",
    "adafactor",
    "adamw_anyprecision",
    "adamw_torch_4bit",
    "adamw_torch_8bit",
    "ademamix",
    "sgd",
    "adagrad",
    "adamw_bnb_8bit",
    "adamw_8bit",
    "ademamix_8bit",
    "lion_8bit",
    "lion_32bit",
    "paged_adamw_32bit",
    "paged_adamw_8bit",
    "paged_ademamix_32bit",
    "paged_ademamix_8bit",
    "paged_lion_32bit",
    "paged_lion_8bit",
    "rmsprop",
    "rmsprop_bnb",
    "rmsprop_bnb_8bit",
    "rmsprop_bnb_32bit",
    "galore_adamw",
    "galore_adamw_8bit",
    "galore_adafactor",
    "galore_adamw_layerwise",
    "galore_adamw_8bit_layerwise",
    "galore_adafactor_layerwise",
    "lomo",
    "adalomo",
    "grokadamw",
    "schedule_free_radam",
    "schedule_free_adamw",
    "schedule_free_sgd",
    "apollo_adamw",
    "apollo_adamw_layerwise",
    "stable_adamw",
)
# Seeds feed transformers' set_seed and numpy's, which take 0 .. 2**32 - 1.
SEED_MAX = 2**32 - 1
