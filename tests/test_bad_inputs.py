"""A corpus of bad inputs: each is refused before any work, with one line naming the file, key or
row and what to do, and no run directory is created."""

import json

import pytest
import yaml

from kit.data.rows import DataError
from kit.data.prepare import prepare
from kit.recipes import RecipeError, load_recipe


def contents(directory) -> dict:
    """Every file under ``directory`` with its bytes: equal before and after means unchanged."""
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def existing_run(tmp_path_factory):
    """A run as prepare leaves it (recipe.yaml, manifest.json): later stages' bad values must not touch it."""
    from kit.runs import create_run

    run = create_run("tiny-demo", load_recipe("tiny-demo")[1], "existing", root=tmp_path_factory.mktemp("runs"))
    run.update_manifest({"note": "as prepared"})
    return run


# (override, the exact message after "<recipe path> with overrides: ")
OUT_OF_RANGE = [
    ({"eval.num_prompts": -5}, "eval.num_prompts: -5 is out of range; it must be at least 1"),
    ({"eval.num_prompts": 0}, "eval.num_prompts: 0 is out of range; it must be at least 1"),
    ({"eval.max_new_tokens": 0}, "eval.max_new_tokens: 0 is out of range; it must be at least 1"),
    ({"eval.batch_size": -1}, "eval.batch_size: -1 is out of range; it must be at least 1"),
    ({"eval.live_samples": -1}, "eval.live_samples: -1 is out of range; it must be at least 0"),
    ({"model.max_seq_length": 0}, "model.max_seq_length: 0 is out of range; it must be at least 1"),
    ({"data.eval_fraction": 1.0}, "data.eval_fraction: 1.0 is out of range; it must be below 1"),
    ({"data.eval_fraction": -0.1}, "data.eval_fraction: -0.1 is out of range; it must be at least 0"),
    ({"data.seed": -3}, "data.seed: -3 is out of range; it must be at least 0"),
    ({"lora.r": 0}, "lora.r: 0 is out of range; it must be at least 1"),
    ({"lora.alpha": -16}, "lora.alpha: -16 is out of range; it must be at least 1"),
    ({"lora.dropout": 1.5}, "lora.dropout: 1.5 is out of range; it must be below 1"),
    ({"train.max_steps": 0}, "train.max_steps: 0 trains nothing; give at least 1, or -1 to train num_train_epochs"),
    ({"train.max_steps": -2}, "train.max_steps: -2 is out of range; it must be at least -1"),
    ({"train.learning_rate": 0}, "train.learning_rate: 0.0 is out of range; it must be above 0"),
    ({"train.num_train_epochs": 0}, "train.num_train_epochs: 0.0 is out of range; it must be above 0"),
    (
        {"train.per_device_train_batch_size": 0},
        "train.per_device_train_batch_size: 0 is out of range; it must be at least 1",
    ),
    (
        {"train.gradient_accumulation_steps": 0},
        "train.gradient_accumulation_steps: 0 is out of range; it must be at least 1",
    ),
    ({"train.warmup_steps": -1}, "train.warmup_steps: -1 is out of range; it must be at least 0"),
    ({"train.weight_decay": -0.01}, "train.weight_decay: -0.01 is out of range; it must be at least 0"),
    ({"train.logging_steps": 0}, "train.logging_steps: 0 is out of range; it must be at least 1"),
    ({"train.eval_steps": 0}, "train.eval_steps: 0 is out of range; it must be at least 1"),
    ({"train.save_steps": -100}, "train.save_steps: -100 is out of range; it must be at least 1"),
    ({"train.save_total_limit": 0}, "train.save_total_limit: 0 is out of range; it must be at least 1"),
    ({"export.verify_tokens": 0}, "export.verify_tokens: 0 is out of range; it must be at least 1"),
    ({"train.max_steps": "10"}, "train.max_steps: expected int, got str ('10')"),
    ({"train.max_stepz": 10}, "unknown key train.max_stepz; did you mean train.max_steps?"),
    (
        {"data.reasoning": "every"},
        "data.reasoning: 'every' is not one of as_template, every_turn, inline (did you mean every_turn?)",
    ),
]


