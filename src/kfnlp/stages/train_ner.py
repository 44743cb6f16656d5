"""train-ner: fine-tune an encoder for token classification with the transformers Trainer."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np

from kfnlp.data.chunking import IGNORE_INDEX
from kfnlp.errors import InputError
from kfnlp.storage import open_artifact, write_artifact
from kfnlp.training import check_schedule

log = logging.getLogger(__name__)


@dataclass
class TrainNerConfig:
    """The recipe's defaults (lr 2e-5, 3 epochs, weight decay 0.01, batch 8, eval each epoch)."""

    learning_rate: float = 2e-5
    weight_decay: float = 0.01
    batch_size: int = 8
    eval_batch_size: int = 64
    num_epochs: float = 3.0
    max_steps: int = -1  # > 0 overrides num_epochs
    warmup_ratio: float = 0.0
    group_by_length: bool = True  # batches of similar length: less padding, same data each epoch
    max_train_sentences: int | None = None  # seeded downsample
    seed: int = 42
    mixed_precision: Literal["auto", "no", "fp16", "bf16"] = "auto"  # auto: bf16/fp16 on GPUs, fp32 on CPU
    eval_strategy: Literal["epoch", "steps", "no"] = "epoch"
    eval_steps: int | None = None
    logging_steps: int = 50
    save_strategy: Literal["epoch", "steps", "no"] = "epoch"
    save_steps: int = 500
    save_total_limit: int = 1  # checkpoints kept (the newest; older ones go once a newer one is complete)
    save_minutes: float | None = None  # also checkpoint whenever this many minutes passed since the last save
    checkpoint_dir: str | None = None  # local dir or s3:// URI (default: <output>-checkpoints); one subdir per run key
    resume: bool = True  # start from the newest complete checkpoint of the same run (output, config, inputs)
    keep_checkpoints: bool = False  # keep the run's checkpoints after the final model is stored
    num_processes: int = 1  # data-parallel processes on this node (0: one per GPU); global batch = batch_size x this

    def __post_init__(self):
        check_schedule(self)


def seqeval_metric(labels: list[str]):
    """The recipe's ``compute_metrics``: seqeval over the labelled sub-tokens."""
    from kfnlp.metrics import seqeval_scores

    def compute(eval_pred) -> dict[str, float]:
        logits, label_ids = eval_pred
        predictions = np.argmax(logits, axis=-1)
        gold, predicted = [], []
        for pred_row, label_row in zip(predictions, label_ids, strict=True):
            keep = label_row != IGNORE_INDEX
            gold.append([labels[i] for i in label_row[keep]])
            predicted.append([labels[i] for i in pred_row[keep]])
        scores = seqeval_scores(gold, predicted)
        return {k: scores[k] for k in ("precision", "recall", "f1", "accuracy")}

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
    import datasets
    from transformers import DataCollatorForTokenClassification, set_seed

    from kfnlp.modeling import load_token_classifier, load_tokenizer
    from kfnlp.stages.preprocess_ner import LABELS_FILE, load_labels
    from kfnlp.stages.train_mlm import check_same_vocabulary
    from kfnlp.training import (
        checkpoints,
        progress_callback,
        resolve_precision,
        schedule_arguments,
        summarize,
        training_arguments,
    )

    started = time.monotonic()
    local, manifest = open_artifact(dataset, kind="dataset")
    if manifest.get("task") != "ner":
        raise InputError(f"{dataset}: a {manifest.get('task')} dataset, not an NER one (preprocess-ner writes those)")
    labels = load_labels(local)
    set_seed(config.seed)
    tokenizer = load_tokenizer(base_model)
    check_same_vocabulary(tokenizer, manifest, dataset)
    model = load_token_classifier(base_model, labels)

    splits = datasets.load_from_disk(str(local / "data"))
    columns = ["input_ids", "labels"]  # the length-grouped sampler measures input_ids itself
    train = splits["train"]
    if config.max_train_sentences is not None and config.max_train_sentences < len(train):
        rng = np.random.default_rng(config.seed)
        train = train.select(np.sort(rng.permutation(len(train))[: config.max_train_sentences]))
    train = train.select_columns(columns)
    validation = splits["validation"].select_columns(columns) if "validation" in splits else None
    evaluating = config.eval_strategy != "no" and validation is not None
    if config.eval_strategy != "no" and validation is None:
        log.warning("train-ner: the dataset has no validation split; not evaluating during training")

    precision = resolve_precision(config.mixed_precision)
    ckpt = checkpoints.Checkpointing.for_stage(
        "train-ner", output, config, base_model=base_model, dataset=manifest["fingerprint"]
    )
    collator = DataCollatorForTokenClassification(tokenizer, pad_to_multiple_of=8 if precision != "no" else None)
    args = training_arguments(
        precision=precision,
        train_sampling_strategy="group_by_length" if config.group_by_length else "random",
        eval_strategy=config.eval_strategy if evaluating else "no",
        save_strategy=config.save_strategy,
        **schedule_arguments(config, output_dir=str(ckpt.scratch)),
    )
    trainer = checkpoints.make_trainer(
        config.seed,
        model=model,
        args=args,
        data_collator=collator,
        train_dataset=train,
        eval_dataset=validation if evaluating else None,
        processing_class=tokenizer,
        compute_metrics=seqeval_metric(labels),
        callbacks=[progress_callback("train-ner")],
    )
    log.info("train-ner: %d sentences, %d labels, precision %s", len(train), len(labels), precision)
    result = checkpoints.train(trainer, ckpt, "train-ner")
    summary = summarize(trainer, result, time.monotonic() - started)
    evaluations = [entry for entry in trainer.state.log_history if "eval_f1" in entry]
    if evaluations:  # the recipe's sub-token scores on validation after the last evaluation
        summary["validation"] = {k[len("eval_") :]: v for k, v in evaluations[-1].items() if k.startswith("eval_")}
    summary.update(precision=precision, train_sentences=len(train), config=asdict(config), **ckpt.summary())
    if not trainer.is_world_process_zero():  # data-parallel: global rank 0 writes the artifact
        return {"training": summary}

    with write_artifact(output, kind="model") as out:
        # the artifact itself is a plain Hugging Face model directory
        model.save_pretrained(str(out.path))
        tokenizer.save_pretrained(str(out.path))
        (out.path / LABELS_FILE).write_text((local / LABELS_FILE).read_text(encoding="utf-8"), "utf-8")
        (out.path / "training_summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
        out.info.update(
            task="ner",
            base_model=base_model,
            labels=labels,
            dataset_fingerprint=manifest["fingerprint"],
            tokenizer_fingerprint=manifest["tokenizer_fingerprint"],
            training=summary,
        )
        manifest_out = dict(out.info)
    checkpoints.finish(ckpt, rank0=True)
    return manifest_out
