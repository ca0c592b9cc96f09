import pytest

from kit import recipes
from kit.recipes import RecipeError, load_recipe


def test_every_shipped_recipe_validates():
    names = recipes.available()
    assert "tiny-demo" in names
    for name in names:
        _, recipe = load_recipe(name)
        assert recipe.model.family


def test_defaults_are_filled_and_file_values_kept():
    _, r = load_recipe("tiny-demo")
    assert r.train.max_steps == 200          # from the file
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


@pytest.mark.parametrize("override, message", [
    ({"train.max_step": 3}, "unknown key train.max_step; did you mean train.max_steps?"),
    ({"modle": {}}, "unknown key modle; did you mean model?"),
    ({"train.max_steps": "ten"}, "train.max_steps: expected int, got str ('ten')"),
    ({"lora.r": True}, "lora.r: expected int, got bool (True)"),
    ({"model.load_in_4bit": 1}, "model.load_in_4bit: expected bool, got int (1)"),
    ({"model.family": "qwen9"}, "model.family: 'qwen9' is not one of"),
    ({"train": 5}, "train: expected a mapping, got int"),
])
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(RecipeError) as e:
        load_recipe("tiny-demo", override)
    assert message in str(e.value)
    assert "tiny-demo.yaml" in str(e.value)


def test_bad_recipe_file_names_file_and_key(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("model: {id: x, family: qwen3}\ndata: {source: d.jsonl, eval_fraktion: 0.1}\n")
    with pytest.raises(RecipeError, match=r"mine\.yaml: unknown key data\.eval_fraktion; did you mean data\.eval_fraction\?"):
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
