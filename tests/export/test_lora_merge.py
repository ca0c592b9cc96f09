"""The streaming merge: bit-identical to Unsloth's merge of the same adapter, sharded like its base,
and its tensor check catches a wrong or missing tensor."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from kit.export.lora_merge import NotStreamable, merge_checkpoint, read_adapter
from kit.export.merge_check import check_merged_tensors


def tensors(directory):
    return {k: v for f in sorted(directory.glob("*.safetensors")) for k, v in load_file(f).items()}


def test_streaming_merge_equals_unsloths_merge(demo_run, tmp_path):
    """The demo's merged/ (streamed) against the kit's Unsloth route (save_pretrained_merged on the
    adapter loaded through Unsloth): both stored in the dtype decided from the base's config, and
    bit-identical. (Left to itself Unsloth on CPU writes float16 where the CPU lacks bfloat16.)"""
    from kit.export import merge as M
    from kit.export.lora_merge import merged_dtype
    from kit.runs import Run

    run = Run(demo_run[0])
    recipe = run.config()
    dtype = merged_dtype(M.base_config(recipe.model.id))
    M.merge_with_unsloth(run, recipe, tmp_path / "unsloth", dtype)
    ours, theirs = tensors(run.merged_dir), tensors(tmp_path / "unsloth")
    assert ours.keys() == theirs.keys()
    assert dtype == torch.bfloat16 and {t.dtype for t in ours.values()} == {t.dtype for t in theirs.values()} == {dtype}
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    for directory in (run.merged_dir, tmp_path / "unsloth"):
        assert json.loads((directory / "config.json").read_text())["dtype"] == "bfloat16"
    report = json.loads((run.path / "merge_report.json").read_text())
    assert report["method"] == "streaming" and report["stored_dtype"] == "bfloat16"


def test_a_sharded_base_gives_a_sharded_merge(demo_run, tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    run, _ = demo_run
    AutoModelForCausalLM.from_pretrained(tiny_model_dir).save_pretrained(tmp_path / "base", max_shard_size="200KB")
    shards = sorted(p.name for p in (tmp_path / "base").glob("*.safetensors"))
    assert len(shards) > 2
    info = merge_checkpoint(tmp_path / "base", run / "adapter", tmp_path / "out", progress=False)
    assert info["shards"] == len(shards) and sorted(p.name for p in (tmp_path / "out").glob("*.safetensors")) == shards
    index = json.loads((tmp_path / "out" / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == set(shards)
    merged, unsharded = tensors(tmp_path / "out"), tensors(run / "merged")
    assert all(torch.equal(merged[k], unsharded[k]) for k in unsharded) and merged.keys() == unsharded.keys()
    assert check_merged_tensors(tmp_path / "base", run / "adapter", tmp_path / "out")["ok"]


def test_the_tensor_check_names_wrong_and_missing_tensors(demo_run, tiny_model_dir, tmp_path):
    run, _ = demo_run
    copy = tmp_path / "merged"
    shutil.copytree(run / "merged", copy)
    weights = load_file(copy / "model.safetensors")
    _, lora, scales = read_adapter(run / "adapter")
    target = sorted(scales)[0] + ".weight"
    base = load_file(next(tiny_model_dir.glob("*.safetensors")))
    weights[target] = base[target]  # the adapter's update lost on one weight
    del weights["model.norm.weight"]
    save_file(weights, str(copy / "model.safetensors"), metadata={"format": "pt"})
    report = check_merged_tensors(tiny_model_dir, run / "adapter", copy)
    assert report["ok"] is False
    assert report["wrong_tensors"] == [target] and report["missing_tensors"] == ["model.norm.weight"]


def test_adapters_it_cannot_stream_are_named(demo_run, tmp_path):
    run, _ = demo_run
    adapter = tmp_path / "adapter"
    shutil.copytree(run / "adapter", adapter)
    config = json.loads((adapter / "adapter_config.json").read_text())
    (adapter / "adapter_config.json").write_text(json.dumps({**config, "use_dora": True}))
    with pytest.raises(NotStreamable, match="DoRA"):
        read_adapter(adapter)
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    weights = load_file(adapter / "adapter_model.safetensors")
    name = next(k for k in weights if k.endswith("lora_B.weight"))
    save_file(
        {**weights, name.replace(".weight", ".bias"): torch.zeros(weights[name].shape[0])},
        str(adapter / "adapter_model.safetensors"),
    )
    with pytest.raises(NotStreamable, match=r"other than LoRA A/B weights \(.*lora_B\.bias"):
        read_adapter(adapter)
    base = tmp_path / "base"
    base.mkdir()
    (base / "config.json").write_text(json.dumps({"quantization_config": {"quant_method": "bitsandbytes"}}))
    with pytest.raises(NotStreamable, match="quantized base checkpoint"):
        merge_checkpoint(base, run / "adapter", tmp_path / "out")


def test_the_unsloth_merge_route_is_checked_the_same_way(demo_run, runs_dir):
    """export.merge_method: unsloth (the route for adapters and bases that cannot be streamed)
    goes through merge() with the same tensor and logits checks."""
    from kit.export import merge as M
    from kit.runs import find_run

    run_dir, _ = demo_run
    copy = runs_dir / "tiny-demo" / "copy"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("merged", "gguf", "merge_report.json"))
    run = find_run("tiny-demo", "copy")
    report = M.merge(run, run.apply_overrides({"export.merge_method": "unsloth", "export.gguf": []}, stage="merge"))
    assert report.method == "unsloth save_pretrained_merged" and report.why == "export.merge_method is unsloth"
    assert report.tensor_check["ok"] and report.logits_check["ok"] and report.ok
    assert report.stored_dtype == "bfloat16"
    assert json.loads((copy / "merge_report.json").read_text()) == json.loads(json.dumps(report.to_dict()))
    streamed, merged = tensors(run_dir / "merged"), tensors(copy / "merged")
    assert merged.keys() == streamed.keys() and all(torch.equal(merged[k], streamed[k]) for k in streamed)
    assert "merged by unsloth save_pretrained_merged" in M.summary(report)


def synthetic_checkpoint(directory, tensors_, dtype="bfloat16"):
    directory.mkdir(parents=True)
    (directory / "config.json").write_text(json.dumps({"dtype": dtype}))
    save_file(tensors_, str(directory / "model.safetensors"), metadata={"format": "pt"})
    return directory


def synthetic_adapter(directory, lora, **config):
    directory.mkdir(parents=True)
    (directory / "adapter_config.json").write_text(json.dumps({"r": 4, "lora_alpha": 8, **config}))
    save_file({f"base_model.model.{k}": v for k, v in lora.items()}, str(directory / "adapter_model.safetensors"))
    return directory


def test_rank_and_alpha_patterns_are_resolved_as_peft_does(tmp_path):
    """PEFT matches pattern keys as regular expressions on the module name's dotted suffix."""
    from kit.export.lora_merge import lora_scales

    lora = {
        "model.layers.0.q_proj.lora_A.weight": torch.zeros(2, 8),
        "model.layers.0.q_proj.lora_B.weight": torch.zeros(8, 2),
        "model.layers.1.q_proj.lora_A.weight": torch.zeros(4, 8),
        "model.layers.1.q_proj.lora_B.weight": torch.zeros(8, 4),
    }
    config = {
        "r": 4,
        "lora_alpha": 8,
        "rank_pattern": {r"layers\.0\.q_proj": 2},
        "alpha_pattern": {r"layers\.\d\.q_proj": 4},
    }
    assert lora_scales(config, lora) == {"model.layers.0.q_proj": 2.0, "model.layers.1.q_proj": 1.0}
    with pytest.raises(ValueError, match="rank 4, its lora_A has rank 2"):
        lora_scales({**config, "rank_pattern": {}}, lora)


