"""Masking: token-level and whole-word selection, BERT replacement, the collator."""

from __future__ import annotations

import numpy as np
import pytest

from kfnlp.masking import MaskingCollator, MaskSpec, mask, select_positions

MASK_ID, VOCAB = 103, 30522


def spec(strategy="token", p=0.15, **kw) -> MaskSpec:
    return MaskSpec(strategy, p, MASK_ID, VOCAB, **kw)


def corpus_word_ids(rows=64, length=128, seed=0) -> np.ndarray:
    """Words of 1-4 sub-tokens; about one word in 40 is a special token (-1)."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 5, size=rows * length)
    flat = np.repeat(np.arange(sizes.size), sizes)[: rows * length]
    flat[np.isin(flat, np.flatnonzero(rng.random(sizes.size) < 0.025))] = -1
    return flat.reshape(rows, length)


def test_whole_word_masking_masks_every_sub_token_of_a_chosen_word():
    words = corpus_word_ids()
    selected = select_positions(words, spec("whole_word", 0.2), np.random.default_rng(1))
    assert selected.any()
    for row in range(words.shape[0]):
        for word in np.unique(words[row][words[row] >= 0]):
            in_word = selected[row][words[row] == word]
            assert in_word.all() or not in_word.any(), f"word {word} in row {row} partly masked"


def test_whole_word_rate_is_per_word():
    words = corpus_word_ids(rows=256)
    selected = select_positions(words, spec("whole_word", 0.2), np.random.default_rng(2))
    starts = (words >= 0) & np.concatenate([np.ones((words.shape[0], 1), bool), words[:, 1:] != words[:, :-1]], 1)
    assert abs(selected[starts].mean() - 0.2) < 0.01


def test_token_masking_rate_and_special_tokens_never_selected():
    words = corpus_word_ids(rows=256)
    selected = select_positions(words, spec("token", 0.15), np.random.default_rng(3))
    assert not selected[words < 0].any()
    assert abs(selected[words >= 0].mean() - 0.15) < 0.005


def test_bert_replacement_split_and_labels():
    rng = np.random.default_rng(4)
    words = corpus_word_ids(rows=512)
    ids = rng.integers(1000, 2000, size=words.shape)
    masked, labels = mask(ids, words, spec("token", 0.15), rng)
    chosen = labels != -100
    np.testing.assert_array_equal(labels[chosen], ids[chosen])
    np.testing.assert_array_equal(masked[~chosen], ids[~chosen])
    as_mask = (masked[chosen] == MASK_ID).mean()
    unchanged = (masked[chosen] == ids[chosen]).mean()
    assert abs(as_mask - 0.8) < 0.02 and abs(unchanged - 0.1) < 0.02


def test_same_seed_same_masks_other_seed_other_masks():
    words = corpus_word_ids()
    ids = np.arange(words.size).reshape(words.shape) % 5000
    a = mask(ids, words, spec(), np.random.default_rng(7))
    b = mask(ids, words, spec(), np.random.default_rng(7))
    c = mask(ids, words, spec(), np.random.default_rng(8))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])


@pytest.mark.parametrize("strategy", ["token", "whole_word"])
def test_collator_masks_fresh_each_batch_and_passes_masked_eval_batches(strategy):
    words = corpus_word_ids(rows=8)
    features = [{"input_ids": np.full(128, 2000), "attention_mask": np.ones(128), "word_ids": w} for w in words]
    collator = MaskingCollator(spec(strategy, 0.2), seed=0)
    first, second = collator(features), collator(features)
    assert first["input_ids"].dtype.is_floating_point is False
    assert set(first) == {"input_ids", "attention_mask", "labels"}
    assert not (first["labels"] == second["labels"]).all()
    fixed = [{"input_ids": np.arange(4), "attention_mask": np.ones(4), "labels": np.array([-100, 1, -100, 3])}] * 2
    out = collator(fixed)
    assert out["labels"].tolist() == [[-100, 1, -100, 3]] * 2
