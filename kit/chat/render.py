"""Render conversations with the model's chat template and build assistant-only loss labels.

Supervised spans come from rendering, not from marker strings: for assistant turn *i*, the
conversation up to *i* rendered with a generation prompt is the prompt; from there up to and
including the first end token after the turn's answer is the answer. Where the answer (and the
reasoning) lie in the rendered text is found by structure: with templates the kit compiles itself,
the fields are tracked through the one rendering (``locate_in_one_render``); otherwise the
conversation is rendered a second time with those fields replaced by unique markers, and the two
renderings are aligned (``locate``; both in ``kit.chat.locate``). Searching for the answer's text would find it wherever it also occurs earlier (inside
its own reasoning, say). A rendering that does not line up raises instead of silently training on
the wrong tokens, and every tokenized conversation is checked: each trained turn's answer, and its
reasoning where the template renders it, must be inside the supervised tokens.

Tool calls are trained like answers: each call's name and arguments are located the same way (the
arguments, an object the template writes as JSON, are tracked through ``tojson`` in one render, or
found as their JSON in the two-render alignment), and the turn's span runs through the first end
token after its last call (``<|im_end|>``, ``<|eot_id|>``, gpt-oss's ``<|call|>``). Tool results,
tool definitions and system turns are never inside a span. Text to token ids and labels:
``kit.chat.labels``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import jinja2

from kit.bulk import gc_paused
from kit.families import Family
from kit.chat.offsets import byte_length_table
from kit.chat.templates import TrainingRenderer
from kit.chat.labels import CHUNKS, IGNORE_INDEX, byte_offsets_agree, chunk_bounds, encoder, labelled  # noqa: F401 (IGNORE_INDEX: re-exported)
from kit.chat.locate import MaskError, locate, locate_in_one_render
from kit.chat.rendered import Rendered
from kit.chat.supervision import SupervisionError, supervision_error, supervision_errors  # noqa: F401  (kit.chat.render's API)
from kit.chat.tool_turns import drop_call_text_before_answers, template_call, tool_format_problem


class ToolFormatError(MaskError):
    """A conversation with tools that the family's chat template cannot express (gemma-3 has no
    tool format; llama-3.1 and gpt-oss render one call per turn; ...): refused, never rendered."""


def template_messages(family: Family, messages: list[dict]) -> list[dict]:
    """Canonical messages as the family's chat template reads them: ``reasoning`` moves to the
    family's reasoning field, into the content (``reasoning_inline``), or is left out; tool calls
    take the templates' ``{"type": "function", "function": {...}}`` shape (``kit.chat.tool_turns``)."""
    if family.tools is not None and family.tools.history_drops_call_text:
        messages = drop_call_text_before_answers(messages)
    if not family.reasoning_inline and not any("reasoning" in m or "tool_calls" in m for m in messages):
        return messages
    out = []
    for m in messages:
        reasoning = m.get("reasoning")
        m = {k: v for k, v in m.items() if k != "reasoning"}
        if m.get("tool_calls"):
            m["tool_calls"] = [template_call(c) for c in m["tool_calls"]]
        else:
            m.pop("tool_calls", None)  # some templates test for the key itself (llama-3.1, gpt-oss)
        if m["role"] == "assistant" and family.reasoning_inline:
            m["content"] = f"<think>\n{reasoning or ''}\n</think>\n\n{m['content']}"
        elif reasoning and family.reasoning_field:
            m[family.reasoning_field] = reasoning
        out.append(m)
    return out


def render(tokenizer, messages: list[dict], **kwargs) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, **kwargs)


def render_prompt(tokenizer, family: Family, messages: list[dict], tools: list[dict] | None = None, **overrides) -> str:
    """The text a model sees at inference when asked to answer ``messages`` (with ``tools``)."""
    return render(
        tokenizer,
        template_messages(family, messages),
        add_generation_prompt=True,
        tools=tools,
        **{**family.inference_kwargs, **overrides},
    )


def prompt_kwargs(family: Family, thinking: bool | None) -> dict:
    if thinking is None or family.thinking_kwarg is None:
        return {}
    return {family.thinking_kwarg: thinking}