def test_the_merged_dtype_is_the_bases_16_bit_dtype_and_float32_becomes_bfloat16(tmp_path):
    from kit.export.lora_merge import cast_checkpoint, merged_dtype

    assert merged_dtype({"dtype": "float16"}) == merged_dtype({"torch_dtype": "float16"}) == torch.float16
    assert merged_dtype({"dtype": "bfloat16"}) == merged_dtype({"dtype": "float32"}) == torch.bfloat16
    assert merged_dtype({}) == torch.bfloat16  # unstated: float32, as transformers reads it
    torch.manual_seed(0)
    weight, a, b = torch.randn(8, 8), torch.randn(4, 8), torch.randn(8, 4)
    adapter = synthetic_adapter(tmp_path / "adapter", {"q.lora_A.weight": a, "q.lora_B.weight": b})
    # float32 tensors in a 16-bit checkpoint are kept (a model may keep some in float32 on purpose)
    mixed = synthetic_checkpoint(tmp_path / "mixed", {"q.weight": weight.bfloat16(), "router.bias": torch.randn(8)})
    merge_checkpoint(mixed, adapter, tmp_path / "out1", progress=False)
    out = tensors(tmp_path / "out1")
    assert out["q.weight"].dtype == torch.bfloat16 and out["router.bias"].dtype == torch.float32
    expected = weight.bfloat16().float() + 2.0 * b @ a  # alpha 8 / r 4
    torch.testing.assert_close(out["q.weight"].float(), expected, rtol=2**-8, atol=0)
    assert check_merged_tensors(mixed, adapter, tmp_path / "out1")["ok"]
    full = synthetic_checkpoint(tmp_path / "full", {"q.weight": weight, "router.bias": torch.randn(8)}, dtype="float32")
    merge_checkpoint(full, adapter, tmp_path / "out2", progress=False)
    assert {t.dtype for t in tensors(tmp_path / "out2").values()} == {torch.bfloat16}
    assert json.loads((tmp_path / "out2" / "config.json").read_text())["dtype"] == "bfloat16"
    # A writer that chose another 16-bit dtype is converted (float32 tensors stay as they are).
    half = synthetic_checkpoint(
        tmp_path / "half", {"q.weight": weight.half(), "router.bias": torch.randn(8)}, dtype="float16"
    )
    cast_checkpoint(half, torch.bfloat16)
    assert {k: t.dtype for k, t in tensors(half).items()} == {"q.weight": torch.bfloat16, "router.bias": torch.float32}
    assert json.loads((half / "config.json").read_text())["dtype"] == "bfloat16"


