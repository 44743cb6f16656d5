"""preprocess (MLM): corpus -> tokenized, chunked train/test Arrow dataset."""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from kfnlp.artifacts import CORPUS_TEXT, open_labelled_dataset, tokenizer_fingerprint, write_dataset
from kfnlp.artifacts.dataset import RowsFile
from kfnlp.config import check_seed, option, sequence_length_fields
from kfnlp.data import chunking
from kfnlp.data.corpus import CLS_TRAIN_SOURCE, NER_TRAIN_SOURCE, CorpusReader, open_corpus
from kfnlp.data.unknown_tokens import UnknownTokens
from kfnlp.errors import InputError
from kfnlp.modeling import check_position_limit, load_tokenizer
from kfnlp.stages.entry import Input, Stage
from kfnlp.storage import fingerprint

log = logging.getLogger(__name__)


@dataclass
class PreprocessConfig:
    """How to turn a corpus into training chunks."""

    source: str = option(
        "builtin:imdb", "file, directory, glob, hf:DATASET, builtin:imdb, ner:train or cls:train", kind="source"
    )
    text_column: str = option("text", "dotted path for nested fields (answers.text)")
    hf_config: str | None = option(None, "configuration (subset) name of an hf: dataset")
    hf_split: str = option("train", "split of an hf: dataset to read")
    chunk_size: int = option(
        128, "tokens per training chunk (at least 2, at most the model's position limit)", sequence_length=True
    )
    group_size: int = option(1000, "documents concatenated before chunking (recipe: map batch size)")
    max_documents: int | None = option(None, "seeded downsample of the corpus")
    test_size: float = option(0.1, "share of documents held out for evaluation")
    seed: int = option(42, "seed for the downsample and the train/test split")

    def __post_init__(self):
        if not 0.0 < self.test_size < 1.0:
            raise ValueError(f"test_size must be between 0 and 1 (exclusive), got {self.test_size}")
        if self.chunk_size < 2:
            raise ValueError(f"chunk_size must be at least 2, got {self.chunk_size}")
        if self.max_documents is not None and self.max_documents < 2:
            raise ValueError(f"max_documents must be at least 2, got {self.max_documents}")
        if self.group_size < 0:
            raise ValueError(f"group_size must be >= 0, got {self.group_size}")
        check_seed(self.seed)


# a source read from the pipeline's labelled dataset -> (its task, the stage that writes it, the pipeline that passes it)
LABELLED_SOURCES = {
    NER_TRAIN_SOURCE: ("ner", "preprocess-ner", "adapt-then-ner"),
    CLS_TRAIN_SOURCE: ("cls", "preprocess-cls", "adapt-then-cls"),
}


def with_corpus(config: PreprocessConfig, labelled_dataset: str | None) -> PreprocessConfig:
    """Resolve ``source: ner:train`` (``cls:train``) to the training texts of a preprocess-ner
    (preprocess-cls) dataset: task-adaptive pretraining on exactly the text the task model trains
    on (never its validation or test texts)."""
    if config.source not in LABELLED_SOURCES:
        return config
    task, writer, pipeline = LABELLED_SOURCES[config.source]
    if labelled_dataset is None:
        raise InputError(
            f"preprocess.source {config.source} needs a {writer} dataset (the {pipeline} pipeline passes it)"
        )
    dataset = open_labelled_dataset(labelled_dataset, task)
    return replace(config, source=str(dataset.corpus_path), text_column=CORPUS_TEXT)


def split_documents(n: int, config: PreprocessConfig) -> tuple[np.ndarray, np.ndarray]:
    """Seeded downsample and train/test split of document indices (order kept)."""
    rng = np.random.default_rng(config.seed)
    order = rng.permutation(n)
    if config.max_documents is not None:
        order = order[: config.max_documents]
    n_test = max(1, int(round(len(order) * config.test_size)))
    if n_test >= len(order):
        raise InputError(f"{config.source}: only {len(order)} documents, too few to hold out a test split")
    return np.sort(order[n_test:]), np.sort(order[:n_test])


SPLITS = ("train", "test")


