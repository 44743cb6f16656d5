"""preprocess in bounded memory: streamed reading, tokenizing and chunking give exactly the
in-memory result, a long document is tokenized in pieces without changing a token, and a large
document preprocesses within a bound of memory per input byte."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import datasets
import numpy as np
import pytest

from kfnlp.artifacts import tokenizer_fingerprint
from kfnlp.data import chunking
from kfnlp.data.corpus import load_corpus
from kfnlp.modeling import load_tokenizer
from kfnlp.stages.preprocess import PreprocessConfig, preprocess, split_documents
from kfnlp.storage import fingerprint

MODEL = "builtin:splade-tiny"
WORDS = [
    "the",
    "film",
    "was",
    "good,",
    "bad.",
    "and",
    "actors",
    "were",
    "fine!",
    "unbelievably",
    "café",
    "1984",
    "naïve",
    "中文",
    "x́y",
]


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer(MODEL)


def words(rng: random.Random, n: int) -> str:
    """``n`` words with assorted whitespace between them."""
    return "".join(rng.choice(WORDS) + rng.choice([" ", "  ", "\t", " \t "]) for _ in range(n)).rstrip()


def in_memory(source: str, config: PreprocessConfig, tok) -> tuple[dict, dict]:
    """What preprocess computed before it streamed: the whole corpus, each split tokenized and chunked at once."""
    corpus = load_corpus(source)
    splits, counts = {}, {}
    for name, idx in zip(("train", "test"), split_documents(len(corpus.documents), config), strict=True):
        stream = chunking.tokenize(tok, [corpus.documents[i] for i in idx])
        chunks = chunking.chunk(stream, config.chunk_size, config.group_size)
        splits[name] = chunking.to_dataset(chunks)
        text_ids = tok([corpus.documents[i] for i in idx], add_special_tokens=False)["input_ids"]
        unknown = sum(ids.count(tok.unk_token_id) for ids in text_ids)
        subtokens = sum(len(ids) for ids in text_ids)
        counts[name] = {
            "documents": len(idx),
            "tokens": int(stream.doc_lengths.sum()),
            "chunks": len(chunks),
            "chunk_tokens": len(chunks) * config.chunk_size,
            "unknown_tokens": unknown,
            "subtokens": subtokens,
            "unknown_share": round(unknown / subtokens, 6),
        }
    return splits, {
        "counts": counts,
        "fingerprint": fingerprint(corpus.origin, asdict(config), tokenizer_fingerprint(tok)),
    }


@pytest.mark.parametrize(
    "chunk_size, group_size, max_documents", [(16, 3, None), (32, 0, None), (24, 1000, 40), (7, 1, None)]
)
def test_streamed_output_equals_the_in_memory_reference(tmp_path, tok, chunk_size, group_size, max_documents):
    rng = random.Random(chunk_size)
    docs = [words(rng, rng.randint(1, 60)) for _ in range(60)]
    docs[7] = words(rng, 40_000)  # longer than a piece: tokenized in pieces
    source = tmp_path / "corpus.txt"
    source.write_text("\n".join(docs), encoding="utf-8")
    config = PreprocessConfig(
        source=str(source), chunk_size=chunk_size, group_size=group_size, max_documents=max_documents, test_size=0.2
    )
    manifest = preprocess(str(tmp_path / "ds"), config, MODEL)
    splits, expected = in_memory(str(source), config, tok)
    assert manifest["counts"] == expected["counts"]
    assert manifest["fingerprint"] == expected["fingerprint"]
    written = datasets.load_from_disk(str(tmp_path / "ds" / "data"))
    for name, reference in splits.items():
        assert written[name].features == reference.features
        assert written[name].data.table.equals(reference.data.table), name
    # and the same bytes on disk as the in-memory datasets saved
    datasets.DatasetDict(splits).save_to_disk(str(tmp_path / "reference"))
    for name in splits:
        ours = sorted((tmp_path / "ds" / "data" / name).glob("*.arrow"))
        theirs = sorted((tmp_path / "reference" / name).glob("*.arrow"))
        assert [p.read_bytes() for p in ours] == [p.read_bytes() for p in theirs]


def test_a_long_document_in_pieces_gives_the_whole_documents_tokens(tok):
    rng = random.Random(1)
    text = words(rng, 100_000) + " \t\n  end\u00a0 x \u3000y"
    assert len(text) > 3 * chunking.PIECE_CHARS
    assert "".join(chunking.pieces(text)) == text and len(chunking.pieces(text)) > 3
    whole = chunking.tokenize(tok, [text])
    segments = list(chunking.segments(tok, [text]))
    assert len(segments) > 3 and [s.ends_document for s in segments] == [False] * (len(segments) - 1) + [True]
    chunker_rows = []
    chunker = chunking.Chunker(4, 0, chunker_rows.append, batch_tokens=1000)
    for segment in segments:
        chunker.add(segment)
    chunker.close()
    assert chunker.tokens == int(whole.doc_lengths.sum()) and chunker.documents == 1
    ids = np.concatenate([c.input_ids.reshape(-1) for c in chunker_rows])
    word_ids = np.concatenate([c.word_ids.reshape(-1) for c in chunker_rows])
    usable = len(whole.input_ids) // 4 * 4
    assert np.array_equal(ids, whole.input_ids[:usable])
    assert np.array_equal(word_ids, whole.word_ids[:usable])


def test_pieces_cut_only_before_a_space_after_a_word():
    text = "aaaa    bbbb\tcccc dddd"
    for size in range(1, len(text) + 1):
        parts = chunking.pieces(text, size)
        assert "".join(parts) == text
        assert all(p[0] == " " and not prev[-1].isspace() for prev, p in zip(parts, parts[1:], strict=False))
    assert chunking.pieces("x" * 50, 10) == ["x" * 50]  # no space: one piece


@pytest.mark.parametrize("group_size", [0, 1, 2, 5])
def test_chunker_matches_chunk_whenever_it_flushes(group_size):
    rng = np.random.default_rng(group_size)
    lengths = rng.integers(0, 30, size=40)
    ids = [np.arange(n, dtype=np.int32) + 1000 * d for d, n in enumerate(lengths)]
    local = [np.where(np.arange(n) % 5 == 0, -1, np.arange(n) // 2).astype(np.int64) for n in lengths]
    unique, offset = [], 0  # chunk() takes word ids made unique across documents, as tokenize() makes them
    for w in local:
        w = w.copy()
        valid = w >= 0
        if valid.any():
            w[valid] += offset
            offset = int(w[valid].max()) + 1
        unique.append(w)
    expected = chunking.chunk(
        chunking.TokenStream(np.concatenate(ids), np.concatenate(unique), lengths.astype(np.int64)), 8, group_size
    )
    for batch_tokens in (1, 7, 64, 10_000):
        rows = []
        chunker = chunking.Chunker(8, group_size, rows.append, batch_tokens=batch_tokens)
        for d in range(len(lengths)):
            chunker.add(chunking.Segment(ids[d].copy(), local[d].copy(), ends_document=True))
        chunker.close()
        assert chunker.chunks == len(expected) > 0 and chunker.documents == len(lengths)
        assert np.array_equal(np.concatenate([r.input_ids for r in rows]), expected.input_ids), batch_tokens
        assert np.array_equal(np.concatenate([r.word_ids for r in rows]), expected.word_ids), batch_tokens


MEASURE = r"""
import json, resource, sys
from kfnlp.modeling import load_tokenizer
from kfnlp.stages.preprocess import PreprocessConfig, preprocess

