"""Greedy answers compared across code paths that change logits by rounding only (padding and
batching, another summation order): a token may differ from the one-by-one greedy token only where
the one-by-one top two logits are closer than that rounding can move them (a near-tie). The rounding
is measured, on the device and dtype in use, as the largest logit difference between a padded batch
and the prompts alone over identical inputs, so the rule holds in float32 and in bfloat16 alike."""

import torch


def plain_generate(model, tokenizer, family, convs, max_new_tokens: int, thinking=None):
    """model.generate on one left-padded batch of ``convs``, with each step's logits."""
    from kit.chat.render import generation_prompt
    from kit.inference import stop_ids

    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    try:
        inputs = tokenizer(
            [generation_prompt(tokenizer, family, c, thinking=thinking) for c in convs],
            return_tensors="pt",
            padding=True,
            add_special_tokens=False,
        ).to(model.device)
    finally:
        tokenizer.padding_side = side
    with torch.no_grad():
        out = model.generate(
            **inputs,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=stop_ids(tokenizer, family),
            pad_token_id=tokenizer.pad_token_id,
            output_logits=True,
            return_dict_in_generate=True,
        )
    logits = torch.stack(out.logits, dim=1).float()  # batch × step × vocab
    return out.sequences[:, inputs["input_ids"].shape[1] :].tolist(), logits


def one_by_one(model, tokenizer, family, convs, max_new_tokens: int, thinking=None):
    """One-by-one greedy answers (stop token excluded) with their per-step logits, and the noise floor:
    the largest logit change a padded batch of all ``convs`` makes over the same inputs."""
    from kit.inference import stop_ids

    stops = stop_ids(tokenizer, family)
    singles = [plain_generate(model, tokenizer, family, [c], max_new_tokens, thinking) for c in convs]
    batch_rows, batch_logits = plain_generate(model, tokenizer, family, convs, max_new_tokens, thinking)
    answers, noise = [], 0.0
    for i, (rows, logits) in enumerate(singles):
        row = rows[0]
        steps = next((k + 1 for k, t in enumerate(row) if t in stops), len(row))  # steps taken, stop included
        assert logits[0, :steps].argmax(-1).tolist() == row[:steps]  # the logits are the ones decided on
        same = next((k + 1 for k in range(steps) if batch_rows[i][k] != row[k]), steps)  # identical inputs up to here
        noise = max(noise, (batch_logits[i, :same] - logits[0, :same]).abs().max().item())
        answers.append((row[: steps - 1] if row[steps - 1] in stops else row[:steps], logits[0, :steps]))
    return answers, noise


def check_against_one_by_one(ids: list[list[int]], reference) -> int:
    """Each answer equals the one-by-one answer up to its first difference, which may only fall on
    a near-tie (top-2 gap ≤ twice the noise floor). Returns how many decided tokens were compared."""
    answers, noise = reference
    decided = 0
    for mine, (theirs, logits) in zip(ids, answers):
        top2 = logits.topk(2, dim=-1).values
        margins = (top2[:, 0] - top2[:, 1]).tolist()
        first = next(
            (
                k
                for k in range(min(len(mine), len(theirs)) + 1)
                if k == len(theirs) or k == len(mine) or mine[k] != theirs[k]
            ),
            None,
        )
        if mine != theirs:
            assert first < len(margins) and margins[first] <= 2 * noise, (
                f"answer differs at token {first} where the one-by-one gap is {margins[first]:.3g} > 2 × noise {noise:.3g}"
            )
        decided += sum(m > 2 * noise for m in margins[: first if mine != theirs else len(margins)])
    return decided
