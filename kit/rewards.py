"""GRPO's verifiable rewards (``train.grpo.rewards``): each entry a built-in check or a user's own
function, made into the callable TRL's GRPOTrainer calls with a batch of completions, and checked
to give one number per completion.

An entry is ``{function: NAME, weight?: number, ...its settings}``. Built in (each 1.0 or 0.0 per
completion):

- ``format``: the answer holds ``<TAG>…</TAG>`` (``tag``) once, or matches ``regex`` (searched);
- ``json_schema``: the answer (or what its ``tag`` holds) is JSON valid against ``schema``;
- ``exact_answer``: the answer (or what its ``tag`` holds) equals the row's ``answer`` field, with
  surrounding space and case ignored (``case_sensitive: true`` keeps case);
- ``contains_answer``: the row's ``answer`` appears in the answer (or what its ``tag`` holds), spaces
  and case ignored as above: a short fact stated within a sentence;
- ``tool_call``: the answer holds a tool call, every call names one of the row's tools, and none
  failed to parse (as evaluate's valid-call rate; ``kit.chat.tool_calls``).

A user's function is named ``module:function`` (importable from the project root or the Python path)
and is called as TRL calls reward functions: ``f(prompts=..., completions=..., **row fields)``. The
kit's GRPO renders each prompt with the family's template itself (``kit.data.tokenize.grpo_rows``),
so ``prompts`` are that text and ``completions`` the sampled answers' text (special tokens skipped);
the row fields are ``answer`` (the conversation's reference answer) and ``tools`` (a list, or None).
Given chat messages instead (TRL's own conversational rows), the built-ins read the assistant's
content. It must return one number (or None: no reward) per completion; anything else stops
training with a line naming the entry.
"""

from __future__ import annotations

import importlib
import json
import math
import re
from numbers import Real
from typing import Callable

from kit.chat.tool_calls import parse_answer, tool_call_scores
from kit.families import Family

BUILTIN = ("format", "json_schema", "exact_answer", "contains_answer", "tool_call")
# The settings each built-in takes (beside function and weight), and those it requires (one of).
SETTINGS = {
    "format": ({"tag", "regex"}, ({"tag"}, {"regex"})),
    "json_schema": ({"schema", "tag"}, ({"schema"},)),
    "exact_answer": ({"tag", "case_sensitive"}, ()),
    "contains_answer": ({"tag", "case_sensitive"}, ()),
    "tool_call": (set(), ()),
}


class RewardError(ValueError):
    """A reward entry that cannot be used, or a function that returned something other than one
    number per completion."""


def completion_text(completion) -> str:
    """A completion as text: the content of its (last) assistant message for chat prompts."""
    if isinstance(completion, str):
        return completion
    messages = [m for m in completion if m.get("role") == "assistant"] if isinstance(completion, list) else []
    return str(messages[-1].get("content") or "") if messages else ""


def _tagged(text: str, tag: str | None) -> str | None:
    """What the one ``<tag>…</tag>`` in ``text`` holds (None: not exactly one), or ``text`` untagged."""
    if not tag:
        return text.strip()
    found = re.findall(rf"<{re.escape(tag)}>(.*?)</{re.escape(tag)}>", text, flags=re.DOTALL)
    return found[0].strip() if len(found) == 1 else None


def _format(completions, tag=None, regex=None, **_) -> list[float]:
    pattern = re.compile(regex) if regex else None
    return [
        float(_tagged(completion_text(c), tag) is not None) if tag else float(bool(pattern.search(completion_text(c))))
        for c in completions
    ]


def _json_schema(completions, schema, tag=None, **_) -> list[float]:
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema)
    rewards = []
    for c in completions:
        body = _tagged(completion_text(c), tag)
        try:
            rewards.append(float(body is not None and validator.is_valid(json.loads(body))))
        except ValueError:  # not JSON
            rewards.append(0.0)
    return rewards


def _compare_answer(completions, answer, tag, case_sensitive, name, same) -> list[float]:
    if answer is None:
        raise RewardError(
            f"{name} needs each row's answer field: the prompts have none (give the data an "
            "answer, or a conversation whose last assistant turn is the answer)"
        )

    def norm(text):
        text = " ".join(str(text).split())
        return text if case_sensitive else text.casefold()

    return [
        float(got is not None and same(norm(got), norm(want)))
        for got, want in ((_tagged(completion_text(c), tag), a) for c, a in zip(completions, answer))
    ]


def _exact_answer(completions, answer=None, tag=None, case_sensitive=False, **_) -> list[float]:
    return _compare_answer(completions, answer, tag, case_sensitive, "exact_answer", lambda got, want: got == want)


def _contains_answer(completions, answer=None, tag=None, case_sensitive=False, **_) -> list[float]:
    return _compare_answer(completions, answer, tag, case_sensitive, "contains_answer", lambda got, want: want in got)


def _tool_call(completions, family: Family, tools=None, **_) -> list[float]:
    tools = tools or [None] * len(completions)
    rewards = []
    for c, defined in zip(completions, tools):
        parsed = parse_answer(completion_text(c), family)
        # tool_call_scores' valid-call rate for one row (a reference call stands in: only validity is read)
        rewards.append(tool_call_scores([parsed], [[{"name": "", "arguments": {}}]], [defined])["valid_call"])
    return rewards


_BUILTINS = {
    "format": _format,
    "json_schema": _json_schema,
    "exact_answer": _exact_answer,
    "contains_answer": _contains_answer,
    "tool_call": _tool_call,
}


def _where(i: int, entry: dict) -> str:
    return f"train.grpo.rewards[{i}] ({entry.get('function')})"