def split_of_documents(n: int, config: PreprocessConfig) -> np.ndarray:
    """For each of ``n`` documents, 1 + the index in :data:`SPLITS` of its split, or 0 if the downsample drops it."""
    train, test = split_documents(n, config)
    member = np.zeros(n, dtype=np.int8)
    member[train], member[test] = 1, 2
    return member


def _kept(corpus: CorpusReader, member: np.ndarray) -> Iterator[str]:
    """The documents the split keeps, in corpus order, from a second reading of the corpus."""
    documents = corpus.documents()
    count = 0
    for keep in member:
        document = next(documents, None)
        if document is None:
            break
        count += 1
        if keep:
            yield document
    if count < len(member) or next(documents, None) is not None:  # not what the first reading counted
        raise InputError(f"{corpus.source}: changed while preprocess read it; run it again")


def preprocess(output: str, config: PreprocessConfig, tokenizer: str) -> dict:
    """Read, split, tokenize and chunk; write a dataset artifact to ``output``.

    Bounded memory: the corpus is read twice, once to count its documents (the split needs the
    count) and once to tokenize them in batches; each split's rows are cut as the tokens come and
    written to a scratch Arrow file, which :func:`write_dataset` then copies into the artifact."""
    started = time.monotonic()
    corpus = open_corpus(config.source, config.text_column, config.hf_config, config.hf_split)
    tok = load_tokenizer(tokenizer)
    check_position_limit(tokenizer, sequence_length_fields(config, prefix="preprocess."))
    n = sum(1 for _ in corpus.documents())
    if n == 0:
        raise InputError(f"{config.source}: no text found (column {config.text_column!r})")
    member = split_of_documents(n, config)
    with tempfile.TemporaryDirectory(prefix="kfnlp-preprocess-") as scratch:
        files = {name: RowsFile(Path(scratch) / f"{name}.arrow") for name in SPLITS}
        chunkers = {
            name: chunking.Chunker(
                config.chunk_size, config.group_size, lambda rows, f=files[name]: f.write(chunking.chunk_columns(rows))
            )
            for name in SPLITS
        }
        unknown = {name: UnknownTokens(tok) for name in SPLITS}
        splits_of_kept = iter(member[member > 0])
        split = int(next(splits_of_kept))
        for segment in chunking.segments(tok, _kept(corpus, member)):
            unknown[SPLITS[split - 1]].add(segment.input_ids)
            chunkers[SPLITS[split - 1]].add(segment)
            if segment.ends_document:
                split = int(next(splits_of_kept, 0))
        splits, counts = {}, {}
        for name, chunker in chunkers.items():
            chunker.close()
            if chunker.chunks == 0:
                raise InputError(
                    f"{config.source}: the {name} split ({chunker.documents} documents, {chunker.tokens} tokens) "
                    f"yields no chunk of {config.chunk_size} tokens; use more text or a smaller chunk_size"
                )
            splits[name] = files[name].dataset()
            counts[name] = {
                "documents": chunker.documents,
                "tokens": chunker.tokens,
                "chunks": chunker.chunks,
                "chunk_tokens": chunker.chunks * config.chunk_size,
                **unknown[name].facts("preprocess", name),
            }
            log.info(
                "preprocess: %s: %d documents -> %d chunks of %d",
                name,
                chunker.documents,
                chunker.chunks,
                config.chunk_size,
            )
        tok_fp = tokenizer_fingerprint(tok)
        return write_dataset(
            output,
            splits,
            tok,
            started,
            task="mlm",
            fingerprint=fingerprint(corpus.origin, asdict(config), tok_fp),
            tokenizer=tokenizer,
            tokenizer_fingerprint=tok_fp,
            config=asdict(config),
            counts=counts,
        )


STAGE = Stage(
    name="preprocess",
    config=PreprocessConfig,
    function=preprocess,
    help="read, split, tokenize and chunk a corpus",
    inputs=(
        Input("output", "dataset artifact directory to write", required=True),
        Input(
            "tokenizer",
            "model whose tokenizer to use (Hub id, path or builtin:splade-tiny)",
            default="builtin:splade-tiny",
            kind="model",
        ),
    ),
    example="max_documents=1000",
    hub=True,
)