@pytest.mark.parametrize(
    "override, message", OUT_OF_RANGE, ids=[next(iter(o)) + "=" + repr(next(iter(o.values()))) for o, _ in OUT_OF_RANGE]
)
def test_a_value_out_of_range_is_refused_when_the_recipe_loads(override, message, existing_run):
    from kit.recipes import recipe_path

    with pytest.raises(RecipeError) as e:
        load_recipe("tiny-demo", override)
    assert str(e.value) == f"{recipe_path('tiny-demo')} with overrides: {message}"

    # Given to a later stage of an existing run, it is refused too, and the run is left as it was.
    before = contents(existing_run.path)
    from kit.runs import RunError

    with pytest.raises((RecipeError, RunError)):  # RunError: a section prepare has consumed
        existing_run.apply_overrides(override, stage="train")
    assert contents(existing_run.path) == before


@pytest.mark.parametrize(
    "text, message",
    [
        (b"model:\n  id: a\n  family: qwen3\nmodel:\n  id: b\n", "line 4: key 'model' is given twice; keep one"),
        (b"train:\n  max_steps: 5\n  max_steps: 6\n", "line 3: key 'max_steps' is given twice; keep one"),
        (b"description: caf\xe9\n", "not UTF-8 text (byte 16); save it as UTF-8"),
        (b"model: [unclosed\n", None),
    ],
)
def test_a_broken_recipe_file_is_one_line_naming_it(tmp_path, text, message):
    path = tmp_path / "mine.yaml"
    path.write_bytes(text)
    with pytest.raises(RecipeError) as e:
        load_recipe(str(path))
    assert "\n" not in str(e.value) and str(e.value).startswith(f"{path}: ")
    if message:
        assert str(e.value) == f"{path}: {message}"
    else:
        assert str(e.value).startswith(f"{path}: not valid YAML: ")


def test_a_duplicate_key_in_yaml_overrides_is_refused():
    with pytest.raises(RecipeError, match="overrides: not valid YAML: line 2: key 'max_steps' is given twice"):
        load_recipe("tiny-demo", "max_steps: 1\nmax_steps: 2")


def recipe_for(tmp_path, source, **data):
    path = tmp_path / "mine.yaml"
    path.write_text(
        yaml.safe_dump(
            {"model": {"id": "builtin:tiny-qwen3", "family": "qwen3"}, "data": {"source": str(source), **data}}
        )
    )
    return str(path)


GOOD = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}


@pytest.mark.parametrize(
    "name, content, message",
    [
        (
            "dup.jsonl",
            json.dumps(GOOD) + "\n" + '{"messages": [], "messages": []}\n',
            "{path}: line 2: key 'messages' is given twice in one object; keep one",
        ),
        (
            "dup.json",
            '[{"messages": [], "messages": []}]',
            "{path}: key 'messages' is given twice in one object; keep one",
        ),
        (
            "bad.jsonl",
            json.dumps(GOOD) + "\n{not json\n",
            "{path}: line 2: invalid JSON: Expecting property name enclosed in double quotes",
        ),
        (
            "cell.csv",
            'messages\n"[{""role"": ""user"", ""content"": ""hi""}"\n',
            "{path}: row 1: messages must be a list, got text that is not valid JSON (Expecting ',' delimiter at character 34)",
        ),
    ],
)
def test_a_broken_data_file_is_one_line_naming_file_and_row(tmp_path, runs_dir, name, content, message):
    refused_in_one_line(tmp_path, runs_dir, name, content, message)


def refused_in_one_line(tmp_path, runs_dir, name: str, content: str, message: str) -> None:
    """prepare on a file ``name`` holding ``content`` stops with exactly ``message`` (``{path}``: the
    file), one line, before any run directory is made."""
    source = tmp_path / name
    source.write_text(content)
    with pytest.raises(DataError) as e:
        prepare(recipe_for(tmp_path, source))
    assert str(e.value) == message.format(path=source) and "\n" not in str(e.value)
    assert not runs_dir.exists() or not any(runs_dir.rglob("recipe.yaml"))


