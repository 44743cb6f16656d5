"""Data-parallel training: one process per device, gradients averaged every step.

A train stage with ``num_processes`` > 1 (0: one per visible GPU) re-launches itself
under ``torch.distributed.run`` (torchrun) on this node: each worker runs the same
stage function, the transformers Trainer (through accelerate) picks up ``RANK``,
``LOCAL_RANK`` and ``WORLD_SIZE`` from the environment, shards the batches and wraps
the model in DistributedDataParallel (NCCL on GPUs, gloo on CPU). ``batch_size`` stays
the batch *per process*: the global batch is ``batch_size * world_size``. Only global
rank 0 writes the model artifact; the calling process waits for the workers and
returns the manifest rank 0 wrote, or raises the first worker's error.

When the environment already says we are one worker of a launch (``WORLD_SIZE`` is set:
torchrun, a Kubeflow PyTorchJob or TrainJob, ``accelerate launch``), the stage trains as
that worker and never re-launches, so several nodes run the ordinary entrypoint::

    torchrun --nnodes 2 --nproc-per-node 4 ... -m kfnlp stage train-ner --dataset ... --output ...

``python -m kfnlp.training.distributed --spec FILE`` is the worker entrypoint of the one-node
re-launch (the spec holds the stage, its arguments and where to put the result).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import traceback
from pathlib import Path
from typing import Any

from kfnlp.errors import ConfigError, KfnlpError

log = logging.getLogger(__name__)


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def in_launch() -> bool:
    """True inside a worker of a distributed launch (torchrun, PyTorchJob, accelerate)."""
    return "WORLD_SIZE" in os.environ


def resolve_num_processes(requested: int) -> int:
    """0 means one process per visible GPU (one on a CPU-only node)."""
    if requested > 0:
        return requested
    import torch

    return max(torch.cuda.device_count(), 1)


def should_launch(requested: int) -> bool:
    """Whether a stage asked for ``requested`` processes must start them itself.

    Inside a launch the launcher decides the processes and ``requested`` is ignored. A
    process that has ``WORLD_SIZE`` > 1 but no ``LOCAL_RANK`` (a PyTorchJob pod running
    the stage without torchrun) would train alone and race the others to write the
    output: refused."""
    if in_launch():
        if world_size() > 1 and "LOCAL_RANK" not in os.environ:
            raise ConfigError(
                f"WORLD_SIZE={world_size()} but no LOCAL_RANK: this process was not started by torchrun; "
                "run the stage as `torchrun ... -m kfnlp stage ...` (see docs/cluster.md, Multi-GPU and multi-node)"
            )
        return False
    return resolve_num_processes(requested) > 1


def ddp_backend() -> str | None:
    """gloo for CPU workers (the Trainer's default there may be a backend torch lacks);
    None (accelerate's choice: NCCL) on GPUs or outside a launch."""
    import torch

    if world_size() > 1 and not torch.cuda.is_available():
        return "gloo"
    return None


def launch(stage: str, num_processes: int, **kwargs: Any) -> dict:
    """Run ``stage`` in ``num_processes`` torchrun workers on this node; return the
    manifest global rank 0 wrote. A failed worker becomes the same kfnlp error class
    (else a :class:`KfnlpError`) carrying that worker's message."""
    processes = resolve_num_processes(num_processes)
    config = kwargs.pop("config")
    with tempfile.TemporaryDirectory(prefix="kfnlp-ddp-") as tmp:
        spec_path = Path(tmp) / "spec.json"
        spec = {
            "stage": stage,
            "module": type(config).__module__,  # the stage module: it defines the config and ends with STAGE
            "config": dataclasses.asdict(config),
            "kwargs": kwargs,
            "result": str(Path(tmp) / "result.json"),
            "errors": tmp,
        }
        spec_path.write_text(json.dumps(spec), encoding="utf-8")
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc-per-node={processes}",
            "--max-restarts=0",
            "-m",
            "kfnlp.training.distributed",
            "--spec",
            str(spec_path),
        ]
        env = dict(os.environ)
        # torchrun sets 1 thread per worker (with a warning) unless told otherwise
        threads = max((os.cpu_count() or 1) // processes, 1)
        env.setdefault("OMP_NUM_THREADS", str(threads))
        env.setdefault("TOKENIZERS_PARALLELISM", "false")
        log.info("%s: data-parallel on %d processes (torchrun on this node)", stage.replace("_", "-"), processes)
        code = _wait(subprocess.Popen(command, env=env))
        if code != 0:
            raise _worker_error(stage, tmp, code)
        result = Path(spec["result"])
        if not result.is_file():
            raise KfnlpError(f"{stage.replace('_', '-')}: the distributed workers exited without a result")
        return json.loads(result.read_text(encoding="utf-8"))


def _wait(process: subprocess.Popen) -> int:
    """Wait for torchrun; on an interrupt let it stop its workers (SIGTERM) first. A SIGTERM to
    this process (what Kubernetes sends the container's main process on preemption) is passed
    on, so the workers save a checkpoint and stop (:mod:`kfnlp.training.checkpoints`)."""
    forward = threading.current_thread() is threading.main_thread()
    if forward:
        previous = signal.signal(signal.SIGTERM, lambda signum, frame: process.send_signal(signal.SIGTERM))
    try:
        return process.wait()
    except BaseException:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
        raise
    finally:
        if forward:
            signal.signal(signal.SIGTERM, previous)


def _worker_error(stage: str, errors: str, code: int) -> KfnlpError:
    import kfnlp.errors

    reports = []
    for file in sorted(Path(errors).glob("error-rank*.json")):
        try:
            reports.append(json.loads(file.read_text(encoding="utf-8")))
        except (OSError, json.JSONDecodeError):
            continue
    name = stage.replace("_", "-")
    if not reports:
        return KfnlpError(
            f"{name}: a data-parallel worker failed (torchrun exit code {code}) without a kfnlp error; see its log above"
        )
    first = min(reports, key=lambda r: r["rank"])
    cls = getattr(kfnlp.errors, first["type"], None)
    if not (isinstance(cls, type) and issubclass(cls, KfnlpError)):
        cls = KfnlpError
        message = f"{name}: worker rank {first['rank']} failed: {first['type']}: {first['message']}"
    else:
        message = f"{name} (data-parallel worker rank {first['rank']}): {first['message']}"
    return cls(message)


def _run_spec(spec: dict) -> int:
    stage = importlib.import_module(spec["module"]).STAGE  # a kfnlp.stages.entry.Stage
    here = rank()
    try:
        config = stage.config(**spec["config"])
        result = stage.function(config=config, **spec["kwargs"])
    except BaseException as exc:
        if not isinstance(exc, KfnlpError):
            traceback.print_exc()
        lines = str(exc).strip().splitlines()
        report = {"rank": here, "type": type(exc).__name__, "message": lines[-1] if lines else repr(exc)}
        if isinstance(exc, KfnlpError):
            report["message"] = " ".join(str(exc).split())
        error_file = Path(spec["errors"]) / f"error-rank{here}.json"
        error_file.write_text(json.dumps(report), encoding="utf-8")
        return getattr(exc, "exit_code", 1)
    if here == 0:
        Path(spec["result"]).write_text(json.dumps(result, default=str), encoding="utf-8")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kfnlp.training.distributed", description=__doc__.split("\n\n")[0])
    parser.add_argument("--spec", required=True, help="JSON spec written by kfnlp.training.distributed.launch")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format=f"[rank {rank()}] %(levelname)s %(name)s: %(message)s")
    logging.getLogger("kfnlp").setLevel(logging.INFO if rank() == 0 else logging.WARNING)
    if "TRANSFORMERS_VERBOSITY" not in os.environ:
        os.environ["TRANSFORMERS_VERBOSITY"] = "error"
    spec = json.loads(Path(args.spec).read_text(encoding="utf-8"))
    return _run_spec(spec)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
