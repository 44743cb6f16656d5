"""train-mlm: adapt a masked-LM to the domain with the transformers Trainer."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np

from kfnlp.errors import InputError
from kfnlp.masking import DEFAULT_PROBABILITY, MaskingCollator, Strategy
from kfnlp.storage import open_artifact, write_artifact
from kfnlp.training import check_schedule

log = logging.getLogger(__name__)


@dataclass
class TrainMlmConfig:
    """The recipe's defaults (lr 2e-5, weight decay 0.01, batch 64, eval each epoch)."""

    learning_rate: float = 2e-5
    weight_decay: float = 0.01
    batch_size: int = 64
    eval_batch_size: int | None = None  # default: batch_size
    num_epochs: float = 3.0
    max_steps: int = -1  # > 0 overrides num_epochs
    warmup_ratio: float = 0.0
    max_train_chunks: int | None = None  # seeded downsample (the recipe uses 10,000)
    masking: Strategy = "token"
    mask_probability: float | None = None  # default: 0.15 token-level, 0.2 whole-word
    seed: int = 42
    mixed_precision: Literal["auto", "no", "fp16", "bf16"] = "auto"  # auto: bf16/fp16 on GPUs, fp32 on CPU
    eval_strategy: Literal["epoch", "steps", "no"] = "epoch"
    eval_steps: int | None = None
    logging_steps: int = 50
    save_steps: int = 500
    save_total_limit: int = 2  # checkpoints kept (the newest; older ones go once a newer one is complete)
    save_minutes: float | None = None  # also checkpoint whenever this many minutes passed since the last save
    checkpoint_dir: str | None = None  # local dir or s3:// URI (default: <output>-checkpoints); one subdir per run key
    resume: bool = True  # start from the newest complete checkpoint of the same run (output, config, inputs)
    keep_checkpoints: bool = False  # keep the run's checkpoints after the final model is stored
    sparse_head: bool = True  # MLM head and loss only at masked positions (same loss, faster)
    num_processes: int = 1  # data-parallel processes on this node (0: one per GPU); global batch = batch_size x this

    def __post_init__(self):
        check_schedule(self)
        if self.mask_probability is not None and not 0.0 < self.mask_probability < 1.0:
            raise ValueError(f"mask_probability must be between 0 and 1, got {self.mask_probability}")


def check_same_vocabulary(tokenizer, manifest: dict, where: str) -> None:
    from kfnlp.stages.preprocess import tokenizer_fingerprint

    if tokenizer_fingerprint(tokenizer) != manifest["tokenizer_fingerprint"]:
        raise InputError(
            f"{where} was tokenized with a different vocabulary than this model's tokenizer; "
            "preprocess the data with the same model"
        )


def train_mlm(dataset: str, eval_set: str, output: str, config: TrainMlmConfig, base_model: str) -> dict:
    """Adapt ``base_model`` to the ``dataset`` chunks; write a model artifact. With
    ``config.num_processes`` > 1, train data-parallel in that many torchrun workers."""
    from kfnlp.training import distributed

    if distributed.should_launch(config.num_processes):
        return distributed.launch(
            "train_mlm",
            config.num_processes,
            dataset=dataset,
            eval_set=eval_set,
            output=output,
            config=config,
            base_model=base_model,
        )
    import datasets
    from transformers import set_seed

    from kfnlp.modeling import enable_sparse_mlm_loss, load_masked_lm, load_tokenizer
    from kfnlp.stages.mask_eval import mask_spec
    from kfnlp.training import (
        checkpoints,
        progress_callback,
        resolve_precision,
        schedule_arguments,
        summarize,
        training_arguments,
    )

    started = time.monotonic()
    data_dir, data_manifest = open_artifact(dataset, kind="dataset")
    eval_dir, eval_manifest = open_artifact(eval_set, kind="eval_set")
    set_seed(config.seed)
    tokenizer = load_tokenizer(base_model)
    check_same_vocabulary(tokenizer, data_manifest, dataset)
    model = load_masked_lm(base_model)
    sparse = config.sparse_head and enable_sparse_mlm_loss(model)

    train = datasets.load_from_disk(str(data_dir / "data"))["train"]
    if config.max_train_chunks is not None and config.max_train_chunks < len(train):
        rng = np.random.default_rng(config.seed)
        train = train.select(np.sort(rng.permutation(len(train))[: config.max_train_chunks]))
    train = train.select_columns(["input_ids", "attention_mask", "word_ids"]).with_format("numpy")
    evaluation = datasets.load_from_disk(str(eval_dir / "data")).with_format("torch")

    probability = config.mask_probability or DEFAULT_PROBABILITY[config.masking]
    # each data-parallel worker draws its own masks
    collator = MaskingCollator(mask_spec(tokenizer, config.masking, probability), seed=config.seed + distributed.rank())
    precision = resolve_precision(config.mixed_precision)
    ckpt = checkpoints.Checkpointing.for_stage(
        "train-mlm",
        output,
        config,
        base_model=base_model,
        dataset=data_manifest["fingerprint"],
        eval_set=eval_manifest["fingerprint"],
    )
    args = training_arguments(
        precision=precision,
        eval_strategy=config.eval_strategy,
        save_strategy="steps",
        remove_unused_columns=False,  # word_ids must reach the whole-word collator
        prediction_loss_only=True,
        dataloader_drop_last=False,
        **schedule_arguments(config, output_dir=str(ckpt.scratch)),
    )
    trainer = checkpoints.make_trainer(
        config.seed,
        model=model,
        args=args,
        data_collator=collator,
        train_dataset=train,
        eval_dataset=evaluation if config.eval_strategy != "no" else None,
        processing_class=tokenizer,
        callbacks=[progress_callback("train-mlm")],
    )
    log.info("train-mlm: %d chunks, precision %s, sparse head %s", len(train), precision, sparse)
    result = checkpoints.train(trainer, ckpt, "train-mlm", on_resume=lambda step: setattr(collator, "batches", step))
    summary = summarize(trainer, result, time.monotonic() - started)
    summary.update(
        precision=precision, sparse_head=sparse, train_chunks=len(train), config=asdict(config), **ckpt.summary()
    )
    if not trainer.is_world_process_zero():  # data-parallel: global rank 0 writes the artifact
        return {"training": summary}

    with write_artifact(output, kind="model") as out:
        # the artifact itself is a plain Hugging Face model directory
        model.save_pretrained(str(out.path))
        tokenizer.save_pretrained(str(out.path))
        (out.path / "training_summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
        out.info.update(
            task="mlm",
            base_model=base_model,
            dataset_fingerprint=data_manifest["fingerprint"],
            eval_set_fingerprint=eval_manifest["fingerprint"],
            tokenizer_fingerprint=data_manifest["tokenizer_fingerprint"],
            training=summary,
        )
        manifest = dict(out.info)
    checkpoints.finish(ckpt, rank0=True)
    return manifest
