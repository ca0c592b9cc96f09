import dataclasses
import subprocess
import sys
import typing
from pathlib import Path

import pytest

from kit import recipe_docs, recipes
from kit.paths import PROJECT_ROOT
from kit.recipes import RecipeError, load_recipe


def test_every_shipped_recipe_validates():
    names = recipes.available()
    assert "tiny-demo" in names
    for name in names:
        _, recipe = load_recipe(name)
        assert recipe.model.family


def test_defaults_are_filled_and_file_values_kept():
    _, r = load_recipe("tiny-demo")
    assert r.train.max_steps == 200  # from the file
    assert r.train.lr_scheduler_type == "linear"  # default
    assert r.data.invalid_rows == "error"


def test_overrides_dotted_nested_and_yaml_string():
    _, a = load_recipe("tiny-demo", {"train.max_steps": 7, "lora": {"r": 4}})
    assert a.train.max_steps == 7 and a.lora.r == 4 and a.lora.alpha == 32
    _, b = load_recipe("tiny-demo", "train.max_steps: 9\neval: {num_prompts: 3}")
    assert b.train.max_steps == 9 and b.eval.num_prompts == 3


def test_int_is_accepted_for_float():
    _, r = load_recipe("tiny-demo", {"train.learning_rate": 1})
    assert r.train.learning_rate == 1.0 and isinstance(r.train.learning_rate, float)


@pytest.mark.parametrize(
    "override, message",
    [
        ({"train.max_step": 3}, "unknown key train.max_step; did you mean train.max_steps?"),
        ({"modle": {}}, "unknown key modle; did you mean model?"),
        ({"train.max_steps": "ten"}, "train.max_steps: expected int, got str ('ten')"),
        ({"lora.r": True}, "lora.r: expected int, got bool (True)"),
        ({"model.load_in_4bit": 1}, "model.load_in_4bit: expected bool, got int (1)"),
        ({"model.family": "qwen9"}, "model.family: 'qwen9' is not one of"),
        ({"train": 5}, "train: expected a mapping, got int"),
    ],
)
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(RecipeError) as e:
        load_recipe("tiny-demo", override)
    assert message in str(e.value)
    assert "tiny-demo.yaml" in str(e.value)


def test_bad_recipe_file_names_file_and_key(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("model: {id: x, family: qwen3}\ndata: {source: d.jsonl, eval_fraktion: 0.1}\n")
    with pytest.raises(
        RecipeError, match=r"mine\.yaml: unknown key data\.eval_fraktion; did you mean data\.eval_fraction\?"
    ):
        load_recipe(str(path))
    path.write_text("model: {family: qwen3}\ndata: {source: d.jsonl}\n")
    with pytest.raises(RecipeError, match=r"missing required key model\.id"):
        load_recipe(str(path))
    path.write_text("model: [unclosed\n")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(str(path))


def test_unknown_recipe_name_suggests_nearest():
    with pytest.raises(RecipeError, match=r"no recipe named 'tiny-dem'; did you mean tiny-demo\?"):
        load_recipe("tiny-dem")
    with pytest.raises(RecipeError, match="does not exist"):
        load_recipe("missing/recipe.yaml")


# The declaration (kit/recipe_schema.py) is static: editors and type checkers see every key, the
# validator walks its fields, and docs/recipes.md is generated from it.


def _leaf_keys(cls=recipes.Recipe, prefix=""):
    for key in recipes.keys(cls).values():
        if key.section:
            yield from _leaf_keys(key.section, f"{prefix}{key.name}.")
        else:
            yield prefix + key.name, key


def test_reference_page_is_current():
    page = Path(__file__).resolve().parents[1] / "docs" / "recipes.md"
    text = page.read_text(encoding="utf-8") if page.exists() else ""
    assert text == recipe_docs.reference_markdown(), (
        f"docs/recipes.md is out of date; regenerate it: {recipe_docs.DOCS_COMMAND}"
    )
    assert recipe_docs.DOCS_COMMAND in text


def test_every_key_is_on_the_page_with_help():
    page = recipe_docs.reference_markdown()
    paths = [path for path, _ in _leaf_keys()]
    assert {"train.max_steps", "eval.behavior.prefix", "export.system", "description"} <= set(paths)
    for path, key in _leaf_keys():
        assert f"| `{path}` |" in page, path
        assert key.meta("help"), f"{path} has no help text"
    for section in ("model", "data", "lora", "train", "eval", "eval.behavior", "export"):
        assert f"## `{section}`" in page


def test_docs_command_prints_the_page(capsys):
    assert recipe_docs.main([]) == 0
    assert capsys.readouterr().out == recipe_docs.reference_markdown()


def test_sections_are_statically_typed():
    from kit.recipe_schema import BehaviorSection, EvalSection, ModelSection, TrainSection

    assert typing.get_type_hints(recipes.Recipe)["train"] is TrainSection
    assert typing.get_type_hints(recipes.Recipe)["model"] is ModelSection
    assert typing.get_type_hints(TrainSection)["max_steps"] is int
    assert typing.get_type_hints(EvalSection)["behavior"] is BehaviorSection
    assert typing.get_type_hints(EvalSection)["batch_size"] == typing.Optional[int]
    assert typing.get_type_hints(EvalSection)["facts"] == list[str]
    _, r = load_recipe("tiny-demo")
    assert type(r.train) is TrainSection and type(r.eval.behavior) is BehaviorSection
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.train.max_steps = 3


def test_dataclass_defaults_are_the_recipe_defaults():
    """A section built without arguments equals one a recipe leaves empty (one source of defaults)."""
    r = recipes.resolve({"model": {"id": "m", "family": "qwen3"}, "data": {"source": "d.jsonl"}})
    from kit.recipe_schema import ExportSection, LoraSection, TrainSection

    assert r.lora == LoraSection() and r.train == TrainSection() and r.export == ExportSection()
    assert r.data.format == "auto" and r.description == ""
    assert LoraSection().target_modules is not LoraSection().target_modules  # no shared mutable default


@pytest.mark.parametrize(
    "override, message",
    [
        ({"train.max_steps": 0}, "train.max_steps: 0 trains nothing; give at least 1, or -1 to train num_train_epochs"),
        ({"train.max_steps": -2}, "train.max_steps: -2 is out of range; it must be at least -1"),
        ({"train.learning_rate": 0}, "train.learning_rate: 0.0 is out of range; it must be above 0"),
        ({"eval.facts": ["a", 1]}, "eval.facts: every element must be str, got int (1)"),
        ({"eval.thinking": "yes"}, "eval.thinking: expected bool, got str ('yes')"),
        ({"eval.batch_size": None}, None),
        ({"model.id": None}, "model.id: expected str, got null"),
        ({"lora.use_gradient_checkpointing": 3}, "lora.use_gradient_checkpointing: expected bool or str, got int (3)"),
        ({"data.source": 3}, "data.source: expected str or list, got int (3)"),
        ({"eval.behavior.prefx": "A"}, "unknown key eval.behavior.prefx; did you mean eval.behavior.prefix?"),
        ({"eval.behavior": 3}, "eval.behavior: expected a mapping, got int"),
        ({"zzz": 1}, "unknown key zzz; valid keys: description, model, data, lora, train, eval, export"),
    ],
)
def test_checks_read_off_the_declaration(override, message):
    if message is None:
        assert load_recipe("tiny-demo", override)[1].eval.batch_size is None
        return
    with pytest.raises(RecipeError) as e:
        load_recipe("tiny-demo", override)
    assert message in str(e.value) and "tiny-demo.yaml" in str(e.value)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            {"train": 5, "train.max_steps": 1},
            "overrides: train.max_steps sets a key inside train, which another override sets to 5; give one of them",
        ),
        (
            {"train.max_steps": 1, "train": 5},
            "overrides: train is set to 5, but another override sets keys inside it; give one of them",
        ),
    ],
)
def test_overrides_that_contradict_each_other_are_one_recipe_error(overrides, message):
    with pytest.raises(RecipeError) as e:
        load_recipe("tiny-demo", overrides)
    assert str(e.value) == message


