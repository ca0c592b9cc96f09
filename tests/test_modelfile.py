"""The Modelfile's TEMPLATE renders like the chat template, for every family; its stops are the
family's end tokens."""
import pytest

from kit.chat import render, render_prompt
from kit.families import FAMILIES, get_family
from kit.modelfile import ollama_template, read_modelfile, render_template, write_modelfile


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_template_renders_like_the_chat_template(family_tokenizers, name):
    family, tokenizer = get_family(name), family_tokenizers[name]
    template = ollama_template(tokenizer, family)
    bos = tokenizer.bos_token if render(tokenizer, [{"role": "user", "content": "x"}]).startswith(tokenizer.bos_token or "\0") else ""
    for system in ("You are terse.", None):
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": "Où est ma commande ? 📦"}]
        expected = render_prompt(tokenizer, family, messages) + "Elle arrive." + family.end_of_turn
        ollama = render_template(template, {"System": system, "Prompt": messages[-1]["content"], "Response": "Elle arrive."})
        assert bos + ollama == expected
        assert not ollama.startswith(bos or "\0")  # Ollama adds BOS itself


def test_modelfile_file(tmp_path, family_tokenizers):
    family = get_family("qwen3")
    path = write_modelfile(tmp_path / "Modelfile", tmp_path / "demo-q4_k_m.gguf", family_tokenizers["qwen3"], family,
                           system="Answer as support.")
    parsed = read_modelfile(path)
    assert parsed["from"] == "./demo-q4_k_m.gguf"
    assert parsed["stop"] == list(family.end_tokens)
    assert parsed["system"] == "Answer as support."
    assert parsed["template"] == ollama_template(family_tokenizers["qwen3"], family)
    assert "PARAMETER temperature 0.7" in path.read_text()
