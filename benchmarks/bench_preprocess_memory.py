"""Benchmark the memory preprocess needs per byte of corpus.

Two synthetic corpora of about ``--mb`` MB each (English-like words, one document a line of a
``.txt`` file):

  one-long   one document of ``--mb`` MB, plus 19 short ones (a test split needs documents)
  many-small documents of about 600 bytes

Each corpus is preprocessed (the embedded tokenizer, default settings) in a fresh process, which
reports the growth of its peak resident set (``ru_maxrss``) from just before the stage runs
(imports done, tokenizer loaded) to its end, in bytes per input byte, and the seconds the stage took.

Usage: python benchmarks/bench_preprocess_memory.py [--mb 50] [--corpus one-long many-small]
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path

from common import log

WORDS = [
    "the",
    "film",
    "was",
    "good",
    "bad",
    "and",
    "actors",
    "were",
    "fine",
    "story",
    "plot",
    "director",
    "camera",
    "scene",
    "music",
    "however",
    "although",
    "unbelievably",
    "character",
    "performance",
    "screenplay,",
    "dialogue.",
    "audience!",
    "ending?",
    "1984",
    "café",
]

CHILD = r"""
import json, resource, sys, time
from kfnlp.modeling import load_tokenizer
from kfnlp.stages.preprocess import PreprocessConfig, preprocess

source, output, test_size = sys.argv[1], sys.argv[2], float(sys.argv[3])
load_tokenizer("builtin:splade-tiny")
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
started = time.perf_counter()
manifest = preprocess(output, PreprocessConfig(source=source, test_size=test_size), "builtin:splade-tiny")
seconds = time.perf_counter() - started
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"before": before, "peak": peak, "seconds": seconds, "counts": manifest["counts"]}))
"""


def text(rng: random.Random, size: int) -> str:
    """About ``size`` characters of space-separated words."""
    words = []
    length = 0
    while length < size:
        word = rng.choice(WORDS)
        words.append(word)
        length += len(word) + 1
    return " ".join(words)


def write_corpus(kind: str, megabytes: float, path: Path) -> int:
    rng = random.Random(0)
    size = int(megabytes * 1_000_000)
    with open(path, "w", encoding="utf-8") as handle:
        if kind == "one-long":
            handle.write(text(rng, size) + "\n")
            for _ in range(19):
                handle.write(text(rng, 1000) + "\n")
        else:
            written = 0
            while written < size:
                line = text(rng, 600) + "\n"
                handle.write(line)
                written += len(line)
    return path.stat().st_size


def measure(kind: str, megabytes: float, work: Path) -> dict:
    source = work / f"{kind}.txt"
    size = write_corpus(kind, megabytes, source)
    test_size = 0.05 if kind == "one-long" else 0.1
    log(f"{kind}: {size / 1e6:.1f} MB corpus, preprocessing")
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(source), str(work / f"{kind}-out"), str(test_size)],
        capture_output=True,
        text=True,
        check=True,
    )
    facts = json.loads(result.stdout.strip().splitlines()[-1])
    return {"corpus": kind, "input_bytes": size, **facts, "per_byte": (facts["peak"] - facts["before"]) / size}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=float, default=50.0, help="corpus size in MB")
    parser.add_argument("--corpus", nargs="+", default=["one-long", "many-small"], choices=["one-long", "many-small"])
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-preprocess-") as tmp:
        rows = [measure(kind, args.mb, Path(tmp)) for kind in args.corpus]
    print("| corpus | input MB | peak growth MB | bytes of peak per input byte | seconds | tokens |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        tokens = sum(split["tokens"] for split in row["counts"].values())
        print(
            f"| {row['corpus']} | {row['input_bytes'] / 1e6:.1f} | {(row['peak'] - row['before']) / 1e6:.0f} "
            f"| {row['per_byte']:.1f} | {row['seconds']:.1f} | {tokens:,} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