def test_an_eval_fraction_of_zero_is_refused_by_the_recipe_not_later_by_prepare():
    with pytest.raises(
        RecipeError, match=r"data\.eval_fraction: 0(\.0)? holds out no rows; evaluate and the merge checks need some"
    ):
        load_recipe("tiny-demo", {"data.eval_fraction": 0})


GRPO = {"train.method": "grpo", "train.grpo.rewards": [{"function": "format", "tag": "answer"}]}


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"train.method": "grpo"}, "train.grpo.rewards is empty; GRPO needs at least one reward function"),
        (
            {**GRPO, "train.per_device_train_batch_size": 6},
            "train.per_device_train_batch_size x "
            "train.gradient_accumulation_steps (6) must be a multiple of train.grpo.num_generations (4): under grpo a batch "
            "holds whole groups of answers",
        ),
        (
            {**GRPO, "train.per_device_eval_batch_size": 2},
            "train.per_device_eval_batch_size (2) must be a multiple of train.grpo.num_generations (4)",
        ),
        (
            {**GRPO, "train.grpo.num_generations": 1},
            "train.grpo.num_generations: 1 is out of range; it must be at least 2",
        ),
    ],
)
def test_grpo_needs_a_reward_and_batches_of_whole_groups(overrides, message):
    with pytest.raises(RecipeError) as e:
        load_recipe("tiny-demo", overrides)
    assert message in str(e.value)


def test_grpo_settings_go_to_trls_config_and_its_rewards_do_not():
    recipe = load_recipe("tiny-demo", GRPO)[1]
    args = recipe.train.trainer_args()
    assert args["num_generations"] == 4 and args["max_completion_length"] == 64 and args["loss_type"] == "dapo"
    assert "rewards" not in args and "grpo" not in args and "method" not in args
    assert (
        load_recipe("tiny-demo", {**GRPO, "train.method": "sft"})[1].train.trainer_args().get("num_generations") is None
    )


def test_the_scheduler_and_optimizer_choices_are_transformers_own():
    """train.lr_scheduler_type and train.optim are checked at recipe time against lists written out in
    kit/recipe_schema.py (kit.recipes never imports transformers): they must not drift from its enums."""
    from transformers import SchedulerType
    from transformers.training_args import OptimizerNames

    from kit.recipe_schema import LR_SCHEDULERS, OPTIMIZERS

    assert list(LR_SCHEDULERS) == [s.value for s in SchedulerType]
    assert list(OPTIMIZERS) == [o.value for o in OptimizerNames]
    train = recipes.keys(recipes.TrainSection)
    assert train["lr_scheduler_type"].meta("choices") == LR_SCHEDULERS
    assert train["optim"].meta("choices") == OPTIMIZERS and train["optim"].nullable


def test_kit_recipes_imports_no_transformers():
    code = "import sys, kit.recipes, kit.recipe_docs; print(sorted(m for m in ('transformers', 'torch') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=PROJECT_ROOT)
    assert out.stdout.strip() == "[]"