def generation_prompt(
    tokenizer, family: Family, messages: list[dict], tools: list[dict] | None = None, thinking: bool | None = None
) -> str:
    """The text the model continues to answer ``messages``: the family's template with ``tools`` and
    the thinking switch (None: the family's default); what evaluate, the chat and GRPO's samples start from."""
    return render_prompt(tokenizer, family, messages, tools=tools, **prompt_kwargs(family, thinking))


@dataclass
class Turn:
    index: int
    # Where its rendered pieces lie, in order: reasoning (if rendered), answer (if any), then each
    # tool call, from its name through its arguments.
    pieces: list[tuple[int, int]]


def trained_turn(where: dict, i: int, message: dict) -> Turn:
    """The rendered pieces of trained turn ``i`` (canonical ``message``): its tool calls must all be
    rendered, and its answer where it has no call."""
    calls = message.get("tool_calls") or []
    if not calls and (i, "content") not in where:
        raise MaskError(f"assistant turn {i}: the chat template does not render its content")
    pieces = [where[i, key] for key in ("reasoning", "content") if (i, key) in where]
    for j, call in enumerate(calls):
        name, arguments = where.get((i, f"tool_calls.{j}.name")), where.get((i, f"tool_calls.{j}.arguments"))
        if name is None or arguments is None:
            raise MaskError(f"assistant turn {i}: the chat template does not render its tool call {call['name']!r}")
        pieces.append((min(name[0], arguments[0]), max(name[1], arguments[1])))
    return Turn(i, sorted(pieces))


def _close_span(text: str, family: Family, turn: Turn, start: int) -> tuple[int, int]:
    """From ``start`` through the first end token after the turn's last piece (found by structure)."""
    after = max(b for _, b in turn.pieces)
    stops = [(text.find(t, after), t) for t in family.end_tokens]
    stops = [(p, t) for p, t in stops if p >= 0]
    if not stops:
        raise MaskError(f"assistant turn {turn.index}: end-of-turn token {family.end_of_turn!r} not found after it")
    if turn.pieces[0][0] < start:
        raise MaskError(f"assistant turn {turn.index}: its text begins before its generation prompt ends")
    stop, token = min(stops)
    return start, stop + len(token)


def _expected(text: str, turns: dict[int, Turn]) -> list[tuple[int, list[str]]]:
    """Per trained turn, the rendered texts that must be supervised: reasoning (where rendered),
    answer, tool calls."""
    return [(i, [text[a:b] for a, b in t.pieces if b > a]) for i, t in sorted(turns.items())]


def trained_turns(messages: list[dict], train_on: str) -> set[int]:
    """The assistant turns ``train_on`` picks, less those marked ``train: false`` (context only)."""
    if train_on not in ("all_assistant", "last_assistant"):
        raise ValueError(f"train_on must be all_assistant or last_assistant, got {train_on!r}")
    turns = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    return {i for i in (turns[-1:] if train_on == "last_assistant" else turns) if messages[i].get("train", True)}


def render_training_text(
    tokenizer,
    family: Family,
    messages: list[dict],
    renderer: TrainingRenderer | None = None,
    tools: list[dict] | None = None,
) -> str:
    """The conversation (with its ``tools``) as trained: the chat template's rendering, with the
    family's declared differences (``training_patch``, ``training_suffix``). Without a
    ``renderer``: transformers' ``apply_chat_template``, the reference."""
    renderer = renderer or TrainingRenderer(tokenizer, family, fast=False)
    return renderer(messages, tools=tools) + family.training_suffix


def render_with_spans(
    tokenizer, family: Family, messages: list[dict], train_on: str = "all_assistant", tools: list[dict] | None = None
) -> Rendered:
    """The exact method: each trained assistant turn starts where the conversation before it,
    rendered with a generation prompt (the longest matching variant), ends."""
    return _spans(
        tokenizer,
        family,
        messages,
        train_on,
        TrainingRenderer(tokenizer, family, fast=False),
        partial(_exact_start, tools=tools),
        tools,
    )


def _exact_start(tokenizer, family, messages, text, i, cursor, turn_start, tools=None) -> int:
    prompts = [
        render(tokenizer, messages[:i], add_generation_prompt=True, tools=tools, **kw) for kw in family.prompt_variants
    ]
    matching = [p for p in prompts if cursor <= len(p) <= turn_start and text.startswith(p)]
    if not matching:
        raise MaskError(f"assistant turn {i}: the chat template does not render it after its own generation prompt")
    return len(max(matching, key=len))


