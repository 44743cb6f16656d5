"""The MLM benchmark compares like with like: its linear group_texts is the course's,
and the recipe and kfnlp sides end at the same trainable dataset."""

from __future__ import annotations

import sys

import pytest

from tests.support.cli import REPO

sys.path.insert(0, str(REPO / "benchmarks"))  # the scripts import their helpers as `common`

import bench_mlm  # noqa: E402


@pytest.fixture(scope="module")
def tokenizer():
    from kfnlp.modeling import load_tokenizer

    return load_tokenizer(bench_mlm.MODEL)


@pytest.fixture(scope="module")
def docs() -> list[str]:
    from kfnlp.data.corpus import load_corpus

    return load_corpus(bench_mlm.CORPUS).documents[:40]


def test_linear_group_texts_gives_the_verbatim_chunks():
    size, lengths = bench_mlm.CHUNK_SIZE, [70, 0, 200, 129, 5]  # an empty document, remainders across documents
    examples = {
        "input_ids": [list(range(1000 * d, 1000 * d + n)) for d, n in enumerate(lengths)],
        "word_ids": [[None, *range(n - 2), None] if n else [] for n in lengths],
    }
    verbatim = bench_mlm.group_texts_verbatim(examples)
    assert bench_mlm.group_texts_linear(examples) == verbatim
    assert len(verbatim["input_ids"]) == sum(lengths) // size
    assert all(len(row) == size for rows in verbatim.values() for row in rows)


def test_both_sides_end_at_equal_trainable_datasets(tokenizer, docs):
    recipe = bench_mlm.recipe_preprocess(tokenizer, docs, bench_mlm.group_texts_verbatim)
    linear = bench_mlm.recipe_preprocess(tokenizer, docs, bench_mlm.group_texts_linear)
    stream, ours = bench_mlm.kfnlp_preprocess(tokenizer, docs)
    assert len(ours) == int(stream.doc_lengths.sum()) // bench_mlm.CHUNK_SIZE > 10
    assert len(recipe) == len(linear) == len(ours)
    assert recipe.data.table.equals(linear.data.table)
    assert bench_mlm.same_chunks(recipe, ours)
    # what both Trainers read: token ids, attention mask, word ids and labels
    assert {"input_ids", "attention_mask", "word_ids", "labels"} <= set(recipe.column_names)
    assert set(ours.column_names) == {"input_ids", "attention_mask", "word_ids", "labels"}


def test_the_chunk_check_sees_a_difference(tokenizer, docs):
    recipe = bench_mlm.recipe_preprocess(tokenizer, docs, bench_mlm.group_texts_verbatim)
    _, ours = bench_mlm.kfnlp_preprocess(tokenizer, docs[:-1])
    assert not bench_mlm.same_chunks(recipe, ours)
