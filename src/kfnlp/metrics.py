"""Metrics with one definition each."""

from __future__ import annotations

import math


def perplexity(total_loss: float, n_tokens: int) -> float:
    """exp of the mean cross-entropy over every masked token of the eval set.

    Token-weighted (sum over all tokens / token count), so the result does not depend
    on the batch size; for a single batch it equals exp of the stock model's loss.
    """
    if n_tokens <= 0:
        raise ValueError("perplexity needs at least one masked token")
    mean = total_loss / n_tokens
    return math.exp(mean) if mean < 700 else math.inf
