"""Eval-set artifacts (kind ``eval_set``), written by mask-eval: the held-out split masked
once (``data/``: input_ids, attention_mask, labels), so every model is scored on the same positions."""

from __future__ import annotations

from typing import Any

from kfnlp.artifacts.opened import Opened
from kfnlp.storage import write_artifact

KIND = "eval_set"
DATA_DIR = "data"


class EvalSet(Opened):
    """An eval-set artifact opened for reading."""

    def data(self):
        """The masked rows as a ``datasets.Dataset``."""
        import datasets

        return datasets.load_from_disk(str(self.path / DATA_DIR))


def open_eval_set(uri: str) -> EvalSet:
    return EvalSet.open(uri, KIND)


def write_eval_set(output: str, data, /, **facts: Any) -> dict[str, Any]:
    """Write the masked rows ``data`` (a ``datasets.Dataset``); return the manifest."""
    with write_artifact(output, kind=KIND) as out:
        data.save_to_disk(str(out.path / DATA_DIR))
        out.info.update(facts)
        manifest = dict(out.info)
    return manifest
