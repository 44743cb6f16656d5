"""Which vocabulary token ids were made with: a data artifact's ids only mean the same
to a model whose tokenizer has the same fingerprint."""

from __future__ import annotations

import hashlib
from typing import Any

from kfnlp.errors import InputError


def tokenizer_fingerprint(tokenizer) -> str:
    """Identity of a vocabulary: equal fingerprints mean token ids mean the same."""
    vocab = sorted(tokenizer.get_vocab().items())
    return hashlib.sha256(repr((vocab, tokenizer.mask_token)).encode()).hexdigest()


def check_same_vocabulary(tokenizer, manifest: dict[str, Any], where: str) -> None:
    """Refuse data tokenized with another vocabulary than ``tokenizer``'s (``where`` names the data)."""
    if tokenizer_fingerprint(tokenizer) != manifest["tokenizer_fingerprint"]:
        raise InputError(
            f"{where} was tokenized with a different vocabulary than this model's tokenizer; "
            "preprocess the data with the same model"
        )
