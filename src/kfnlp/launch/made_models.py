"""Making the builtin models that no package ships: ``builtin:gpt2-imdb``, a tiny GPT-2 trained from
scratch here, as the course's "training a causal language model from scratch" chapter does.

The recipe (:data:`kfnlp.assets.MADE_MODELS`) runs the stages themselves: a byte-level BPE tokenizer
trained on the corpus's train documents (:mod:`kfnlp.data.bpe`), ``preprocess`` with that tokenizer,
``train-clm`` with ``from_scratch``, then ``evaluate-clm`` on the held-out chunks for the record.
Everything is built in a scratch directory beside the target and committed by one rename, under a
file lock: of two processes making it at once, one makes it and the other waits and reuses it; a
make that dies leaves no directory that looks made.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kfnlp.assets import BUILTIN_PREFIX, MADE_MODELS, MadeModel, made_builtin, made_model_dir
from kfnlp.config import fields_of_kind
from kfnlp.errors import ConfigError

log = logging.getLogger(__name__)

RECORD_SUFFIX = ".json"  # beside the made directory: the recipe, the time it took, perplexity and samples
EVAL_CHUNKS = 500  # held-out chunks the record's perplexity is measured on (evaluate-clm's default)


def record_file(name: str) -> Path:
    """The make record of builtin ``name`` under the current recipe."""
    target = made_model_dir(name)
    return target.parent / f"{target.name}{RECORD_SUFFIX}"


def read_record(name: str) -> dict[str, Any] | None:
    """What making ``name`` measured, or None when it is not made (or its record is unreadable)."""
    if not made_model_dir(name).is_dir():
        return None
    try:
        return json.loads(record_file(name).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def make(name: str) -> Path:
    """Make builtin ``name`` unless it is made already; return its directory."""
    if name.startswith(BUILTIN_PREFIX):
        name = name[len(BUILTIN_PREFIX) :]
    if name not in MADE_MODELS:
        raise ConfigError(
            f"unknown made builtin {name!r}; made builtins: "
            + ", ".join(BUILTIN_PREFIX + n for n in sorted(MADE_MODELS))
        )
    target = made_model_dir(name)
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _locked(target, name):
        if target.is_dir():
            log.info("%s%s: made by another process meanwhile: %s", BUILTIN_PREFIX, name, target)
            return target
        _remove_leftovers(target)
        work = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".making", dir=target.parent))
        try:
            with contextlib.redirect_stdout(sys.stderr):  # the Trainer prints its log dicts: stdout stays the answer's
                record = _make(name, MADE_MODELS[name], work)
            scratch_record = work / "record.json"
            scratch_record.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
            os.replace(scratch_record, record_file(name))
            os.rename(work / "model", target)  # the commit: resolve_model_ref sees the directory only now
        finally:
            shutil.rmtree(work, ignore_errors=True)
    log.info(
        "%s%s: made in %.0f s (perplexity %.1f on %d held-out IMDB chunks): %s",
        BUILTIN_PREFIX,
        name,
        record["seconds"],
        record["perplexity"],
        record["eval_chunks"],
        target,
    )
    return target


def make_missing(config: Any) -> list[str]:
    """Make every made builtin that a model field of ``config`` names and that is not made yet (``kfnlp run``
    does this before the pipeline starts); return their names."""
    names = [made_builtin(value) for _, value, _ in fields_of_kind(config, "model")]
    missing = [n for n in dict.fromkeys(names) if n is not None and not made_model_dir(n).is_dir()]
    for name in missing:
        log.info(
            "kfnlp: %s%s is not made on this machine yet; making it first (%s on 2 cores, once)",
            BUILTIN_PREFIX,
            name,
            MADE_MODELS[name].minutes,
        )
        make(name)
    return missing


@contextlib.contextmanager
def _locked(target: Path, name: str) -> Iterator[None]:
    """This host's exclusive right to make ``target``; waits (without limit: a make takes minutes) for another maker."""
    with open(target.parent / f".{target.name}.lock", "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("%s%s: another process is making it; waiting for it", BUILTIN_PREFIX, name)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _remove_leftovers(target: Path) -> None:
    """Scratch directories of makes that died (the lock is held: no live maker is using one)."""
    for leftover in target.parent.glob(f".{target.name}.*.making"):
        shutil.rmtree(leftover, ignore_errors=True)


def _make(name: str, made: MadeModel, work: Path) -> dict[str, Any]:
    """Run ``made``'s recipe in ``work``: tokenizer, dataset, model (``work/model``), evaluation; the record."""
    from kfnlp.data.bpe import train_bpe
    from kfnlp.data.corpus import open_corpus
    from kfnlp.stages.evaluate_clm import EvaluateClmConfig, evaluate_clm
    from kfnlp.stages.preprocess import PreprocessConfig, preprocess, split_of_documents
    from kfnlp.stages.train_clm import TrainClmConfig, train_clm

    recipe = made.recipe
    started = time.monotonic()
    what = f"{BUILTIN_PREFIX}{name}"
    log.info("%s: making %s (%s)", what, made.about, made.minutes)
    prep = PreprocessConfig(**recipe["preprocess"])
    bpe = recipe["tokenizer"]
    corpus = open_corpus(prep.source)
    member = split_of_documents(sum(1 for _ in corpus.documents()), prep)
    train_texts = (text for text, split in zip(corpus.documents(), member, strict=True) if split == 1)  # not held-out
    log.info(
        "%s: 1/4 byte-level BPE tokenizer (vocab %d) on the %s train documents", what, bpe["vocab_size"], prep.source
    )
    tokenizer = train_bpe(
        train_texts, vocab_size=bpe["vocab_size"], min_frequency=bpe["min_frequency"], model_max_length=prep.chunk_size
    )
    tokenizer.save_pretrained(str(work / "tokenizer"))
    log.info("%s: 2/4 preprocess %s into chunks of %d", what, prep.source, prep.chunk_size)
    dataset = preprocess(str(work / "dataset"), prep, tokenizer=str(work / "tokenizer"))
    train = TrainClmConfig(**recipe["train_clm"])
    log.info(
        "%s: 3/4 train a GPT-2 from scratch (%d layers, %d heads, hidden %d) for %d steps of %d chunks",
        what,
        train.scratch_layers,
        train.scratch_heads,
        train.scratch_hidden,
        train.max_steps,
        train.batch_size,
    )
    trained = train_clm(str(work / "dataset"), str(work / "model"), train, base_model=str(work / "tokenizer"))
    log.info("%s: 4/4 perplexity on the held-out chunks", what)
    result = evaluate_clm(
        str(work / "model"), str(work / "dataset"), str(work / "evaluation"), EvaluateClmConfig(max_chunks=EVAL_CHUNKS)
    )
    metrics = result["metrics"]
    return {
        "name": what,
        "version": made.version,
        "recipe": recipe,
        "seconds": round(time.monotonic() - started, 1),
        "train_seconds": (trained.get("training") or {}).get("train_runtime_s"),
        "train_loss": (trained.get("training") or {}).get("train_loss"),
        "dataset": dataset.get("counts"),
        "perplexity": metrics["perplexity"],
        "eval_loss": metrics["eval_loss"],
        "eval_chunks": metrics["eval_chunks"],
        "samples": result["samples"],
    }
