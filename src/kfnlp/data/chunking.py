"""Tokenize documents and cut the token stream into fixed-size chunks (the recipe's
``group_texts``), with NumPy instead of Python lists.

Each document is tokenized with special tokens by the fast tokenizer's own batch
encoder (parallel in Rust). Word ids are made unique across the corpus (special
tokens get -1), so whole-word masking never merges words of neighbouring documents.
As in the recipe, documents are concatenated in groups of ``group_size`` (the
``datasets.map`` batch size, 1000) and each group's remainder shorter than a chunk is
dropped; ``group_size=0`` concatenates the whole split and drops one remainder.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kfnlp.errors import ConfigError

IGNORE_INDEX = -100  # label value that the loss ignores (torch CrossEntropyLoss default)


@dataclass
class TokenStream:
    input_ids: np.ndarray  # int32, all documents concatenated
    word_ids: np.ndarray  # int64, unique across documents, -1 on special tokens
    doc_lengths: np.ndarray  # int64, tokens per document


@dataclass
class Chunks:
    input_ids: np.ndarray  # (n, chunk_size) int32
    word_ids: np.ndarray  # (n, chunk_size) int64

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])


def tokenize(tokenizer, documents: list[str], batch_size: int = 2000) -> TokenStream:
    """Tokenize with the backend's parallel batch encoder, keeping word ids."""
    if not getattr(tokenizer, "is_fast", False):
        raise ConfigError("preprocessing needs a fast tokenizer (it keeps word ids); this model has a slow one")
    backend = tokenizer.backend_tokenizer
    backend.no_truncation()
    backend.no_padding()
    ids_parts: list[np.ndarray] = []
    word_parts: list[np.ndarray] = []
    lengths = np.empty(len(documents), dtype=np.int64)
    offset = 0
    for start in range(0, len(documents), batch_size):
        for i, enc in enumerate(backend.encode_batch(documents[start : start + batch_size]), start=start):
            ids = np.asarray(enc.ids, dtype=np.int32)
            words = np.asarray([-1 if w is None else w for w in enc.word_ids], dtype=np.int64)
            valid = words >= 0
            words[valid] += offset
            if valid.any():
                offset = int(words[valid].max()) + 1
            ids_parts.append(ids)
            word_parts.append(words)
            lengths[i] = ids.shape[0]
    if not ids_parts:
        return TokenStream(np.empty(0, np.int32), np.empty(0, np.int64), lengths)
    return TokenStream(np.concatenate(ids_parts), np.concatenate(word_parts), lengths)


def chunk(stream: TokenStream, chunk_size: int, group_size: int = 1000) -> Chunks:
    """Cut the stream into ``chunk_size`` rows, dropping each group's short remainder."""
    if chunk_size < 2:
        raise ConfigError(f"chunk_size must be at least 2, got {chunk_size}")
    n_docs = len(stream.doc_lengths)
    bounds = np.concatenate([[0], np.cumsum(stream.doc_lengths)])
    group_size = group_size or max(n_docs, 1)
    keep = []
    for first in range(0, n_docs, group_size):
        start = int(bounds[first])
        stop = int(bounds[min(first + group_size, n_docs)])
        usable = (stop - start) // chunk_size * chunk_size
        if usable:
            keep.append(slice(start, start + usable))
    if not keep:
        empty = np.empty((0, chunk_size))
        return Chunks(empty.astype(np.int32), empty.astype(np.int64))
    ids = np.concatenate([stream.input_ids[s] for s in keep]).reshape(-1, chunk_size)
    words = np.concatenate([stream.word_ids[s] for s in keep]).reshape(-1, chunk_size)
    return Chunks(ids, words)


def rows_dataset(columns: dict[str, np.ndarray]):
    """A ``datasets.Dataset`` of fixed-length rows from (n, length) arrays, built
    directly as Arrow fixed-size lists (no Python lists in between)."""
    import datasets
    import pyarrow as pa

    return datasets.Dataset(
        pa.table(
            {
                name: pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), values.shape[1])
                for name, values in columns.items()
            }
        )
    )


def to_dataset(chunks: Chunks):
    """The chunk dataset: input_ids, attention_mask, word_ids, labels (= input_ids)."""
    return rows_dataset(
        {
            "input_ids": chunks.input_ids,
            "attention_mask": np.ones(chunks.input_ids.shape, dtype=np.int8),
            "word_ids": chunks.word_ids,
            "labels": chunks.input_ids,
        }
    )
