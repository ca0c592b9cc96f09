"""Generation: batched answers (left padding), reasoning split from answers, streaming chat."""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from .chat import render_prompt
from .families import Family


@dataclass
class Answer:
    text: str                # the answer, reasoning removed
    reasoning: str | None    # the reasoning block's content, if the model wrote one
    ids: list[int]           # generated tokens, end-of-turn excluded
    raw: str                 # everything generated, decoded

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
    return Answer(text, reasoning, ids, raw)


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
    return tokenizer.decode(ids, skip_special_tokens=family.answer_marker is None)


def prompt_kwargs(family: Family, thinking: bool | None) -> dict:
    if thinking is None or family.thinking_kwarg is None:
        return {}
    return {family.thinking_kwarg: thinking}


def decoding_kwargs(family: Family, sampling: bool) -> dict:
    return {"do_sample": True, **family.sampling} if sampling else {"do_sample": False}


@torch.no_grad()
def generate(model, tokenizer, family: Family, conversations: list[list[dict]], *, max_new_tokens: int,
             batch_size: int = 8, sampling: bool = False, thinking: bool | None = None, seed: int = 0,
             progress=None) -> tuple[list[Answer], dict]:
    """Answer each conversation's last turn. Returns the answers and {"tokens", "seconds", "tokens_per_s"}."""
    stops = stop_ids(tokenizer, family)
    prompts = [render_prompt(tokenizer, family, c, **prompt_kwargs(family, thinking)) for c in conversations]
    batches = [prompts[i:i + batch_size] for i in range(0, len(prompts), batch_size)]
    answers: list[Answer] = []
    side, tokenizer.padding_side = tokenizer.padding_side, "left"  # decoder-only: pad on the left
    started, n_tokens = time.time(), 0
    try:
        torch.manual_seed(seed)
        for batch in (progress(batches, desc="generating") if progress else batches):
            inputs = tokenizer(batch, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
            out = model.generate(**inputs, max_new_tokens=max_new_tokens, eos_token_id=stops,
                                 pad_token_id=tokenizer.pad_token_id, **decoding_kwargs(family, sampling))
            for row in out[:, inputs["input_ids"].shape[1]:].tolist():
                end = next((k for k, t in enumerate(row) if t in stops), None)
                new = row[:end] if end is not None else [t for t in row if t != tokenizer.pad_token_id]
                n_tokens += len(new)
                answers.append(answer_of(tokenizer, family, new))
    finally:
        tokenizer.padding_side = side
    seconds = time.time() - started
    return answers, {"tokens": n_tokens, "seconds": round(seconds, 3), "tokens_per_s": round(n_tokens / max(seconds, 1e-9), 1)}


def stream_answer(model, tokenizer, family: Family, messages: list[dict], *, max_new_tokens: int,
                  thinking: bool | None = None, sampling: bool = False) -> str:
    """Print the answer token by token as it is generated; return the full text."""
    from transformers import TextStreamer

    prompt = render_prompt(tokenizer, family, messages, **prompt_kwargs(family, thinking))
    inputs = tokenizer(prompt, return_tensors="pt", add_special_tokens=False).to(model.device)
    streamer = TextStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    stops = stop_ids(tokenizer, family)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, eos_token_id=stops, streamer=streamer,
                             pad_token_id=tokenizer.pad_token_id, **decoding_kwargs(family, sampling))
    return decode(tokenizer, family, out[0, inputs["input_ids"].shape[1]:].tolist())


def chat(model, tokenizer, family: Family, *, max_new_tokens: int = 256, thinking: bool | None = None,
         compare_base: bool = False, system: str | None = None, quit_words=("quit", "exit", "q"),
         input_fn=input) -> list[dict]:
    """A multi-turn chat with streamed answers; with ``compare_base`` the base model (adapter off)
    answers each question too. Returns the conversation. Without interactive input (papermill,
    scripts) it says so and returns at once instead of blocking."""
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
                stream_answer(model, tokenizer, family, messages, max_new_tokens=max_new_tokens, thinking=thinking)
        print("tuned> ", end="", flush=True)
        answer = stream_answer(model, tokenizer, family, messages, max_new_tokens=max_new_tokens, thinking=thinking)
        messages.append({"role": "assistant", "content": split_reasoning(answer, family)[1]})
