"""Model artifacts (kind ``model``), written by train-mlm, train-ner and train-cls: a plain Hugging Face
model directory (loadable by ``from_pretrained`` and ``pipeline()``) with ``training_summary.json``;
the manifest holds the lineage (base model, data fingerprints) and the training summary."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from kfnlp.artifacts.opened import Opened
from kfnlp.storage import write_artifact

KIND = "model"
TRAINING_SUMMARY_FILE = "training_summary.json"


class Model(Opened):
    """A model artifact opened for reading (load its weights with :mod:`kfnlp.modeling`)."""

    @property
    def training(self) -> dict[str, Any]:
        """The training summary (steps, losses, speed, config)."""
        return self.manifest.get("training", {})


def open_model(uri: str) -> Model:
    return Model.open(uri, KIND)


def write_model(
    output: str, model, tokenizer, training: dict[str, Any], /, copy: Iterable[Path] = (), **facts: Any
) -> dict[str, Any]:
    """Write ``model`` and ``tokenizer``, the files ``copy`` (same names) and the ``training``
    summary; the manifest gets ``facts`` and ``training``. Returns the manifest."""
    with write_artifact(output, kind=KIND) as out:
        model.save_pretrained(str(out.path))
        tokenizer.save_pretrained(str(out.path))
        for path in copy:
            shutil.copyfile(path, out.path / path.name)
        (out.path / TRAINING_SUMMARY_FILE).write_text(json.dumps(training, indent=2), encoding="utf-8")
        out.info.update(facts, training=training)
        manifest = dict(out.info)
    return manifest
