"""The whole run's training loss across resumes.

The Trainer's ``train_loss`` is the mean of the per-step losses summed in its own ``train()``
call, so a resumed run would report only the steps after the resume. Each checkpoint carries
the running sum (:data:`LOSS_FILE`), and the resumed run adds it back.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

log = logging.getLogger(__name__)

LOSS_FILE = "kfnlp-loss.json"


@dataclass(frozen=True)
class RunningLoss:
    """The sum of the per-step training losses (each the mean over the data-parallel workers) of
    the first ``steps`` optimizer steps."""

    total: float = 0.0
    steps: int = 0

    @classmethod
    def read(cls, checkpoint: Path) -> RunningLoss | None:
        """The sum a checkpoint carries; None for a checkpoint that lacks it (written before kfnlp kept it)."""
        path = Path(checkpoint) / LOSS_FILE
        if not path.is_file():
            log.warning(
                "%s: no running loss in the checkpoint; train_loss covers only the steps after the resume", path
            )
            return None
        data = json.loads(path.read_text(encoding="utf-8"))
        return cls(float(data["total"]), int(data["steps"]))

    def write(self, checkpoint: Path) -> None:
        (Path(checkpoint) / LOSS_FILE).write_text(json.dumps(asdict(self)), encoding="utf-8")

    def plus(self, trainer) -> RunningLoss:
        """This sum plus what ``trainer`` has summed in its current ``train()`` call, at its current step.
        Transformers internals: ``_total_loss_scalar`` holds the logged windows (already averaged over
        the workers), ``_tr_loss`` the window not yet logged (this worker's own), which is averaged here
        as the Trainer's log does: every worker must call this at the same step."""
        pending = trainer._tr_loss.item()
        args = trainer.args
        if args.world_size > 1:
            import torch
            import torch.distributed as dist

            value = torch.tensor([pending], dtype=torch.float64, device=args.device)
            dist.all_reduce(value)
            pending = value.item() / args.world_size
        return RunningLoss(self.total + trainer._total_loss_scalar + pending, trainer.state.global_step)

    def whole_run(self, train_loss: float, global_step: int) -> float:
        """The mean loss over all ``global_step`` steps, from this sum (of the steps before the
        resume) and ``train_loss``, the Trainer's mean over the steps it ran after it."""
        if global_step <= 0:
            return train_loss
        return (self.total + train_loss * (global_step - self.steps)) / global_step