def test_a_bad_override_on_the_command_line_is_one_line(tmp_path):
    from tests.conftest import pipeline

    result = pipeline(tmp_path, "tiny-demo", "-o", "train.max_steps=[", "--stages", "prepare")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert (
        "argument -o/--override: override 'train.max_steps=[': the value is not valid YAML "
        "(expected the node content, but found '<stream end>')"
    ) in result.stderr
    assert not (tmp_path / "tiny-demo").exists()


def test_resume_is_checked_before_any_model_loads(runs_dir):
    from kit.runs import RunError, create_run
    from kit.training.plan import resume_checkpoint

    run = create_run("tiny-demo", load_recipe("tiny-demo")[1], "r")
    before = contents(run.path)
    assert resume_checkpoint(run, False) is None and resume_checkpoint(run, "false") is None
    for value, message in [
        ("true", f"resume: {run.checkpoints_dir} has no complete checkpoint to resume from"),
        (True, f"resume: {run.checkpoints_dir} has no complete checkpoint to resume from"),
        (
            "checkpoint-7",
            f"resume: no complete checkpoint 'checkpoint-7' in {run.checkpoints_dir} (have: none); "
            "give auto, true (or latest), false, or a checkpoint name such as checkpoint-100",
        ),
        (3, "resume: expected auto, true (or latest), false, or a checkpoint name such as checkpoint-100, got int (3)"),
    ]:
        with pytest.raises(RunError) as e:
            resume_checkpoint(run, value)
        assert str(e.value) == message
    assert contents(run.path) == before and not run.checkpoints_dir.exists()  # nothing created by a refused resume


def test_a_bad_predict_file_is_refused_before_any_model_loads(tmp_path):
    from kit.evaluation.evaluate import check_predict_file

    check_predict_file("")  # none: the eval split
    with pytest.raises(DataError, match=r"nowhere\.jsonl does not exist"):
        check_predict_file(str(tmp_path / "nowhere.jsonl"))
    (tmp_path / "p.jsonl").write_text('{"messages": [{"role": "user", "content": 5}]}\n')
    with pytest.raises(DataError, match=r"p\.jsonl: row 1: "):
        check_predict_file(str(tmp_path / "p.jsonl"))


HERMES_BAD_CALL = {
    "conversations": [
        {"from": "human", "value": "Weather in Oslo?"},
        {"from": "gpt", "value": "<tool_call>\nget_weather(city='Oslo')\n</tool_call>"},
    ]
}
WITH_IMAGE = {
    "messages": [{"role": "user", "content": "<image>What is this?"}, {"role": "assistant", "content": "A cat."}],
    "images": ["cat.png"],
}


@pytest.mark.parametrize(
    "name, content, message",
    [
        (
            "pref.jsonl",
            json.dumps({"prompt": "Is 7 prime?", "chosen": "Yes.", "rejected": "No."}) + "\n",
            "{path}: row 1: preference data (fields prompt, chosen, rejected) and train.method sft: set train.method: dpo "
            "to train on the pairs; or, to fine-tune on the preferred answers alone, data.columns: {{completion: chosen}} "
            "reads prompt and chosen as prompt_completion",
        ),
        (
            "hermes.jsonl",
            json.dumps(HERMES_BAD_CALL) + "\n",
            "{path}: row 1: bad tool call: conversations[1].value: <tool_call> block 1 is not valid JSON "
            "(Expecting value at character 0)",
        ),
        (
            "image.jsonl",
            json.dumps(GOOD) + "\n" + json.dumps(WITH_IMAGE) + "\n",
            "{path}: row 2: non-text content: images has 1 item; the kit trains text-only models, so a row with images, "
            "video or audio is not used",
        ),
        (
            "xlam.jsonl",
            json.dumps({"query": "Weather?", "tools": "[]", "answers": '{"name": "get_weather"}'}) + "\n",
            "{path}: row 1: bad tool call: answers is dict, expected a list",
        ),
        (
            "lf.jsonl",
            json.dumps(
                {
                    "messages": [
                        {"role": "user", "content": [{"type": "text", "value": "hi"}]},
                        {"role": "assistant", "content": [{"type": "text", "value": "hello"}], "loss_weight": 2},
                    ]
                }
            )
            + "\n",
            "{path}: row 1: bad loss_weight: messages[1].loss_weight is 2, expected a number from 0 to 1 "
            "(0: the turn is not trained)",
        ),
    ],
)
def test_a_layout_the_kit_cannot_train_as_sft_is_one_line_naming_file_and_row(
    tmp_path, runs_dir, name, content, message
):
    refused_in_one_line(tmp_path, runs_dir, name, content, message)


