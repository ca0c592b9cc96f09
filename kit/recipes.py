"""Recipes: one YAML per model, strictly validated, with overrides from notebook parameters.

Every key a recipe may hold is declared once, in ``kit.recipe_schema``: a frozen dataclass per section
whose fields give each key's type and default, and in their metadata its help text, allowed values and
bounds. Unknown keys and wrong types raise ``RecipeError`` naming the file and the key path (and the
nearest valid key). A recipe is resolved once into a ``Recipe`` of those dataclasses
(``recipe.train.max_steps``, ``recipe.eval.behavior.prefix``), which the stages read.
``python -m kit.recipe_docs > docs/recipes.md`` writes the reference page from the same declaration.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import difflib
import functools
import math
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import yaml

from kit.paths import RECIPES_DIR, name_refusal
from kit.recipe_yaml import RecipeError, StrictLoader, read_yaml

# Re-exported: callers import the recipe classes and FORMATS (kit.data.formats) from here.
from kit.recipe_schema import (  # noqa: F401
    FORMATS,
    METHODS,
    PREFERENCE_FORMATS,
    UNPAIRED_FORMATS,
    BehaviorSection,
    DataSection,
    DpoSection,
    EvalSection,
    ExportSection,
    GrpoSection,
    KtoSection,
    LoraSection,
    ModelSection,
    OrpoSection,
    Recipe,
    RecipeSection,
    TrainSection,
)


@dataclass(frozen=True)
class Key:
    """One recipe key as validation and the reference page read it off its dataclass field."""

    name: str
    types: tuple  # accepted Python types; int is accepted where float is
    nullable: bool  # the annotation allows None (``X | None``)
    items: type | None  # a list's element type, where the annotation gives one (``list[str]``)
    section: type | None  # the section class, where the key is a nested section
    field: dataclasses.Field

    @property
    def required(self) -> bool:
        return self.field.default is dataclasses.MISSING and self.field.default_factory is dataclasses.MISSING

    def default(self) -> Any:
        """A fresh copy of the default, so no two recipes share a list."""
        if self.field.default is not dataclasses.MISSING:
            return copy.deepcopy(self.field.default)
        return self.field.default_factory()

    def meta(self, name: str) -> Any:
        return self.field.metadata.get(name)


@functools.cache
def keys(cls: type) -> typing.Mapping[str, Key]:
    """The keys of a section class, in declaration order (that of recipe.yaml and of the page);
    read-only, as the mapping is cached."""
    hints = typing.get_type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            out[f.name] = Key(f.name, (dict,), False, None, hint, f)
            continue
        args = typing.get_args(hint) if typing.get_origin(hint) in (Union, types.UnionType) else (hint,)
        kinds = [a for a in args if a is not type(None)]
        items = next((typing.get_args(k)[0] for k in kinds if typing.get_args(k)), None)
        out[f.name] = Key(
            f.name, tuple(typing.get_origin(k) or k for k in kinds), len(kinds) < len(args), items, None, f
        )
    return types.MappingProxyType(out)


def _build(cls: type, values: dict) -> RecipeSection:
    return cls(
        **{k.name: _build(k.section, values[k.name]) if k.section else values[k.name] for k in keys(cls).values()}
    )


def _type_name(kinds: tuple) -> str:
    return " or ".join(t.__name__ for t in kinds)


def _check_value(path: str, key: Key, value: Any, where: str) -> Any:
    if value is None:
        if key.nullable:
            return None
        raise RecipeError(f"{where}: {path}: expected {_type_name(key.types)}, got null")
    ok = isinstance(value, key.types) and not (isinstance(value, bool) and bool not in key.types)
    if not ok and float in key.types and isinstance(value, int) and not isinstance(value, bool):
        value, ok = float(value), True
    if not ok:
        raise RecipeError(f"{where}: {path}: expected {_type_name(key.types)}, got {type(value).__name__} ({value!r})")
    bad = _non_finite(value, path)
    if bad:
        raise RecipeError(f"{where}: {bad[0]}: {bad[1]!r} is not a finite number; give a number")
    if key.items is not None and isinstance(value, list):
        wrong = next((v for v in value if not isinstance(v, key.items)), None)
        if wrong is not None:
            raise RecipeError(
                f"{where}: {path}: every element must be {key.items.__name__}, got {type(wrong).__name__} ({wrong!r})"
            )
    choices = key.meta("choices")
    if choices and value not in choices:
        near = difflib.get_close_matches(str(value), list(map(str, choices)), n=1) if isinstance(value, str) else []
        hint = f" (did you mean {near[0]}?)" if near else ""
        raise RecipeError(f"{where}: {path}: {value!r} is not one of {', '.join(map(str, choices))}{hint}")
    for bound, fails, says in _BOUNDS:
        limit = key.meta(bound)
        if limit is not None and fails(value, limit):
            raise RecipeError(f"{where}: {path}: {value!r} is out of range; it must be {says} {bound_text(limit)}")
    for bad, why in (key.meta("forbid") or {}).items():
        if value == bad:
            raise RecipeError(f"{where}: {path}: {value!r} {why}")
    return value


def _non_finite(value: Any, path: str) -> tuple[str, float] | None:
    """The first NaN or infinity anywhere in ``value`` (a list's or mapping's too), with its key path:
    YAML reads ``.nan`` and ``.inf`` as floats, which every bound lets through (NaN compares false)."""
    if isinstance(value, float):
        return None if math.isfinite(value) else (path, value)
    if isinstance(value, (list, tuple)):
        items = ((f"{path}[{i}]", v) for i, v in enumerate(value))
    elif isinstance(value, dict):
        items = ((f"{path}.{k}", v) for k, v in value.items())
    else:
        return None
    return next((bad for p, v in items if (bad := _non_finite(v, p))), None)


def bound_text(limit: float) -> str:
    """A bound as errors and the page write it: an int in full (a seed's 4294967295), a float short."""
    return str(limit) if isinstance(limit, int) else f"{limit:g}"


# (metadata name, test that the value breaks it, the words errors and the page use)
_BOUNDS = (
    ("min", lambda v, b: v < b, "at least"),
    ("max", lambda v, b: v > b, "at most"),
    ("above", lambda v, b: v <= b, "above"),
    ("below", lambda v, b: v >= b, "below"),
)


def _validate(cls: type, data: Any, prefix: str, where: str) -> dict:
    schema = keys(cls)
    if not isinstance(data, dict):
        raise RecipeError(f"{where}: {prefix.rstrip('.') or 'recipe'}: expected a mapping, got {type(data).__name__}")
    for name in data:
        if name not in schema:
            path = f"{prefix}{name}"
            near = difflib.get_close_matches(str(name), list(schema), n=1)
            hint = f"; did you mean {prefix}{near[0]}?" if near else f"; valid keys: {', '.join(schema)}"
            raise RecipeError(f"{where}: unknown key {path}{hint}")
    out = {}
    for name, key in schema.items():
        path = f"{prefix}{name}"
        if key.section:
            out[name] = _validate(key.section, data.get(name, {}), f"{path}.", where)
        elif name in data:
            out[name] = _check_value(path, key, data[name], where)
        elif key.required:
            raise RecipeError(f"{where}: missing required key {path}")
        else:
            out[name] = key.default()
    return out


def validate(data: dict, where: str = "recipe") -> dict:
    """Return a complete recipe as plain data (defaults filled) or raise RecipeError."""
    out = _validate(Recipe, data, "", where)
    _check_grpo(out["train"], where)
    return out


def _check_grpo(train: dict, where: str) -> None:
    """What GRPO needs across keys: a reward, and batches of whole groups (TRL's GRPOConfig would refuse
    them later, per process)."""
    if train["method"] != "grpo":
        return
    grpo = train["grpo"]
    if not grpo["rewards"]:
        raise RecipeError(
            f"{where}: train.grpo.rewards is empty; GRPO needs at least one reward function "
            "(a built-in of kit/rewards.py, or module:function; docs/training.md lists them)"
        )
    n = grpo["num_generations"]
    for keys in (("per_device_train_batch_size", "gradient_accumulation_steps"), ("per_device_eval_batch_size",)):
        size = math.prod(train[k] for k in keys)
        if size % n:
            raise RecipeError(
                f"{where}: train.{' x train.'.join(keys)} ({size}) must be a multiple of "
                f"train.grpo.num_generations ({n}): under grpo a batch holds whole groups of answers"
            )


def resolve(data: dict, where: str = "recipe") -> Recipe:
    """A recipe's data, validated (``validate``) and resolved into a ``Recipe``."""
    return _build(Recipe, validate(data, where))


def available() -> list[str]:
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))


