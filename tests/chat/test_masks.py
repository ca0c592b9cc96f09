"""Two-sided mask tests: for every family, every conversation shape and every ``data.reasoning``
mode, the supervised text is exactly the expected pieces, nothing missing and nothing extra.

The expected pieces are written out here, once, from what each official chat template renders
for an assistant turn (not from the kit's code): its rendered reasoning where the template renders
it, its answer, and the token that ends it. What the model writes after the generation prompt is
trained; the generation prompt itself is not.
"""

import pytest

from kit.chat.render import tokenize_with_labels
from kit.display import label_segments
from kit.families import FAMILIES, family_for
from kit.data.tokenize import expand_turns
from kit.recipes import resolve


def think(reasoning):  # a <think> block as Qwen3, R1 and the kit's `inline` mode write it
    return f"<think>\n{reasoning}\n</think>\n\n"


def expected_piece(family: str, mode: str, answer: str, reasoning: str | None, last: bool) -> str:
    """What one trained assistant turn supervises. ``last``: the conversation ends with this turn
    (every conversation here alternates user/assistant, so it is also the turn after the last user
    message, where Qwen3 and gpt-oss render reasoning)."""
    inline = think(reasoning or "") if mode == "inline" else ""
    if family == "qwen3":  # reasoning after the last user turn; the empty block there is prompt
        return (think(reasoning) if reasoning and last else "") + answer + "<|im_end|>"
    if family in ("qwen2.5", "smollm2", "llama-3.1", "gemma-3"):  # no reasoning channel: dropped, or inline
        end = {"qwen2.5": "<|im_end|>", "smollm2": "<|im_end|>", "llama-3.1": "<|eot_id|>", "gemma-3": "<end_of_turn>"}[
            family
        ]
        return inline + answer + end
    if family == "gpt-oss":  # analysis only in the last turn, then the model opens the final message
        if not last:
            return f"<|channel|>final<|message|>{answer}<|end|>"
        analysis = f"<|channel|>analysis<|message|>{reasoning}<|end|><|start|>assistant" if reasoning else ""
        return f"{analysis}<|channel|>final<|message|>{answer}<|return|>"
    if family == "deepseek-r1-distill":  # "<think>\n" is the generation prompt's prefill
        return f"{reasoning or ''}\n</think>\n\n{answer}<｜end▁of▁sentence｜>"
    if family == "glm-4":  # the model writes the newline; the next <|user|> or <|endoftext|> ends the turn
        return "\n" + inline + answer + ("<|endoftext|>" if last else "<|user|>")
    raise AssertionError(f"no expected pieces declared for {family}")


def trained_turns(family: str, n_turns: int) -> list[int]:
    # DeepSeek-R1-Distill trains the last turn only: its template strips reasoning from history.
    return [n_turns - 1] if family == "deepseek-r1-distill" else list(range(n_turns))


U1, U2 = "What is 17 * 23?", "And 391 + 9?"
CONVERSATIONS = {
    "single": [{"role": "user", "content": U1}, {"role": "assistant", "content": "391"}],
    "system": [
        {"role": "system", "content": "Answer with a number."},
        {"role": "user", "content": U1},
        {"role": "assistant", "content": "391"},
    ],
    "multi_turn": [
        {"role": "user", "content": U1},
        {"role": "assistant", "content": "391"},
        {"role": "user", "content": U2},
        {"role": "assistant", "content": "400"},
    ],
    # The answer repeats an earlier turn's answer and the user's words.
    "repeated_answer": [
        {"role": "system", "content": "Say yes."},
        {"role": "user", "content": "Say yes"},
        {"role": "assistant", "content": "yes"},
        {"role": "user", "content": "yes again"},
        {"role": "assistant", "content": "yes"},
    ],
    # The answer occurs word for word inside its own reasoning (the gpt-oss bug of issue 13).
    "reasoning_last_turn": [
        {"role": "user", "content": U1},
        {"role": "assistant", "content": "391", "reasoning": "17*23=391."},
    ],
    "reasoning_last_of_two": [
        {"role": "system", "content": "Think first."},
        {"role": "user", "content": U1},
        {"role": "assistant", "content": "391"},
        {"role": "user", "content": U2},
        {"role": "assistant", "content": "400", "reasoning": "391 + 9 = 400, so the answer is 400"},
    ],
    "reasoning_every_turn": [
        {"role": "user", "content": U1},
        {"role": "assistant", "content": "391", "reasoning": "17*23 is 391"},
        {"role": "user", "content": U2},
        {"role": "assistant", "content": "400", "reasoning": "391+9=400"},
    ],
}
MODES = ("as_template", "every_turn", "inline")


def examples(messages, mode):
    """(conversation, train_on) as prepare tokenizes them: every_turn gives one example per turn."""
    if mode == "every_turn":
        return [(c, "last_assistant") for c in expand_turns(messages)]
    return [(messages, None)]