# Hostile values as a recipe file writes them (YAML's .nan and .inf are floats every bound lets
# through), each refused in one line naming the file and the key, when the recipe loads.
MODEL = "model:\n  id: builtin:tiny-qwen3\n  family: qwen3\n"
DATA = "data:\n  source: data/tiny.jsonl\n"
HOSTILE_VALUES = [
    (DATA + "lora:\n  dropout: .nan\n", "lora.dropout: nan is not a finite number; give a number"),
    (DATA + "train:\n  learning_rate: .nan\n", "train.learning_rate: nan is not a finite number; give a number"),
    (DATA + "train:\n  num_train_epochs: .inf\n", "train.num_train_epochs: inf is not a finite number; give a number"),
    (DATA + "  eval_fraction: .nan\n", "data.eval_fraction: nan is not a finite number; give a number"),
    (DATA + "lora:\n  dropout: -.inf\n", "lora.dropout: -inf is not a finite number; give a number"),
    (
        DATA + "train:\n  grpo:\n    rewards: [{function: format, weight: .nan}]\n",
        "train.grpo.rewards[0].weight: nan is not a finite number; give a number",
    ),
    (
        "data:\n  source: [{path: a.jsonl, weight: .inf}]\n",
        "data.source[0].weight: inf is not a finite number; give a number",
    ),
    (
        DATA + "train:\n  seed: 9223372036854775809\n",
        "train.seed: 9223372036854775809 is out of range; it must be at most 4294967295",
    ),
    (DATA + "  seed: 4294967296\n", "data.seed: 4294967296 is out of range; it must be at most 4294967295"),
    (
        DATA + "train:\n  lr_scheduler_type: cosin\n",
        "train.lr_scheduler_type: 'cosin' is not one of linear, cosine, cosine_with_restarts, polynomial, constant, "
        "constant_with_warmup, inverse_sqrt, reduce_lr_on_plateau, cosine_with_min_lr, cosine_warmup_with_min_lr, "
        "warmup_stable_decay, greedy (did you mean cosine?)",
    ),
]


@pytest.mark.parametrize("text, message", HOSTILE_VALUES, ids=[m.split(":")[0] for _, m in HOSTILE_VALUES])
def test_a_hostile_value_in_a_recipe_file_is_one_line_naming_file_and_key(tmp_path, text, message):
    path = tmp_path / "mine.yaml"
    path.write_text(MODEL + text)
    with pytest.raises(RecipeError) as e:
        load_recipe(str(path))
    assert str(e.value) == f"{path}: {message}"


def test_an_unknown_optimizer_is_refused_and_null_is_allowed():
    from kit.recipes import recipe_path

    assert load_recipe("tiny-demo", {"train.optim": None})[1].train.optim is None
    assert load_recipe("tiny-demo", {"train.optim": "adamw_torch"})[1].train.optim == "adamw_torch"
    with pytest.raises(RecipeError) as e:
        load_recipe("tiny-demo", {"train.optim": "adam_w"})
    assert str(e.value).startswith(
        f"{recipe_path('tiny-demo')} with overrides: train.optim: 'adam_w' is not one of adamw_torch, "
    )
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("weight", [float("nan"), float("inf"), 10**400])
def test_a_non_finite_source_weight_is_one_line_naming_the_source(weight):
    from kit.data.sources import sources_of

    with pytest.raises(DataError) as e:
        sources_of([{"path": "a.jsonl"}, {"path": "b.jsonl", "weight": weight}])
    assert str(e.value) == f"data.source[1].weight: expected a positive finite number, got {weight!r}"


