"""Trainer set-up shared by the training stages: precision, arguments, progress."""

from __future__ import annotations

import logging
import math
import sys
import time
from typing import Any

log = logging.getLogger(__name__)


def resolve_precision(requested: str) -> str:
    """``auto`` means bf16 on GPUs that support it, fp16 on other GPUs, fp32 on CPU.

    An explicit ``bf16`` also runs on CPU (autocast); ``fp16`` needs a GPU and falls
    back to fp32 with a warning.
    """
    import torch

    if requested != "auto":
        if requested == "fp16" and not torch.cuda.is_available():
            log.warning("fp16 needs a GPU; training in fp32 on CPU")
            return "no"
        return requested
    if not torch.cuda.is_available():
        return "no"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def training_arguments(output_dir: str, *, precision: str, **kwargs: Any):
    """TrainingArguments with kfnlp's house rules: no Hub, no reporting integrations,
    safetensors, quiet progress bars when nobody is watching a terminal."""
    import torch
    from transformers import TrainingArguments

    from kfnlp.training.distributed import ddp_backend

    return TrainingArguments(
        output_dir=output_dir,
        fp16=precision == "fp16",
        bf16=precision == "bf16",
        use_cpu=not torch.cuda.is_available(),
        report_to="none",
        push_to_hub=False,
        disable_tqdm=not sys.stderr.isatty(),
        ddp_backend=ddp_backend(),  # gloo for CPU workers of a data-parallel run
        # True multiplies each process's loss by the number of processes, expecting the model to
        # divide by the global token count; models that take **kwargs but average their loss
        # themselves (BertForTokenClassification, BertForMaskedLM) then train with N-times gradients
        average_tokens_across_devices=False,
        **kwargs,
    )


def schedule_arguments(config, output_dir: str) -> dict[str, Any]:
    """TrainingArguments keywords for the fields every training config shares; ``output_dir`` is
    where the Trainer saves checkpoints before kfnlp commits them (see :mod:`kfnlp.training.checkpoints`)."""
    return {
        "output_dir": output_dir,
        "learning_rate": config.learning_rate,
        "weight_decay": config.weight_decay,
        "per_device_train_batch_size": config.batch_size,
        "per_device_eval_batch_size": config.eval_batch_size or config.batch_size,
        "num_train_epochs": config.num_epochs,
        "max_steps": config.max_steps,
        "warmup_steps": config.warmup_ratio,  # a float < 1 is a share of the steps in transformers 5
        "eval_steps": config.eval_steps,
        "logging_steps": config.logging_steps,
        "save_steps": config.save_steps,
        "save_total_limit": config.save_total_limit,
        "seed": config.seed,
    }


def progress_callback(stage: str):
    """A TrainerCallback that logs one line per logging step: readable in pipeline logs
    where tqdm bars (carriage returns) are not."""
    from transformers import TrainerCallback

    class _Progress(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            self.started = time.monotonic()
            log.info("%s: training for %d steps", stage, state.max_steps)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not logs:
                return
            elapsed = time.monotonic() - self.started
            done = state.global_step / max(state.max_steps, 1)
            eta = elapsed / done - elapsed if done > 0 else math.nan
            shown = {k: round(v, 4) for k, v in logs.items() if isinstance(v, float) and ("loss" in k or "f1" in k)}
            log.info(
                "%s: step %d/%d (%.0f%%) %s elapsed %.0fs eta %.0fs",
                stage,
                state.global_step,
                state.max_steps,
                100 * done,
                " ".join(f"{k}={v}" for k, v in shown.items()),
                elapsed,
                eta,
            )

    return _Progress()


# the keys of the Trainer's last log row: totals of its own train() call (after a resume, only the steps
# since), which the summary holds for the whole run (train_loss, train_runtime_s, train_samples_per_second)
_TOTALS = frozenset({"train_runtime", "train_samples_per_second", "train_steps_per_second", "total_flos", "train_loss"})


def step_history(log_history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The Trainer's log rows as step metrics: every numeric value of each logging and evaluation row
    (loss, learning_rate, grad_norm, epoch, eval_*), by step. A resumed run's log history is the
    checkpoint's rows followed by its own, and a data-parallel run logs values already averaged
    over its workers, so each curve has one point per step; were a step logged twice, its later row
    is kept."""
    rows: dict[tuple, dict[str, Any]] = {}
    for entry in log_history:
        row = {k: v for k, v in entry.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if not isinstance(row.get("step"), int) or _TOTALS & row.keys():
            continue
        rows.pop(key := (row["step"], frozenset(row)), None)
        rows[key] = row
    return sorted(rows.values(), key=lambda row: row["step"])


def summarize(trainer, train_output, seconds: float) -> dict[str, Any]:
    """The facts a user wants after training: steps, speed, losses, data parallelism, and the step
    history (what the run report plots and register logs to MLflow as the model's curves)."""
    history = trainer.state.log_history
    metrics = dict(train_output.metrics)
    args = trainer.args
    train_loss = metrics.get("train_loss")
    if args.world_size > 1 and train_loss is not None:
        # the Trainer adds each process's own losses since the last log line: average them
        import torch
        import torch.distributed as dist

        value = torch.tensor([train_loss], dtype=torch.float64, device=args.device)
        dist.all_reduce(value)
        train_loss = value.item() / args.world_size
    return {
        "global_step": trainer.state.global_step,
        "world_size": args.world_size,  # data-parallel processes
        "global_batch_size": args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size,
        "epochs": trainer.state.epoch,
        "train_loss": train_loss,
        "train_runtime_s": metrics.get("train_runtime"),
        "train_samples_per_second": metrics.get("train_samples_per_second"),
        "wall_time_s": seconds,
        "losses": [
            {k: v for k, v in entry.items() if k in ("step", "epoch", "loss", "eval_loss", "learning_rate")}
            for entry in history
            if "loss" in entry or "eval_loss" in entry
        ],
        "history": step_history(history),
    }
