"""Tool calls and tool results as each family's chat template reads them, and the conversations a
family's template cannot express.

A canonical assistant turn holds flat calls ``{"name", "arguments": {...}, "id"?}``; the templates
read ``{"type": "function", "id"?, "function": {"name", "arguments"}}``, with the arguments as an
object (every template the kit renders tools with writes them with ``tojson``). Tool results are
``{"role": "tool", "content", "name", "tool_call_id"?}`` turns, which the templates read as they are.
"""

from __future__ import annotations

from kit.families import Family


def uses_tools(messages: list[dict], tools: list[dict] | None) -> bool:
    return bool(tools) or any(m.get("tool_calls") or m["role"] == "tool" for m in messages)


def tool_format_problem(family: Family, messages: list[dict], tools: list[dict] | None) -> str | None:
    """Why ``family``'s chat template cannot render this conversation's tools as they are, or None."""
    if not uses_tools(messages, tools):
        return None
    rules = family.tools
    if rules is None:
        return f"{family.name} cannot express tool definitions, calls or results: {family.no_tools}"
    for i, m in enumerate(messages):
        calls = m.get("tool_calls") or []
        if not calls:
            continue
        if rules.calls_per_turn is not None and len(calls) > rules.calls_per_turn:
            return (
                f"assistant turn {i} holds {len(calls)} tool calls; {family.name}'s chat template renders "
                f"{rules.calls_per_turn} per turn"
            )
        if not rules.text_with_calls and (m.get("content") or "").strip():
            return f"assistant turn {i}: {family.name}'s chat template renders a tool call without the text beside it"
        if not rules.text_and_reasoning_with_calls and m.get("content") and m.get("reasoning"):
            return (
                f"assistant turn {i}: {family.name}'s chat template renders a tool call after its text or "
                "its reasoning, not both"
            )
    return None


def template_call(call: dict) -> dict:
    """One canonical call in the shape chat templates read (the values are kept as they are, so a
    field that ``kit.chat.render`` tracks stays tracked)."""
    out = {"type": "function", "function": {"name": call["name"], "arguments": call["arguments"]}}
    if call.get("id") is not None:
        out["id"] = call["id"]
    return out


def drop_call_text_before_answers(messages: list[dict]) -> list[dict]:
    """A call turn's text and reasoning left out once a later assistant turn answers without a call,
    as gpt-oss's template leaves them out there (so each turn's prompt is the history as rendered)."""
    answers = [i for i, m in enumerate(messages) if m["role"] == "assistant" and not m.get("tool_calls")]
    out = []
    for i, m in enumerate(messages):
        if m.get("tool_calls") and answers and answers[-1] > i and (m.get("content") or m.get("reasoning")):
            m = {**{k: v for k, v in m.items() if k != "reasoning"}, "content": ""}
        out.append(m)
    return out
