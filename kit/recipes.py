"""Recipes: one YAML per model, strictly validated, with overrides from notebook parameters.

Every key a recipe may hold is declared in ``SCHEMA`` with its type and default. Unknown keys and
wrong types raise ``RecipeError`` naming the file and the key path (and the nearest valid key).
A recipe is resolved once into a ``Recipe``: frozen dataclasses generated from ``SCHEMA``
(``recipe.train.max_steps``, ``recipe.eval.behavior.prefix``), which the stages read.
"""
from __future__ import annotations

import copy
import dataclasses
import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import yaml

from kit.families import FAMILIES
from kit.paths import RECIPES_DIR

REQUIRED = object()
# The data layouts kit.data.formats reads (a test checks each has its reader there).
FORMATS = ("messages", "sharegpt", "alpaca", "conversation_pair", "prompt_completion")


class RecipeError(ValueError):
    pass


@dataclass(frozen=True)
class Field:
    types: tuple  # accepted Python types; int is accepted where float is
    default: Any = None
    choices: tuple | None = None
    nullable: bool = False
    help: str = ""
    min: float | None = None        # inclusive bounds for numbers
    max: float | None = None
    above: float | None = None      # exclusive lower bound (a rate, a fraction that must be > 0)
    below: float | None = None      # exclusive upper bound
    items: type | None = None       # the type of a list's elements, where checked


def F(types, default=None, *, choices=None, nullable=False, help="", min=None, max=None, above=None, below=None,
      items=None):
    types = types if isinstance(types, tuple) else (types,)
    return Field(types, default, tuple(choices) if choices else None, nullable, help, min, max, above, below, items)


COUNT = {"min": 1}      # a count of things or steps: at least one


SCHEMA: dict = {
    "description": F(str, ""),
    "model": {
        "id": F(str, REQUIRED, help="Hugging Face repo id, local directory, or builtin:tiny-qwen3"),
        "family": F(str, REQUIRED, choices=sorted(FAMILIES)),
        "max_seq_length": F(int, 2048, **COUNT),
        "load_in_4bit": F(bool, True),
    },
    "data": {
        "source": F((str, list), REQUIRED, help="file, folder, glob or Hub id, or a list of them / of {path, weight}; "
                                                "relative paths start at the project root"),
        "format": F(str, "auto", choices=["auto", *FORMATS]),
        "columns": F(dict, {}, help="canonical field name -> the name your data uses, e.g. {instruction: question}"),
        "eval_fraction": F(float, 0.1, min=0, below=1),
        "seed": F(int, 3407, min=0),
        "invalid_rows": F(str, "error", choices=["error", "drop"]),
        "train_on": F(str, None, nullable=True, choices=["all_assistant", "last_assistant"],
                      help="which assistant turns carry loss; null: the family's default"),
        "reasoning": F(str, "as_template", choices=["as_template", "every_turn", "inline"],
                       help="as_template: as the model sees it at inference; every_turn: one example per "
                            "assistant turn so every turn's reasoning is rendered; inline: <think> blocks in "
                            "the answer for families without a reasoning channel"),
        "overlength": F(str, "drop", choices=["drop", "truncate"]),
    },
    "lora": {
        "r": F(int, 16, **COUNT),
        "alpha": F(int, 16, **COUNT),
        "dropout": F(float, 0.0, min=0, below=1),
        "target_modules": F(list, ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]),
        "use_gradient_checkpointing": F((bool, str), "unsloth"),
        "use_rslora": F(bool, False),
    },
    # Fields of TRL's SFTConfig, passed through as given.
    "train": {
        "max_steps": F(int, -1, min=-1, help="-1: train num_train_epochs; otherwise at least 1"),
        "num_train_epochs": F(float, 1.0, above=0),
        "per_device_train_batch_size": F(int, 2, **COUNT),
        "per_device_eval_batch_size": F(int, 8, **COUNT),
        "gradient_accumulation_steps": F(int, 4, **COUNT),
        "learning_rate": F(float, 2e-4, above=0),
        "warmup_steps": F(int, 5, min=0),
        "lr_scheduler_type": F(str, "linear"),
        "weight_decay": F(float, 0.01, min=0),
        "optim": F(str, None, nullable=True, help="null: adamw_8bit on GPU, adamw_torch on CPU"),
        "logging_steps": F(int, 1, **COUNT),
        "eval_steps": F(int, 50, **COUNT),
        "save_steps": F(int, 100, **COUNT),
        "save_total_limit": F(int, 2, **COUNT),
        "seed": F(int, 3407, min=0),
    },
    "eval": {
        "max_new_tokens": F(int, 64, **COUNT),
        "num_prompts": F(int, 20, **COUNT, help="held-out prompts answered by base and tuned"),
        "batch_size": F(int, None, nullable=True, **COUNT,
                        help="prompts per generate() call (left-padded); null: from free memory (kit.evaluation.inference.batch_size_for)"),
        "decoding": F(str, "greedy", choices=["greedy", "recommended"],
                      help="greedy: deterministic, for comparisons; recommended: the family's sampling"),
        "thinking": F(bool, None, nullable=True, help="thinking on/off for families that have a switch; null: family default"),
        "facts": F(list, [], items=str, help="fact strings (a price, an address); the report scores the share of held-out "
                                  "answers that state every fact their reference answer states"),
        "live_samples": F(int, 3, min=0, help="held-out prompts answered at every evaluation during training (0: off)"),
        "behavior": {
            "description": F(str, ""),
            "prefix": F(str, None, nullable=True, help="answer shows the behaviour if it starts with this"),
            "regex": F(str, None, nullable=True, help="... or if this regular expression matches"),
        },
    },
    "export": {
        "merged_16bit": F(bool, True),
        "merge_method": F(str, "auto", choices=["auto", "streaming", "unsloth"],
                          help="auto: shard by shard where the base checkpoint is local, else Unsloth's save_pretrained_merged"),
        "gguf": F(list, ["q8_0", "q4_k_m"], help="GGUF files to write: f16, bf16, q8_0, q4_k_m, q5_k_m"),
        "verify_tokens": F(int, 16, **COUNT, help="greedy tokens compared between each GGUF and the merged model"),
        # No longer read (the logits check is judged against a noise floor each merge measures);
        # kept so that runs prepared before, whose recipe.yaml holds it, still load.
        "logit_tolerance": F(float, None, nullable=True, help="unused; kept for runs prepared by earlier versions"),
        "system": F(str, None, nullable=True,
                    help="SYSTEM of the Ollama Modelfile; null: the training data's system prompt if every row has the same one"),
    },
}


