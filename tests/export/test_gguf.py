"""GGUF export's refusals: before any file is written, with the reason."""

import json

import pytest

from kit.export.gguf import ExportError, check_types, convert, export


def test_unknown_type_lists_the_valid_ones():
    with pytest.raises(ExportError, match=r"unknown GGUF type\(s\) q3_k; valid: f16, bf16, q8_0, q4_k_m, q5_k_m"):
        check_types(["q8_0", "q3_k"])


def test_existing_files_are_not_overwritten(tmp_path):
    (tmp_path / "gguf").mkdir()
    (tmp_path / "gguf" / "demo-q8_0.gguf").write_bytes(b"kept")
    with pytest.raises(ExportError, match="already exist; pass overwrite=True"):
        export(tmp_path / "merged", tmp_path / "gguf", "demo", ["q8_0"])
    assert (tmp_path / "gguf" / "demo-q8_0.gguf").read_bytes() == b"kept"


def test_an_architecture_llama_cpp_cannot_convert_is_a_short_error(tmp_path):
    model = tmp_path / "odd"
    model.mkdir()
    (model / "config.json").write_text(
        json.dumps({"architectures": ["NoSuchModelForCausalLM"], "model_type": "nosuch"})
    )
    with pytest.raises(ExportError, match="llama.cpp could not convert .*odd to GGUF"):
        convert(model, tmp_path / "out.gguf", "f16")
    assert not list(tmp_path.glob("*.gguf")) and not list(tmp_path.glob(".*part"))


def test_disk_space_is_checked_before_writing(tmp_path):
    from kit.export.merge import check_disk, estimate_bytes
    from kit.runs import RunError

    assert estimate_bytes(1_000_000, ["q8_0", "q4_k_m"]) == int(1_000_000 * (2.0 + 1.07 + 0.62 + 2.0) * 1.05)
    with pytest.raises(RunError, match=r"not enough disk space .* need about 1000000000\.0 GB"):
        check_disk(tmp_path, 10**18)
    check_disk(tmp_path, 1)


def test_an_adapter_from_another_base_is_refused(runs_dir, tiny_model_dir):
    from kit.export.base_model import check_adapter_base
    from kit.recipes import load_recipe
    from kit.runs import RunError, create_run

    recipe = load_recipe("tiny-demo")[1]
    run = create_run("tiny-demo", recipe, "r")
    run.adapter_dir.mkdir()
    (run.adapter_dir / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "unsloth/Qwen3-8B"}))
    with pytest.raises(RunError, match=rf"trained on 'unsloth/Qwen3-8B', but the recipe's model is '{tiny_model_dir}'"):
        check_adapter_base(run, recipe)
    (run.adapter_dir / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(tiny_model_dir)}))
    check_adapter_base(run, recipe)
