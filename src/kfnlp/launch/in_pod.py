"""What runs inside a KFP component around a stage call.

``stage_guard`` times the stage, records the time on the output artifact's metadata,
and turns a :class:`KfnlpError` into one clear log line, an error file next to the
outputs (which ``kfnlp run`` reads to say why a stage failed) and a non-zero exit.
In a sweep's trial (``$KFNLP_SWEEP_TRIAL`` set on the task) a failing task would fail the
whole pipeline, so there a failure is recorded instead: a ``failed-trial`` artifact where the
stage's output goes, and a normal exit; the select-best stage reports it.

``source`` and ``destination`` say where a stage reads and writes its artifacts. Normally
that is the artifact's local path (on a cluster KFP's launcher moves the files to and from
the pipeline root). With ``$KFNLP_STORAGE=s3://bucket/prefix`` (``kfnlp run --storage``;
kfp.local cannot use an S3 pipeline root) the stages address S3 themselves: outputs are
written under that prefix and the KFP artifact's URI points there, so the next stage reads
them from S3.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from kfnlp.config import bounded
from kfnlp.errors import KfnlpError, Preempted, StorageError
from kfnlp.launch import allocator, quick_exit
from kfnlp.storage import open_artifact, shared_uri, store_for, write_artifact
from kfnlp.sweep import FAILED_TRIAL_KIND, TRIAL_ENV, merged

ERROR_FILE = "kfnlp-error.json"
STORAGE_ENV = "KFNLP_STORAGE"
LOG_PREFIX_ENV = "KFNLP_LOG_PREFIX"  # kfnlp run sets it to pick kfnlp's lines out of the task log
STATUS_KEY = "kfnlp_stage"


def configure_logging() -> None:
    root = logging.getLogger("kfnlp")
    if not any(getattr(h, "_kfnlp", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(os.environ.get(LOG_PREFIX_ENV, "") + "%(message)s"))
        handler._kfnlp = True  # type: ignore[attr-defined]
        root.addHandler(handler)
        root.propagate = False
    root.setLevel(logging.INFO)


@contextlib.contextmanager
def stage_guard(stage: str, output, *, also=(), trial: str = "") -> Iterator[None]:
    """Run a stage body for ``output`` (a KFP output artifact). In a sweep's trial a failure is
    recorded at ``output`` (the trial's ``trial`` values with it) and each of the ``also`` outputs is
    created empty, so that the task succeeds and the sweep goes on; see :func:`_record_failed_trial`."""
    configure_logging()
    allocator.keep_freed_memory()
    quick_exit.prepare()
    started = time.time()
    task_dir = Path(output.path).parent
    try:
        yield
    except BaseException as exc:
        if not (in_trial() and _trial_failure(exc) and _record_failed_trial(stage, output, also, trial, exc, started)):
            if isinstance(exc, KfnlpError):
                _stage_failed(stage, exc, task_dir)
            raise
        quick_exit.succeeded()  # the failure is recorded: the task itself succeeded
        return
    output.metadata[STATUS_KEY] = {"stage": stage, "started": started, "wall_time_s": round(time.time() - started, 3)}
    quick_exit.succeeded()


def _stage_failed(stage: str, exc: KfnlpError, task_dir: Path) -> None:
    """One error line, the error file ``kfnlp run`` reads, and the error's exit code."""
    task_dir.mkdir(parents=True, exist_ok=True)
    (task_dir / ERROR_FILE).write_text(
        json.dumps({"stage": stage, "error": str(exc), "type": type(exc).__name__}), encoding="utf-8"
    )
    logging.getLogger("kfnlp").error("kfnlp %s: error: %s", stage, exc)
    raise SystemExit(exc.exit_code) from None


def in_trial() -> bool:
    """True in a sweep's trial task: its failures are recorded, not raised."""
    return bool(os.environ.get(TRIAL_ENV))


def _trial_failure(exc: BaseException) -> bool:
    """What a trial records as its failure: any error, or an exit with a non-zero status. Not a
    pre-emption (SIGTERM saved a checkpoint: the task's retry, or ``kfnlp run``'s resume, goes on
    from it), nor an interrupt."""
    if isinstance(exc, SystemExit):
        return exc.code not in (0, None)
    return isinstance(exc, Exception) and not isinstance(exc, Preempted)


def _one_line(exc: BaseException) -> str:
    """The error of a failed trial as one line: a kfnlp error's message; another error's type too."""
    if isinstance(exc, SystemExit):
        return f"exited with status {exc.code}" if isinstance(exc.code, int) else " ".join(str(exc.code).split())
    text = " ".join(str(exc).split())
    if not isinstance(exc, KfnlpError):
        text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return bounded(text, 2000)


def _trial_values(trial: str):
    try:
        return json.loads(trial) if trial else None
    except ValueError:
        return trial


def _record_failed_trial(stage: str, output, also, trial: str, exc: BaseException, started: float) -> bool:
    """Write the trial's failure record where the stage writes its output, atomically (it replaces
    whatever the stage left there: a half-written output never looks complete), and an empty file
    for each ``also`` output; False (the failure is then raised as outside a sweep) if the record
    cannot be written."""
    log = logging.getLogger("kfnlp")
    error = _one_line(exc)
    try:
        with write_artifact(destination(output), FAILED_TRIAL_KIND) as out:
            out.info.update(stage=stage, error=error, type=type(exc).__name__, values=_trial_values(trial))
        for artifact in also:
            artifact.metadata.clear()  # no metrics a failed stage logged before it failed
            path = Path(artifact.path)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"")
    except Exception as failed:  # a full disk, an unwritable destination: fail the task as without a sweep
        log.error("kfnlp %s: could not record the trial's failure (%s): %s", stage, failed, error)
        return False
    output.metadata[STATUS_KEY] = {
        "stage": stage,
        "started": started,
        "wall_time_s": round(time.time() - started, 3),
        "trial_failed": error,
    }
    if isinstance(exc, (KfnlpError, SystemExit)):
        log.error("kfnlp %s: trial failed: %s", stage, error)
    else:
        log.error("kfnlp %s: trial failed: %s", stage, error, exc_info=exc)
    return True


