"""The one table of what differs between model families at the chat-format level.

Masks are derived by rendering with the model's own chat template (see ``kit.chat``): a family
only says which token closes an assistant turn and which generation-prompt variants may open one.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Family:
    name: str
    # Closes every assistant turn: trained (so the model learns to stop) and used as the stop token.
    end_of_turn: str
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
        prompt_variants=({"enable_thinking": True}, {"enable_thinking": False}),
        inference_kwargs={"enable_thinking": False},
        sampling={"temperature": 0.7, "top_p": 0.8, "top_k": 20},
        reasoning_field="reasoning_content",  # rendered only after the last user turn, as at inference
        reasoning_tags=("<think>", "</think>"),
        thinking_kwarg="enable_thinking",
    ),
}


def get_family(name: str) -> Family:
    try:
        return FAMILIES[name]
    except KeyError:
        raise KeyError(f"unknown model family {name!r}; known: {', '.join(sorted(FAMILIES))}") from None
