"""Dataset artifacts (kind ``dataset``), written by preprocess and preprocess-ner.

Layout: ``data/`` (a ``datasets.DatasetDict`` saved to disk, one entry per split) and
``tokenizer/`` (the tokenizer the ids come from); a labelled dataset (NER or text
classification, manifest ``task``) adds ``labels.json`` (label list and maps) and
``corpus.jsonl`` (its training texts, one ``{"text": ...}`` per line, for task-adaptive
masked-LM pretraining).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from kfnlp.artifacts.opened import Opened
from kfnlp.errors import InputError
from kfnlp.storage import write_artifact

KIND = "dataset"
DATA_DIR = "data"
TOKENIZER_DIR = "tokenizer"
LABELS_FILE = "labels.json"
CORPUS_FILE = "corpus.jsonl"
CORPUS_TEXT = "text"  # the field of each corpus.jsonl line


class Dataset(Opened):
    """A dataset artifact opened for reading."""

    def splits(self):
        """The ``datasets.DatasetDict`` of the splits."""
        import datasets

        return datasets.load_from_disk(str(self.path / DATA_DIR))

    @property
    def tokenizer_path(self) -> str:
        return str(self.path / TOKENIZER_DIR)

    @property
    def labels_path(self) -> Path:
        """The label file of a labelled dataset (a model trained on it carries a copy)."""
        return self.path / LABELS_FILE

    def labels(self) -> list[str]:
        """The label list of a labelled dataset, in label-id order."""
        return json.loads(self.labels_path.read_text(encoding="utf-8"))["labels"]

    @property
    def corpus_path(self) -> Path:
        """The training text of a labelled dataset (JSON lines, field :data:`CORPUS_TEXT`)."""
        return self.path / CORPUS_FILE


def open_dataset(uri: str) -> Dataset:
    return Dataset.open(uri, KIND)


# task of a labelled dataset -> (what it is called, the stage that writes it)
LABELLED_TASKS = {"ner": ("an NER", "preprocess-ner"), "cls": ("a text-classification", "preprocess-cls")}


def open_labelled_dataset(uri: str, task: str) -> Dataset:
    """A dataset artifact that must be a labelled one of ``task`` (``ner`` or ``cls``)."""
    dataset = open_dataset(uri)
    if dataset.manifest.get("task") != task:
        what, writer = LABELLED_TASKS[task]
        raise InputError(f"{uri}: a {dataset.manifest.get('task')} dataset, not {what} one ({writer} writes those)")
    return dataset


def open_ner_dataset(uri: str) -> Dataset:
    """A dataset artifact that must be an NER one."""
    return open_labelled_dataset(uri, "ner")


def open_cls_dataset(uri: str) -> Dataset:
    """A dataset artifact that must be a text-classification one."""
    return open_labelled_dataset(uri, "cls")


class RowsFile:
    """One split's rows appended in batches to an Arrow file at ``path`` (in a scratch directory), then
    opened memory-mapped: a split that never has to fit in memory, for :func:`write_dataset`."""

    def __init__(self, path: Path):
        self.path = path
        self._writer = None

    def write(self, columns: dict[str, Any]) -> None:
        """Append rows: (n, length) arrays by column name (always the same columns)."""
        import pyarrow as pa

        from kfnlp.data.chunking import rows_table

        table = rows_table(columns)
        if self._writer is None:
            self._writer = pa.ipc.new_stream(str(self.path), table.schema)
        self._writer.write_table(table)

    def dataset(self):
        """The rows written, as a memory-mapped ``datasets.Dataset`` (at least one write is needed)."""
        import datasets

        self._writer.close()
        return datasets.Dataset.from_file(str(self.path))


def write_dataset(output: str, splits: dict[str, Any], tokenizer, started: float, /, **facts: Any) -> dict[str, Any]:
    """Write the ``splits`` (name -> ``datasets.Dataset``) and ``tokenizer``; return the manifest. Its
    ``seconds`` count from ``started`` (``time.monotonic()`` when the stage started) until the data is written."""
    with write_artifact(output, kind=KIND) as out:
        _write_data(out.path, splits, tokenizer)
        out.info.update(facts, seconds=_since(started))
        manifest = dict(out.info)
    return manifest


def write_labelled_dataset(
    output: str,
    splits: dict[str, Any],
    tokenizer,
    labels: list[str],
    corpus: Iterable[str],
    started: float,
    /,
    **facts: Any,
) -> dict[str, Any]:
    """Like :func:`write_dataset`, plus the label file and the training text ``corpus`` (one text a sentence)."""
    with write_artifact(output, kind=KIND) as out:
        _write_data(out.path, splits, tokenizer)
        (out.path / LABELS_FILE).write_text(
            json.dumps(
                {
                    "labels": labels,
                    "id2label": dict(enumerate(labels)),
                    "label2id": {n: i for i, n in enumerate(labels)},
                },
                indent=2,
            ),
            encoding="utf-8",
        )
        with open(out.path / CORPUS_FILE, "w", encoding="utf-8") as handle:
            for text in corpus:
                handle.write(json.dumps({CORPUS_TEXT: text}, ensure_ascii=False) + "\n")
        out.info.update(facts, seconds=_since(started))
        manifest = dict(out.info)
    return manifest


def _since(started: float) -> float:
    return round(time.monotonic() - started, 3)


def _write_data(path: Path, splits: dict[str, Any], tokenizer) -> None:
    import datasets

    datasets.DatasetDict(splits).save_to_disk(str(path / DATA_DIR))
    tokenizer.save_pretrained(str(path / TOKENIZER_DIR))
