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
    assert parsed["stop"] == list(family.stops)
    assert parsed["system"] == "Answer as support."
    assert parsed["template"] == ollama_template(family_tokenizers["qwen3"], family)
    assert "PARAMETER temperature 0.7" in path.read_text()


def test_the_modelfile_system_is_what_the_model_was_trained_with(tmp_path, family_tokenizers):
    """SYSTEM: the training data's system prompt when every row shares one; the check renders
    prompts without one as Ollama does, with SYSTEM filled in."""
    from kit.merge import shared_system_prompt
    from kit.modelfile import ModelfileError, check

    def row(system):
        return {"messages": ([{"role": "system", "content": system}] if system else [])
                + [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}

    assert shared_system_prompt([row("Be brief."), row("Be brief.")]) == "Be brief."
    assert shared_system_prompt([row("Be brief."), row(None)]) is None
    assert shared_system_prompt([row("A"), row("B")]) is None
    family, tokenizer = get_family("qwen3"), family_tokenizers["qwen3"]
    path = write_modelfile(tmp_path / "Modelfile", tmp_path / "m.gguf", tokenizer, family, system="Be brief.")
    assert check(path, tokenizer, family, [[{"role": "user", "content": "Hi"}]])["ok"]
    # A request's own system message replaces SYSTEM, in Ollama and in the check.
    other = write_modelfile(tmp_path / "Other", tmp_path / "m.gguf", tokenizer, family, system="Be long.")
    conversation = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    assert check(other, tokenizer, family, [conversation])["ok"]
    with pytest.raises(ModelfileError, match="triple quotes"):
        write_modelfile(tmp_path / "Bad", tmp_path / "m.gguf", tokenizer, family, system='say """')
