"""The unknown-token share of tokenized text: an English vocabulary on CJK text turns many
sub-tokens into ``[UNK]`` without any error, and the model then learns and is scored on
noise. The preprocess stages count it per split into their manifest and warn above
:data:`WARN_SHARE`.

Only text sub-tokens count: special tokens ([CLS], [SEP], padding) are left out, except the
unknown token itself. A tokenizer without an unknown token (byte-level BPE never needs one)
counts 0 unknown tokens, and so does one whose unknown token is also its bos, eos or pad token
(GPT-2's ``<|endoftext|>``, which preprocess puts after each document).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

import numpy as np

log = logging.getLogger(__name__)

WARN_SHARE = 0.05  # above this share of unknown sub-tokens a split gets a warning
LIKELY_CAUSE = (
    "the tokenizer's vocabulary does not cover this text's script or language, e.g. CJK text on an English vocabulary"
)


class UnknownTokens:
    """Counts the unknown and the text sub-tokens of one split. Sequences are counted in batches of
    about ``batch_tokens`` (one short document at a time would cost more than tokenizing it)."""

    def __init__(self, tokenizer, batch_tokens: int = 1 << 20):
        self.unk_id = getattr(tokenizer, "unk_token_id", None)
        if self.unk_id in {getattr(tokenizer, f"{role}_token_id", None) for role in ("bos", "eos", "pad")}:
            self.unk_id = None  # GPT-2: <|endoftext|> ends documents; byte-level text never yields it
        self.unk_token = getattr(tokenizer, "unk_token", None)
        special = set(getattr(tokenizer, "all_special_ids", ())) - {self.unk_id}
        self._special = np.asarray(sorted(special), dtype=np.int64)
        self.batch_tokens = batch_tokens
        self._pending: list[np.ndarray] = []
        self._waiting = 0
        self._unknown = self._subtokens = 0

    def add(self, input_ids: Sequence[int] | np.ndarray) -> None:
        """Count one sequence of token ids (special tokens included or not)."""
        ids = np.asarray(input_ids)
        self._pending.append(ids.reshape(-1))
        self._waiting += ids.size
        if self._waiting >= self.batch_tokens:
            self._count()

    def add_batch(self, rows: Iterable[Sequence[int]]) -> None:
        """Count several sequences of token ids (lists of different lengths)."""
        for row in rows:
            self.add(row)

    def _count(self) -> None:
        if not self._pending:
            return
        ids = np.concatenate(self._pending)
        self._pending, self._waiting = [], 0
        self._subtokens += int(ids.size - np.count_nonzero(np.isin(ids, self._special)))
        if self.unk_id is not None:
            self._unknown += int(np.count_nonzero(ids == self.unk_id))

    @property
    def unknown(self) -> int:
        self._count()
        return self._unknown

    @property
    def subtokens(self) -> int:
        self._count()
        return self._subtokens

    @property
    def share(self) -> float:
        return self.unknown / self.subtokens if self.subtokens else 0.0

    def facts(self, stage: str, split: str) -> dict:
        """The manifest counts ``unknown_tokens``, ``subtokens``, ``unknown_share``; logs a
        WARNING naming the stage, split, share and likely cause above :data:`WARN_SHARE`."""
        if self.share > WARN_SHARE:
            log.warning(
                "%s: %s: %.1f%% of the sub-tokens (%d of %d) are the unknown token %r: %s",
                stage,
                split,
                100 * self.share,
                self.unknown,
                self.subtokens,
                self.unk_token,
                LIKELY_CAUSE,
            )
        return {"unknown_tokens": self.unknown, "subtokens": self.subtokens, "unknown_share": round(self.share, 6)}
