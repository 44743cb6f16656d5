"""The config fields every training stage shares: schedule, precision, evaluation, checkpoints, processes,
and the speed settings for GPUs (compile, fused AdamW, data loader workers, gradient accumulation)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from kfnlp.config import check_at_least, check_seed, option


@dataclass
class TrainingConfig:
    """The base of each training stage's config; a stage redeclares a field to change its default."""

    learning_rate: float = option(2e-5, "peak learning rate (> 0)")
    weight_decay: float = option(0.01, "AdamW weight decay")
    batch_size: int = option(8, "training batch size per device")
    eval_batch_size: int | None = option(None, "default: batch_size")
    num_epochs: float = option(3.0, "passes over the training data (ignored when max_steps > 0)")
    max_steps: int = option(-1, "> 0 overrides num_epochs")
    warmup_ratio: float = option(
        0.0,
        "share of the training steps spent on linear warmup (passed to the Trainer as warmup_steps, which "
        "reads a float below 1 as a ratio)",
    )
    seed: int = option(
        42, "seed for the new weights, the training sample, the batch order and (train-mlm) the masking collator"
    )
    mixed_precision: Literal["auto", "no", "fp16", "bf16"] = option("auto", "auto: bf16/fp16 on GPUs, fp32 on CPU")
    eval_strategy: Literal["epoch", "steps", "no"] = option(
        "epoch",
        "when the stage scores its eval data during training (train-ner: seqeval over the labelled sub-tokens, "
        "the recipe's compute_metrics); the evaluation stage scores the final model either way",
    )
    eval_steps: int | None = option(None, "steps between evaluations when eval_strategy is steps")
    logging_steps: int = option(50, "steps between loss log lines")
    save_steps: int = option(500, "steps between checkpoints")
    save_total_limit: int = option(2, "checkpoints kept (the newest; older ones go once a newer one is complete)")
    save_minutes: float | None = option(None, "also checkpoint whenever this many minutes passed since the last save")
    checkpoint_dir: str | None = option(
        None, "local dir or s3:// URI (default: <output>-checkpoints); one subdir per run key"
    )
    resume: bool = option(True, "start from the newest complete checkpoint of the same run (output, config, inputs)")
    keep_checkpoints: bool = option(False, "keep the run's checkpoints after the final model is stored")
    num_processes: int = option(
        1,
        "data-parallel processes on this node (0: one per GPU); global batch = batch_size x this x "
        "gradient_accumulation_steps",
    )
    gradient_accumulation_steps: int = option(
        1,
        "batches whose gradients add up to one optimizer step: keeps a recipe's global batch on fewer devices "
        "(the loss is the mean over the labelled tokens of all of them, as one large batch gives)",
    )
    compile: bool = option(
        False, "torch.compile the model (inductor): a slower first step for faster steps after, mostly on GPUs"
    )
    optim: Literal["adamw_torch_fused", "adamw_torch"] = option(
        "adamw_torch_fused",
        "AdamW as one fused kernel over all parameters (CUDA and CPU) or torch's per-tensor loop",
    )
    dataloader_num_workers: int = option(
        0,
        "processes preparing batches beside the training process (0: it prepares them itself); train-mlm "
        "takes 0 only: it draws each batch's masks from the step, so that a resumed run draws the same ones",
    )

    def __post_init__(self):
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        for name in ("batch_size", "eval_batch_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if self.max_steps <= 0 and self.num_epochs <= 0:
            raise ValueError("set num_epochs > 0 or max_steps > 0")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.eval_strategy == "steps" and not self.eval_steps:
            raise ValueError("eval_strategy steps needs eval_steps")
        if self.save_minutes is not None and self.save_minutes <= 0:
            raise ValueError(f"save_minutes must be > 0 (or unset), got {self.save_minutes}")
        if self.save_total_limit < 1:
            raise ValueError(f"save_total_limit must be >= 1, got {self.save_total_limit}")
        if self.num_processes < 0:
            raise ValueError(f"num_processes must be >= 0 (0: one per GPU), got {self.num_processes}")
        for name in ("logging_steps", "save_steps", "eval_steps", "gradient_accumulation_steps"):
            check_at_least(getattr(self, name), 1, name)
        check_at_least(self.dataloader_num_workers, 0, "dataloader_num_workers")
        check_seed(self.seed)