class RecipeSection:
    """A resolved recipe, or one of its sections: read-only attributes, one per ``SCHEMA`` key."""

    def to_dict(self) -> dict:
        """As plain data (a copy): what recipe.yaml holds."""
        return dataclasses.asdict(self)


def _section_class(name: str, schema: dict) -> type:
    """A frozen dataclass with a field per key of ``schema``; nested mappings are sections too."""
    fields = []
    for key, spec in schema.items():
        if isinstance(spec, dict):
            fields.append((key, _section_class(key.title() + "Section", spec)))
        else:
            kind = spec.types[0] if len(spec.types) == 1 else Union[spec.types]
            fields.append((key, Optional[kind] if spec.nullable else kind))
    cls = dataclasses.make_dataclass(name, fields, bases=(RecipeSection,), frozen=True)
    cls.__module__ = __name__
    return cls


def _build(cls: type, values: dict) -> RecipeSection:
    return cls(**{f.name: _build(f.type, values[f.name]) if isinstance(f.type, type) and issubclass(f.type, RecipeSection)
                  else values[f.name] for f in dataclasses.fields(cls)})


Recipe = _section_class("Recipe", SCHEMA)


def _type_name(types: tuple) -> str:
    return " or ".join(t.__name__ for t in types)


def _check_value(path: str, field: Field, value: Any, where: str) -> Any:
    if value is None:
        if field.nullable:
            return None
        raise RecipeError(f"{where}: {path}: expected {_type_name(field.types)}, got null")
    ok = isinstance(value, field.types) and not (isinstance(value, bool) and bool not in field.types)
    if not ok and float in field.types and isinstance(value, int) and not isinstance(value, bool):
        value, ok = float(value), True
    if not ok:
        raise RecipeError(f"{where}: {path}: expected {_type_name(field.types)}, got {type(value).__name__} ({value!r})")
    if field.items is not None and isinstance(value, list):
        wrong = next((v for v in value if not isinstance(v, field.items)), None)
        if wrong is not None:
            raise RecipeError(f"{where}: {path}: every element must be {field.items.__name__}, got "
                              f"{type(wrong).__name__} ({wrong!r})")
    if field.choices and value not in field.choices:
        raise RecipeError(f"{where}: {path}: {value!r} is not one of {', '.join(map(str, field.choices))}")
    for bound, fails, says in ((field.min, lambda b: value < b, "at least"), (field.max, lambda b: value > b, "at most"),
                               (field.above, lambda b: value <= b, "above"), (field.below, lambda b: value >= b, "below")):
        if bound is not None and fails(bound):
            raise RecipeError(f"{where}: {path}: {value!r} is out of range; it must be {says} {bound:g}")
    if path == "train.max_steps" and value == 0:
        raise RecipeError(f"{where}: {path}: 0 trains nothing; give at least 1, or -1 to train num_train_epochs")
    return value


