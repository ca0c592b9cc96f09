"""Streaming safetensors I/O: files written piece by piece read back by the safetensors library,
bands read back equal, and the memory the merge, the tensor check and the direct loader take:
bands, not shards, and no second copy of a model loaded."""

import json
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from kit.paths import PROJECT_ROOT
from kit.safetensors_io import SafetensorsFile, SafetensorsWriter, copy_tensor, row_bands


def sample_tensors():
    torch.manual_seed(0)
    return {
        "w": torch.randn(37, 11).bfloat16(),
        "h": torch.randn(5, 3, 2).half(),
        "f": torch.randn(13),
        "i": torch.arange(7, dtype=torch.int64),
        "mask": torch.rand(9) > 0.5,
        "scalar": torch.tensor(2.5),
        "empty": torch.zeros(0, 4),
        "d": torch.randn(3, 3, dtype=torch.float64),
    }


def test_pieces_written_are_read_back_by_safetensors_and_by_band(tmp_path):
    tensors = sample_tensors()
    path = tmp_path / "x.safetensors"
    with SafetensorsWriter(path, [(n, t.dtype, tuple(t.shape)) for n, t in tensors.items()], {"format": "pt"}) as w:
        for name, t in tensors.items():
            rows = t.shape[0] if t.dim() else 1
            for start, stop in row_bands(rows, t.nbytes // max(rows, 1), 40):
                w.write(t[start:stop] if t.dim() else t)
    assert (8 + int.from_bytes(path.read_bytes()[:8], "little")) % 8 == 0  # data 8-byte aligned
    loaded = load_file(path)
    assert loaded.keys() == tensors.keys() and all(torch.equal(loaded[k], v) for k, v in tensors.items())
    with safe_open(str(path), "pt") as f:
        assert f.metadata() == {"format": "pt"}
    with SafetensorsFile(path) as f:
        assert f.names() == list(tensors) and f.metadata == {"format": "pt"}
        for name, t in tensors.items():
            assert torch.equal(f.read(name), t)
            if t.dim():
                bands = list(f.bands(name, 40))
                assert [a for a, _ in bands[1:]] == [b for _, b in bands[:-1]] and sum(b - a for a, b in bands) == len(
                    t
                )
                assert len(bands) > 1 or t.nbytes <= 40 or len(t) <= 1
                assert all(torch.equal(f.read(name, a, b), t[a:b]) for a, b in bands)
    # the safetensors library's own files read back the same way
    save_file(tensors, str(tmp_path / "lib.safetensors"))
    with SafetensorsFile(tmp_path / "lib.safetensors") as f:
        assert all(torch.equal(f.read(n), t) for n, t in tensors.items())
        with SafetensorsWriter(tmp_path / "cast.safetensors", [("w", torch.float32, (37, 11))]) as w:
            copy_tensor(f, "w", w, torch.float32, chunk_bytes=50)
    assert torch.equal(load_file(tmp_path / "cast.safetensors")["w"], tensors["w"].float())


def test_a_writer_refuses_pieces_that_do_not_fit(tmp_path):
    with pytest.raises(TypeError, match="float16 piece for a .*bfloat16"):
        with SafetensorsWriter(tmp_path / "a.safetensors", [("w", torch.bfloat16, (2, 2))]) as w:
            w.write(torch.zeros(2, 2, dtype=torch.float16))
    with pytest.raises(ValueError, match="more bytes than its shape holds"):
        with SafetensorsWriter(tmp_path / "b.safetensors", [("w", torch.bfloat16, (2, 2))]) as w:
            w.write(torch.zeros(3, 2, dtype=torch.bfloat16))
    with pytest.raises(ValueError, match="4 of 8 tensor bytes written"):
        with SafetensorsWriter(tmp_path / "c.safetensors", [("w", torch.bfloat16, (2, 2))]) as w:
            w.write(torch.zeros(1, 2, dtype=torch.bfloat16))


def test_the_adapter_is_read_a_module_at_a_time(tmp_path):
    from kit.export.lora_merge import LazyTensors, read_adapter

    torch.manual_seed(0)
    lora = {"m.q.lora_A.weight": torch.randn(4, 8), "m.q.lora_B.weight": torch.randn(8, 4)}
    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": 4, "lora_alpha": 8}))
    save_file({f"base_model.model.{k}": v for k, v in lora.items()}, str(tmp_path / "adapter_model.safetensors"))
    _, lazy, scales = read_adapter(tmp_path)
    assert isinstance(lazy, LazyTensors) and scales == {"m.q": 2.0}
    assert set(lazy) == set(lora) and all(torch.equal(lazy[k], v) for k, v in lora.items())
    assert lazy.shape("m.q.lora_A.weight") == (4, 8)


PEAK = """
import json, sys
from pathlib import Path
def rss(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
def measure(fn):
    Path("/proc/self/clear_refs").write_text("5")
    before = rss("VmRSS")
    result = fn()
    return rss("VmHWM") - before, result
"""


def run_measured(code: str, *args) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(PEAK) + textwrap.dedent(code), *map(str, args)],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="peak RSS per stage needs /proc/self/clear_refs")
def test_merge_and_tensor_check_hold_bands_not_shards(tmp_path):
    """A 512 MB shard of two 256 MB weights, one of them LoRA-targeted: merging it and checking the
    merge each take a fraction of the shard (~130 MB: 64 MB bands; reading it through safe_open and
    keeping the merged shard, as before, took twice the shard)."""
    torch.manual_seed(0)
    base = tmp_path / "base"
    base.mkdir()
    (base / "config.json").write_text(json.dumps({"dtype": "bfloat16"}))
    save_file(
        {"m.q.weight": torch.randn(16384, 8192).bfloat16(), "m.embed.weight": torch.randn(16384, 8192).bfloat16()},
        str(base / "model.safetensors"),
        metadata={"format": "pt"},
    )
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"r": 16, "lora_alpha": 16}))
    save_file(
        {
            "base_model.model.m.q.lora_A.weight": torch.randn(16, 8192) / 100,
            "base_model.model.m.q.lora_B.weight": torch.randn(16384, 16) / 100,
        },
        str(adapter / "adapter_model.safetensors"),
    )
    out = run_measured(
        """
        import torch, peft.utils.other
        from kit.export.lora_merge import merge_checkpoint
        from kit.export.merge_check import check_merged_tensors
        base, adapter, out = map(Path, sys.argv[1:4])
        merge_mb, _ = measure(lambda: merge_checkpoint(base, adapter, out, progress=False))
        check_mb, report = measure(lambda: check_merged_tensors(base, adapter, out))
        print(json.dumps({"merge_mb": merge_mb, "check_mb": check_mb, "ok": report["ok"],
                          "merged": report["lora_modules_merged"], "unchanged": report["tensors_unchanged"]}))
    """,
        base,
        adapter,
        tmp_path / "out",
    )
    assert out["ok"] and out["merged"] == 1 and out["unchanged"] == 1
    shard_mb = (base / "model.safetensors").stat().st_size / 2**20
    assert out["merge_mb"] < shard_mb / 2 and out["check_mb"] < shard_mb / 2, out
    merged = load_file(tmp_path / "out" / "model.safetensors")
    weights, lora = load_file(base / "model.safetensors"), load_file(adapter / "adapter_model.safetensors")
    expected = (
        weights["m.q.weight"]
        .float()
        .addmm_(lora["base_model.model.m.q.lora_B.weight"], lora["base_model.model.m.q.lora_A.weight"])
    )
    assert torch.equal(merged["m.q.weight"], expected.bfloat16())
    assert torch.equal(merged["m.embed.weight"], weights["m.embed.weight"])


