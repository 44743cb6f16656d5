"""``kfnlp run --local``: a pipeline under the real KFP local executor, then its summary.

``kfp.local`` (SubprocessRunner, no venv; or DockerRunner, :mod:`kfnlp.launch.docker`) executes
every component exactly as the compiled pipeline wires it. Its log goes to
``OUTPUT/pipeline.log`` and the terminal gets the essentials (:mod:`kfnlp.launch.log_routing`);
afterwards the task directories are read back (:mod:`kfnlp.launch.summary`) into
``summary.json`` and ``report.md``.

The stage subprocesses inherit this process's environment and nothing else, so the values
they need from the run (the storage root, the log prefix) travel as environment variables,
set only while the pipeline runs.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from kfnlp.catalog import PipelineEntry, pipeline_arguments
from kfnlp.config import to_dict
from kfnlp.errors import PipelineError, StorageError
from kfnlp.launch.images import RELEASE_IMAGE
from kfnlp.launch.in_pod import LOG_PREFIX_ENV, STORAGE_ENV
from kfnlp.launch.log_routing import STAGE_PREFIX, LogRouter
from kfnlp.launch.pipelines import pipeline_function
from kfnlp.launch.summary import collect_stages, display_names, results
from kfnlp.registry.store import reject_credentials
from kfnlp.storage import S3Store


def _set_environ(values: dict[str, str | None]) -> None:
    for key, value in values.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@contextlib.contextmanager
def _environment(values: dict[str, str | None]) -> Iterator[None]:
    """Set (or, for None, remove) environment variables for the duration of the block."""
    saved = {key: os.environ.get(key) for key in values}
    try:
        _set_environ(values)
        yield
    finally:
        _set_environ(saved)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def run_local(
    entry: PipelineEntry,
    config,
    output: str | os.PathLike,
    verbose: bool = False,
    terminal: TextIO | None = None,
    storage: str | None = None,
    runner: str = "subprocess",
    image: str | None = None,
) -> dict:
    """Run ``entry``'s pipeline under kfp.local; write summary.json and report.md.

    With ``storage`` (``s3://bucket/prefix``) every dataset, model and evaluation the stages
    write goes there (see :mod:`kfnlp.launch.in_pod`); ``output`` keeps the logs, the KFP
    bookkeeping, the UI reports and the summary. ``runner="docker"`` runs every stage in
    ``image`` (default: the release image) through kfp's DockerRunner (:mod:`kfnlp.launch.docker`)."""
    from kfp import local

    from kfnlp.reports import run_report

    # the config reaches every stage's arguments and summary.json: credentials only via MLFLOW_TRACKING_*
    reject_credentials(config.register.tracking_uri, "register.tracking_uri")
    terminal = terminal or sys.stdout
    output = Path(output).resolve()
    try:
        output.mkdir(parents=True, exist_ok=True)
        for stale in ("summary.json", "report.md"):
            (output / stale).unlink(missing_ok=True)  # never leave an old run's results looking current
        root = output / "artifacts"
        root.mkdir(exist_ok=True)
    except OSError as exc:
        raise StorageError(f"{output}: cannot use as the output directory ({exc.strerror or exc})") from None
    if storage is not None:
        storage = storage.rstrip("/")
        S3Store().check_writable(storage)  # a bad URI, bucket or credentials fail here, not in the third stage
    before = set(root.iterdir())
    pipeline_fn = pipeline_function(entry)
    arguments = pipeline_arguments(config)
    stage_env = {
        STORAGE_ENV: storage,
        LOG_PREFIX_ENV: STAGE_PREFIX,
        "HF_HUB_DISABLE_PROGRESS_BARS": os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS", "1"),
    }
    kfp_runner, exit_codes = local.SubprocessRunner(use_venv=False), contextlib.nullcontext()
    if runner == "docker":
        from kfnlp.launch import docker

        image = image or RELEASE_IMAGE
        pipeline_fn, config, kfp_runner = docker.prepare(pipeline_fn, config, image, root, stage_env)
        arguments = pipeline_arguments(config)  # with the input paths the containers see
        exit_codes = docker.real_exit_codes()
    local.init(runner=kfp_runner, pipeline_root=str(root), raise_on_error=False)
    started = time.time()
    log_path = output / "pipeline.log"
    with (
        open(log_path, "w", encoding="utf-8") as log,
        contextlib.redirect_stdout(LogRouter(log, terminal, verbose)),
        _environment(stage_env),  # the stage subprocesses inherit it
        exit_codes,
    ):
        pipeline_fn(**arguments)
    wall = time.time() - started
    new_runs = sorted(set(root.iterdir()) - before, key=lambda p: p.stat().st_mtime)
    if not new_runs:
        raise PipelineError(f"kfp.local produced no run directory under {root}; see {log_path}")
    run_dir = new_runs[-1]
    stages = collect_stages(run_dir, display_names(pipeline_fn))
    metrics, artifacts = results(stages)
    failed = [s for s in stages if s["status"] != "succeeded"]
    summary = {
        "pipeline": entry.name,
        "run": run_dir.name,
        "status": "failed" if failed else "succeeded",
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "wall_time_s": round(wall, 2),
        "parameters": to_dict(config),
        "storage": storage or str(root),
        "runner": runner,
        "image": image,
        "stages": stages,
        "metrics": metrics,
        "artifacts": artifacts,
        "log": str(log_path),
    }
    _write_atomic(output / "summary.json", json.dumps(summary, indent=2, default=str))
    _write_atomic(output / "report.md", run_report(summary))
    return summary
