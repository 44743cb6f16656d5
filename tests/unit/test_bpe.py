"""The byte-level BPE tokenizer trained from texts (kfnlp.data.bpe)."""

from __future__ import annotations

import pytest

from kfnlp.data.bpe import END_OF_TEXT, train_bpe
from kfnlp.errors import ConfigError

TEXTS = [
    "This movie was great, the acting was superb and the plot kept me guessing.",
    "The worst film I have seen this year: the acting was wooden and the plot made no sense.",
    "A charming, funny movie with a great cast. I loved every minute of it!",
    "Boring. The plot dragged and the ending was predictable; the music was the only good thing.",
] * 25


def test_trains_a_gpt2_style_tokenizer_that_saves_and_reloads(tmp_path):
    from transformers import AutoTokenizer

    tok = train_bpe(TEXTS, vocab_size=400, min_frequency=2, model_max_length=64)
    assert 257 < len(tok) <= 400
    for role in ("bos", "eos", "unk", "pad"):
        assert getattr(tok, f"{role}_token") == END_OF_TEXT
    assert tok.all_special_tokens == [END_OF_TEXT]
    ids = tok("The acting was great")["input_ids"]
    assert tok.convert_ids_to_tokens(ids)[:2] == ["The", "Ġacting"], "no prefix space, Ġ marks a word start"
    assert END_OF_TEXT not in tok.convert_ids_to_tokens(ids), "the post-processor adds no special token"
    text = "Ünïcode ✓ and  two spaces, \ttabs\nand 日本語 never go unknown"
    assert tok.decode(tok(text)["input_ids"]) == text  # byte-level: every text round-trips
    tok.save_pretrained(tmp_path / "tok")
    again = AutoTokenizer.from_pretrained(tmp_path / "tok")
    assert again.model_max_length == 64 and again.eos_token == END_OF_TEXT and again.pad_token == END_OF_TEXT
    assert again(text)["input_ids"] == tok(text)["input_ids"]


def test_training_is_deterministic():
    first = train_bpe(iter(TEXTS), vocab_size=350)
    second = train_bpe(list(TEXTS), vocab_size=350)
    assert first.backend_tokenizer.to_str() == second.backend_tokenizer.to_str()


def test_min_frequency_keeps_rare_merges_out():
    often = train_bpe(TEXTS + ["zyzzyva"], vocab_size=2000, min_frequency=1)
    rarely = train_bpe(TEXTS + ["zyzzyva"], vocab_size=2000, min_frequency=2)
    assert "zyzzyva" in often.get_vocab() and "zyzzyva" not in rarely.get_vocab()


@pytest.mark.parametrize(
    "texts, kwargs, fragment",
    [
        ([], {}, "no text"),
        (TEXTS, {"vocab_size": 100}, "vocab_size must be at least 257"),
        (TEXTS, {"min_frequency": 0}, "min_frequency"),
        (TEXTS, {"model_max_length": 0}, "model_max_length"),
    ],
)
def test_bad_settings_are_one_line_errors(texts, kwargs, fragment):
    with pytest.raises(ConfigError, match=fragment):
        train_bpe(texts, **kwargs)
