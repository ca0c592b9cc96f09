"""Batched generation is faster without changing answers: the kit's batches (sized from free memory,
prompts sorted by length) give the one-by-one greedy tokens, generation runs in Unsloth's inference
mode and hands a training model back as it was, the batch-size rule is sane for an 8B model, and
tokens/s is recorded.

Padding and batching change logits by rounding only, so a batched greedy token may differ from the
one-by-one token only where the one-by-one top two logits are closer than that rounding can move
them (a near-tie; the rule and its measured noise floor: tests/near_ties.py)."""

import pytest
import torch

from tests.conftest import DTYPES
from tests.near_ties import check_against_one_by_one, one_by_one

pytestmark = pytest.mark.slow

MAX_NEW = 12
N_PROMPTS = 8


@pytest.fixture(scope="module", params=DTYPES)
def loaded(request, tiny_model_dir):
    """The tiny model in each of DTYPES (model.dtype): the near-tie rule must hold in both."""
    from kit import backend
    from kit.backend import FastLanguageModel

    model, tokenizer = backend.load_model(str(tiny_model_dir), 512, load_in_4bit=True, dtype=request.param)
    assert model.dtype == getattr(torch, request.param)
    FastLanguageModel.for_inference(model)  # as evaluate's load() leaves it
    return model, tokenizer


@pytest.fixture(scope="module")
def prompts():
    from kit.data.prompts import held_out_prompts
    from kit.demos.data import conversations

    convs = [p.messages for p in held_out_prompts(conversations())][:N_PROMPTS]
    assert len({len(c) for c in convs}) > 1  # one to three turns: batches need padding
    return convs


@pytest.fixture(scope="module")
def reference(loaded, prompts):
    """One-by-one greedy answers, their per-step logits, and the noise floor (tests/near_ties.py)."""
    from kit.families import get_family

    model, tokenizer = loaded
    return one_by_one(model, tokenizer, get_family("qwen3"), prompts, MAX_NEW)


@pytest.mark.parametrize("batch_size", [None, 3])  # auto (all prompts at once), and several sorted batches
def test_batched_answers_equal_one_by_one_greedy(loaded, prompts, reference, batch_size):
    from kit.families import get_family
    from kit.inference import generate

    model, tokenizer = loaded
    answers, speed = generate(
        model, tokenizer, get_family("qwen3"), prompts, max_new_tokens=MAX_NEW, batch_size=batch_size
    )
    assert speed["batch_size"] == (batch_size or N_PROMPTS)  # auto: memory is ample for 8 tiny sequences
    decided = check_against_one_by_one([a.ids for a in answers], reference)
    assert decided >= N_PROMPTS  # the comparison decided something (on CPU float32: every token)


def test_near_tie_rule_catches_answers_out_of_order(reference):
    """The check above is not vacuous: answers handed back in another order fail it."""
    answers, _ = reference
    ids = [a for a, _ in answers]
    with pytest.raises(AssertionError, match="answer differs"):
        check_against_one_by_one(ids[1:] + ids[:1], reference)


def test_tokens_per_second_recorded(loaded, prompts):
    from kit.families import get_family
    from kit.inference import generate

    model, tokenizer = loaded
    answers, speed = generate(model, tokenizer, get_family("qwen3"), prompts[:4], max_new_tokens=4)
    assert speed["tokens"] == sum(a.tokens for a in answers) > 0
    assert speed["seconds"] > 0
    # tokens/s is taken from the unrounded time, and both figures are then rounded (seconds to 1 ms,
    # tokens/s to 0.1): a short call's rate lies within what that rounding allows, no closer.
    low, high = speed["tokens"] / (speed["seconds"] + 5e-4), speed["tokens"] / max(speed["seconds"] - 5e-4, 1e-9)
    assert low - 0.05 <= speed["tokens_per_s"] <= high + 0.05


def cache_tensors(cache):
    if hasattr(cache, "layers"):  # transformers 5 DynamicCache
        return [t for layer in cache.layers for t in (layer.keys, layer.values)]
    return [t for pair in cache for t in pair]


def test_kv_estimate_matches_the_real_cache(loaded):
    from kit.inference import kv_cache_bytes_per_token

    model, tokenizer = loaded
    ids = tokenizer(["one two three four five six seven"], return_tensors="pt")["input_ids"].to(model.device)
    with torch.no_grad():
        cache = model(input_ids=ids, use_cache=True).past_key_values
    measured = sum(t.numel() * t.element_size() for t in cache_tensors(cache)) // ids.shape[1]
    dtype_bytes = torch.tensor([], dtype=model.dtype).element_size()
    assert measured == kv_cache_bytes_per_token(model.config, dtype_bytes)