def check_entry(i: int, entry: object) -> None:
    """An entry's shape and its built-in's settings, before anything runs."""
    if not isinstance(entry, dict) or not isinstance(entry.get("function"), str):
        raise RewardError(
            f"train.grpo.rewards[{i}]: expected {{function: NAME, ...}}, got {entry!r}; NAME is one of "
            f"{', '.join(BUILTIN)} or module:function"
        )
    name, weight = entry["function"], entry.get("weight", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, Real) or not math.isfinite(weight):
        raise RewardError(f"{_where(i, entry)}: weight must be a number, got {weight!r}")
    settings = {k for k in entry if k not in ("function", "weight")}
    if name in SETTINGS:
        allowed, required = SETTINGS[name]
        unknown = sorted(settings - allowed)
        if unknown:
            raise RewardError(
                f"{_where(i, entry)}: unknown setting {unknown[0]}; {name} takes "
                f"{', '.join(sorted(allowed)) or 'no settings'}"
            )
        if required and not any(need <= settings for need in required):
            raise RewardError(f"{_where(i, entry)}: needs {' or '.join(next(iter(n)) for n in required)}")
        if name == "format" and "regex" in entry:
            try:
                re.compile(entry["regex"])
            except re.error as e:
                raise RewardError(f"{_where(i, entry)}: regex does not compile: {e}") from None
        if name == "json_schema":
            import jsonschema

            try:
                jsonschema.Draft202012Validator.check_schema(entry["schema"])
            except jsonschema.SchemaError as e:
                raise RewardError(f"{_where(i, entry)}: schema is not a JSON schema: {e.message}") from None
    elif ":" not in name:
        raise RewardError(f"{_where(i, entry)}: not a built-in reward ({', '.join(BUILTIN)}) nor module:function")
    else:
        _import(i, entry)


def _import(i: int, entry: dict) -> Callable:
    module_name, _, attribute = entry["function"].partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # noqa: BLE001 - any failure to import is the user's to see, in one line
        raise RewardError(f"{_where(i, entry)}: cannot import {module_name}: {type(e).__name__}: {e}") from None
    function = getattr(module, attribute, None)
    if not callable(function):
        raise RewardError(f"{_where(i, entry)}: {module_name} has no function {attribute}")
    return function


def _checked(i: int, entry: dict, function: Callable) -> Callable:
    """``function`` as TRL calls it, its result checked: one number (or None) per completion."""
    where = _where(i, entry)

    def reward(prompts, completions, **kwargs):
        if (
            kwargs.get("tools") is not None
        ):  # the kit's GRPO rows carry tools as JSON text (kit.data.tokenize.grpo_rows)
            kwargs["tools"] = [json.loads(t) if isinstance(t, str) else t for t in kwargs["tools"]]
        result = function(prompts=prompts, completions=completions, **kwargs)
        if not isinstance(result, (list, tuple)) or len(result) != len(completions):
            got = f"{len(result)} values" if isinstance(result, (list, tuple)) else type(result).__name__
            raise RewardError(
                f"{where}: returned {got} for {len(completions)} completions; a reward function returns "
                "one number per completion"
            )
        bad = next((r for r in result if r is not None and (isinstance(r, bool) or not isinstance(r, Real))), None)
        if bad is not None:
            raise RewardError(
                f"{where}: returned {bad!r} ({type(bad).__name__}) among its rewards; each must be a "
                "number (or None: no reward)"
            )
        return [None if r is None else float(r) for r in result]

    reward.__name__ = entry["function"].replace(":", ".") if ":" in entry["function"] else entry["function"]
    return reward


def reward_functions(entries: list, family: Family) -> tuple[list[Callable], list[float]]:
    """The recipe's reward entries as TRL's ``reward_funcs`` and ``reward_weights``, each checked."""
    if not entries:
        raise RewardError(
            f"train.grpo.rewards: empty; GRPO needs at least one reward ({', '.join(BUILTIN)}, or module:function)"
        )
    functions, weights = [], []
    for i, entry in enumerate(entries):
        check_entry(i, entry)
        settings = {k: v for k, v in entry.items() if k not in ("function", "weight")}
        if entry["function"] in _BUILTINS:
            builtin = _BUILTINS[entry["function"]]
            extra = {"family": family} if entry["function"] == "tool_call" else {}

            def call(prompts, completions, _builtin=builtin, _settings=settings, _extra=extra, **row):
                row = {k: v for k, v in row.items() if k in ("answer", "tools")}  # the row fields built-ins read
                return _builtin(completions, **row, **_settings, **_extra)

            function = call
        else:
            function = _import(i, entry)
        functions.append(_checked(i, entry, function))
        weights.append(float(entry.get("weight", 1.0)))
    return functions, weights


def mean_rewards(entries: list, family: Family, prompts: list, completions: list[str], rows: dict) -> dict:
    """The recipe's rewards of ``completions`` (one per prompt; ``rows``: the row fields, a list each,
    as TRL passes them), as GRPO's training sees them: ``mean``, the weighted sum per completion
    (None counts as no reward) averaged, and each function's mean, in the recipe's order."""
    functions, weights = reward_functions(entries, family)
    columns = [function(prompts=prompts, completions=completions, **rows) for function in functions]
    totals = [sum(w * r for w, r in zip(weights, values) if r is not None) for values in zip(*columns)]
    by_function = []
    for function, weight, values in zip(functions, weights, columns):
        scored = [r for r in values if r is not None]
        by_function.append(
            {"function": function.__name__, "weight": weight, "mean": sum(scored) / len(scored) if scored else None}
        )
    return {
        "prompts": len(completions),
        "mean": sum(totals) / len(totals) if totals else None,
        "by_function": by_function,
    }