def small_checkpoint(directory, tie=False):
    """A Qwen3 checkpoint of ~270 MB in bf16, nearly all of it the (untied) embedding and LM head."""
    from kit import backend  # noqa: F401  (Unsloth before transformers, as in the kit)
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(0)
    config = Qwen3Config(
        vocab_size=32768,
        hidden_size=2048,
        intermediate_size=256,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=64,
        tie_word_embeddings=tie,
        layer_types=["full_attention"],
        dtype="bfloat16",
    )
    Qwen3ForCausalLM(config).to(torch.bfloat16).save_pretrained(directory)
    return directory


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="peak RSS per stage needs /proc/self/clear_refs")
def test_the_direct_loader_holds_one_copy_of_the_model(tmp_path):
    """Loaded in float32 (as the merge checks load on a CPU) the model itself is the cost; transformers'
    loader adds the bf16 files it maps, every page it read counting until the load ends (on a GPU,
    where the model is not in RAM, those pages are the whole host cost)."""
    checkpoint = small_checkpoint(tmp_path / "ckpt")
    out = run_measured(
        """
        import torch
        from transformers import AutoModelForCausalLM, GenerationConfig  # the libraries, not the load
        from transformers.models.qwen3 import modeling_qwen3
        from kit.safetensors_io import load_model
        path = Path(sys.argv[1])
        added, model = measure(lambda: load_model(path, torch.float32, "cpu"))
        ids = torch.arange(16)[None]
        print(json.dumps({"added_mb": added, "model_mb": sum(p.nbytes for p in model.parameters()) / 2 ** 20,
                          "logits": model(ids).logits[0, -1, :8].float().tolist()}))
    """,
        checkpoint,
    )
    theirs = run_measured(
        """
        import torch
        from transformers import AutoModelForCausalLM, GenerationConfig
        from transformers.models.qwen3 import modeling_qwen3
        path = Path(sys.argv[1])
        added, model = measure(lambda: AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, device_map="cpu"))
        print(json.dumps({"added_mb": added, "logits": model(torch.arange(16)[None]).logits[0, -1, :8].float().tolist()}))
    """,
        checkpoint,
    )
    assert out["logits"] == theirs["logits"]
    files_mb = (checkpoint / "model.safetensors").stat().st_size / 2**20
    assert out["added_mb"] < out["model_mb"] + 100, out
    assert theirs["added_mb"] > out["model_mb"] + files_mb / 2, (theirs, out)