def test_targets_the_base_does_not_store_go_to_unsloth_and_are_not_checked(tmp_path):
    """lm_head tied to the embeddings is stored as embed_tokens only."""
    adapter = synthetic_adapter(
        tmp_path / "adapter", {"lm_head.lora_A.weight": torch.randn(4, 8), "lm_head.lora_B.weight": torch.randn(16, 4)}
    )
    base = synthetic_checkpoint(tmp_path / "base", {"model.embed_tokens.weight": torch.randn(16, 8).bfloat16()})
    with pytest.raises(NotStreamable, match="does not store.*lm_head.weight"):
        merge_checkpoint(base, adapter, tmp_path / "out")
    report = check_merged_tensors(base, adapter, base)
    assert report["ok"] is None and "lm_head.weight" in report["skipped"]


def test_publishing_twice_keeps_the_merged_model(demo_run, runs_dir):
    """Merge.publish() run again (a notebook cell re-run), or before merge_weights(), refuses and
    leaves merged/ as it is."""
    from kit.export import merge
    from kit.runs import RunError, find_run

    run_dir, _ = demo_run
    copy = runs_dir / "tiny-demo" / "publish"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("gguf"))
    run = find_run("tiny-demo", "publish")
    before = sorted(p.name for p in run.merged_dir.iterdir())
    merging = merge.Merge(run, run.config(), overwrite=True)
    with pytest.raises(RunError, match="nothing to publish"):
        merging.publish()
    assert sorted(p.name for p in run.merged_dir.iterdir()) == before
