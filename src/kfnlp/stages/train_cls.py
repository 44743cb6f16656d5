"""train-cls: fine-tune an encoder for text classification with the transformers Trainer."""

from __future__ import annotations

import functools
import logging
import time
from collections import Counter
from dataclasses import dataclass
from typing import Literal

import numpy as np

from kfnlp.config import option
from kfnlp.stages.entry import Input, Stage
from kfnlp.training.config import TrainingConfig

log = logging.getLogger(__name__)

MODEL_COLUMNS = ("input_ids", "token_type_ids", "labels")  # what the collator pads and the model takes


@dataclass
class TrainClsConfig(TrainingConfig):
    """The recipe's defaults (lr 2e-5, 3 epochs, weight decay 0.01, batch 8, eval each epoch)."""

    eval_batch_size: int = option(64, "batch size of the evaluations during training")
    save_total_limit: int = option(1, "checkpoints kept (the newest; older ones go once a newer one is complete)")
    group_by_length: bool = option(True, "batches of similar length: less padding, same data each epoch")
    max_train_examples: int | None = option(None, "seeded downsample of the training split")
    save_strategy: Literal["epoch", "steps", "no"] = option(
        "epoch", "when checkpoints are written (steps: every save_steps)"
    )
    class_weights: Literal["none", "balanced"] = option(
        "none",
        "balanced: weight each class's loss by n_examples / (n_classes x its examples) in the training split, "
        "for imbalanced data",
    )


def accuracy_metric(eval_pred) -> dict[str, float]:
    """The recipe's ``compute_metrics`` (accuracy), plus macro F1: scikit-learn's."""
    from sklearn.metrics import accuracy_score, f1_score

    logits, label_ids = eval_pred
    predicted = np.argmax(logits, axis=-1)
    return {
        "accuracy": float(accuracy_score(label_ids, predicted)),
        "macro_f1": float(f1_score(label_ids, predicted, average="macro", zero_division=0)),
    }


def balanced_weights(label_ids: list[int], classes: int) -> list[float]:
    """Inverse class frequency, scaled so that a balanced split weighs every class 1 (scikit-learn's
    ``class_weight="balanced"``); a class without training examples gets 1."""
    counts = Counter(label_ids)
    total = len(label_ids)
    return [total / (classes * counts[c]) if counts[c] else 1.0 for c in range(classes)]


def train_cls(dataset: str, output: str, config: TrainClsConfig, base_model: str) -> dict:
    """Fine-tune ``base_model`` (Hub id, path, builtin or a train-mlm artifact) on the
    preprocess-cls ``dataset``; write a model artifact loadable by ``pipeline()``. With
    ``config.num_processes`` > 1, train data-parallel in that many torchrun workers."""
    from kfnlp.training import distributed

    if distributed.should_launch(config.num_processes):
        return distributed.launch(
            "train_cls", config.num_processes, dataset=dataset, output=output, config=config, base_model=base_model
        )
    import torch
    from transformers import DataCollatorWithPadding, set_seed

    from kfnlp.artifacts import open_cls_dataset
    from kfnlp.modeling import labelled_token_loss, load_sequence_classifier, load_tokenizer
    from kfnlp.training import resolve_precision
    from kfnlp.training.run import TrainerJob, run_trainer
    from kfnlp.training.splits import labelled_splits

    started = time.monotonic()
    data = open_cls_dataset(dataset)
    labels = data.labels()
    set_seed(config.seed)
    tokenizer = load_tokenizer(base_model)
    data.check_vocabulary(tokenizer)
    model = load_sequence_classifier(base_model, labels)

    train, validation = labelled_splits(
        data.splits(), MODEL_COLUMNS, config.max_train_examples, config.seed, "train-cls", config.eval_strategy
    )

    loss = None
    weights = None
    if config.class_weights == "balanced":
        weights = balanced_weights(train["labels"], len(labels))
        loss = functools.partial(labelled_token_loss, weight=torch.tensor(weights))
        log.info("train-cls: class weights %s", dict(zip(labels, np.round(weights, 4).tolist(), strict=True)))

    precision = resolve_precision(config.mixed_precision)
    log.info("train-cls: %d examples, %d labels, precision %s", len(train), len(labels), precision)
    job = TrainerJob(
        model=model,
        tokenizer=tokenizer,
        train=train,
        evaluation=validation,
        collator=DataCollatorWithPadding(tokenizer, pad_to_multiple_of=8 if precision != "no" else None),
        precision=precision,
        started=started,
        run_inputs={"base_model": base_model, "dataset": data.fingerprint},
        arguments={
            "train_sampling_strategy": "group_by_length" if config.group_by_length else "random",
            "save_strategy": config.save_strategy,
        },
        summary_facts={"train_examples": len(train), "class_weights": weights},
        manifest_facts={
            "task": "cls",
            "base_model": base_model,
            "labels": labels,
            "dataset_fingerprint": data.fingerprint,
            "tokenizer_fingerprint": data.manifest["tokenizer_fingerprint"],
        },
        model_files=(data.labels_path,),
        compute_metrics=accuracy_metric,
        validation_metric="accuracy",
        loss=loss,
    )
    return run_trainer("train-cls", output, config, job)


STAGE = Stage(
    name="train-cls",
    config=TrainClsConfig,
    function=train_cls,
    help="fine-tune an encoder for text classification",
    inputs=(
        Input("dataset", "text-classification dataset artifact from preprocess-cls", required=True, kind="artifact"),
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