def test_the_direct_loader_matches_transformers_and_refuses_what_it_cannot_load(tmp_path):
    from transformers import AutoModelForCausalLM

    from kit.safetensors_io import load_model

    for tie in (False, True):
        checkpoint = small_checkpoint(tmp_path / f"tie{tie}", tie=tie)
        assert load_model(checkpoint, torch.bfloat16, "cpu") is None  # transformers maps it, no copy
        ours = load_model(checkpoint, torch.float32, "cpu")
        theirs = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32)
        assert {k: v.dtype for k, v in ours.state_dict().items()} == {
            k: v.dtype for k, v in theirs.state_dict().items()
        }
        assert all(torch.equal(v, theirs.state_dict()[k]) for k, v in ours.state_dict().items())
        assert (ours.lm_head.weight.data_ptr() == ours.model.embed_tokens.weight.data_ptr()) == tie
        ids = torch.arange(12)[None]
        assert torch.equal(ours(ids).logits, theirs(ids).logits)
        assert ours.generation_config.to_dict() == theirs.generation_config.to_dict()
    weights = load_file(checkpoint / "model.safetensors")
    del weights["model.norm.weight"]
    save_file(weights, str(checkpoint / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ValueError, match="missing_keys.*model.norm.weight"):
        load_model(checkpoint, torch.float32, "cpu")
    config = json.loads((checkpoint / "config.json").read_text())
    (checkpoint / "config.json").write_text(
        json.dumps({**config, "quantization_config": {"quant_method": "bitsandbytes"}})
    )
    assert load_model(checkpoint, torch.float32, "cpu") is None
