"""The Trainer run both train stages share: checkpointed, resumable training with the
house TrainingArguments, the training summary and the model artifact. A stage brings
only what differs, as a :class:`TrainerJob`."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from kfnlp.artifacts import write_model
from kfnlp.modeling import labelled_token_loss
from kfnlp.training import checkpoints, progress_callback, schedule_arguments, summarize, training_arguments
from kfnlp.training.config import TrainingConfig


@dataclass
class TrainerJob:
    """What a train stage brings to :func:`run_trainer`."""

    model: Any
    tokenizer: Any
    train: Any  # the training rows (a datasets.Dataset)
    evaluation: Any | None  # rows to evaluate on during training (when the config's eval_strategy asks), or None
    collator: Any
    precision: str  # as resolve_precision resolved the config's mixed_precision
    started: float  # time.monotonic() when the stage started: the summary's wall time counts from there
    run_inputs: dict[str, Any]  # what besides output and config identifies the run (its checkpoint run key)
    arguments: dict[str, Any]  # TrainingArguments beyond the shared schedule
    summary_facts: dict[str, Any]  # the stage's own lines of the training summary
    manifest_facts: dict[str, Any]  # the model artifact's lineage (task, base model, fingerprints, ...)
    model_files: tuple[Path, ...] = ()  # copied into the model artifact
    compute_metrics: Callable | None = None
    validation_metric: str | None = None  # the last evaluation that has it goes into the summary as "validation"
    on_resume: Callable[[int], None] | None = None  # restores state the Trainer does not know (given the step)
    loss: Callable | None = None  # the Trainer's compute_loss_func (class weights); default labelled_token_loss
    saved_model: Callable[[Any], Any] | None = None  # the model to write, given the trained one (a LoRA merge)


def speed_arguments(config: TrainingConfig) -> dict[str, Any]:
    """TrainingArguments keywords for speed and memory: gradient accumulation (a large global batch
    in the memory of a small one), torch.compile, the AdamW kernel, data loader workers, and
    page-locked batches (faster copies to a GPU; nothing to copy to on a CPU)."""
    import torch

    return {
        "gradient_accumulation_steps": config.gradient_accumulation_steps,
        "torch_compile": config.compile,
        "optim": config.optim,
        "dataloader_num_workers": config.dataloader_num_workers,
        "dataloader_pin_memory": torch.cuda.is_available(),
    }


def run_trainer(stage: str, output: str, config: TrainingConfig, job: TrainerJob) -> dict[str, Any]:
    """Train ``job.model`` with the fields every training config shares, resuming the run's newest
    checkpoint; global rank 0 writes the model artifact to ``output`` and returns its manifest,
    other data-parallel workers return ``{"training": summary}``."""
    ckpt = checkpoints.Checkpointing.for_stage(stage, output, config, **job.run_inputs)
    evaluation = job.evaluation if config.eval_strategy != "no" else None
    args = training_arguments(
        precision=job.precision,
        eval_strategy=config.eval_strategy if evaluation is not None else "no",
        **job.arguments,
        **schedule_arguments(config, output_dir=str(ckpt.scratch)),
        **speed_arguments(config),
    )
    trainer = checkpoints.make_trainer(
        config.seed,
        model=job.model,
        args=args,
        data_collator=job.collator,
        train_dataset=job.train,
        eval_dataset=evaluation,
        processing_class=job.tokenizer,
        compute_metrics=job.compute_metrics,
        # a model that divides its loss by the step's labelled tokens itself says so (the sparse MLM head)
        compute_loss_func=job.loss
        or (None if getattr(job.model, "accepts_loss_kwargs", False) else labelled_token_loss),
        callbacks=[progress_callback(stage)],
    )
    result = checkpoints.train(trainer, ckpt, stage, on_resume=job.on_resume)
    summary = summarize(trainer, result, time.monotonic() - job.started)
    if ckpt.resumed_from is not None and ckpt.loss_before is not None and summary["train_loss"] is not None:
        summary["train_loss"] = ckpt.loss_before.whole_run(summary["train_loss"], trainer.state.global_step)
    if job.validation_metric is not None:
        evaluations = [entry for entry in trainer.state.log_history if f"eval_{job.validation_metric}" in entry]
        if evaluations:  # the scores on the evaluation rows after the last evaluation
            summary["validation"] = {k[len("eval_") :]: v for k, v in evaluations[-1].items() if k.startswith("eval_")}
    summary.update(precision=job.precision, **job.summary_facts, config=asdict(config), **ckpt.summary())
    if not trainer.is_world_process_zero():  # data-parallel: global rank 0 writes the artifact
        return {"training": summary}
    model = job.model if job.saved_model is None else job.saved_model(job.model)
    manifest = write_model(output, model, job.tokenizer, summary, copy=job.model_files, **job.manifest_facts)
    checkpoints.finish(ckpt, rank0=True)
    return manifest
