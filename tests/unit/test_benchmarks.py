"""The MLM benchmark compares like with like: its linear group_texts is the course's,
and the recipe and kfnlp sides end at the same trainable dataset; every side of the classification
benchmark trains on the same sub-tokens and labels; the causal-LM benchmark's eos-joined recipe cuts
kfnlp's chunks, and its recipe as written keeps only whole chunks."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from tests.support.cli import REPO

sys.path.insert(0, str(REPO / "benchmarks"))  # the scripts import their helpers as `common`

import bench_clm  # noqa: E402
import bench_cls  # noqa: E402
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


# The classification benchmark: every side trains on the artifact's sub-tokens and labels.

CLS_MAX_LENGTH = 16


@pytest.fixture(scope="module")
def cls_splits(tmp_path_factory):
    """A tiny preprocess-cls artifact (some texts longer than max_length), as the benchmark reads it."""
    from kfnlp.stages.preprocess_cls import PreprocessClsConfig, preprocess_cls

    root = tmp_path_factory.mktemp("bench-cls")
    text = "a truly fine film with a plot that moves and actors who care about every scene"
    rows = [f"{text[: 12 + 5 * (i % 14)]} number {i},{('neg', 'pos')[i % 2]}" for i in range(60)]
    (root / "reviews.csv").write_text("text,label\n" + "\n".join(rows) + "\n", encoding="utf-8")
    config = PreprocessClsConfig(source=str(root / "reviews.csv"), max_length=CLS_MAX_LENGTH)
    preprocess_cls(str(root / "dataset"), config, bench_cls.MODEL)
    return bench_cls.load_splits(str(root / "dataset"), 5)


def recipe_sides(train, max_length: int = CLS_MAX_LENGTH) -> dict:
    from kfnlp.modeling import load_tokenizer

    tokenizer = load_tokenizer(bench_cls.MODEL)
    return {
        "recipe": bench_cls.recipe_tokenize(tokenizer, train, max_length, "max_length"),
        "recipe-dynamic": bench_cls.recipe_tokenize(tokenizer, train, max_length, False),
    }


def test_every_cls_side_trains_on_the_artifacts_data(cls_splits):
    train, test = cls_splits
    sides = recipe_sides(train)
    assert bench_cls.same_training_data(train, sides)
    assert {len(ids) for ids in sides["recipe"]["input_ids"]} == {CLS_MAX_LENGTH}  # padded as the recipe pads
    assert sides["recipe-dynamic"]["input_ids"] == train["input_ids"]  # unpadded: the collator pads
    assert max(train["length"]) == CLS_MAX_LENGTH > min(train["length"])
    assert len(test) == 5


def test_the_cls_data_check_sees_a_difference(cls_splits):
    train, _ = cls_splits
    assert not bench_cls.same_training_data(train, recipe_sides(train, CLS_MAX_LENGTH - 4))


def test_cls_padding_table_orders_the_batchings(cls_splits):
    train, _ = cls_splits
    padding = {**bench_cls.padding_analysis(train["length"], bench_cls.BATCH_SIZE), "examples": len(train)}
    table = bench_cls.padding_table(padding, CLS_MAX_LENGTH, len(train))
    tokens = [float(line.split("|")[2].replace(",", "")) for line in table[2:]]
    assert tokens[0] == len(train) * CLS_MAX_LENGTH
    assert tokens == sorted(tokens, reverse=True)
    assert tokens[-1] == sum(train["length"])


# The causal-LM benchmark: the course's eos-joined chunks are preprocess's; as written it keeps whole chunks only.

CLM_CONTEXT = 16


@pytest.fixture(scope="module")
def clm_data(tmp_path_factory):
    """300 Rotten Tomatoes reviews split as preprocess splits them, a BPE tokenizer trained on the training
    ones, and preprocess's chunks of CLM_CONTEXT tokens."""
    from kfnlp.artifacts import open_dataset
    from kfnlp.data.bpe import train_bpe
    from kfnlp.modeling import load_tokenizer
    from kfnlp.stages.preprocess import preprocess

    root = tmp_path_factory.mktemp("bench-clm")
    config = bench_clm.preprocess_config(CLM_CONTEXT, 300)
    train, test = bench_clm.split_texts(config)
    train_bpe(train, vocab_size=400, model_max_length=CLM_CONTEXT).save_pretrained(root / "tokenizer")
    preprocess(str(root / "dataset"), config, str(root / "tokenizer"))
    return load_tokenizer(str(root / "tokenizer")), train, test, open_dataset(str(root / "dataset")).splits()


def test_the_eos_joined_recipe_cuts_kfnlps_chunks(clm_data):
    tokenizer, train, test, ours = clm_data
    joined = bench_clm.recipe_tokenize_joined(tokenizer, train, CLM_CONTEXT)
    assert len(train) == 270 and len(ours["train"]) > 100
    assert bench_clm.same_chunks(joined, ours["train"])
    assert bench_clm.same_chunks(bench_clm.recipe_tokenize_joined(tokenizer, test, CLM_CONTEXT), ours["test"])
    # an eos after each document: where the documents end in the joined stream, up to the dropped rest
    ends = np.cumsum([len(ids) + 1 for ids in tokenizer(train)["input_ids"]]) - 1
    kept = len(joined) * CLM_CONTEXT
    assert np.array_equal(
        np.flatnonzero(bench_clm.flat(joined, "input_ids") == tokenizer.eos_token_id), ends[ends < kept]
    )


def test_the_clm_chunk_check_sees_a_difference(clm_data):
    tokenizer, train, _, ours = clm_data
    assert not bench_clm.same_chunks(bench_clm.recipe_tokenize_joined(tokenizer, train[1:], CLM_CONTEXT), ours["train"])


def test_the_recipe_as_written_keeps_whole_chunks_only(clm_data):
    tokenizer, train, _, _ = clm_data
    lengths = [len(ids) for ids in tokenizer(train)["input_ids"]]
    written = bench_clm.recipe_tokenize(tokenizer, train, CLM_CONTEXT)
    assert {len(ids) for ids in written["input_ids"]} == {CLM_CONTEXT}
    assert len(written) == sum(n // CLM_CONTEXT for n in lengths) > 0
    assert bench_clm.kept_share(lengths, CLM_CONTEXT) == len(written) * CLM_CONTEXT / sum(lengths)
    # a context longer than every document leaves nothing to train on (the course's 128 on Rotten Tomatoes)
    assert len(bench_clm.recipe_tokenize(tokenizer, train, max(lengths) + 1)) == 0
