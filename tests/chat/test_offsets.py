"""Token starts from byte lengths (byte-level BPE) equal the tokenizer's own offsets, and the table
refuses texts whose bytes the tokenizer would change."""

import pytest

from kit.chat.labels import encode_whole
from kit.chat.offsets import byte_length_table

TEXTS = [
    "<|im_start|>user\nWhere is my order?<|im_end|>\n<|im_start|>assistant\nIt ships today.<|im_end|>\n",
    "你好！有什么可以帮您？😊 Ünïcödé  double  spaces\n\n\ttabs",
    "<think>\n\n</think>\n\nDear customer,",
]


@pytest.mark.parametrize("name", ["qwen3", "llama-3.1"])
def test_token_starts_equal_the_tokenizers_offsets(family_tokenizers, name):
    tokenizer = family_tokenizers[name]
    table = byte_length_table(tokenizer)
    assert table is not None  # both are byte-level BPE
    for text, encoding in zip(TEXTS, encode_whole(tokenizer, TEXTS)):
        token_at = table.token_at(encoding.ids, text)
        assert token_at is not None
        assert token_at(len(text)) == len(encoding.ids)
        for k, (start, _) in enumerate(encoding.offsets):
            if k and encoding.offsets[k - 1][0] == start:
                continue  # bytes of one character split over several tokens: the first one starts it
            assert token_at(start) == k


def test_texts_the_tokenizer_changes_are_refused(tokenizer):
    table = byte_length_table(tokenizer)
    decomposed = "Cafe\u0301 au lait"  # NFC composes e + U+0301: the bytes move
    [encoding] = encode_whole(tokenizer, [decomposed])
    assert table.token_at(encoding.ids, decomposed) is None
    [encoding] = encode_whole(tokenizer, [TEXTS[0]])
    assert table.token_at(encoding.ids[:-1], TEXTS[0]) is None  # ids that do not add up to the text


def test_a_token_across_a_cut_is_reported(tokenizer):
    table = byte_length_table(tokenizer)
    text = "Dear customers"
    [encoding] = encode_whole(tokenizer, [text])
    token_at = table.token_at(encoding.ids, text)
    assert token_at(len("Dear")) is not None and token_at(len("Dear cust")) is None


def test_sentencepiece_style_tokenizers_are_not_byte_level():
    from tokenizers import Tokenizer, models, pre_tokenizers

    bare = Tokenizer(models.WordLevel({"a": 0, "[UNK]": 1}, unk_token="[UNK]"))
    bare.pre_tokenizer = pre_tokenizers.Metaspace()

    class Wrapped:
        backend_tokenizer = bare

    assert byte_length_table(Wrapped()) is None
