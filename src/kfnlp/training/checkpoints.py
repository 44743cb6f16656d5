"""Training checkpoints that survive a killed pod, and resuming from them.

The Trainer saves its whole state (weights, optimizer, scheduler, RNG states, global step)
into a local scratch directory every ``save_steps`` steps (or epoch, for train-ner) and,
with ``save_minutes``, whenever that much time has passed. Each save is then committed to
the checkpoint store as an artifact of its own, complete only with its manifest (written
last), local or on S3::

    <checkpoint_dir>/<run key>/step-000000120/   model.safetensors, optimizer.pt, scheduler.pt,
                                                 rng_state.pth, trainer_state.json, ...

The newest ``save_total_limit`` complete checkpoints are kept; an older one is deleted only
after a newer one is complete. On start a training stage resumes from the newest complete
checkpoint of its run key: the output URI plus every setting and input that shapes the run
(a changed config never resumes a different run's state). The data position is restored
exactly: the Trainer skips the batches already trained on (its samplers are seeded per
epoch, see :class:`EpochSeededLengthGroupedSampler`) and the masking collator draws each
batch's masks from (seed, batch index). SIGTERM, what Kubernetes sends before it kills a
preempted pod, makes the stage save a checkpoint at the end of the current step and exit
(:class:`Preempted`); the stage run again with the same output resumes there.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import shutil
import signal
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kfnlp.errors import Preempted, StorageError, disk_full
from kfnlp.storage import ArtifactStore, fingerprint, private_temp_dir, store_for, write_artifact
from kfnlp.training.running_loss import RunningLoss

log = logging.getLogger(__name__)

KIND = "checkpoint"
STEP_RE = re.compile(r"^step-(\d{9})$")
# settings that decide when and where state is saved, not what is trained: changing them keeps the run key
POLICY_FIELDS = frozenset(
    {
        "checkpoint_dir",
        "save_steps",
        "save_strategy",
        "save_minutes",
        "save_total_limit",
        "keep_checkpoints",
        "resume",
        "logging_steps",
    }
)


def run_key(stage: str, output: str, config, **inputs: Any) -> str:
    """Identity of one training run: the output it writes and everything that shapes its trajectory."""
    settings = {k: v for k, v in asdict(config).items() if k not in POLICY_FIELDS}
    return fingerprint(stage, str(output).rstrip("/"), settings, inputs)[:16]


def default_checkpoint_dir(output: str) -> str:
    return f"{str(output).rstrip('/')}-checkpoints"


@dataclass
class CheckpointStore:
    """The committed checkpoints of one run, under ``root`` (a local directory or an s3:// URI)."""

    root: str
    keep: int = 2

    @property
    def store(self) -> ArtifactStore:
        return store_for(self.root)

    def uri(self, step: int) -> str:
        return f"{self.root}/step-{step:09d}"

    def steps(self) -> list[int]:
        """Steps of the complete checkpoints, oldest first (incomplete ones are ignored)."""
        found = [int(m.group(1)) for m in map(STEP_RE.match, self.store.children(self.root)) if m]
        return sorted(step for step in found if self.store.exists(self.uri(step), KIND))

    def latest(self) -> int | None:
        steps = self.steps()
        return steps[-1] if steps else None

    def commit(self, saved: Path, step: int, run: str) -> str:
        """Store the Trainer's checkpoint directory ``saved`` as step ``step`` (moving its files),
        then delete the checkpoints beyond the newest ``keep``."""
        dest = self.uri(step)
        with write_artifact(dest, KIND) as out:
            for item in saved.iterdir():
                shutil.move(str(item), str(out.path / item.name))
            out.info.update(step=step, run_key=run)
        shutil.rmtree(saved, ignore_errors=True)
        steps = self.steps()
        for old in steps[: max(len(steps) - self.keep, 0)]:
            self.store.delete(self.uri(old))
        return dest

    def local_path(self, step: int, scratch: Path) -> Path:
        """Where :meth:`fetch` makes checkpoint ``step`` available (the same for every worker of a node)."""
        return self.store.local_path(self.uri(step)) or scratch / f"resume-{step:09d}"

    def fetch(self, step: int, scratch: Path) -> Path:
        """A local directory holding checkpoint ``step``, for the Trainer to resume from."""
        local = self.local_path(step, scratch)
        self.store.fetch(self.uri(step), local, kind=KIND)
        return local

    def clear(self) -> None:
        """Delete every checkpoint of the run (once its final model is stored)."""
        for step in self.steps():
            self.store.delete(self.uri(step))
        self.store.remove_dir(self.root)


@dataclass
class Checkpointing:
    """How a training stage checkpoints: the store, the Trainer's scratch directory, the policy."""

    store: CheckpointStore
    key: str
    scratch: Path
    save_minutes: float | None = None
    resume: bool = True
    keep_after_success: bool = False
    resumed_from: int | None = None
    # the losses summed before this process's steps (None: resumed from a checkpoint that lacks them)
    loss_before: RunningLoss | None = field(default_factory=RunningLoss)
    saves: list[float] = field(default_factory=list)  # seconds each commit took

    @classmethod
    def for_stage(cls, stage: str, output: str, config, **inputs: Any) -> Checkpointing:
        key = run_key(stage, output, config, **inputs)
        root = f"{(config.checkpoint_dir or default_checkpoint_dir(output)).rstrip('/')}/{key}"
        # the Trainer writes next to a local store (a rename commits it); S3 commits upload from a
        # temporary path every data-parallel worker of this node agrees on, in this user's private directory
        local = store_for(root).local_path(root)
        scratch = local / ".trainer" if local else private_temp_dir(f"checkpoints-{key}")
        return cls(
            store=CheckpointStore(root, keep=max(config.save_total_limit or 1, 1)),
            key=key,
            scratch=scratch,
            save_minutes=config.save_minutes,
            resume=config.resume,
            keep_after_success=config.keep_checkpoints,
        )

    def summary(self) -> dict[str, Any]:
        return {
            "checkpoints": self.store.root,
            "resumed_from_step": self.resumed_from,
            "checkpoints_saved": len(self.saves),
            "checkpoint_seconds": round(sum(self.saves), 3),
        }


def _world_max(flag: bool, args) -> bool:
    """``flag`` OR-ed over the data-parallel workers, so that all stop at the same step."""
    if args.world_size <= 1:
        return flag
    import torch
    import torch.distributed as dist

    value = torch.tensor([int(flag)], device=args.device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def _barrier(args) -> None:
    if args.world_size > 1:
        import torch.distributed as dist

        dist.barrier()


def _gather_rng_states(saved: Path, args) -> None:
    """Give global rank 0 every worker's RNG state file (``rng_state_<rank>.pth``, which the Trainer
    writes in each worker's own ``saved``), so that the committed checkpoint resumes every worker
    exactly: the workers of other nodes wrote theirs on a disk rank 0 cannot see."""
    if args.world_size <= 1:
        return
    import torch.distributed as dist

    name = f"rng_state_{args.process_index}.pth"
    mine = (name, (saved / name).read_bytes())
    states = [None] * args.world_size if args.process_index == 0 else None
    dist.gather_object(mine, states, dst=0)
    for name, data in states or ():
        if not (saved / name).exists():  # the workers on rank 0's node wrote theirs there already
            (saved / name).write_bytes(data)


def checkpoint_callback(ckpt: Checkpointing, stop: threading.Event, trainer):
    """Commits each save to the store, with the run's running loss; adds time-based saves and the save-and-stop on SIGTERM."""
    from transformers import TrainerCallback

    class _Checkpoints(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            self.last_save = time.monotonic()

        def on_step_end(self, args, state, control, **kwargs):
            due = ckpt.save_minutes is not None and time.monotonic() - self.last_save >= 60 * ckpt.save_minutes
            if due:
                control.should_save = True
            if _world_max(stop.is_set(), args):
                log.warning("SIGTERM: saving a checkpoint at step %d and stopping", state.global_step)
                control.should_save = True
                control.should_training_stop = True
            elif state.global_step >= state.max_steps:
                control.should_save = False  # the Trainer's save at the end: the final model is written next
            return control

        def on_save(self, args, state, control, **kwargs):
            running = ckpt.loss_before.plus(trainer) if ckpt.loss_before is not None else None
            saved = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            _gather_rng_states(saved, args)  # also waits until every worker has written its state
            if state.is_world_process_zero:
                started = time.monotonic()
                if running is not None:
                    running.write(saved)
                uri = ckpt.store.commit(saved, state.global_step, ckpt.key)
                ckpt.saves.append(time.monotonic() - started)
                log.info("checkpoint: step %d stored at %s (%.1f s)", state.global_step, uri, ckpt.saves[-1])
            _barrier(args)
            if args.local_process_index == 0 and not state.is_world_process_zero:
                shutil.rmtree(saved, ignore_errors=True)  # another node's part of what rank 0 committed
            self.last_save = time.monotonic()

    return _Checkpoints()


@contextlib.contextmanager
def _sigterm_sets(event: threading.Event):
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: event.set())
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def train(trainer, ckpt: Checkpointing, stage: str, on_resume=None):
    """``trainer.train()`` with checkpoint commits, resume from the newest complete checkpoint of the
    run, and save-and-stop on SIGTERM. ``on_resume(global_step)`` restores state the Trainer does not
    know about (the collator's batch counter) before training continues."""
    args = trainer.args
    # the first worker of each node prepares the node's scratch: the nodes of a multi-node run share no disk
    node_leader = args.local_process_index == 0
    resume_from = None
    step = ckpt.store.latest() if ckpt.resume else None
    if node_leader:
        shutil.rmtree(ckpt.scratch, ignore_errors=True)  # leftovers of a killed attempt are never committed
        ckpt.scratch.mkdir(parents=True, exist_ok=True)
    _barrier(args)
    if step is not None:
        local = ckpt.store.local_path(step, ckpt.scratch)
        if node_leader:
            ckpt.store.fetch(step, ckpt.scratch)
        _barrier(args)
        resume_from = str(local)
        ckpt.resumed_from = step
        log.info("%s: resuming from %s (step %d)", stage, ckpt.store.uri(step), step)
        if on_resume is not None:
            on_resume(json.loads((Path(local) / "trainer_state.json").read_text(encoding="utf-8"))["global_step"])
        ckpt.loss_before = RunningLoss.read(local)
    stop = threading.Event()
    trainer.add_callback(checkpoint_callback(ckpt, stop, trainer))
    try:
        with _sigterm_sets(stop):
            result = trainer.train(resume_from_checkpoint=resume_from)
    except Exception as exc:
        if not disk_full(exc):
            raise
        shutil.rmtree(ckpt.scratch, ignore_errors=True)  # the half-saved checkpoint; committed ones stay
        raise StorageError(
            f"{ckpt.scratch}: no space left on the device saving a checkpoint of {stage}; free some, or set "
            "checkpoint_dir to a larger disk"
        ) from exc
    if stop.is_set():
        raise Preempted(
            f"{stage}: stopped by SIGTERM at step {trainer.state.global_step} of {trainer.state.max_steps}; "
            f"its checkpoint is in {ckpt.store.root}: run the stage again with the same output to resume"
        )
    if node_leader and not trainer.is_world_process_zero():
        shutil.rmtree(ckpt.scratch, ignore_errors=True)  # another node's; rank 0's goes in finish(), after the model
    return result


def finish(ckpt: Checkpointing, rank0: bool) -> None:
    """After the final model is stored: drop the run's checkpoints (unless kept) and the scratch."""
    if not rank0:
        return
    shutil.rmtree(ckpt.scratch, ignore_errors=True)
    if not ckpt.keep_after_success:
        try:
            ckpt.store.clear()
        except StorageError as exc:  # the model is stored; leftovers only cost space
            log.warning("could not delete the checkpoints in %s: %s", ckpt.store.root, exc)


def make_trainer(seed: int, **kwargs):
    """A transformers Trainer that resumes exactly: checkpoint weights are reloaded with their
    names mapped, and the length-grouped sampler (which otherwise draws from the global torch RNG
    when an epoch starts) is reseeded from (seed, epoch), so that a resumed run skips exactly the
    batches it already trained on."""
    import torch
    from transformers import Trainer
    from transformers.trainer_pt_utils import LengthGroupedSampler

    class EpochSeededLengthGroupedSampler(LengthGroupedSampler):
        def set_epoch(self, epoch: int) -> None:  # accelerate calls this before each epoch
            self.generator = torch.Generator().manual_seed(seed + epoch)

    class ResumableTrainer(Trainer):
        def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
            """The stock reload matches raw state-dict keys, which misses the tensors ``save_pretrained``
            wrote under the base checkpoint's own names (LayerNorm ``gamma``/``beta`` in older BERT
            checkpoints such as splade-tiny): they silently kept their pre-trained values. Load the
            weights as ``from_pretrained`` does, which maps the names."""
            if model is not None:  # FSDP / SageMaker MP: their own sharded formats
                return super()._load_from_checkpoint(resume_from_checkpoint, model)
            from kfnlp.modeling import SAFE_LOAD

            loaded = type(self.model).from_pretrained(str(resume_from_checkpoint), **SAFE_LOAD)
            self.model.load_state_dict(loaded.state_dict())

        def _get_train_sampler(self, train_dataset=None):
            sampler = super()._get_train_sampler(train_dataset)
            if type(sampler) is LengthGroupedSampler:
                sampler.__class__ = EpochSeededLengthGroupedSampler  # same state, plus set_epoch
                sampler.set_epoch(0)
            return sampler

    return ResumableTrainer(**kwargs)
