"""GGUF export's refusals: before any file is written, with the reason."""
import json

import pytest

from kit.gguf import ExportError, check_types, convert, export


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
    (model / "config.json").write_text(json.dumps({"architectures": ["NoSuchModelForCausalLM"], "model_type": "nosuch"}))
    with pytest.raises(ExportError, match="llama.cpp could not convert .*odd to GGUF"):
        convert(model, tmp_path / "out.gguf", "f16")
    assert not list(tmp_path.glob("*.gguf")) and not list(tmp_path.glob(".*part"))