def _spans(
    tokenizer, family: Family, canonical: list[dict], train_on: str, renderer, start_of, tools: list[dict] | None = None
) -> Rendered:
    """Spans of the trained turns: each from where ``start_of`` says its generation prompt ends
    through the first end token after its last piece (answer or tool call), whose place comes
    from ``locate``. The search for a generation prompt starts after the previous turn's text (so
    one typed inside a user message or a tool result is never taken) and ends where the turn's
    own text begins. A conversation whose tools the family cannot express is refused first, and a
    template's own refusal (``raise_exception``) is a MaskError too."""
    problem = tool_format_problem(family, canonical, tools)
    if problem:
        raise ToolFormatError(problem)
    try:
        return _spans_of(tokenizer, family, canonical, train_on, renderer, start_of, tools)
    except jinja2.exceptions.TemplateError as e:
        raise MaskError(f"the chat template refuses the conversation: {e}") from None


def _spans_of(tokenizer, family, canonical, train_on, renderer, start_of, tools) -> Rendered:
    messages = template_messages(family, canonical)
    trained = trained_turns(messages, train_on)
    render_text = lambda marked: render_training_text(
        tokenizer, family, template_messages(family, marked), renderer, tools
    )  # noqa: E731
    located = locate_in_one_render(render_text, canonical, trained) if renderer.fast else None
    if located is not None:
        text, where = located
    else:
        text = render_training_text(tokenizer, family, messages, renderer, tools)
        where = locate(text, render_text, canonical, trained)
    turns = {i: trained_turn(where, i, canonical[i]) for i in sorted(trained)}
    spans: list[tuple[int, int]] = []
    cursor = 0
    for i in range(len(messages)):
        if i not in turns:
            cursor = max(cursor, where.get((i, "content"), (0, 0))[1])
            continue
        turn = turns[i]
        spans.append(
            _close_span(text, family, turn, start_of(tokenizer, family, messages, text, i, cursor, turn.pieces[0][0]))
        )
        cursor = spans[-1][1]
    return Rendered(text, spans, _expected(text, turns))


def generation_prompts(tokenizer, family: Family) -> list[str] | None:
    """The text each generation-prompt variant appends after a user turn, found by rendering a
    probe conversation; None if the template does not append it (then only the exact method)."""
    probe = [{"role": "user", "content": "probe"}]
    base = render(tokenizer, probe)
    out = []
    for kw in family.prompt_variants:
        full = render(tokenizer, probe, add_generation_prompt=True, **kw)
        if not full.startswith(base) or len(full) == len(base):
            return None
        out.append(full[len(base) :])
    return out


def spans_from_prompts(
    tokenizer,
    family: Family,
    messages: list[dict],
    prompts: list[str],
    train_on: str = "all_assistant",
    renderer: TrainingRenderer | None = None,
    tools: list[dict] | None = None,
) -> Rendered:
    """The fast method, one render per conversation (by ``renderer``, default: the fast one) plus
    one with markers: each trained assistant turn starts after the first generation prompt that
    follows the previous turn's text and ends before the turn's own text (the longest one at that
    place)."""

    def start_of(tokenizer, family, messages, text, i, cursor, turn_start) -> int:
        found = [(text.find(p, cursor, turn_start), -len(p), p) for p in prompts]
        found = [f for f in found if f[0] >= 0]
        if not found:
            raise MaskError(f"assistant turn {i}: no generation prompt before it")
        at, _, prompt = min(found)
        return at + len(prompt)

    return _spans(
        tokenizer, family, messages, train_on, renderer or TrainingRenderer(tokenizer, family), start_of, tools
    )


def tokenize_with_labels(
    tokenizer, family: Family, messages: list[dict], train_on: str | None = None, tools: list[dict] | None = None
) -> dict:
    """``input_ids`` of the rendered conversation (with its ``tools``) and ``labels`` with -100
    outside the trained assistant spans: every assistant turn (``all_assistant``) or the last one
    (``last_assistant``); None: the family's default."""
    [result] = tokenize_many(tokenizer, family, [messages], train_on, verify=0, tools=[tools])
    if isinstance(result, Exception):
        raise result
    return result


