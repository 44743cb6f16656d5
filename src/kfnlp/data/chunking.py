"""Tokenize documents and cut the token stream into fixed-size chunks (the recipe's
``group_texts``), with NumPy instead of Python lists.

Each document is tokenized with special tokens by the fast tokenizer's own batch
encoder (parallel in Rust). Word ids are made unique across the corpus (special
tokens get -1), so whole-word masking never merges words of neighbouring documents.
As in the recipe, documents are concatenated in groups of ``group_size`` (the
``datasets.map`` batch size, 1000) and each group's remainder shorter than a chunk is
dropped; ``group_size=0`` concatenates the whole split and drops one remainder.

:func:`tokenize` and :func:`chunk` hold a whole split in memory; preprocess streams instead:
:func:`segments` tokenizes documents in batches and :class:`Chunker` cuts rows as they come, with
the same result. A document longer than :data:`PIECE_CHARS` is tokenized in pieces, cut only
right before a space that follows a non-space character (see :func:`pieces`): the whitespace run
goes with the word after it, so a tokenizer that splits words at whitespace before anything else
(BERT's WordPiece, as the embedded one) gives exactly the tokens and word ids of the whole text.

A tokenizer whose post-processor adds no special token but that has an end-of-text token (GPT-2's
``<|endoftext|>``) gets that token at the end of each document (word id -1), as GPT-2 was trained:
without it a causal LM would read documents run together with nothing between them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from kfnlp.errors import ConfigError

IGNORE_INDEX = -100  # label value that the loss ignores (torch CrossEntropyLoss default)
PIECE_CHARS = 100_000  # a longer document is tokenized in pieces of about this many characters
BATCH_CHARS = 2_000_000  # characters per batch given to the encoder (bounds the encodings alive at once)


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


def _backend(tokenizer):
    if not getattr(tokenizer, "is_fast", False):
        raise ConfigError("preprocessing needs a fast tokenizer (it keeps word ids); this model has a slow one")
    backend = tokenizer.backend_tokenizer
    backend.no_truncation()
    backend.no_padding()
    return backend


def tokenize(tokenizer, documents: list[str], batch_size: int = 2000) -> TokenStream:
    """Tokenize with the backend's parallel batch encoder, keeping word ids."""
    backend = _backend(tokenizer)
    end = _end_of_document(tokenizer, backend)
    ids_parts: list[np.ndarray] = []
    word_parts: list[np.ndarray] = []
    lengths = np.empty(len(documents), dtype=np.int64)
    offset = 0
    for start in range(0, len(documents), batch_size):
        for i, enc in enumerate(backend.encode_batch(documents[start : start + batch_size]), start=start):
            ids = np.asarray([*enc.ids, *end], dtype=np.int32)
            words = np.asarray([-1 if w is None else w for w in enc.word_ids] + [-1] * len(end), dtype=np.int64)
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

    return datasets.Dataset(rows_table(columns))


def rows_table(columns: dict[str, np.ndarray]):
    """A ``pyarrow.Table`` of fixed-size list columns from (n, length) arrays."""
    import pyarrow as pa

    return pa.table(
        {
            name: pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), values.shape[1])
            for name, values in columns.items()
        }
    )


def chunk_columns(chunks: Chunks) -> dict[str, np.ndarray]:
    """The chunk dataset's columns: input_ids, attention_mask, word_ids, labels (= input_ids)."""
    return {
        "input_ids": chunks.input_ids,
        "attention_mask": np.ones(chunks.input_ids.shape, dtype=np.int8),
        "word_ids": chunks.word_ids,
        "labels": chunks.input_ids,
    }


def to_dataset(chunks: Chunks):
    """The chunk dataset of :func:`chunk_columns`."""
    return rows_dataset(chunk_columns(chunks))


@dataclass
class Segment:
    """Consecutive tokens of one document (all of it, or a piece of a long one)."""

    input_ids: np.ndarray  # int32
    word_ids: np.ndarray  # int64, numbered from 0 in the segment, -1 on special tokens
    ends_document: bool


def pieces(text: str, size: int = PIECE_CHARS) -> list[str]:
    """``text`` cut into pieces of about ``size`` characters, each cut right before a space that
    follows a non-space character (the last such space within ``size`` characters, else the first
    after). A text with no such space stays whole."""
    out = []
    start = 0
    while len(text) - start > size:
        cut = _cut_before(text, start + 1, start + size, backwards=True) or _cut_before(text, start + size, len(text))
        if cut is None:
            break
        out.append(text[start:cut])
        start = cut
    out.append(text[start:])
    return out


def _cut_before(text: str, lo: int, hi: int, backwards: bool = False) -> int | None:
    """The position in [lo, hi) of a space whose previous character is not whitespace, or None."""
    find = text.rfind if backwards else text.find
    at = find(" ", lo, hi)
    while at != -1:
        if not text[at - 1].isspace():
            return at
        at = text.rfind(" ", lo, at) if backwards else text.find(" ", at + 1, hi)
    return None


def _segment(enc, prefix=(), suffix=(), ends_document: bool = True) -> Segment:
    words = [-1] * len(prefix) + [-1 if w is None else w for w in enc.word_ids] + [-1] * len(suffix)
    ids = [*prefix, *enc.ids, *suffix] if prefix or suffix else enc.ids
    return Segment(np.asarray(ids, dtype=np.int32), np.asarray(words, dtype=np.int64), ends_document)