load_tokenizer("builtin:splade-tiny")
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
manifest = preprocess(sys.argv[2], PreprocessConfig(source=sys.argv[1], test_size=0.25), "builtin:splade-tiny")
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"growth": peak - before, "counts": manifest["counts"]}))
"""


def test_a_20_mb_document_preprocesses_in_bounded_memory(tmp_path):
    """In a fresh process: the peak resident set grows by less than 40 bytes per input byte
    (it grew by about 135 before preprocess streamed)."""
    rng = random.Random(0)
    source = tmp_path / "long.txt"
    vocabulary = [w for w in WORDS if w.isascii()]
    with open(source, "w", encoding="utf-8") as handle:
        handle.write(" ".join(rng.choice(vocabulary) for _ in range(3_500_000)) + "\n")
        handle.write("\n".join(" ".join(rng.choice(vocabulary) for _ in range(200)) for _ in range(3)) + "\n")
    size = source.stat().st_size
    assert size > 20_000_000
    result = subprocess.run(
        [sys.executable, "-c", MEASURE, str(source), str(tmp_path / "ds")],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    facts = json.loads(result.stdout.strip().splitlines()[-1])
    assert sum(split["tokens"] for split in facts["counts"].values()) > 3_500_000
    assert facts["growth"] / size < 40, f"{facts['growth'] / size:.1f} bytes of peak per input byte"


def test_a_corpus_that_changes_between_its_two_readings_is_an_error(tmp_path, monkeypatch):
    from kfnlp.data import corpus as corpus_module
    from kfnlp.errors import InputError

    source = tmp_path / "c.txt"
    source.write_text("\n".join(f"document {i} with a few words" for i in range(20)), encoding="utf-8")
    read_file = corpus_module.read_file
    readings = []

    def growing(path: Path, column: str) -> list[str]:
        readings.append(path)
        return read_file(path, column) + (["one more"] if len(readings) > 1 else [])

    monkeypatch.setattr(corpus_module, "read_file", growing)
    with pytest.raises(InputError, match="changed while preprocess read it"):
        preprocess(str(tmp_path / "ds"), PreprocessConfig(source=str(source), chunk_size=4), MODEL)
