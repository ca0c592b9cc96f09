"""Generation in Unsloth's inference mode: batched answers (left padding, batch size from free
memory, prompts sorted by length), reasoning split from answers, streaming chat."""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from kit.chat.render import IGNORE_INDEX, generation_prompt, tokenize_many
from kit.families import Family
from kit.chat.tool_calls import keeps_special_tokens, parse_answer, render_calls_for_display


@dataclass
class Answer:
    text: str  # the answer, reasoning removed
    reasoning: str | None  # the reasoning block's content, if the model wrote one
    ids: list[int]  # generated tokens, end-of-turn excluded
    raw: str  # everything generated, decoded
    calls: list[dict] = field(default_factory=list)  # tool calls that parsed {"name", "arguments"}
    invalid_calls: list[str] = field(default_factory=list)  # why call-like text did not parse

    @property
    def tokens(self) -> int:
        return len(self.ids)


def stop_ids(tokenizer, family: Family) -> list[int]:
    """Token ids that end an answer: the family's end-of-turn and other stop tokens."""
    return [tokenizer.convert_tokens_to_ids(t) for t in family.stops]


def answer_of(tokenizer, family: Family, ids: list[int]) -> Answer:
    """Generated ids (end-of-turn excluded) decoded and split into reasoning and answer."""
    raw = decode(tokenizer, family, ids)
    reasoning, text = split_reasoning(raw, family)
    parsed = parse_answer(text, family)
    return Answer(text, reasoning, ids, raw, parsed.calls, parsed.invalid)


def split_reasoning(text: str, family: Family) -> tuple[str | None, str]:
    """(reasoning, answer) of generated text. Handles a closing tag without an opening one
    (prompts that prefill it) and an answer channel after the reasoning (gpt-oss)."""
    if not family.reasoning_tags:
        return None, text.strip()
    open_tag, close_tag = family.reasoning_tags
    if family.answer_marker and family.answer_marker in text:
        head, _, answer = text.rpartition(family.answer_marker)
        reasoning = head.split(open_tag, 1)[-1].split(close_tag, 1)[0].strip() if open_tag in head else ""
        return reasoning or None, answer.strip()
    if close_tag not in text:
        return None, text.strip()
    head, _, answer = text.partition(close_tag)
    reasoning = head.split(open_tag, 1)[-1].strip()
    return reasoning or None, answer.strip()


def decode(tokenizer, family: Family, ids: list[int]) -> str:
    """Generated ids as text; special tokens kept only where they carry the output's structure."""
    return tokenizer.decode(ids, skip_special_tokens=not keeps_special_tokens(family))


def decoding_kwargs(family: Family, sampling: bool) -> dict:
    return {"do_sample": True, **family.sampling} if sampling else {"do_sample": False}


# Most prompts one generate() call takes. Decoding a step costs about the same for 1 or 64 sequences
# while the GPU is host-bound (Unsloth's eager decode step), so larger batches are nearly free
# tokens/s; past ~64 the step turns compute-bound and a batch waits on its longest answer.
MAX_BATCH = 64
# Unsloth's GPU decode path grows its KV cache in steps of this many tokens.
KV_CACHE_STEP = 512
# Share of the free memory a batch may plan to use: the rest absorbs allocator fragmentation,
# CUDA workspaces and what the estimate leaves out.
MEMORY_SHARE = 0.7


def _text_config(config):
    return getattr(config, "text_config", None) or config  # multimodal configs (Gemma 3) nest it


def kv_cache_bytes_per_token(config, dtype_bytes: int) -> int:
    """Bytes one token's keys and values take over all layers."""
    c = _text_config(config)
    heads = c.num_attention_heads
    kv_heads = getattr(c, "num_key_value_heads", None) or heads
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // heads
    return 2 * c.num_hidden_layers * kv_heads * head_dim * dtype_bytes