def _special_tokens(backend) -> tuple[list[int], list[int]]:
    """The special token ids the post-processor puts before and after a single sequence ([CLS], [SEP])."""
    probe = backend.post_process(backend.encode("a", add_special_tokens=False))
    content = [i for i, special in enumerate(probe.special_tokens_mask) if not special]
    if not content:
        return list(probe.ids), []
    return list(probe.ids[: content[0]]), list(probe.ids[content[-1] + 1 :])


def _end_of_document(tokenizer, backend) -> list[int]:
    """What to append to each encoded document: the eos token when the post-processor adds no special
    token and the tokenizer has one (GPT-2), else nothing (the post-processor's tokens do the job)."""
    prefix, suffix = _special_tokens(backend)
    eos = getattr(tokenizer, "eos_token_id", None)
    return [eos] if not prefix and not suffix and isinstance(eos, int) else []


def segments(
    tokenizer, documents: Iterable[str], batch_size: int = 2000, batch_chars: int = BATCH_CHARS
) -> Iterator[Segment]:
    """The documents tokenized as :func:`tokenize` does, in batches of at most ``batch_size``
    documents or ``batch_chars`` characters; a document longer than :data:`PIECE_CHARS` comes
    as several segments (its :func:`pieces`, tokenized without special tokens, which the first
    and last segment get, as the last gets the end-of-document eos)."""
    backend = _backend(tokenizer)
    end = _end_of_document(tokenizer, backend)
    batch: list[str] = []
    chars = 0
    for document in documents:
        if len(document) > PIECE_CHARS:
            yield from (_segment(enc, suffix=end) for enc in backend.encode_batch(batch))
            batch, chars = [], 0
            yield from _long_document(backend, document, batch_chars, end)
            continue
        batch.append(document)
        chars += len(document)
        if len(batch) >= batch_size or chars >= batch_chars:
            yield from (_segment(enc, suffix=end) for enc in backend.encode_batch(batch))
            batch, chars = [], 0
    if batch:
        yield from (_segment(enc, suffix=end) for enc in backend.encode_batch(batch))


def _long_document(backend, document: str, batch_chars: int, end: list[int]) -> Iterator[Segment]:
    prefix, suffix = _special_tokens(backend)
    suffix = [*suffix, *end]
    parts = pieces(document)
    per_batch = max(1, batch_chars // PIECE_CHARS)
    for first in range(0, len(parts), per_batch):
        encodings = backend.encode_batch(parts[first : first + per_batch], add_special_tokens=False)
        for i, enc in enumerate(encodings, start=first):
            last = i == len(parts) - 1
            yield _segment(enc, prefix if i == 0 else (), suffix if last else (), ends_document=last)


class Chunker:
    """Cuts one split's segments into ``chunk_size`` rows as they come, with :func:`chunk`'s result
    for the whole split: word ids made unique across its documents, documents in groups of
    ``group_size`` (0: one group), each group's short remainder dropped. Full rows go to ``emit``
    once at least ``batch_tokens`` tokens wait, and at the end of each group."""

    def __init__(self, chunk_size: int, group_size: int, emit: Callable[[Chunks], None], batch_tokens: int = 1 << 20):
        if chunk_size < 2:
            raise ConfigError(f"chunk_size must be at least 2, got {chunk_size}")
        self.chunk_size, self.group_size, self.emit, self.batch_tokens = chunk_size, group_size, emit, batch_tokens
        self.documents = self.tokens = self.chunks = 0
        self._ids: list[np.ndarray] = []
        self._words: list[np.ndarray] = []
        self._waiting = 0
        self._offset = 0
        self._in_group = 0

    def add(self, segment: Segment) -> None:
        words = segment.word_ids
        valid = words >= 0
        if valid.any():
            words[valid] += self._offset
            self._offset = int(words[valid].max()) + 1
        self._ids.append(segment.input_ids)
        self._words.append(words)
        self._waiting += len(words)
        self.tokens += len(words)
        if segment.ends_document:
            self.documents += 1
            self._in_group += 1
        if self.group_size and self._in_group == self.group_size:
            self._cut(end_of_group=True)
            self._in_group = 0
        elif self._waiting >= self.batch_tokens:
            self._cut(end_of_group=False)

    def close(self) -> None:
        """The end of the split: the last group's remainder is dropped."""
        self._cut(end_of_group=True)

    def _cut(self, end_of_group: bool) -> None:
        if not self._ids:
            return
        ids, words = np.concatenate(self._ids), np.concatenate(self._words)
        usable = len(ids) // self.chunk_size * self.chunk_size
        if usable:
            self.emit(Chunks(ids[:usable].reshape(-1, self.chunk_size), words[:usable].reshape(-1, self.chunk_size)))
            self.chunks += usable // self.chunk_size
        rest = [] if end_of_group or usable == len(ids) else [usable]
        self._ids = [ids[usable:].copy()] if rest else []
        self._words = [words[usable:].copy()] if rest else []
        self._waiting = len(ids) - usable if rest else 0