def _validate(schema: dict, data: Any, prefix: str, where: str) -> dict:
    if not isinstance(data, dict):
        raise RecipeError(f"{where}: {prefix.rstrip('.') or 'recipe'}: expected a mapping, got {type(data).__name__}")
    for key in data:
        if key not in schema:
            path = f"{prefix}{key}"
            near = difflib.get_close_matches(str(key), list(schema), n=1)
            hint = f"; did you mean {prefix}{near[0]}?" if near else f"; valid keys: {', '.join(schema)}"
            raise RecipeError(f"{where}: unknown key {path}{hint}")
    out = {}
    for key, spec in schema.items():
        path = f"{prefix}{key}"
        if isinstance(spec, dict):
            out[key] = _validate(spec, data.get(key, {}), f"{path}.", where)
        elif key in data:
            out[key] = _check_value(path, spec, data[key], where)
        elif spec.default is REQUIRED:
            raise RecipeError(f"{where}: missing required key {path}")
        else:
            out[key] = copy.deepcopy(spec.default)
    return out


def validate(data: dict, where: str = "recipe") -> dict:
    """Return a complete recipe as plain data (defaults filled) or raise RecipeError."""
    return _validate(SCHEMA, data, "", where)


def resolve(data: dict, where: str = "recipe") -> Recipe:
    """A recipe's data, validated (``validate``) and resolved into a ``Recipe``."""
    return _build(Recipe, validate(data, where))


def available() -> list[str]:
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))


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
            overrides = yaml.load(overrides, Loader=_StrictLoader)
        except (yaml.YAMLError, RecipeError) as e:
            raise RecipeError(f"overrides: not valid YAML: {' '.join(str(e).split())}") from None
    if not isinstance(overrides, dict):
        raise RecipeError(f"overrides: expected a mapping, got {type(overrides).__name__}")
    nested: dict = {}
    for key, value in overrides.items():
        node = nested
        parts = str(key).split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        if isinstance(value, dict) and isinstance(node.get(parts[-1]), dict):
            node[parts[-1]] = deep_merge(node[parts[-1]], value)
        else:
            node[parts[-1]] = value
    return nested


def deep_merge(base: dict, update: dict) -> dict:
    """``base`` updated by ``update``, nested mappings merged key by key (inputs untouched)."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


class _StrictLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (YAML keeps the last silently)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise RecipeError(f"line {key_node.start_mark.line + 1}: key {key!r} is given twice; keep one")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: Path):
    """A YAML file as data; every failure is one RecipeError naming the file."""
    try:
        return yaml.load(path.read_text(encoding="utf-8"), Loader=_StrictLoader)
    except UnicodeDecodeError as e:
        raise RecipeError(f"{path}: not UTF-8 text (byte {e.start}); save it as UTF-8") from None
    except RecipeError as e:
        raise RecipeError(f"{path}: {e}") from None
    except yaml.YAMLError as e:
        raise RecipeError(f"{path}: not valid YAML: {' '.join(str(e).split())}") from None


def load_recipe(name_or_path: str | Path, overrides: dict | str | None = None) -> tuple[str, Recipe]:
    """Load, apply overrides and validate. Returns (recipe name, resolved recipe)."""
    path = recipe_path(name_or_path)
    raw = read_yaml(path) or {}
    if not isinstance(raw, dict):
        raise RecipeError(f"{path}: expected a mapping at the top level")
    validate(raw, where=str(path))  # errors in the file itself name the file
    return path.stem, resolve(deep_merge(raw, parse_overrides(overrides)), where=f"{path} with overrides")


def apply_overrides(recipe: Recipe, overrides: dict | str | None, where: str = "recipe") -> Recipe:
    """A new recipe: ``recipe`` with ``overrides`` applied, validated again."""
    return resolve(deep_merge(recipe.to_dict(), parse_overrides(overrides)), where=where)


def dump(recipe: Recipe) -> str:
    return yaml.safe_dump(recipe.to_dict(), sort_keys=False, allow_unicode=True)
