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
