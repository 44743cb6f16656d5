"""train-ner: fine-tune an encoder for token classification with the transformers Trainer."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Literal

import numpy as np

from kfnlp.config import option
from kfnlp.data.chunking import IGNORE_INDEX
from kfnlp.stages.entry import Input, Stage
from kfnlp.training.config import TrainingConfig

log = logging.getLogger(__name__)

NER_COLUMNS = ("input_ids", "labels")  # what the collator pads (the length-grouped sampler measures input_ids)


@dataclass
class TrainNerConfig(TrainingConfig):
    """The recipe's defaults (lr 2e-5, 3 epochs, weight decay 0.01, batch 8, eval each epoch)."""

    eval_batch_size: int = option(64, "batch size of the evaluations during training")
    save_total_limit: int = option(1, "checkpoints kept (the newest; older ones go once a newer one is complete)")
    group_by_length: bool = option(True, "batches of similar length: less padding, same data each epoch")
    max_train_sentences: int | None = option(None, "seeded downsample")
    save_strategy: Literal["epoch", "steps", "no"] = option(
        "epoch", "when checkpoints are written (steps: every save_steps)"
    )


def labelled_tags(eval_pred, labels: list[str]) -> tuple[list[list[str]], list[list[str]]]:
    """Gold and predicted tags of the labelled sub-tokens, row by row."""
    logits, label_ids = eval_pred
    predictions = np.argmax(logits, axis=-1)
    gold, predicted = [], []
    for pred_row, label_row in zip(predictions, label_ids, strict=True):
        keep = label_row != IGNORE_INDEX
        gold.append([labels[i] for i in label_row[keep]])
        predicted.append([labels[i] for i in pred_row[keep]])
    return gold, predicted


def seqeval_metric(labels: list[str]):
    """The recipe's ``compute_metrics``: seqeval over the labelled sub-tokens."""
    from kfnlp.metrics import seqeval_scores

    def compute(eval_pred) -> dict[str, float]:
        scores = seqeval_scores(*labelled_tags(eval_pred, labels))
        return {k: scores[k] for k in ("precision", "recall", "f1", "accuracy")}

    return compute


def tag_metric(labels: list[str]):
    """``compute_metrics`` of plain tags: accuracy and macro F1 over the labelled sub-tokens."""
    from kfnlp.metrics import tag_scores

    def compute(eval_pred) -> dict[str, float]:
        gold, predicted = labelled_tags(eval_pred, labels)
        scores = tag_scores([t for row in gold for t in row], [t for row in predicted for t in row])
        return {k: scores[k] for k in ("accuracy", "macro_f1")}

    return compute


def train_ner(dataset: str, output: str, config: TrainNerConfig, base_model: str) -> dict:
    """Fine-tune ``base_model`` (Hub id, path, builtin or a train-mlm artifact) on the
    preprocess-ner ``dataset``; write a model artifact loadable by ``pipeline()``. With
    ``config.num_processes`` > 1, train data-parallel in that many torchrun workers."""
    from kfnlp.training import distributed

    if distributed.should_launch(config.num_processes):
        return distributed.launch(
            "train_ner", config.num_processes, dataset=dataset, output=output, config=config, base_model=base_model
        )
    from transformers import DataCollatorForTokenClassification, set_seed

    from kfnlp.artifacts import open_ner_dataset
    from kfnlp.modeling import load_token_classifier, load_tokenizer
    from kfnlp.training import resolve_precision
    from kfnlp.training.run import TrainerJob, run_trainer
    from kfnlp.training.splits import labelled_splits

    started = time.monotonic()
    data = open_ner_dataset(dataset)
    labels = data.labels()
    scheme = data.manifest.get("tag_scheme", "iob2")
    set_seed(config.seed)
    data.check_vocabulary(load_tokenizer(base_model))
    # the tokenizer the ids come from, as preprocess-ner set it up (a RoBERTa-family one adds the
    # word-start space): the model artifact reads text with it
    tokenizer = load_tokenizer(data.tokenizer_path)
    model = load_token_classifier(base_model, labels)
    model.config.tag_scheme = scheme  # saved in config.json: predict ner tells word tags from entities by it

    train, validation = labelled_splits(
        data.splits(), NER_COLUMNS, config.max_train_sentences, config.seed, "train-ner", config.eval_strategy
    )

    precision = resolve_precision(config.mixed_precision)
    log.info("train-ner: %d sentences, %d labels, precision %s", len(train), len(labels), precision)
    job = TrainerJob(
        model=model,
        tokenizer=tokenizer,
        train=train,
        evaluation=validation,
        collator=DataCollatorForTokenClassification(tokenizer, pad_to_multiple_of=8 if precision != "no" else None),
        precision=precision,
        started=started,
        run_inputs={"base_model": base_model, "dataset": data.fingerprint},
        arguments={
            "train_sampling_strategy": "group_by_length" if config.group_by_length else "random",
            "save_strategy": config.save_strategy,
        },
        summary_facts={"train_sentences": len(train)},
        manifest_facts={
            "task": "ner",
            "tag_scheme": scheme,
            "base_model": base_model,
            "labels": labels,
            "dataset_fingerprint": data.fingerprint,
            "tokenizer_fingerprint": data.manifest["tokenizer_fingerprint"],
        },
        model_files=(data.labels_path,),
        compute_metrics=seqeval_metric(labels) if scheme == "iob2" else tag_metric(labels),
        validation_metric="f1" if scheme == "iob2" else "accuracy",  # sub-token scores on validation
    )
    return run_trainer("train-ner", output, config, job)


STAGE = Stage(
    name="train-ner",
    config=TrainNerConfig,
    function=train_ner,
    help="fine-tune an encoder for token classification",
    inputs=(
        Input("dataset", "NER dataset artifact from preprocess-ner", required=True, kind="artifact"),
        Input("output", "model artifact directory to write", required=True),
        Input(
            "base_model",
            "encoder: Hub id, path, builtin:minilm or a train-mlm model artifact",
            default="builtin:minilm",
            kind="model",
        ),
    ),
    example="num_epochs=1",
    trains=True,
    hub=True,
    cache=False,
)
