"""Generation speed: the kit's batched greedy generation (batch size from free memory, prompts
sorted by length, Unsloth's inference mode) against one-by-one greedy generation and against the
previous fixed batch of 8, on the same model and prompts, in one process. Prints generated tokens
per second, the ratios, and how many batched answers equal the one-by-one answers token for token.

    .venv/bin/python bench/generate.py                      # CPU: the tiny demo model (~2 min on 2 cores)
    .venv/bin/python bench/generate.py --shape qwen3-8b     # GPU: a random Qwen3-8B-shaped model in 4-bit

``--shape qwen3-8b`` builds a randomly initialised checkpoint with Qwen3-8B's published shapes
(bf16, ~16 GB of disk, once, into the kit cache) and loads it as the kit does: Unsloth's
``FastLanguageModel.from_pretrained(load_in_4bit=True)`` plus a rank-16 LoRA on all linear layers.
One-by-one generation runs on the first ``--singles`` prompts only (it is the slow one); tokens/s
is a rate, so the ratio holds, and equality is checked on those prompts. The fixed batch of 8 goes
through today's ``generate`` (prompts sorted by length), so it isolates the batch size.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time

# Qwen3-8B's published config (hidden 4096, 36 layers, 32 query / 8 KV heads of 128, MLP 12288).
QWEN3_8B = {
    "vocab_size": 151936,
    "hidden_size": 4096,
    "intermediate_size": 12288,
    "num_hidden_layers": 36,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "max_position_embeddings": 40960,
    "rope_theta": 1_000_000.0,
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": False,
    "layer_types": ["full_attention"] * 36,
    "initializer_range": 0.02,
}
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def qwen3_8b_checkpoint():
    """The random Qwen3-8B-shaped checkpoint with the demo's Qwen tokenizer, built once on the GPU."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from kit.paths import build_cached_dir, cache_root
    from kit.demos.tiny import ensure_tiny_model

    final = cache_root() / "models" / "random-qwen3-8b-shape"
    if (final / "config.json").exists():
        return final

    def build(tmp):
        config = AutoConfig.from_pretrained(ensure_tiny_model())
        config.update(QWEN3_8B)
        torch.manual_seed(0)
        with torch.device("cuda"):  # initialising 8 B parameters on the host takes minutes
            model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
        model.save_pretrained(tmp, max_shard_size="5GB")
        AutoTokenizer.from_pretrained(ensure_tiny_model()).save_pretrained(tmp)
        del model
        torch.cuda.empty_cache()

    print("Building a random Qwen3-8B-shaped checkpoint (once, ~16 GB) ...", flush=True)
    build_cached_dir(final, build)
    return final


def load(shape: str):
    from kit import backend
    from kit.backend import FastLanguageModel
    from kit.demos.tiny import ensure_tiny_model

    if shape == "tiny":
        return backend.load_model(str(ensure_tiny_model()), 1024, load_in_4bit=True)
    model, tokenizer = backend.load_model(str(qwen3_8b_checkpoint()), 2048, load_in_4bit=True)
    model = FastLanguageModel.get_peft_model(
        model, r=16, lora_alpha=16, target_modules=LORA_TARGETS, use_gradient_checkpointing="unsloth", random_state=0
    )
    return model, tokenizer


def prompts(n: int) -> list[list[dict]]:
    """``n`` demo conversations up to their last user turn (1-3 turns, with or without system)."""
    from kit.data.prompts import held_out_prompts
    from kit.demos.data import conversations

    pool = [p.messages for p in held_out_prompts(conversations())]
    return list(itertools.islice(itertools.cycle(pool), n))


def timed(model, tokenizer, conversations, max_new_tokens: int, batch_size: int | None):
    from kit.families import get_family
    from kit.inference import generate

    answers, speed = generate(
        model, tokenizer, get_family("qwen3"), conversations, max_new_tokens=max_new_tokens, batch_size=batch_size
    )
    return [a.ids for a in answers], speed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shape", choices=["tiny", "qwen3-8b"], default="tiny")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--singles", type=int, default=16, help="prompts also generated one by one")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="default: 32 (tiny), 256 (qwen3-8b)")
    args = parser.parse_args()
    from kit import backend  # Unsloth first
    from kit.backend import FastLanguageModel

    model, tokenizer = load(args.shape)
    FastLanguageModel.for_inference(model)  # as evaluate's load() leaves it
    max_new = args.max_new_tokens or (32 if args.shape == "tiny" else 256)
    singles = min(args.singles, args.prompts)
    convs = prompts(args.prompts)
    timed(model, tokenizer, convs[:2], 4, None)  # warm-up: first-call allocations and patching

    kit_ids, kit = timed(model, tokenizer, convs, max_new, None)
    fixed_ids, fixed = timed(model, tokenizer, convs, max_new, 8)
    one_ids, one = timed(model, tokenizer, convs[:singles], max_new, 1)
    result = {
        "device": backend.device_name(),
        "shape": args.shape,
        "prompts": args.prompts,
        "max_new_tokens": max_new,
        "kit": kit,
        "fixed_batch_8": fixed,
        "one_by_one": {**one, "prompts": singles},
        "kit_vs_one_by_one": round(kit["tokens_per_s"] / one["tokens_per_s"], 2),
        "kit_vs_fixed_batch_8": round(kit["tokens_per_s"] / fixed["tokens_per_s"], 2),
        "equal_to_one_by_one": f"{sum(a == b for a, b in zip(kit_ids, one_ids))}/{singles}",
        "batch_8_equal_to_one_by_one": f"{sum(a == b for a, b in zip(fixed_ids, one_ids))}/{singles}",
        **backend.peak_memory(),
    }
    print(
        f"kit (batch {kit['batch_size']}): {kit['tokens_per_s']} tokens/s; fixed batch 8: {fixed['tokens_per_s']}; "
        f"one by one: {one['tokens_per_s']}  → ×{result['kit_vs_one_by_one']} vs one by one, "
        f"×{result['kit_vs_fixed_batch_8']} vs batch 8; equal to one by one: {result['equal_to_one_by_one']}"
    )
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    started = time.time()
    main()
    print(f"{time.time() - started:.0f} s")
