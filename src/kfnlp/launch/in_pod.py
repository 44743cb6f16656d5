"""What runs inside a KFP component around a stage call.

``stage_guard`` times the stage, records the time on the output artifact's metadata,
and turns a :class:`KfnlpError` into one clear log line, an error file next to the
outputs (which ``kfnlp run`` reads to say why a stage failed) and a non-zero exit.

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

from kfnlp.errors import KfnlpError, StorageError
from kfnlp.launch import quick_exit
from kfnlp.storage import open_artifact, shared_uri

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
def stage_guard(stage: str, output) -> Iterator[None]:
    """Run a stage body for ``output`` (a KFP output artifact)."""
    configure_logging()
    quick_exit.prepare()
    started = time.time()
    task_dir = Path(output.path).parent
    try:
        yield
    except KfnlpError as exc:
        task_dir.mkdir(parents=True, exist_ok=True)
        (task_dir / ERROR_FILE).write_text(
            json.dumps({"stage": stage, "error": str(exc), "type": type(exc).__name__}), encoding="utf-8"
        )
        logging.getLogger("kfnlp").error("kfnlp %s: error: %s", stage, exc)
        raise SystemExit(exc.exit_code) from None
    output.metadata[STATUS_KEY] = {"stage": stage, "started": started, "wall_time_s": round(time.time() - started, 3)}
    quick_exit.succeeded()


def log_metrics(metrics_artifact, values: dict) -> None:
    """The numeric ``values`` as KFP metrics (the artifact's metadata), and as its file: kfp.local's
    task cache serves a stage only when every output file exists (``kfnlp run`` resumes with it)."""
    numbers = {k: float(v) for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    for key, value in numbers.items():
        metrics_artifact.log_metric(key, value)
    path = Path(metrics_artifact.path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(numbers, indent=2), encoding="utf-8")


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


def train_stage(stage, function, config, model, **inputs) -> None:
    """Run a train stage (its ``STAGE`` entry and function) writing the KFP output artifact ``model``; inputs
    are KFP artifacts or plain strings. Here, as on one node; or, with ``$KFNLP_SCALE_OUT`` (compiled from
    ``cluster.train.nodes > 1``), as a multi-node job whose nodes read and write the pipeline root on S3:
    the model they write is copied into ``model.path`` (KFP uploads it to the model's URI, so the stages
    downstream read it as from one node), and their copy removed."""
    from kfnlp.launch.scale_out.spec import from_env

    config = with_checkpoint_dir(config, model)  # every node resumes from the same S3 checkpoints
    spec = from_env()
    if spec is None:
        artifacts = {key: source(value) if hasattr(value, "uri") else value for key, value in inputs.items()}
        function(config=config, output=destination(model), **artifacts)
        return
    from kfnlp.artifacts.model import KIND
    from kfnlp.config import to_json
    from kfnlp.launch.scale_out.launcher import run_job
    from kfnlp.storage import store_for

    shared = {key: _shared(value, key) if hasattr(value, "uri") else value for key, value in inputs.items()}
    output = _shared(model, "model") + "-job"
    run_job(stage.name, spec, shared, output, to_json(config))
    store = store_for(output)
    store.fetch(output, Path(model.path), kind=KIND)
    store.delete(output)
    store.remove_dir(output)


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
