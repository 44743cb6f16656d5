"""Token-level and whole-word masking, vectorised with a seeded NumPy generator.

One function does the masking for both uses: the training collator (fresh masks
every batch) and the mask-eval stage (the eval split masked once, so perplexity is
deterministic and comparable between models; the recipe's ``insert_random_mask``).
Selected positions follow BERT's scheme: 80% become the mask token, 10% a random
token, 10% stay as they are; only selected positions carry a label.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from kfnlp.data.chunking import IGNORE_INDEX

Strategy = Literal["token", "whole_word"]
DEFAULT_PROBABILITY = {"token": 0.15, "whole_word": 0.2}


@dataclass(frozen=True)
class MaskSpec:
    strategy: Strategy
    probability: float
    mask_token_id: int
    vocab_size: int
    mask_replace_prob: float = 0.8
    random_replace_prob: float = 0.1

    @classmethod
    def for_tokenizer(cls, tokenizer, strategy: Strategy, probability: float) -> MaskSpec:
        """Masking with ``tokenizer``'s mask token, random replacements drawn from its whole vocabulary."""
        return cls(strategy, probability, tokenizer.mask_token_id, len(tokenizer))


def select_positions(word_ids: np.ndarray, spec: MaskSpec, rng: np.random.Generator) -> np.ndarray:
    """Boolean (n, L) array of positions to predict; special tokens (word id -1) never."""
    valid = word_ids >= 0
    if spec.strategy == "token":
        return valid & (rng.random(word_ids.shape) < spec.probability)
    # whole word: a word starts where the id changes (or a row starts); every
    # sub-token of a chosen word is selected. Per-row, so a word cut by a chunk
    # boundary is two independent words, as in the recipe.
    starts = valid.copy()
    starts[:, 1:] &= word_ids[:, 1:] != word_ids[:, :-1]
    word_index = np.cumsum(starts.reshape(-1)).reshape(word_ids.shape) - 1
    chosen = rng.random(int(starts.sum())) < spec.probability
    selected = np.zeros(word_ids.shape, dtype=bool)
    selected[valid] = chosen[word_index[valid]]
    return selected


def mask(
    input_ids: np.ndarray, word_ids: np.ndarray, spec: MaskSpec, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Return (masked input ids, labels) for a batch of chunks."""
    selected = select_positions(word_ids, spec, rng)
    labels = np.where(selected, input_ids, IGNORE_INDEX).astype(np.int64)
    masked = input_ids.astype(np.int64, copy=True)
    draw = rng.random(input_ids.shape)
    to_mask = selected & (draw < spec.mask_replace_prob)
    to_random = selected & (draw >= spec.mask_replace_prob) & (draw < spec.mask_replace_prob + spec.random_replace_prob)
    masked[to_mask] = spec.mask_token_id
    masked[to_random] = rng.integers(0, spec.vocab_size, size=int(to_random.sum()))
    return masked, labels


class MaskingCollator:
    """Data collator for training: stacks fixed-size chunks and masks them afresh.

    The masks of the n-th training batch come from a generator seeded with (seed, n), so
    a run resumed from a checkpoint at step n (``batches = n``) draws the same masks as an
    uninterrupted one. Features that are already masked (the stored eval set: labels, no
    word ids) are only stacked and not counted, so the Trainer's evaluation sees the fixed
    masks.
    """

    def __init__(self, spec: MaskSpec, seed: int):
        self.spec = spec
        self.seed = seed
        self.batches = 0  # training batches masked so far

    def __call__(self, features: list[dict]) -> dict:
        import torch

        def stack(key: str) -> np.ndarray:
            return np.stack([np.asarray(f[key]) for f in features]).astype(np.int64)

        if "word_ids" in features[0]:
            rng = np.random.default_rng([self.seed, self.batches])
            self.batches += 1
            masked, labels = mask(stack("input_ids"), stack("word_ids"), self.spec, rng)
        else:
            masked, labels = stack("input_ids"), stack("labels")
        attention = stack("attention_mask")
        return {
            "input_ids": torch.from_numpy(masked),
            "attention_mask": torch.from_numpy(attention),
            "labels": torch.from_numpy(labels),
        }