VERIFY_ROWS = 32


def tokenize_many(
    tokenizer,
    family: Family,
    conversations: list[list[dict]],
    train_on: str | None = None,
    verify: int = VERIFY_ROWS,
    tools: list[list[dict] | None] | None = None,
) -> list[dict | MaskError | SupervisionError]:
    """Tokenize with labels (``tools``: each conversation's tool definitions, None where it has
    none); a conversation that cannot be masked (or whose tools its family cannot express) yields its MaskError instead,
    and one whose labels leave part of a trained turn's answer or rendered reasoning unsupervised
    yields a SupervisionError (every conversation is checked; see ``supervision_error``).

    The fast method is used when it agrees with the exact one on the first ``verify``
    conversations (both are rendering-based; the exact one renders once per assistant turn with
    transformers' sandboxed ``apply_chat_template``, the fast one once per conversation, with the
    template compiled outside the sandbox when the kit trusts it); ``verify=0`` uses the exact
    method throughout."""
    with gc_paused():
        return _tokenize_many(
            tokenizer,
            family,
            conversations,
            train_on or family.default_train_on,
            verify,
            tools or [None] * len(conversations),
        )


def _tokenize_many(
    tokenizer, family: Family, conversations: list[list[dict]], train_on: str, verify: int, tools: list
) -> list[dict | MaskError | SupervisionError]:
    prompts = generation_prompts(tokenizer, family) if verify else None
    renderer = TrainingRenderer(tokenizer, family) if prompts is not None else None

    def attempt(method, *args):
        try:
            return method(tokenizer, family, *args)
        except MaskError as e:
            return e

    verified = []  # the fast method's renderings of the first rows, reused once they agree
    for messages, defined in zip(conversations[:verify], tools) if prompts is not None else []:
        exact = attempt(render_with_spans, messages, train_on, defined)
        fast = attempt(spans_from_prompts, messages, prompts, train_on, renderer, defined)
        agree = (isinstance(exact, MaskError) and isinstance(fast, MaskError)) or (
            isinstance(exact, Rendered)
            and isinstance(fast, Rendered)
            and (fast.text, fast.spans) == (exact.text, exact.spans)
        )
        if not agree:
            prompts, verified = None, []
            break
        verified.append(fast)

    def render_rows(start: int, end: int) -> list:
        return [
            verified[k]
            if k < len(verified)
            else attempt(spans_from_prompts, m, prompts, train_on, renderer, defined)
            if prompts is not None
            else attempt(render_with_spans, m, train_on, defined)
            for k, m, defined in zip(range(start, end), conversations[start:end], tools[start:end])
        ]

    # Rendering (Python) and encoding (Rust, which lets go of the GIL) overlap: each chunk is
    # encoded in a second thread while the next ones render; labels and the check follow.
    rendered, pending, batches, table = [], [], [], None
    with encoder(tokenizer, background=len(conversations) > CHUNKS[0]) as encode:
        for start, end in chunk_bounds(len(conversations)):
            rendered += render_rows(start, end)
            pending += [r for r in rendered[start:end] if isinstance(r, Rendered)]
            if not batches and len(pending) < verify and end < len(conversations):
                continue  # the byte-length table is decided on the first ``verify`` rendered rows
            if not batches:
                table = byte_length_table(tokenizer) if verify and pending else None
                if table is not None and not byte_offsets_agree(tokenizer, table, pending[:verify]):
                    table = None
            batches.append((pending, encode([r.text for r in pending], offsets=table is None)))
            pending = []
        checked = []
        for masked, encoded in batches:
            pairs = [
                labelled(tokenizer, table, r, e) for r, e in zip(masked, encoded())
            ]  # (example, token ranges supervised)
            examples = [ex for ex, _ in pairs]
            errors = supervision_errors(tokenizer, masked, examples, [hint for _, hint in pairs])
            checked += [error or ex for error, ex in zip(errors, examples)]
    checked = iter(checked)
    return [r if isinstance(r, MaskError) else next(checked) for r in rendered]
