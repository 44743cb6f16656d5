"""Chunking: the recipe's group_texts semantics, with NumPy."""

from __future__ import annotations

import numpy as np
import pytest

from kfnlp.data import chunking
from kfnlp.errors import ConfigError
from kfnlp.modeling import load_tokenizer


def stream(lengths: list[int]) -> chunking.TokenStream:
    """Documents whose token ids are 1000*doc + position, word ids = position."""
    ids = np.concatenate([1000 * d + np.arange(n) for d, n in enumerate(lengths)]).astype(np.int32)
    words = np.arange(ids.size, dtype=np.int64)
    return chunking.TokenStream(ids, words, np.asarray(lengths, dtype=np.int64))


def recipe_group_texts(examples: dict, chunk_size: int) -> dict:
    """The seed recipe's group_texts, verbatim in behaviour."""
    concatenated = {k: sum(examples[k], []) for k in examples}
    total = len(concatenated["input_ids"]) // chunk_size * chunk_size
    return {k: [t[i : i + chunk_size] for i in range(0, total, chunk_size)] for k, t in concatenated.items()}


@pytest.mark.parametrize(
    "lengths, chunk_size, group_size, expected_rows",
    [
        ([4, 4], 4, 1000, 2),  # exact multiple: nothing dropped
        ([5, 4], 4, 1000, 2),  # remainder of 1 dropped
        ([3], 4, 1000, 0),  # shorter than one chunk
        ([3, 3, 3, 3], 4, 2, 2),  # each group of 2 docs (6 tokens) yields 1 chunk
        ([3, 3, 3, 3], 4, 0, 3),  # whole split concatenated: 12 tokens -> 3 chunks
        ([0, 8, 0], 4, 1000, 2),  # empty documents are harmless
        ([7], 2, 1000, 3),
    ],
)
def test_chunk_counts(lengths, chunk_size, group_size, expected_rows):
    chunks = chunking.chunk(stream(lengths), chunk_size, group_size)
    assert chunks.input_ids.shape == (expected_rows, chunk_size)
    assert chunks.word_ids.shape == (expected_rows, chunk_size)


def test_chunks_equal_recipe_group_texts_per_batch():
    """Same rows as mapping the recipe's group_texts over batches of ``group_size`` documents."""
    lengths = [5, 9, 2, 13, 7, 1, 6]
    s = stream(lengths)
    docs = np.split(s.input_ids, np.cumsum(lengths)[:-1])
    expected = []
    for start in range(0, len(docs), 3):
        batch = {"input_ids": [d.tolist() for d in docs[start : start + 3]]}
        expected += recipe_group_texts(batch, 4)["input_ids"]
    got = chunking.chunk(s, 4, group_size=3).input_ids.tolist()
    assert got == expected


def test_chunk_size_must_be_sensible():
    with pytest.raises(ConfigError):
        chunking.chunk(stream([4]), 1)


def test_tokenize_keeps_word_ids_unique_across_documents():
    tok = load_tokenizer("builtin:splade-tiny")
    s = chunking.tokenize(tok, ["one", "one", "unbelievably good"])
    # [CLS] one [SEP] [CLS] one [SEP] [CLS] un ##bel ... good [SEP]
    assert s.doc_lengths.tolist()[:2] == [3, 3]
    assert s.input_ids[0] == tok.cls_token_id and s.input_ids[2] == tok.sep_token_id
    special = np.isin(s.input_ids, tok.all_special_ids)
    assert (s.word_ids[special] == -1).all()
    words = s.word_ids[~special]
    assert words[0] != words[1], "the same word in two documents must get two ids"
    last_doc = s.word_ids[6:][~special[6:]]
    assert len(set(last_doc.tolist())) == 2, "sub-tokens of one word share its id"
    assert (np.diff(words) >= 0).all()


def test_to_dataset_columns_and_labels_copy_input_ids():
    chunks = chunking.chunk(stream([8, 8]), 4)
    ds = chunking.to_dataset(chunks).with_format("numpy")
    assert ds.column_names == ["input_ids", "attention_mask", "word_ids", "labels"]
    assert len(ds) == 4
    np.testing.assert_array_equal(np.stack(ds["labels"]), np.stack(ds["input_ids"]))
    assert (np.stack(ds["attention_mask"]) == 1).all()


GPT2_STYLE_TEXTS = ["the film was good and the actors were fine.", "a bad film; the plot made no sense."] * 20


@pytest.fixture(scope="module")
def gpt2_style():
    """A byte-level BPE tokenizer whose post-processor adds no special token, with <|endoftext|> as eos."""
    from kfnlp.data.bpe import train_bpe

    return train_bpe(GPT2_STYLE_TEXTS, vocab_size=300)


def test_a_tokenizer_without_special_tokens_ends_each_document_with_eos(gpt2_style):
    documents = ["the film was good", "a bad film", "fine"]
    alone = [gpt2_style(d)["input_ids"] for d in documents]
    assert all(gpt2_style.eos_token_id not in ids for ids in alone), "the tokenizer itself adds nothing"
    s = chunking.tokenize(gpt2_style, documents)
    eos = gpt2_style.eos_token_id
    assert s.input_ids.tolist() == [i for ids in alone for i in [*ids, eos]]
    assert s.doc_lengths.tolist() == [len(ids) + 1 for ids in alone]
    ends = np.cumsum(s.doc_lengths) - 1
    assert (s.word_ids[ends] == -1).all() and (np.delete(s.word_ids, ends) >= 0).all()
    # the streaming path gives the same: one eos per document, at its end
    got = list(chunking.segments(gpt2_style, documents, batch_size=2))
    assert [seg.input_ids.tolist() for seg in got] == [[*ids, eos] for ids in alone]
    assert all(seg.ends_document and seg.word_ids[-1] == -1 for seg in got)


def test_a_long_document_gets_one_eos_after_its_last_piece(gpt2_style):
    text = " ".join(GPT2_STYLE_TEXTS * 200) + "  end"
    assert len(chunking.pieces(text)) > 2
    whole = chunking.tokenize(gpt2_style, [text])
    got = list(chunking.segments(gpt2_style, ["short one", text, "after"]))
    eos = gpt2_style.eos_token_id
    long_segments = got[1:-1]
    assert len(long_segments) == len(chunking.pieces(text))
    assert [eos in seg.input_ids for seg in long_segments] == [False] * (len(long_segments) - 1) + [True]
    assert [seg.ends_document for seg in long_segments] == [False] * (len(long_segments) - 1) + [True]
    assert np.concatenate([seg.input_ids for seg in long_segments]).tolist() == whole.input_ids.tolist()
    assert got[0].input_ids[-1] == eos and got[-1].input_ids[-1] == eos


def test_an_encoder_tokenizer_gets_no_extra_eos():
    """BERT's post-processor adds [CLS] ... [SEP]: nothing else is appended (its eos, if any, is not used)."""
    tok = load_tokenizer("builtin:splade-tiny")
    s = chunking.tokenize(tok, ["one"])
    assert s.input_ids.tolist() == tok("one")["input_ids"]


def test_a_tokenizer_without_special_tokens_or_eos_gets_nothing_appended(gpt2_style):
    from transformers import PreTrainedTokenizerFast

    no_eos = PreTrainedTokenizerFast(tokenizer_object=gpt2_style.backend_tokenizer)
    assert no_eos.eos_token_id is None
    s = chunking.tokenize(no_eos, ["the film was good", "fine"])
    assert s.input_ids.tolist() == no_eos("the film was good")["input_ids"] + no_eos("fine")["input_ids"]