def expected_pieces(family: str, mode: str, messages: list[dict], train_on: str | None) -> list[str]:
    answers = [m for m in messages if m["role"] == "assistant"]
    turns = [len(answers) - 1] if train_on == "last_assistant" else trained_turns(family, len(answers))
    return [
        expected_piece(family, mode, answers[k]["content"], answers[k].get("reasoning"), k == len(answers) - 1)
        for k in turns
    ]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", sorted(CONVERSATIONS))
@pytest.mark.parametrize("family_name", sorted(FAMILIES))
def test_supervised_text_is_exactly_the_expected_pieces(family_tokenizers, family_name, name, mode):
    family = family_for(
        resolve({"model": {"id": "any", "family": family_name}, "data": {"source": "any", "reasoning": mode}})
    )
    tokenizer = family_tokenizers[family_name]
    for messages, train_on in examples(CONVERSATIONS[name], mode):
        ex = tokenize_with_labels(tokenizer, family, messages, train_on)
        supervised = [text for text, sup in label_segments(tokenizer, ex["input_ids"], ex["labels"]) if sup]
        assert supervised == expected_pieces(family_name, mode, messages, train_on)


def test_the_issue_13_conversation_trains_analysis_and_final(family_tokenizers):
    tokenizer, family = family_tokenizers["gpt-oss"], FAMILIES["gpt-oss"]
    ex = tokenize_with_labels(tokenizer, family, CONVERSATIONS["reasoning_last_turn"])
    plain = "".join(f"[{t}]" if sup else t for t, sup in label_segments(tokenizer, ex["input_ids"], ex["labels"]))
    assert plain.endswith(
        "<|start|>assistant[<|channel|>analysis<|message|>17*23=391.<|end|><|start|>assistant"
        "<|channel|>final<|message|>391<|return|>]"
    )


def test_the_supervision_check_catches_a_turn_left_out(family_tokenizers):
    """prepare's check on every row: labels like issue 13's (the analysis trained, the final answer
    and <|return|> not) are caught, naming the turn; correct labels pass."""
    from kit.chat.render import IGNORE_INDEX, render_with_spans, supervision_error

    tokenizer, family = family_tokenizers["gpt-oss"], FAMILIES["gpt-oss"]
    messages = CONVERSATIONS["reasoning_last_turn"]
    rendered = render_with_spans(tokenizer, family, messages)
    ex = tokenize_with_labels(tokenizer, family, messages)
    assert supervision_error(tokenizer, rendered, ex) is None
    end = tokenizer.convert_tokens_to_ids("<|end|>")
    cut = len(ex["input_ids"]) - ex["input_ids"][::-1].index(end)  # only through the analysis's <|end|>
    buggy = {**ex, "labels": ex["labels"][:cut] + [IGNORE_INDEX] * (len(ex["labels"]) - cut)}
    error = supervision_error(tokenizer, rendered, buggy)
    assert error is not None and str(error) == "assistant turn 1: '391' is not inside its supervised tokens"


@pytest.mark.parametrize("family_name", sorted(FAMILIES))
def test_the_fast_method_finds_the_same_spans(family_tokenizers, family_name):
    """The one-render fast path (fields tracked through the kit's own compiled template) and the
    exact method (transformers' apply_chat_template, a second render with markers) agree on
    every conversation and mode above; where the fast path can locate in one render, it does so
    for every trained turn, and its positions equal the two-render alignment's."""
    from kit.chat.render import (
        generation_prompts,
        locate,
        locate_in_one_render,
        render_training_text,
        render_with_spans,
        spans_from_prompts,
        template_messages,
        trained_turns,
    )
    from kit.chat.templates import TrainingRenderer

    tokenizer = family_tokenizers[family_name]
    one_render = 0
    for mode in MODES:
        family = family_for(
            resolve({"model": {"id": "any", "family": family_name}, "data": {"source": "any", "reasoning": mode}})
        )
        prompts, renderer = generation_prompts(tokenizer, family), TrainingRenderer(tokenizer, family)
        assert renderer.fast  # the official templates are trusted
        for conversation in CONVERSATIONS.values():
            for messages, train_on in examples(conversation, mode):
                train_on = train_on or family.default_train_on
                exact = render_with_spans(tokenizer, family, messages, train_on)
                fast = spans_from_prompts(tokenizer, family, messages, prompts, train_on, renderer)
                assert (fast.text, fast.spans, fast.expected) == (exact.text, exact.spans, exact.expected)
                trained = trained_turns(messages, train_on)
                render_text = lambda m: render_training_text(tokenizer, family, template_messages(family, m), renderer)  # noqa: E731
                located = locate_in_one_render(render_text, messages, trained)
                if located is not None:
                    one_render += 1
                    assert located == (exact.text, locate(exact.text, render_text, messages, trained))
    assert one_render > 0
