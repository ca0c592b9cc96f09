"""Gradient accumulation keeps the token-count normalisation: one optimizer step over four rows with
very different numbers of supervised tokens gives the same LoRA gradients as a full batch of 4, as
2 x 2 accumulation and as 1 x 4 accumulation, through the kit's own trainer and SFT config.

Each micro-batch loss is its token sum divided by the step's total supervised tokens
(``num_items_in_batch``). Were it each micro-batch's own mean (what Unsloth warns about when it
cannot count the labels), every micro-batch would weigh the same whatever its token count; the test
runs that mode too and shows it lands far outside the tolerance."""

from types import SimpleNamespace

import pytest

from kit.recipes import apply_overrides
from tests.conftest import DTYPES

pytestmark = pytest.mark.slow

SHORT, LONG = "Yes.", " ".join(["Dear customer, thank you for writing to us about your order."] * 6)
QUESTIONS = ["Can I return my blender?", "Do you ship abroad?", "Where is my parcel?", "Is the tablet waterproof?"]


def rows():
    """Two one-word answers, then two long ones: sequential micro-batches of 2 hold 2 x ~3 and
    2 x ~70 supervised tokens."""
    answers = [SHORT, SHORT, LONG, LONG]
    return [
        {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
        for q, a in zip(QUESTIONS, answers)
    ]


@pytest.fixture(scope="module", params=DTYPES)
def setup(request, tiny_model_dir, tmp_path_factory):
    """The tiny model computing in each of DTYPES (model.dtype), its LoRA adapters, and four rows."""
    import torch
    from datasets import Dataset

    from kit.training import train as T  # imports Unsloth first
    from kit.families import family_for
    from kit.data.tokenize import tokenize_rows
    from kit.recipes import load_recipe

    recipe = load_recipe("tiny-demo", {"model.dtype": request.param})[1]
    model, tokenizer = T.load_model(recipe)
    model = T.add_lora(model, recipe)
    torch.manual_seed(0)
    with torch.no_grad():  # LoRA B starts at zero, which leaves every A gradient zero: give both some
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    tokenized = tokenize_rows(tokenizer, family_for(recipe), rows(), recipe)
    examples = tokenized.examples
    assert not tokenized.dropped
    counts = [sum(label != -100 for label in ex["labels"]) for ex in examples]
    assert max(counts) > 10 * min(counts)  # what makes a per-micro-batch mean visibly wrong
    return SimpleNamespace(
        T=T,
        model=model,
        tokenizer=tokenizer,
        recipe=recipe,
        dataset=Dataset.from_list(examples),
        tmp=tmp_path_factory.mktemp("accumulation"),
    )


def one_step_gradients(s, batch: int, accumulation: int, count_items: bool = True, order=(0, 1, 2, 3)) -> dict:
    """LoRA gradients of one optimizer step over the four rows (in ``order``), as the kit's trainer
    accumulates them, read just before the optimizer applies them. ``count_items=False`` withholds
    the token count, so each micro-batch loss is a mean and is divided by the accumulation steps."""
    import torch
    from transformers import TrainerCallback

    from kit.training.trainers import KitSFTTrainer

    T, model = s.T, s.model
    recipe = apply_overrides(
        s.recipe,
        {
            "train": {
                "per_device_train_batch_size": batch,
                "gradient_accumulation_steps": accumulation,
                "max_steps": 1,
                "warmup_steps": 0,
                "logging_steps": 1,
                "eval_steps": 1000,
                "save_steps": 1000,
            }
        },
    )
    extra = {
        "max_grad_norm": 0.0,  # no clipping: it would rescale the gradients being compared
        "train_sampling_strategy": "sequential",
    }
    grads = {}

    class Capture(TrainerCallback):
        def on_pre_optimizer_step(self, args, state, control, **kwargs):
            grads.update(
                {
                    n: p.grad.detach().float().cpu().clone()
                    for n, p in model.named_parameters()
                    if p.requires_grad and p.grad is not None
                }
            )

    class MeanPerMicroBatch(KitSFTTrainer):
        def get_batch_samples(self, *args, **kwargs):
            batches, _ = super().get_batch_samples(*args, **kwargs)
            return batches, None

    trainer_class = KitSFTTrainer if count_items else MeanPerMicroBatch
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    trainer = trainer_class(
        model=model,
        processing_class=s.tokenizer,
        train_dataset=s.dataset.select(order),
        eval_dataset=s.dataset.select([0]),
        args=T.trainer_config(SimpleNamespace(checkpoints_dir=s.tmp / f"b{batch}x{accumulation}"), recipe, **extra),
        callbacks=[Capture()],
    )
    trainer.train()
    with torch.no_grad():  # the next run starts from the same weights
        for n, p in model.named_parameters():
            if n in before:
                p.copy_(before[n])
    model.zero_grad(set_to_none=True)
    assert grads and any(g.abs().sum() > 0 for g in grads.values())
    return grads


def relative_difference(a: dict, b: dict) -> float:
    import torch

    assert a.keys() == b.keys()
    diff = torch.sqrt(sum(((a[k] - b[k]) ** 2).sum() for k in a))
    norm = torch.sqrt(sum((b[k] ** 2).sum() for k in b))
    return float(diff / norm)


def test_accumulated_gradients_equal_the_full_batch(setup):
    full = one_step_gradients(setup, batch=4, accumulation=1)
    one_by_four = one_step_gradients(setup, batch=1, accumulation=4)
    # Noise floor: the same four micro-batches accumulated in the reverse order. Mathematically the
    # same sum; the difference is the rounding of the gradient dtype (TRL keeps a QLoRA adapter, and
    # so its gradients, in bfloat16), floored at float32's for adapters kept in float32.
    reversed_order = one_step_gradients(setup, batch=1, accumulation=4, order=(3, 2, 1, 0))
    floor = max(relative_difference(reversed_order, one_by_four), torch_eps())
    tolerance = 4 * floor
    errors = {
        "2x2": relative_difference(one_step_gradients(setup, batch=2, accumulation=2), full),
        "1x4": relative_difference(one_by_four, full),
    }
    mean_of_means = relative_difference(one_step_gradients(setup, batch=2, accumulation=2, count_items=False), full)
    print(
        f"noise floor {floor:.1e}, tolerance {tolerance:.1e}; relative error against the full batch: "
        + ", ".join(f"{k} {v:.1e}" for k, v in errors.items())
        + f"; per-micro-batch means {mean_of_means:.1e}"
    )
    assert all(error <= tolerance for error in errors.values()), (errors, tolerance)
    # The test can fail: per-micro-batch means weigh ~3 supervised tokens like ~80, far outside the tolerance.
    assert mean_of_means > 10 * tolerance, (mean_of_means, tolerance)


def torch_eps() -> float:
    import torch

    return torch.finfo(torch.float32).eps


def test_evaluation_passes_the_token_count_and_keeps_the_per_token_mean(setup):
    """The kit's evaluation step gives Unsloth's loss the batch's supervised-token count (TRL's
    leaves it out, which on a GPU makes Unsloth warn that the normalisation is lost); the eval loss
    is the same per-token mean either way."""
    from trl import SFTTrainer

    from kit.training.trainers import KitSFTTrainer

    T, seen = setup.T, []
    recipe = apply_overrides(setup.recipe, {"train.per_device_eval_batch_size": 4})

    def counting(base):
        class Counting(base):
            def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
                seen.append((base.__name__, num_items_in_batch))
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

        return Counting

    losses = {}
    for base in (KitSFTTrainer, SFTTrainer):
        trainer = counting(base)(
            model=setup.model,
            processing_class=setup.tokenizer,
            train_dataset=setup.dataset,
            eval_dataset=setup.dataset,
            args=T.trainer_config(SimpleNamespace(checkpoints_dir=setup.tmp / "eval"), recipe),
        )
        losses[base.__name__] = trainer.evaluate()["eval_loss"]
    kit_counts = [int(n) for name, n in seen if name == "KitSFTTrainer"]
    supervised = sum(sum(label != -100 for label in ex["labels"]) for ex in setup.dataset)
    assert kit_counts and sum(kit_counts) >= supervised - len(setup.dataset)  # labels shift by one per row
    assert all(n is None for name, n in seen if name != "KitSFTTrainer")  # what TRL's own step passes
    # Same quantity, summed in another order (a wrong normalisation would be off by a factor of tokens).
    assert abs(losses["KitSFTTrainer"] - losses["SFTTrainer"]) <= 1e-3 * abs(losses["SFTTrainer"])


def test_real_tokens_are_counted_without_padding(setup):
    """The kit counts the real tokens it trained on (for tokens/s) on the device, without the read-back
    per micro-batch of transformers' count: a short and a long row per micro-batch, so padding would show."""
    import torch

    from kit.training.trainers import KitSFTTrainer

    T = setup.T
    recipe = apply_overrides(
        setup.recipe,
        {
            "train": {
                "per_device_train_batch_size": 2,
                "gradient_accumulation_steps": 2,
                "max_steps": 1,
                "warmup_steps": 0,
                "logging_steps": 1,
                "eval_steps": 1000,
                "save_steps": 1000,
            }
        },
    )
    dataset = setup.dataset.select([0, 2, 1, 3])  # SHORT with LONG, twice
    trainer = KitSFTTrainer(
        model=setup.model,
        processing_class=setup.tokenizer,
        train_dataset=dataset,
        eval_dataset=setup.dataset.select([0]),
        args=T.trainer_config(
            SimpleNamespace(checkpoints_dir=setup.tmp / "tokens"), recipe, train_sampling_strategy="sequential"
        ),
    )
    before = {n: p.detach().clone() for n, p in setup.model.named_parameters() if p.requires_grad}
    trainer.train()
    with torch.no_grad():  # later tests start from the same weights
        for n, p in setup.model.named_parameters():
            if n in before:
                p.copy_(before[n])
    lengths = [len(ex["input_ids"]) for ex in dataset]
    padded = 2 * max(lengths[:2]) + 2 * max(lengths[2:])
    assert int(trainer.real_tokens) == sum(lengths) < padded, (int(trainer.real_tokens), lengths)
    assert trainer.args.include_num_input_tokens_seen == "no"  # transformers' own, synchronising count is off
