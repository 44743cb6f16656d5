"""What each stage's artifacts hold and how to read and write them, one module per kind.

A stage reads its inputs and writes its output through these functions only, so that an
artifact's layout belongs to no stage and stages never import each other.
"""

from kfnlp.artifacts.comparison import write_comparison
from kfnlp.artifacts.dataset import (
    CORPUS_TEXT,
    Dataset,
    open_cls_dataset,
    open_dataset,
    open_labelled_dataset,
    open_ner_dataset,
    write_dataset,
    write_labelled_dataset,
)
from kfnlp.artifacts.eval_set import EvalSet, open_eval_set, write_eval_set
from kfnlp.artifacts.evaluation import Evaluation, open_evaluation, read_evaluation, write_evaluation
from kfnlp.artifacts.model import Model, open_model, write_model
from kfnlp.artifacts.vocabulary import tokenizer_fingerprint

__all__ = [
    "CORPUS_TEXT",
    "Dataset",
    "EvalSet",
    "Evaluation",
    "Model",
    "open_cls_dataset",
    "open_dataset",
    "open_labelled_dataset",
    "open_eval_set",
    "open_evaluation",
    "open_model",
    "open_ner_dataset",
    "read_evaluation",
    "tokenizer_fingerprint",
    "write_comparison",
    "write_dataset",
    "write_eval_set",
    "write_evaluation",
    "write_model",
    "write_labelled_dataset",
]
