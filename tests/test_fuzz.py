"""Property-based tests (hypothesis) of what reads a user's files: the data readers, the recipe loader
and the override parser. For arbitrary bytes, arbitrary JSON values in each field of each layout,
and arbitrary YAML, the only outcomes are a one-line refusal naming the file (``DataError`` /
``RecipeError``, or argparse's one line), or rows that pass the per-row check. Anything else (a
raw exception, a row that fails the check, a hang) is a bug the reader let through.

A fixed example budget keeps this inside the fast tier; KIT_FUZZ_EXAMPLES raises it (a long run:
``KIT_FUZZ_EXAMPLES=20000 .venv/bin/python -m pytest tests/test_fuzz.py``)."""

import argparse
import json
import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kit.data.rows import check_messages, load_conversations
from kit.data.sources import DataError
from kit.recipes import RecipeError, load_recipe, override_argument, override_arguments, parse_overrides

EXAMPLES = int(os.environ.get("KIT_FUZZ_EXAMPLES", "150"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)

json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
ROLES = ["system", "user", "assistant", "tool", "model", "human", "gpt", "function", "bogus"]
message = st.fixed_dictionaries(
    {"role": st.sampled_from(ROLES) | json_scalars, "content": json_values},
    optional={
        "reasoning_content": json_values,
        "tool_calls": json_values,
        "thinking": json_values,
        "name": json_values,
        "loss_weight": json_values,
        "weight": json_values,
    },
)
# Rows shaped like each layout the readers know, with arbitrary values in their fields.
rows = st.one_of(
    st.fixed_dictionaries({"messages": st.lists(message, max_size=5)}, optional={"tools": json_values}),
    st.fixed_dictionaries(
        {
            "conversations": st.lists(
                st.fixed_dictionaries({"from": st.sampled_from(["human", "gpt", "system", "x"]), "value": json_values}),
                max_size=4,
            )
        }
    ),
    st.fixed_dictionaries({"instruction": json_values, "output": json_values}, optional={"input": json_values}),
    st.fixed_dictionaries({"prompt": json_values, "completion": json_values}, optional={"label": json_values}),
    st.dictionaries(st.text(max_size=10), json_values, max_size=5),
)


def outcome_is_clean(path: Path, method: str = "sft") -> None:
    """Reading ``path`` gives a one-line DataError naming it, or rows that pass the per-row check."""
    for invalid_rows in ("error", "drop"):
        try:
            result = load_conversations(str(path), invalid_rows=invalid_rows, method=method)
        except DataError as e:
            message = str(e)
            assert "\n" not in message.strip() and (path.name in message or "data.source" in message), message
            continue
        for row in result.rows:
            if method == "sft":
                assert check_messages(row["messages"], tools=row.get("tools")) is None, row


@FUZZ
@given(data=st.binary(max_size=400), suffix=st.sampled_from([".jsonl", ".json", ".csv"]))
def test_arbitrary_bytes_are_read_or_refused_in_one_line(data, suffix):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"data{suffix}"
        path.write_bytes(data)
        outcome_is_clean(path)


@FUZZ
@given(records=st.lists(rows, min_size=1, max_size=4), method=st.sampled_from(["sft", "dpo", "kto"]))
def test_arbitrary_values_in_each_layout_are_read_or_refused_in_one_line(records, method):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "rows.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
        outcome_is_clean(path, method)


yaml_keys = st.sampled_from(
    [
        "model",
        "data",
        "lora",
        "train",
        "eval",
        "export",
        "id",
        "family",
        "source",
        "max_steps",
        "dropout",
        "seed",
        "learning_rate",
        "r",
        "weight",
        "x",
    ]
)
yaml_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(yaml_keys, inner, max_size=3),
    max_leaves=10,
)


@FUZZ
@given(doc=st.dictionaries(yaml_keys, yaml_values, max_size=5) | yaml_values, text=st.text(max_size=80))
def test_arbitrary_recipes_load_or_are_refused_in_one_line(doc, text):
    import yaml

    with tempfile.TemporaryDirectory() as tmp:
        for i, body in enumerate((yaml.safe_dump(doc), text)):
            path = Path(tmp) / f"fuzz{i}.yaml"
            path.write_text(body, encoding="utf-8")
            try:
                load_recipe(str(path))
            except RecipeError as e:
                assert "\n" not in str(e).strip() and path.name in str(e), str(e)


@FUZZ
@given(
    texts=st.lists(st.text(max_size=40), max_size=4),
    mapping=st.dictionaries(st.text(max_size=12), yaml_values, max_size=4),
)
def test_arbitrary_overrides_parse_or_are_refused_in_one_line(texts, mapping):
    try:
        override_arguments([override_argument(t) for t in texts])
    except (argparse.ArgumentTypeError, RecipeError) as e:  # argparse's one line, or a key given twice
        assert "\n" not in str(e).strip()
    for given_overrides in (mapping, "\n".join(texts)):
        try:
            parse_overrides(given_overrides)
        except RecipeError as e:
            assert "\n" not in str(e).strip(), str(e)


def test_the_budget_is_the_documented_one():
    """The fast tier's budget; a longer run sets KIT_FUZZ_EXAMPLES."""
    assert EXAMPLES >= 100 or os.environ.get("KIT_FUZZ_EXAMPLES")


pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
