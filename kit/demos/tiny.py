"""A tiny Qwen3-architecture model with a real Qwen tokenizer, built offline for the demo and tests.

The tokenizer comes from llama.cpp's vocab-only ``ggml-vocab-qwen2.gguf`` (shipped in the
llama-cpp-python sdist), plus ``<think>``/``</think>`` as Qwen3 adds them and Qwen3's official chat
template as TRL ships it. The model is randomly initialised: small enough to train on a CPU in
seconds, real enough that Unsloth, TRL and llama.cpp treat it like a Qwen3 checkpoint.
"""

from __future__ import annotations

from pathlib import Path

from kit.llama_cpp_source import extract_member
from kit.paths import build_cached_dir, cache_root

# Bump when the recipe below changes, so caches built by older versions are not reused.
TINY_VERSION = "1"
TINY_NAME = f"tiny-qwen3-v{TINY_VERSION}"
BUILTIN_ID = "builtin:tiny-qwen3"
# A larger init than the usual 0.02 gives the tied 152k-row LM head logits with room to move, so
# eval loss shows learning in a few dozen steps (with 0.02 it stays within ~1 nat of uniform).
INIT_RANGE = 0.2


def vocab_tokenizer(vocab: str):
    """A real tokenizer from one of llama.cpp's vocab-only GGUFs (``qwen2``, ``llama-bpe``, ...),
    converted once (30-70 s) and cached as a transformers tokenizer."""
    from transformers import AutoTokenizer

    cached = cache_root() / "tokenizers" / vocab
    if not (cached / "tokenizer.json").exists():
        path = extract_member(f"models/ggml-vocab-{vocab}.gguf")
        print(f"Building the {vocab} tokenizer from llama.cpp's vocab GGUF (once, ~30-70 s) ...", flush=True)
        build_cached_dir(cached, AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name).save_pretrained)
    return AutoTokenizer.from_pretrained(cached)


# Stand-ins for tokenizers that cannot be fetched offline: a real vocabulary (Qwen's, or Llama 3's for
# Llama 3.1) with the family's special tokens and its official chat template. They render and mask
# exactly as the real ones do at the level of text and special tokens, which is what tests and the
# prepare notebook's label views need.
_FAMILY_STAND_INS = {
    "qwen2.5": ("qwen2", [], {"eos_token": "<|im_end|>"}),
    "llama-3.1": ("llama-bpe", [], {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"}),
    "gemma-3": (
        "qwen2",
        ["<bos>", "<start_of_turn>", "<end_of_turn>"],
        {"bos_token": "<bos>", "eos_token": "<end_of_turn>"},
    ),
    "gpt-oss": (
        "qwen2",
        ["<|start|>", "<|end|>", "<|message|>", "<|channel|>", "<|return|>", "<|call|>", "<|constrain|>"],
        {"eos_token": "<|return|>"},
    ),
    "deepseek-r1-distill": (
        "qwen2",
        ["<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜User｜>", "<｜Assistant｜>"],
        {"bos_token": "<｜begin▁of▁sentence｜>", "eos_token": "<｜end▁of▁sentence｜>"},
    ),
    "glm-4": (
        "qwen2",
        ["[gMASK]", "<sop>", "<|system|>", "<|user|>", "<|assistant|>", "<|observation|>"],
        {"eos_token": "<|endoftext|>"},
    ),
}


def family_tokenizer(family: str):
    """A tokenizer with ``family``'s special tokens and official chat template (see above); for
    qwen3, the demo model's own tokenizer."""
    from transformers import AddedToken, AutoTokenizer

    from kit.families import FAMILIES, official_template

    if family == "qwen3":
        return AutoTokenizer.from_pretrained(ensure_tiny_model())
    if family == "smollm2":  # the real one, from the built-in SmolLM2, with the kit's template
        from kit.demos.smollm2 import ensure_smollm2

        tokenizer = AutoTokenizer.from_pretrained(ensure_smollm2())
        tokenizer.chat_template = official_template(FAMILIES[family])
        return tokenizer
    vocab, special, attributes = _FAMILY_STAND_INS[family]
    tokenizer = vocab_tokenizer(vocab)
    if special:
        tokenizer.add_special_tokens(
            {"additional_special_tokens": [AddedToken(t, special=True, normalized=False) for t in special]}
        )
    for key, value in attributes.items():
        setattr(tokenizer, key, value)
    tokenizer.chat_template = official_template(FAMILIES[family])
    return tokenizer


def build_tokenizer(out_dir: Path):
    from transformers import AddedToken

    from kit.families import FAMILIES, official_template

    tok = vocab_tokenizer("qwen2")
    # Qwen3 has <think>/</think> as added, non-special tokens (they survive skip_special_tokens).
    tok.add_tokens(
        [
            AddedToken("<think>", special=False, normalized=False),
            AddedToken("</think>", special=False, normalized=False),
        ]
    )
    tok.chat_template = official_template(FAMILIES["qwen3"])
    tok.eos_token = "<|im_end|>"
    tok.pad_token = "<|endoftext|>"
    tok.padding_side = "left"
    tok.save_pretrained(out_dir)
    return tok


def build_model(out_dir: Path, tokenizer, seed: int = 0) -> None:
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(seed)
    config = Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tokenizer.pad_token_id,
        initializer_range=INIT_RANGE,
        dtype="bfloat16",
    )
    # Stored in bfloat16 like real checkpoints; initialised in float32 for a reproducible init.
    model = Qwen3ForCausalLM(config).to(torch.bfloat16)
    model.generation_config.eos_token_id = config.eos_token_id
    model.generation_config.pad_token_id = config.pad_token_id
    model.save_pretrained(out_dir, safe_serialization=True)


def ensure_tiny_model(rebuild: bool = False) -> Path:
    """Return the cached tiny model directory, building it on first use (``rebuild``: again)."""
    final = cache_root() / "models" / TINY_NAME
    if not rebuild and (final / "config.json").exists() and (final / "tokenizer_config.json").exists():
        return final
    build_cached_dir(final, lambda tmp: build_model(tmp, build_tokenizer(tmp)))
    print(f"Tiny model ready: {final}", flush=True)
    return final