def qwen3_8b_config():
    from transformers import Qwen3Config

    # Qwen3-8B's published shapes
    return Qwen3Config(
        vocab_size=151936,
        hidden_size=4096,
        intermediate_size=12288,
        num_hidden_layers=36,
        num_attention_heads=32,
        num_key_value_heads=8,
        head_dim=128,
    )


def test_batch_size_rule_for_an_8b_model():
    from kit.inference import MAX_BATCH, MEMORY_SHARE, batch_size_for, kv_cache_bytes_per_token, sequence_bytes

    config = qwen3_8b_config()
    assert kv_cache_bytes_per_token(config, 2) == 2 * 36 * 8 * 128 * 2  # K and V, 36 layers, 8 KV heads of 128, bf16
    weights = 6.5 * 2**30  # the 8B in 4-bit with its LoRA, loaded
    for prompt, new in [(128, 64), (512, 256), (1024, 512)]:
        sizes = {gb: batch_size_for(config, prompt, new, int(gb * 2**30 - weights)) for gb in (16, 24, 80)}
        per_sequence = sequence_bytes(config, prompt, new, 2)
        for gb, size in sizes.items():
            free = gb * 2**30 - weights
            assert 1 <= size <= MAX_BATCH and size * per_sequence <= MEMORY_SHARE * free
            assert size == MAX_BATCH or (size + 1) * per_sequence > MEMORY_SHARE * free  # no room left unused
        assert 8 <= sizes[16] <= sizes[24] <= sizes[80]  # at least the old fixed batch even on a 16 GB GPU
        assert sizes[80] == MAX_BATCH
    assert batch_size_for(config, 512, 256, 2**30) < batch_size_for(config, 128, 64, 2**30)  # longer prompts, fewer
    assert batch_size_for(config, 32_000, 1_000, 2**30) == 1  # never zero, even when one sequence does not fit


@pytest.fixture(params=[True, False], ids=["checkpointing", "no-checkpointing"])
def training_model(tiny_model_dir, request):
    """A LoRA model set up for training, as the train stage has it (its own copy: get_peft_model
    changes the model it wraps), with and without gradient checkpointing."""
    from kit import backend
    from kit.backend import FastLanguageModel

    model, tokenizer = backend.load_model(str(tiny_model_dir), 512, load_in_4bit=True)
    model = FastLanguageModel.get_peft_model(
        model,
        r=8,
        lora_alpha=8,
        target_modules=["q_proj", "v_proj"],
        use_gradient_checkpointing=request.param,
        random_state=0,
    )
    FastLanguageModel.for_training(model)
    return model, tokenizer, request.param


def test_generation_runs_in_inference_mode_and_gives_training_back(training_model, prompts):
    from kit.families import get_family
    from kit.inference import generate

    model, tokenizer, checkpointing = training_model
    seen = []
    hook = model.get_base_model().register_forward_pre_hook(
        lambda module, args, kwargs: seen.append((module.training, kwargs.get("past_key_values") is not None)),
        with_kwargs=True,
    )
    use_cache = model.config.use_cache  # training's setting (for_inference turns the cache on)
    try:
        assert model.training and model.is_gradient_checkpointing == checkpointing
        generate(model, tokenizer, get_family("qwen3"), prompts[:2], max_new_tokens=4)
        assert model.training and model.is_gradient_checkpointing == checkpointing
        assert model.config.use_cache == use_cache
        model.eval()  # as LiveSamples does before generating mid-training
        generate(model, tokenizer, get_family("qwen3"), prompts[:2], max_new_tokens=4)
        assert not model.training and model.is_gradient_checkpointing == checkpointing
        assert model.config.use_cache == use_cache
    finally:
        hook.remove()
    assert seen and not any(training for training, _ in seen)  # eval mode while generating
    assert any(cached for _, cached in seen)  # later steps reuse the KV cache
    assert tokenizer.padding_side == "right"  # what training pads with, as for_training left it


def test_evaluate_lets_generate_size_batches():
    from kit.evaluation.evaluate import _generation_options

    from kit.recipes import apply_overrides, load_recipe

    recipe = load_recipe("tiny-demo")[1]
    assert recipe.eval.batch_size is None and _generation_options(recipe, None)["batch_size"] is None
    assert _generation_options(apply_overrides(recipe, {"eval.batch_size": 4}), None)["batch_size"] == 4
