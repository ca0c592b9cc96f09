"""The logits check on its own, on CPU: it passes the demo's merge and fails three broken merges
built by editing merged safetensors — the LoRA scale lost, one target left unmerged, rank/alpha
patterns ignored — each judged against base + adapter and the noise floor measured in the same run."""

import json
import shutil

import pytest
from safetensors.torch import load_file, save_file

from kit.export.lora_merge import merge_checkpoint, read_adapter

pytestmark = pytest.mark.slow


def copy_run(run_dir, to):
    """A copy of the run without its merge outputs, to edit its adapter."""
    from kit.runs import Run

    skipped = shutil.ignore_patterns("merged", "gguf", "checkpoints", "notebooks", "tensorboard")
    shutil.copytree(run_dir, to, ignore=skipped)
    return Run(to)


def reference_for(run):
    """(reference, tokenizer, prompts): base + the run's adapter in the check's dtype, its floor."""
    from transformers import AutoTokenizer

    from kit.export import base_model, logits_check
    from kit.chat.render import render_prompt
    from kit.data.prompts import held_out_prompts
    from kit.files import read_jsonl
    from kit.families import family_for
    from kit.export.lora_merge import merged_dtype

    recipe = run.config()
    tokenizer = AutoTokenizer.from_pretrained(str(run.adapter_dir))
    held_out = held_out_prompts(read_jsonl(run.data_dir / "eval.jsonl"), recipe.eval.num_prompts)
    prompts = [render_prompt(tokenizer, family_for(recipe), p.messages) for p in held_out]
    stored = merged_dtype(base_model.base_config(recipe.model.id))
    return logits_check.reference_logits(run, recipe, tokenizer, prompts, stored), tokenizer, prompts


def check(reference, tokenizer, prompts, merged_dir):
    from kit import backend
    from kit.export.logits_check import check_logits

    return check_logits(reference, backend.load_merged(str(merged_dir), reference["dtype"]), tokenizer, prompts)


def broken_merge(out, base_dir, adapter_dir, scales=None, unmerged=()):
    """W + scale·B·A in bf16 like the streaming merge, but with the given scales (default: the
    adapter's) and leaving the ``unmerged`` modules as they are in the base."""
    _, lora, right = read_adapter(adapter_dir)
    scales = scales or right
    weights = load_file(base_dir / "model.safetensors")
    for module, scale in scales.items():
        if module not in unmerged:
            a, b = lora[f"{module}.lora_A.weight"].float(), lora[f"{module}.lora_B.weight"].float()
            weights[f"{module}.weight"] = (weights[f"{module}.weight"].float() + scale * b @ a).bfloat16()
    out.mkdir()
    save_file(weights, str(out / "model.safetensors"), metadata={"format": "pt"})
    shutil.copy2(base_dir / "config.json", out / "config.json")
    return out


@pytest.fixture(scope="module")
def demo(demo_run):
    from kit.runs import Run

    run = Run(demo_run[0])
    return (run, *reference_for(run))


def test_a_correct_merge_passes_and_the_floor_is_its_rounding(demo):
    run, reference, tokenizer, prompts = demo
    report = check(reference, tokenizer, prompts, run.merged_dir)
    assert report["ok"], report["why"]
    assert report["compute_dtype"] == "float32" and report["stored_dtype"] == "bfloat16"
    # The floor is the bf16 rounding of a correct merge: far below what the adapter does to the logits.
    floor = report["noise_floor"]["max_abs_diff"]
    assert 0 < floor < report["adapter_max_abs_logit_effect"] / 50
    assert report["merged"]["max_abs_diff"] <= report["allowed_max_abs_diff"] == pytest.approx(2 * floor, rel=1e-3)


def test_a_merge_that_lost_the_lora_scale_fails(demo, tiny_model_dir, tmp_path):
    """B·A added with scale 1 instead of alpha / r (2 in the demo)."""
    run, reference, tokenizer, prompts = demo
    _, _, scales = read_adapter(run.adapter_dir)
    assert set(scales.values()) == {2.0}
    broken = broken_merge(tmp_path / "scale", tiny_model_dir, run.adapter_dir, {m: 1.0 for m in scales})
    report = check(reference, tokenizer, prompts, broken)
    assert not report["ok"] and report["merged"]["max_abs_diff"] > 10 * report["allowed_max_abs_diff"], report["why"]
    assert "max |diff|" in report["why"] and "mean KL" in report["why"]


def test_a_merge_that_left_any_one_target_unmerged_fails(demo, tiny_model_dir, tmp_path):
    run, reference, tokenizer, prompts = demo
    _, _, scales = read_adapter(run.adapter_dir)
    for module in sorted(scales):
        broken = broken_merge(tmp_path / module, tiny_model_dir, run.adapter_dir, unmerged={module})
        report = check(reference, tokenizer, prompts, broken)
        assert not report["ok"], (module, report["why"])
        assert report["merged"]["max_abs_diff"] > 3 * report["allowed_max_abs_diff"], (module, report["why"])


def test_a_merge_that_ignores_rank_and_alpha_patterns_fails(demo_run, tiny_model_dir, tmp_path):
    """An adapter with a rank_pattern (one module at rank 8: scale alpha/8) and an alpha_pattern
    (one module at alpha 8: scale 8/r): merged right it passes; merged with alpha/r everywhere, as a
    merge that ignores the patterns would, it fails."""
    run = copy_run(demo_run[0], tmp_path / "run")
    weights = load_file(run.adapter_dir / "adapter_model.safetensors")
    rank8 = "base_model.model.model.layers.1.self_attn.k_proj"
    weights[f"{rank8}.lora_A.weight"] = weights[f"{rank8}.lora_A.weight"][:8].contiguous()
    weights[f"{rank8}.lora_B.weight"] = weights[f"{rank8}.lora_B.weight"][:, :8].contiguous()
    save_file(weights, str(run.adapter_dir / "adapter_model.safetensors"), metadata={"format": "pt"})
    config = json.loads((run.adapter_dir / "adapter_config.json").read_text())
    config.update(rank_pattern={r"layers\.1\.self_attn\.k_proj": 8}, alpha_pattern={r"layers\.0\.mlp\.down_proj": 8})
    (run.adapter_dir / "adapter_config.json").write_text(json.dumps(config))
    _, _, scales = read_adapter(run.adapter_dir)
    assert scales["model.layers.1.self_attn.k_proj"] == 4.0 and scales["model.layers.0.mlp.down_proj"] == 0.5

    reference, tokenizer, prompts = reference_for(run)
    merge_checkpoint(tiny_model_dir, run.adapter_dir, tmp_path / "right", progress=False)
    assert check(reference, tokenizer, prompts, tmp_path / "right")["ok"]
    ignored = {module: config["lora_alpha"] / config["r"] for module in scales}
    broken = broken_merge(tmp_path / "ignored", tiny_model_dir, run.adapter_dir, ignored)
    report = check(reference, tokenizer, prompts, broken)
    assert not report["ok"] and report["merged"]["max_abs_diff"] > 3 * report["allowed_max_abs_diff"], report["why"]
