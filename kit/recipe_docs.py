"""docs/recipes.md, the recipe reference: a table per recipe section, generated from the one
declaration of the format (``kit.recipe_schema``, read through ``kit.recipes.keys``)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import yaml

from kit.recipes import _BOUNDS, Key, Recipe, _type_name, bound_text, keys

DOCS_COMMAND = "python -m kit.recipe_docs > docs/recipes.md"


def _sections(cls: type, prefix: str = ""):
    """(dotted prefix, section class) for ``cls`` and every section nested in it, depth first."""
    yield prefix, cls
    for key in keys(cls).values():
        if key.section:
            yield from _sections(key.section, f"{prefix}{key.name}.")


def _yaml_text(value: Any) -> str:
    """A value as a recipe writes it (``null``, ``true``, ``[q8_0, q4_k_m]``)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000)
    return text.removesuffix("...\n").strip()


def _cell(text: str) -> str:
    # A pipe would end a table cell; <think> would be read as an HTML tag.
    return text.replace("|", "\\|").replace("<", "\\<")


def _key_row(path: str, key: Key) -> str:
    kind = f"list of {key.items.__name__}" if key.items else _type_name(key.types)
    kind += " or null" if key.nullable else ""
    default = "*required*" if key.required else f"`{_yaml_text(key.default())}`"
    allowed = [", ".join(f"`{c}`" for c in key.meta("choices"))] if key.meta("choices") else []
    allowed += [f"{says} {bound_text(key.meta(bound))}" for bound, _, says in _BOUNDS if key.meta(bound) is not None]
    allowed += [f"not {_yaml_text(bad)}" for bad in key.meta("forbid") or {}]
    return f"| `{path}` | {kind} | {default} | {'; '.join(allowed)} | {_cell(key.meta('help') or '')} |"


def reference_markdown() -> str:
    """docs/recipes.md: a table per recipe section, generated from ``kit.recipe_schema``."""
    lines = [
        "# Recipe reference",
        "",
        f"Generated from `kit/recipe_schema.py` by `{DOCS_COMMAND}`; edit the declaration there and",
        "regenerate (a test checks that this page is current).",
        "",
        "A recipe is `recipes/<name>.yaml`. A key left out takes its default; a *required* key must be given.",
        "`null` is accepted only where the type says so; a `float` key also takes an integer. Unknown keys,",
        "wrong types and values outside the allowed ones are errors naming the file and the key.",
    ]
    for prefix, cls in _sections(Recipe):
        plain = [key for key in keys(cls).values() if not key.section]
        if not plain:
            continue
        lines += [
            "",
            f"## `{prefix.rstrip('.')}`" if prefix else "## Top level",
            "",
            _cell(" ".join((cls.__doc__ or "").split())),
            "",
            "| Key | Type | Default | Allowed | Help |",
            "| --- | --- | --- | --- | --- |",
        ]
        lines += [_key_row(prefix + key.name, key) for key in plain]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(
        prog="python -m kit.recipe_docs", description=f"The recipe reference: {DOCS_COMMAND}"
    ).parse_args(argv)
    sys.stdout.write(reference_markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main())
