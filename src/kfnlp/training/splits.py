"""The rows a training stage trains and validates on, chosen the same way by every stage."""

from __future__ import annotations

import logging
from collections.abc import Iterable

import numpy as np

log = logging.getLogger(__name__)


def seeded_sample(rows, limit: int | None, seed: int):
    """``limit`` rows of ``rows`` (a datasets.Dataset) drawn with ``seed``, in their original order;
    all of them when ``limit`` is None or not smaller."""
    if limit is None or limit >= len(rows):
        return rows
    rng = np.random.default_rng(seed)
    return rows.select(np.sort(rng.permutation(len(rows))[:limit]))


def labelled_splits(splits: dict, columns: Iterable[str], limit: int | None, seed: int, stage: str, eval_strategy: str):
    """(train, validation or None) of a labelled dataset's ``splits``: the train split sampled to ``limit``,
    both with only those of ``columns`` they have (what the collator pads and the model takes). Warns
    when the config asks for evaluations during training and there is no validation split."""
    train = seeded_sample(splits["train"], limit, seed)
    kept = [c for c in columns if c in train.column_names]
    validation = splits["validation"].select_columns(kept) if "validation" in splits else None
    if eval_strategy != "no" and validation is None:
        log.warning("%s: the dataset has no validation split; not evaluating during training", stage)
    return train.select_columns(kept), validation
