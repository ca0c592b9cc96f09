"""The one table of what differs between model families at the chat-format level.

Masks are derived by rendering with the model's own chat template (see ``kit.chat``): a family
only says which token closes an assistant turn and which generation-prompt variants may open one.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Family:
    name: str
    # Closes every assistant turn: trained (so the model learns to stop) and used as the stop token.
    end_of_turn: str
    # The model's official chat template as TRL ships it (trl/chat_templates/<name>.jinja): used
    # when a tokenizer has none (base checkpoints) and as the reference in tests.
    official_template: str
    # apply_chat_template kwargs whose generation prompt may open an assistant turn in a rendered
    # conversation; the longest one that matches the rendering is prompt, the rest is supervised.
    prompt_variants: tuple[dict, ...] = ({},)
    # Generation-prompt kwargs used at inference (evaluation, chat) unless a caller overrides them.
    inference_kwargs: dict = field(default_factory=dict)
    # Recommended sampling for free-running generation (greedy is used for comparisons).
    sampling: dict = field(default_factory=dict)
    # The message field the chat template reads an assistant's reasoning from (None: no channel;
    # canonical ``reasoning`` is then dropped and counted by prepare).
    reasoning_field: str | None = None
    # Tags around reasoning in generated text, if the family has a reasoning channel of that shape.
    reasoning_tags: tuple[str, str] | None = None
    # The generation-prompt kwarg that switches thinking on and off, if any.
    thinking_kwarg: str | None = None


FAMILIES: dict[str, Family] = {
    # Qwen3's template renders an empty <think></think> block before the last assistant answer; the
    # enable_thinking=False generation prompt contains it, so it stays prompt and is never trained.
    "qwen3": Family(
        name="qwen3",
        end_of_turn="<|im_end|>",
        official_template="qwen3",
        prompt_variants=({"enable_thinking": True}, {"enable_thinking": False}),
        inference_kwargs={"enable_thinking": False},
        sampling={"temperature": 0.7, "top_p": 0.8, "top_k": 20},
        reasoning_field="reasoning_content",  # rendered only after the last user turn, as at inference
        reasoning_tags=("<think>", "</think>"),
        thinking_kwarg="enable_thinking",
    ),
    # Qwen2.5 adds its default system prompt ("You are Qwen, created by Alibaba Cloud...") when a
    # conversation has none, at training and at inference alike.
    "qwen2.5": Family(
        name="qwen2.5",
        end_of_turn="<|im_end|>",
        official_template="qwen2_5",
        sampling={"temperature": 0.7, "top_p": 0.8, "top_k": 20},
    ),
    # Llama 3.1 writes <|begin_of_text|> and a system header with knowledge/today dates itself.
    "llama-3.1": Family(
        name="llama-3.1",
        end_of_turn="<|eot_id|>",
        official_template="llama3_1",
        sampling={"temperature": 0.6, "top_p": 0.9},
    ),
    # Gemma 3 has no system role: the template prepends the system text to the first user turn.
    "gemma-3": Family(
        name="gemma-3",
        end_of_turn="<end_of_turn>",
        official_template="gemma3",
        sampling={"temperature": 1.0, "top_k": 64, "top_p": 0.95},
    ),
}


def official_template(family: Family) -> str:
    import trl

    return (Path(trl.__file__).parent / "chat_templates" / f"{family.official_template}.jinja").read_text(encoding="utf-8")


def ensure_chat_template(tokenizer, family: Family):
    """A tokenizer without a chat template (base checkpoints) gets the family's official one."""
    if not tokenizer.chat_template:
        print(f"The tokenizer has no chat template; using the official {family.name} template.")
        tokenizer.chat_template = official_template(family)
    return tokenizer


def get_family(name: str) -> Family:
    try:
        return FAMILIES[name]
    except KeyError:
        raise KeyError(f"unknown model family {name!r}; known: {', '.join(sorted(FAMILIES))}") from None