def log_metrics(metrics_artifact, values: dict) -> None:
    """The numeric ``values`` as KFP metrics (the artifact's metadata), and as its file: kfp.local's
    task cache serves a stage only when every output file exists (``kfnlp run`` resumes with it)."""
    numbers = {k: float(v) for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    for key, value in numbers.items():
        metrics_artifact.log_metric(key, value)
    path = Path(metrics_artifact.path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(numbers, indent=2), encoding="utf-8")


def log_confusion(output, confusion: dict | None) -> None:
    """A confusion matrix (``{"labels", "matrix"}``: rows gold, columns predicted) as a KFP
    ClassificationMetrics artifact, which the KFP UI draws as a grid; the same JSON as its file (kfp.local's
    task cache serves a stage only when every output file exists). No matrix: an empty one."""
    labels, matrix = (confusion or {}).get("labels", []), (confusion or {}).get("matrix", [])
    if labels:
        output.log_confusion_matrix(list(labels), [[int(n) for n in row] for row in matrix])
    path = Path(output.path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"labels": labels, "matrix": matrix}), encoding="utf-8")


def _storage_root() -> str | None:
    root = os.environ.get(STORAGE_ENV, "").rstrip("/")
    return root or None


def source(artifact) -> str:
    """Where a stage reads an input artifact: the S3 URI an upstream stage wrote it to under
    ``$KFNLP_STORAGE``, otherwise its local path."""
    root = _storage_root()
    return artifact.uri if root and artifact.uri.startswith(root + "/") else artifact.path


def destination(artifact) -> str:
    """Where a stage writes an output artifact: under ``$KFNLP_STORAGE`` as
    ``<root>/<pipeline run>/<task>/<output>`` (the artifact's URI is pointed there), otherwise its
    local path."""
    root = _storage_root()
    if root is None:
        return artifact.path
    run, task, name = artifact.uri.rstrip("/").split("/")[-3:]
    artifact.uri = f"{root}/{run}/{task}/{name}"
    return artifact.uri


def with_checkpoint_dir(config, artifact):
    """On a cluster whose pipeline root is on S3 (or on KFP's MinIO, ``minio://``, with the S3 endpoint
    set to it), a training stage checkpoints next to its output artifact there (the pod's own disk goes
    with the pod), unless the config names a place."""
    uri = shared_uri(artifact.uri.rstrip("/"))
    if config.checkpoint_dir is None and uri is not None and _storage_root() is None:
        return dataclasses.replace(config, checkpoint_dir=f"{uri}-checkpoints")
    return config