@pytest.mark.parametrize(
    "overrides, key",
    [
        ({"train.max_steps": 3, "train": {"max_steps": 4}}, "train.max_steps"),
        ({"train": {"max_steps": 3}, "train.max_steps": 4}, "train.max_steps"),
        ({"lora": {"r": 4}, "lora.r": 8}, "lora.r"),
        ("train.max_steps: 3\ntrain: {max_steps: 4}", "train.max_steps"),
        ("data.columns: {instruction: q}\ndata.columns.instruction: question", "data.columns.instruction"),
    ],
)
def test_a_key_given_twice_in_overrides_is_refused_naming_it(overrides, key):
    with pytest.raises(RecipeError) as e:
        load_recipe("tiny-demo", overrides)
    assert str(e.value) == f"overrides: {key} is given twice; keep one"


@pytest.mark.parametrize("module", ["kit.pipeline", "kit.training.__main__"])
def test_an_override_given_twice_on_the_command_line_is_one_line(module, capsys, tmp_path, monkeypatch):
    import importlib

    monkeypatch.setenv("KIT_RUNS_DIR", str(tmp_path))
    main = importlib.import_module(module).main
    with pytest.raises(SystemExit) as e:
        main(["tiny-demo", "-o", "train.max_steps=3", "-o", "train.max_steps=4"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.endswith("error: argument -o/--override: override train.max_steps is given twice (3, then 4); keep one")
    assert not any(tmp_path.iterdir())  # nothing run, no run directory


def alias_bomb(levels: int = 9, refs: int = 10) -> str:
    """A recipe whose lora.target_modules nests ``levels`` lists of ``refs`` aliases of the one before:
    a few hundred bytes that expand to refs**levels strings (9 x 10: over a billion)."""
    lines = [MODEL.rstrip(), "data: {source: data/tiny.jsonl}", "lora:", "  target_modules:", "  - &a0 q_proj"]
    lines += [f"  - &a{i} [{', '.join([f'*a{i - 1}'] * refs)}]" for i in range(1, levels + 1)]
    return "\n".join(lines) + "\n"


def test_an_alias_bomb_is_refused_quickly_naming_the_file(tmp_path):
    import time

    path = tmp_path / "bomb.yaml"
    path.write_text(alias_bomb())
    started = time.perf_counter()
    with pytest.raises(RecipeError) as e:
        load_recipe(str(path))
    assert time.perf_counter() - started < 1
    assert str(e.value) == (
        f"{path}: its aliases expand 25 nodes to 1234567915, more than 100 times (an alias bomb?); "
        "write the repeated values out"
    )
    with pytest.raises(RecipeError, match=r"^overrides: not valid YAML: its aliases expand"):  # and as overrides
        load_recipe("tiny-demo", alias_bomb().replace(MODEL, ""))


def test_an_alias_that_holds_itself_is_refused(tmp_path):
    path = tmp_path / "loop.yaml"
    path.write_text(MODEL + DATA + "lora:\n  target_modules: &t [q_proj, *t]\n")
    with pytest.raises(RecipeError) as e:
        load_recipe(str(path))
    assert str(e.value) == f"{path}: line 7: an alias refers to a node that holds it"


def test_a_recipe_with_anchors_and_aliases_still_loads(tmp_path):
    from kit import recipes

    path = tmp_path / "anchors.yaml"
    path.write_text(
        MODEL + DATA + "lora:\n  target_modules: &mods [q_proj, v_proj]\neval:\n  facts: *mods\n"
        "train:\n  learning_rate: &lr 0.0001\n  weight_decay: *lr\n"
    )
    _, config = load_recipe(str(path))
    assert config.lora.target_modules == config.eval.facts == ["q_proj", "v_proj"]
    assert config.train.weight_decay == config.train.learning_rate == 0.0001
    assert "q_proj" in recipes.dump(config)
    small = alias_bomb(levels=2, refs=10)  # 100 strings from 13 nodes: within the floor a small recipe gets
    (tmp_path / "small.yaml").write_text(small)
    assert len(load_recipe(str(tmp_path / "small.yaml"))[1].lora.target_modules) == 3