def recipe_name(name_or_path: str | Path) -> str:
    """The name a recipe's runs are kept under: ``tiny-demo`` for ``tiny-demo`` and for ``path/tiny-demo.yaml``;
    refused unless it is one safe folder name (``...yaml``'s ``..`` would put its runs outside the runs root)."""
    path = Path(name_or_path)
    return _checked_name(path.stem if path.suffix in (".yaml", ".yml") else str(name_or_path), name_or_path)


def _checked_name(name: str, given: str | Path) -> str:
    refusal = name_refusal("recipe name", name)
    if refusal:
        raise RecipeError(f"{refusal} (from {str(given)[:200]})" if name != str(given) else refusal)
    return name


def recipe_path(name_or_path: str | Path) -> Path:
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") or candidate.exists():
        if not candidate.exists():
            raise RecipeError(f"recipe file {candidate} does not exist")
        return candidate.resolve()
    path = RECIPES_DIR / f"{name_or_path}.yaml"
    if not path.exists():
        names = available()
        near = difflib.get_close_matches(str(name_or_path), names, n=1)
        hint = f"; did you mean {near[0]}?" if near else ""
        raise RecipeError(f"no recipe named {name_or_path!r}{hint} (available: {', '.join(names)})")
    return path


def parse_overrides(overrides: dict | str | None) -> dict:
    """Overrides as a nested dict. Accepts dotted keys ({"train.max_steps": 10}) or a YAML string
    (what ``papermill -p overrides '...'`` passes)."""
    if not overrides:
        return {}
    if isinstance(overrides, str):
        try:
            overrides = yaml.load(overrides, Loader=StrictLoader)
        except (yaml.YAMLError, RecipeError) as e:
            raise RecipeError(f"overrides: not valid YAML: {' '.join(str(e).split())}") from None
    if not isinstance(overrides, dict):
        raise RecipeError(f"overrides: expected a mapping, got {type(overrides).__name__}")
    nested: dict = {}
    given: set = set()
    for key, value in overrides.items():
        for leaf in _leaves(tuple(str(key).split(".")), value):  # {"train.max_steps": 3, "train": {"max_steps": 4}}
            if leaf in given:
                raise RecipeError(f"overrides: {'.'.join(leaf)} is given twice; keep one")
            given.add(leaf)
        node = nested
        parts = str(key).split(".")
        for i, part in enumerate(parts[:-1]):
            node = node.setdefault(part, {})
            if not isinstance(node, dict):  # {"train": 5, "train.max_steps": 1}
                raise RecipeError(
                    f"overrides: {key} sets a key inside {'.'.join(parts[: i + 1])}, which another "
                    f"override sets to {node!r}; give one of them"
                )
        if isinstance(node.get(parts[-1]), dict) and not isinstance(value, dict):  # the same, the other way round
            raise RecipeError(
                f"overrides: {key} is set to {value!r}, but another override sets keys inside it; give one of them"
            )
        if isinstance(value, dict) and isinstance(node.get(parts[-1]), dict):
            node[parts[-1]] = deep_merge(node[parts[-1]], value)
        else:
            node[parts[-1]] = value
    return nested