def sequence_bytes(config, prompt_tokens: int, max_new_tokens: int, dtype_bytes: int) -> int:
    """Memory one sequence of a generate() batch may need at its peak:
    - KV cache for prompt + answer, rounded up to Unsloth's 512-token cache steps, plus the prompt's
      prefill cache once more (the decode path copies it into its own cache);
    - the prompt's prefill activations: MLP gate and up (2 x intermediate) and a few hidden-size
      tensors per token, plus heads x prompt² attention scores in case SDPA falls back to its
      math kernel (a padding mask can force that);
    - the last position's logits in float32, twice (logits and processed scores)."""
    c = _text_config(config)
    kv = kv_cache_bytes_per_token(c, dtype_bytes)
    cache_tokens = -(-(prompt_tokens + max_new_tokens) // KV_CACHE_STEP) * KV_CACHE_STEP + prompt_tokens
    intermediate = getattr(c, "intermediate_size", None) or 4 * c.hidden_size
    prefill = prompt_tokens * (2 * intermediate + 4 * c.hidden_size) * dtype_bytes
    scores = c.num_attention_heads * prompt_tokens**2 * dtype_bytes
    return kv * cache_tokens + prefill + scores + 2 * 4 * c.vocab_size


def batch_size_for(
    config, prompt_tokens: int, max_new_tokens: int, free_bytes: int, dtype_bytes: int = 2, cap: int = MAX_BATCH
) -> int:
    """Prompts per generate() call: as many sequences (``sequence_bytes``, sized for the longest
    prompt) as fit in ``MEMORY_SHARE`` of the free memory, between 1 and ``cap``. For Qwen3-8B
    (144 KiB of bf16 KV cache per token), 512-token prompts and 256 new tokens (273 MiB a
    sequence) in 4-bit (~6.5 GB loaded): 23 on a 16 GB GPU, 45 on 24 GB, the cap on 80 GB."""
    per_sequence = sequence_bytes(config, prompt_tokens, max_new_tokens, dtype_bytes)
    return max(1, min(cap, int(free_bytes * MEMORY_SHARE) // per_sequence))


def auto_batch_size(model, prompt_tokens: int, max_new_tokens: int, cap: int = MAX_BATCH) -> int:
    """``batch_size_for`` the model's config and compute dtype, with the memory free now."""
    from kit import backend  # Unsloth is imported wherever a model generates already

    dtype_bytes = torch.tensor([], dtype=model.dtype).element_size()
    return batch_size_for(
        model.config, prompt_tokens, max_new_tokens, backend.generation_free_bytes(), dtype_bytes, cap
    )


@contextmanager
def unsloth_inference(model):
    """Unsloth's inference mode for the block (``for_inference``: KV cache on, gradient
    checkpointing off, on GPU its fast decode path). A model that can train (in training mode, or
    with trainable parameters, as when a callback called ``eval()`` mid-training) gets
    ``for_training`` back, which restores the checkpointing chosen at load and takes the fast
    decode path off its training forwards, and then its train/eval flag as found. Models Unsloth
    did not load (no ``for_inference`` attached: the merge checks' plain transformers model) are
    left alone."""
    to_inference, to_training = getattr(model, "for_inference", None), getattr(model, "for_training", None)
    if to_inference is None or to_training is None:
        yield model
        return
    was_training = model.training
    trainable = was_training or any(p.requires_grad for p in model.parameters())
    to_inference()
    try:
        yield model
    finally:
        if trainable:
            to_training()
            model.train(was_training)


def _prompt_lengths(tokenizer, prompts: list[str]) -> list[int]:
    return [len(ids) for ids in tokenizer(prompts, add_special_tokens=False)["input_ids"]]


@torch.no_grad()
def generate(
    model,
    tokenizer,
    family: Family,
    conversations: list[list[dict]],
    *,
    max_new_tokens: int,
    batch_size: int | None = None,
    sampling: bool = False,
    thinking: bool | None = None,
    seed: int = 0,
    progress=None,
    tools: list[list[dict] | None] | None = None,
) -> tuple[list[Answer], dict]:
    """Answer each conversation's last turn, in Unsloth's inference mode. Prompts are batched
    longest first (similar lengths share a batch: less padding); answers come back in input order.
    ``batch_size`` None: ``auto_batch_size`` (from free memory). Returns the answers and
    {"tokens", "seconds", "tokens_per_s", "batch_size"}; tokens/s is generated tokens over wall
    seconds of the whole call. ``tools``: each conversation's tool definitions (or None)."""
    stops = stop_ids(tokenizer, family)
    tools = tools or [None] * len(conversations)
    prompts = [generation_prompt(tokenizer, family, c, t, thinking) for c, t in zip(conversations, tools)]
    lengths = _prompt_lengths(tokenizer, prompts)
    order = sorted(range(len(prompts)), key=lambda i: -lengths[i])  # stable: ties keep input order
    if batch_size is None:
        batch_size = auto_batch_size(
            model, max(lengths, default=1), max_new_tokens, cap=max(1, min(MAX_BATCH, len(prompts)))
        )
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    answers: list[Answer | None] = [None] * len(prompts)
    side = tokenizer.padding_side
    started, n_tokens = time.time(), 0
    try:
        with unsloth_inference(model):
            tokenizer.padding_side = "left"  # decoder-only: pad on the left
            torch.manual_seed(seed)
            for batch in progress(batches, desc="generating") if progress else batches:
                inputs = tokenizer(
                    [prompts[i] for i in batch], return_tensors="pt", padding=True, add_special_tokens=False
                ).to(model.device)
                out = model.generate(
                    **inputs,
                    max_new_tokens=max_new_tokens,
                    eos_token_id=stops,
                    pad_token_id=tokenizer.pad_token_id,
                    **decoding_kwargs(family, sampling),
                )
                for i, row in zip(batch, out[:, inputs["input_ids"].shape[1] :].tolist()):
                    end = next((k for k, t in enumerate(row) if t in stops), None)
                    new = row[:end] if end is not None else [t for t in row if t != tokenizer.pad_token_id]
                    n_tokens += len(new)
                    answers[i] = answer_of(tokenizer, family, new)
    finally:
        tokenizer.padding_side = side
    seconds = time.time() - started
    return answers, {
        "tokens": n_tokens,
        "seconds": round(seconds, 3),
        "tokens_per_s": round(n_tokens / max(seconds, 1e-9), 1),
        "batch_size": batch_size,
    }


def stream_answer(
    model,
    tokenizer,
    family: Family,
    messages: list[dict],
    *,
    max_new_tokens: int,
    thinking: bool | None = None,
    sampling: bool = False,
    tools: list[dict] | None = None,
) -> str:
    """Print the answer token by token as it is generated; return the full text (decoded as
    ``answer_of`` decodes: the streamed text skips special tokens, this one keeps call markup)."""
    from transformers import TextStreamer

    prompt = generation_prompt(tokenizer, family, messages, tools, thinking)
    inputs = tokenizer(prompt, return_tensors="pt", add_special_tokens=False).to(model.device)
    streamer = TextStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    stops = stop_ids(tokenizer, family)
    with torch.no_grad(), unsloth_inference(model):
        out = model.generate(
            **inputs,
            max_new_tokens=max_new_tokens,
            eos_token_id=stops,
            streamer=streamer,
            pad_token_id=tokenizer.pad_token_id,
            **decoding_kwargs(family, sampling),
        )
    return decode(tokenizer, family, out[0, inputs["input_ids"].shape[1] :].tolist())


def chat(
    model,
    tokenizer,
    family: Family,
    *,
    max_new_tokens: int = 256,
    thinking: bool | None = None,
    compare_base: bool = False,
    system: str | None = None,
    quit_words=("quit", "exit", "q"),
    input_fn=input,
    tools: list[dict] | None = None,
) -> list[dict]:
    """A multi-turn chat with streamed answers; with ``compare_base`` the base model (adapter off)
    answers each question too. With ``tools`` the model sees their definitions, and a tool call it
    makes is shown as ``call> name({...})``. Returns the conversation. Without interactive input
    (papermill, scripts) it says so and returns at once instead of blocking."""
    messages = [{"role": "system", "content": system}] if system else []
    print(f"Chat with the tuned model. Type {' / '.join(quit_words)} to stop.")
    while True:
        try:
            question = input_fn("you> ")
        except (EOFError, KeyboardInterrupt) as e:
            print("Chat skipped: no interactive input." if isinstance(e, EOFError) else "")
            return messages
        except Exception as e:  # ipykernel's StdinNotImplementedError under papermill
            if type(e).__name__ != "StdinNotImplementedError":
                raise
            print("Chat skipped: this kernel has no interactive input (papermill / headless run).")
            return messages
        if question.strip().lower() in quit_words:
            return messages
        messages.append({"role": "user", "content": question})
        if compare_base:
            print("base> ", end="", flush=True)
            with model.disable_adapter():
                stream_answer(
                    model, tokenizer, family, messages, max_new_tokens=max_new_tokens, thinking=thinking, tools=tools
                )
        print("tuned> ", end="", flush=True)
        answer = stream_answer(
            model, tokenizer, family, messages, max_new_tokens=max_new_tokens, thinking=thinking, tools=tools
        )
        parsed = parse_answer(split_reasoning(answer, family)[1], family)
        if parsed.calls:
            print("call> " + render_calls_for_display(parsed.calls))
            messages.append({"role": "assistant", "content": parsed.content, "tool_calls": parsed.calls})
        else:
            messages.append({"role": "assistant", "content": parsed.content})


@torch.no_grad()
def token_loss(model, tokenizer, family, rows: list[dict], train_on: str | None = None) -> float:
    """Mean cross-entropy over the trained (assistant) tokens of ``rows``, token-weighted."""
    total, count = 0.0, 0
    for ex in tokenize_many(
        tokenizer, family, [row["messages"] for row in rows], train_on, tools=[row.get("tools") for row in rows]
    ):
        if isinstance(ex, Exception):
            raise ex
        input_ids = torch.tensor([ex["input_ids"]], device=model.device)
        labels = torch.tensor([ex["labels"]], device=model.device)
        logits = model(input_ids=input_ids).logits.float()
        shift_logits, shift_labels = logits[0, :-1], labels[0, 1:]
        loss = torch.nn.functional.cross_entropy(shift_logits, shift_labels, ignore_index=IGNORE_INDEX, reduction="sum")
        total += loss.item()
        count += int((shift_labels != IGNORE_INDEX).sum())
    return total / count


@torch.no_grad()
def answer_logp(model, prompt_ids: list[int], answer_ids: list[int]) -> float:
    """The summed log-probability of an answer's tokens given its prompt's."""
    ids = torch.tensor([prompt_ids + answer_ids], device=model.device)
    start = len(prompt_ids)  # the logits that predict the answer's tokens, and only those
    logps = torch.log_softmax(model(input_ids=ids).logits[0, start - 1 : -1].float(), dim=-1)
    return float(logps.gather(1, ids[0, start:, None]).sum())


def answer_logps(model, pairs: list[dict]) -> list[tuple[float, float]]:
    """The summed log-probability of each pair's chosen and of its rejected answer given its prompt
    (``kit.data.tokenize.tokenize_pairs`` examples): what DPO compares, here for any model."""
    return [
        (
            answer_logp(model, pair["prompt_ids"], pair["chosen_ids"]),
            answer_logp(model, pair["prompt_ids"], pair["rejected_ids"]),
        )
        for pair in pairs
    ]


def labelled_scores(model, completions: list[dict]) -> dict:
    """For completions labelled desirable or not (``tokenize_pairs`` examples with ``label``): the mean
    summed log-probability of each kind, and the margin between them (desirable minus undesirable), in
    nats: what KTO moves apart, here for any model."""
    logps = {True: [], False: []}
    for c in completions:
        logps[c["label"]].append(answer_logp(model, c["prompt_ids"], c["completion_ids"]))
    means = {label: sum(values) / len(values) if values else None for label, values in logps.items()}
    margin = means[True] - means[False] if None not in means.values() else None
    return {"completions": len(completions), "desirable": means[True], "undesirable": means[False], "margin": margin}


def preference_scores(logps: list[tuple[float, float]]) -> dict:
    """Reward accuracy (the share of pairs whose chosen answer is the more probable) and the mean
    margin (chosen minus rejected log-probability, in nats)."""
    margins = [chosen - rejected for chosen, rejected in logps]
    return {
        "pairs": len(margins),
        "accuracy": sum(m > 0 for m in margins) / len(margins),
        "margin": sum(margins) / len(margins),
        "margins": [round(m, 3) for m in margins],
    }
