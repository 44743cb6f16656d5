"""The stages, one module each, ending with its :class:`~kfnlp.stages.entry.Stage` entry ``STAGE``.

:func:`by_name` imports the modules on first use, so commands that run no stage
(``kfnlp --help``, ``kfnlp compile``'s argument parsing) stay quick.
"""

from __future__ import annotations

import functools
import importlib

from kfnlp.stages.entry import Stage

# pipeline order: the order of `kfnlp stage --help` and of the cluster's stage lists
MODULES = (
    "preprocess",
    "mask_eval",
    "train_mlm",
    "evaluate",
    "register",
    "promote",
    "deploy",
    "publish",
    "preprocess_ner",
    "train_ner",
    "evaluate_ner",
    "preprocess_cls",
    "train_cls",
    "evaluate_cls",
    "train_clm",
    "evaluate_clm",
    "select_best",
    "compare",
)


@functools.cache
def by_name() -> dict[str, Stage]:
    """Every stage by name (``train-mlm``), in pipeline order."""
    entries = (importlib.import_module(f"{__name__}.{module}").STAGE for module in MODULES)
    return {stage.name: stage for stage in entries}


def get(name: str) -> Stage:
    """The stage named ``name``, spelt as a stage (``train-mlm``) or as its section (``train_mlm``)."""
    return by_name()[name.replace("_", "-")]