def _leaves(parts: tuple, value: Any):
    """The key paths an override sets: a mapping's own keys (not split at dots), a value's path."""
    if isinstance(value, dict) and value:
        for k, v in value.items():
            yield from _leaves((*parts, str(k)), v)
    else:
        yield parts


def deep_merge(base: dict, update: dict) -> dict:
    """``base`` updated by ``update``, nested mappings merged key by key (inputs untouched)."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_recipe(name_or_path: str | Path, overrides: dict | str | None = None) -> tuple[str, Recipe]:
    """Load, apply overrides and validate. Returns (recipe name, resolved recipe)."""
    path = recipe_path(name_or_path)
    name = _checked_name(path.stem, path)  # a name that cannot be a folder is refused before the file is read
    raw = read_yaml(path) or {}
    if not isinstance(raw, dict):
        raise RecipeError(f"{path}: expected a mapping at the top level")
    validate(raw, where=str(path))  # errors in the file itself name the file
    return name, resolve(deep_merge(raw, parse_overrides(overrides)), where=f"{path} with overrides")


def override_argument(text: str) -> tuple[str, object]:
    """A command line's ``-o KEY=VALUE`` (a dotted key, a YAML value), for argparse's ``type=``."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"override {text!r} is not KEY=VALUE")
    try:
        return key, yaml.safe_load(value)
    except yaml.YAMLError as e:  # argparse shows ArgumentTypeError as one line, anything else as a traceback
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise argparse.ArgumentTypeError(
            f"override {text!r}: the value is not valid YAML ({problem}); quote strings, e.g. key='[1, 2]'"
        ) from None


def override_arguments(pairs: list[tuple[str, object]]) -> dict:
    """A command line's ``-o`` arguments (``override_argument``'s pairs) as overrides; a key given twice
    is refused, as YAML refuses one (a dict would keep the last silently)."""
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise RecipeError(f"override {key} is given twice ({out[key]!r}, then {value!r}); keep one")
        out[key] = value
    return out


def apply_overrides(config: Recipe, overrides: dict | str | None, where: str = "recipe") -> Recipe:
    """A new recipe: ``recipe`` with ``overrides`` applied, validated again."""
    return resolve(deep_merge(config.to_dict(), parse_overrides(overrides)), where=where)


def dump(config: Recipe) -> str:
    return yaml.safe_dump(config.to_dict(), sort_keys=False, allow_unicode=True)