def train_stage(stage, function, config, model, *, trial: str = "", **inputs) -> None:
    """Run a train stage (its ``STAGE`` entry and function) writing the KFP output artifact ``model``; inputs
    are KFP artifacts or plain strings; ``trial`` (a sweep's trial: JSON of train keys and values) overrides
    keys of ``config``. Here, as on one node; or, with ``$KFNLP_SCALE_OUT`` (compiled from
    ``cluster.train.nodes > 1``), as a multi-node job whose nodes read and write the pipeline root on S3:
    the model they write is copied into ``model.path`` (KFP uploads it to the model's URI, so the stages
    downstream read it as from one node), and their copy removed. A trial whose training diverged fails."""
    from kfnlp.launch.scale_out.spec import from_env

    config = merged(config, trial, stage.section)
    config = with_checkpoint_dir(config, model)  # every node resumes from the same S3 checkpoints
    spec = from_env()
    if spec is None:
        artifacts = {key: source(value) if hasattr(value, "uri") else value for key, value in inputs.items()}
        output = destination(model)
        manifest = function(config=config, output=output, **artifacts)
        if in_trial():
            check_converged(manifest, output)
        return
    from kfnlp.artifacts.model import KIND
    from kfnlp.config import to_json
    from kfnlp.launch.scale_out.launcher import run_job

    shared = {key: _shared(value, key) if hasattr(value, "uri") else value for key, value in inputs.items()}
    output = _shared(model, "model") + "-job"
    run_job(stage.name, spec, shared, output, to_json(config))
    store = store_for(output)
    manifest = store.fetch(output, Path(model.path), kind=KIND)
    store.delete(output)
    store.remove_dir(output)
    if in_trial():
        check_converged(manifest, model.path)


def check_converged(manifest: dict, model: str) -> None:
    """A KfnlpError if a trained model diverged: a non-finite train loss, last logged loss or last
    evaluation loss, or a non-finite weight. The Trainer leaves nan and inf step losses out of the
    losses it logs (``logging_nan_inf_filter``), so the weights are the last word."""
    import math

    training = manifest.get("training") or {}
    logged = training.get("losses") or []
    losses = {
        "train loss": training.get("train_loss"),
        "last logged train loss": next((e["loss"] for e in reversed(logged) if "loss" in e), None),
        "last eval loss": next((e["eval_loss"] for e in reversed(logged) if "eval_loss" in e), None),
    }
    for name, value in losses.items():
        if isinstance(value, (int, float)) and not math.isfinite(value):
            raise KfnlpError(f"the trial diverged: {name} {value}")
    where = _non_finite_weight(model)
    if where is not None:
        raise KfnlpError(f"the trial diverged: non-finite weights ({where})")


def _non_finite_weight(model: str) -> str | None:
    """``FILE: TENSOR`` of the first weight of the model artifact at ``model`` holding a nan or inf, or None."""
    import torch
    from safetensors import safe_open

    local, _ = open_artifact(model)
    for file in sorted(local.glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as weights:
            for name in weights.keys():  # noqa: SIM118 - a safe_open handle is not iterable
                tensor = weights.get_tensor(name)
                if tensor.is_floating_point() and not torch.isfinite(tensor).all():
                    return f"{file.name}: {name}"
    return None


def _shared(artifact, name: str) -> str:
    """The ``s3://`` URI of an artifact every node can read (``kfnlp compile`` refuses a pipeline root that has none)."""
    uri = shared_uri(artifact.uri.rstrip("/"))
    if uri is None:
        raise StorageError(
            f"{name}: {artifact.uri} is not on S3: the nodes of a multi-node job share no disk "
            "(use an s3:// or minio:// pipeline root)"
        )
    return uri


def copy_file(ref: str, name: str, dest: str) -> None:
    """Copy one file of a (local or S3) artifact to ``dest``: the KFP Markdown/HTML outputs the UI renders."""
    local, _ = open_artifact(ref)
    Path(dest).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(local / name, dest)
