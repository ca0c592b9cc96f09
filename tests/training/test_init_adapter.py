"""train.init_adapter: a method trains on top of an earlier run's adapter (SFT, then DPO). The earlier
adapter's weights are what training starts from and what DPO's reference is; the manifest records
which adapter it was; an adapter that does not fit is refused before any model loads."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from kit.recipes import resolve
from kit.runs import RunError, find_adapter

STEPS = {"train": {"max_steps": 2, "save_steps": 2, "eval_steps": 2, "logging_steps": 1}, "eval": {"live_samples": 0}}


def lora_weights(model, adapter: str = "default") -> dict:
    """The model's LoRA tensors of ``adapter``, named as a saved adapter names them."""
    return {
        name.replace(f".{adapter}.", "."): p.detach().float().clone()
        for name, p in model.named_parameters()
        if f".{adapter}." in name and "lora_" in name
    }


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory):
    """A trained SFT run of tiny-demo (2 steps), in its own runs root."""
    from kit.data.prepare import prepare
    from kit.training import train as T

    root = tmp_path_factory.mktemp("runs")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KIT_RUNS_DIR", str(root))
        run = prepare("tiny-demo", STEPS, run_id="sft").run
        T.train(run, run.config())
    return root, run


@pytest.mark.slow
def test_dpo_starts_from_the_sft_adapter_and_measures_against_it(sft_run, monkeypatch):
    from kit.data.prepare import prepare
    from kit.training import train as T

    root, sft = sft_run
    monkeypatch.setenv("KIT_RUNS_DIR", str(root))
    settings = {**STEPS, "train": {**STEPS["train"], "init_adapter": "tiny-demo/sft"}}
    run = prepare("tiny-dpo-demo", settings, run_id="dpo").run
    config = run.config()
    plan = T.start(run)
    recorded = run.manifest()["init_adapter"]
    assert (
        recorded["recipe"] == "tiny-demo" and recorded["run"] == "sft" and recorded["adapter"] == str(sft.adapter_dir)
    )
    assert len(recorded["sha256"]) == 64

    model, tokenizer = T.load_model(config)
    model = T.add_lora(model, config)
    saved = load_file(str(sft.adapter_dir / "adapter_model.safetensors"))
    loaded = lora_weights(model)
    assert sorted(loaded) == sorted(saved)
    assert all(torch.equal(loaded[name], saved[name].float()) for name in saved)
    assert any(saved[name].abs().sum() > 0 for name in saved if "lora_B" in name)  # SFT moved B off zero

    trainer = T.build_trainer(run, config, model, tokenizer)
    reference = lora_weights(trainer.model, "ref")  # TRL's frozen copy: DPO's reference model
    assert sorted(reference) == sorted(saved) and all(torch.equal(reference[n], saved[n].float()) for n in saved)
    summary = T.finish(run, trainer, trainer.train(resume_from_checkpoint=plan.resume_from), plan)
    assert summary["global_step"] == 2
    assert run.manifest()["init_adapter"] == recorded
    trained = load_file(str(run.adapter_dir / "adapter_model.safetensors"))
    assert sorted(trained) == sorted(saved) and any(not torch.equal(trained[n], saved[n]) for n in saved)

    # A resume continues from the adapter the run started from: one that changed since is refused.
    shutil.rmtree(run.adapter_dir)  # as if killed after its last checkpoint
    run.update_manifest({"init_adapter": {**recorded, "sha256": "0" * 64}})
    with pytest.raises(RunError, match=r"train.init_adapter: tiny-demo/sft now names .* and this run started from "):
        T.start(run)
    run.update_manifest({"init_adapter": recorded})
    plan = T.start(run)
    assert plan.action == "resume" and plan.checkpoint.step == 2
    plan.lock.release()


def refusal(root, sft, **changes) -> str:
    recipe = resolve(
        {
            "model": {"id": "builtin:tiny-qwen3", "family": "qwen3"},
            "data": {"source": "x"},
            "lora": {"r": 16, "alpha": 32, **changes.pop("lora", {})},
            "train": {"method": "dpo", "init_adapter": changes.pop("init_adapter", "tiny-demo/sft")},
            **changes,
        }
    )
    with pytest.raises(RunError) as e:
        find_adapter(recipe, root)
    assert "\n" not in str(e.value)
    return str(e.value)


@pytest.mark.slow
def test_an_adapter_that_does_not_fit_is_refused_in_one_line(sft_run, tmp_path):
    root, sft = sft_run
    lora = json.loads((sft.adapter_dir / "adapter_config.json").read_text())
    assert (lora["r"], lora["lora_alpha"]) == (16, 32)  # tiny-demo's, as the recipes below give
    assert refusal(root, sft, lora={"r": 8}) == (
        "train.init_adapter: tiny-demo/sft: the adapter has r 16, and this recipe's lora.r is 8: set lora.r to the "
        "adapter's"
    )
    assert refusal(root, sft, init_adapter="tiny-demo/nope").startswith(
        "train.init_adapter: tiny-demo/nope: no run 'nope' for recipe 'tiny-demo' (runs: sft"
    )
    assert refusal(root, sft, model={"id": "builtin:smollm2-135m-instruct", "family": "smollm2"}) == (
        f"train.init_adapter: tiny-demo/sft: run {sft.path} trained an adapter for 'builtin:tiny-qwen3', and this "
        "recipe's model.id is 'builtin:smollm2-135m-instruct': an adapter fits the base model it was trained on"
    )
    untrained = tmp_path / "untrained"
    (untrained / "tiny-demo" / "new").mkdir(parents=True)
    (untrained / "tiny-demo" / "new" / "recipe.yaml").write_text((sft.path / "recipe.yaml").read_text())
    assert refusal(untrained, sft, init_adapter="tiny-demo/new") == (
        f"train.init_adapter: tiny-demo/new: run {untrained / 'tiny-demo' / 'new'} has no adapter yet: train it first, "
        "or name a trained run"
    )
    # an adapter directory given by its path is found as well, and fits
    recipe = resolve(
        {
            "model": {"id": "builtin:tiny-qwen3", "family": "qwen3"},
            "data": {"source": "x"},
            "lora": {"r": 16, "alpha": 32},
            "train": {"method": "dpo", "init_adapter": str(sft.adapter_dir)},
        }
    )
    assert find_adapter(recipe, root)[0] == sft.adapter_dir
