"""``kfnlp run --local``: a pipeline under the real KFP local executor, then its summary.

``kfp.local`` (SubprocessRunner, no venv; or DockerRunner, :mod:`kfnlp.launch.docker`) executes
every component exactly as the compiled pipeline wires it. Its log goes to
``OUTPUT/pipeline.log`` and the terminal gets the essentials (:mod:`kfnlp.launch.log_routing`);
afterwards the task directories are read back (:mod:`kfnlp.launch.summary`) into
``summary.json``, ``report.md`` and ``report.html`` (:mod:`kfnlp.launch.report`).

The stage subprocesses inherit this process's environment and nothing else, so the values
they need from the run (the storage root, the log prefix) travel as environment variables,
set only while the pipeline runs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from kfnlp.catalog import PipelineEntry, pipeline_arguments
from kfnlp.config import to_dict
from kfnlp.errors import PipelineError, StorageError
from kfnlp.launch.images import LOCAL_IMAGE
from kfnlp.launch.in_pod import LOG_PREFIX_ENV, STORAGE_ENV
from kfnlp.launch.log_routing import STAGE_PREFIX, LogRouter
from kfnlp.launch.pipelines import pipeline_function
from kfnlp.launch.resume import (
    CACHE_DIR,
    FAILED,
    RUNNING,
    SUCCEEDED,
    RunState,
    drop_checkpoints,
    interrupted,
    keeps_checkpoints,
    locked,
    new_run_name,
    prepare_rerun,
    read_state,
    run_named,
    write_state,
)
from kfnlp.launch.summary import TRIAL_FAILED, collect_stages, display_names, results
from kfnlp.registry.store import reject_credentials
from kfnlp.storage import S3Store

KFP_RUNTIME_ENV = "_KFP_RUNTIME"  # kfp/__init__.py imports only what a component needs when it is "true"


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
    resume: bool | None = None,
) -> dict:
    """Run ``entry``'s pipeline under kfp.local; write summary.json, report.md and report.html.

    With ``storage`` (``s3://bucket/prefix``) every dataset, model and evaluation the stages
    write goes there (see :mod:`kfnlp.launch.in_pod`); ``output`` keeps the logs, the KFP
    bookkeeping, the UI reports and the summary. ``runner="docker"`` runs every stage in
    ``image`` through kfp's DockerRunner (:mod:`kfnlp.launch.docker`). An interrupted run in
    ``output`` is resumed (:mod:`kfnlp.launch.resume`; ``resume``: None when there is one,
    True insists, False starts a new run)."""
    reject_credentials(config.register.tracking_uri, "register.tracking_uri")
    output = Path(output).resolve()
    try:
        output.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"{output}: cannot use as the output directory ({exc.strerror or exc})") from None
    if storage is not None:
        storage = storage.rstrip("/")
        S3Store().check_writable(storage)  # a bad URI, bucket or credentials fail here, not in the third stage
    with locked(output):
        return _run_locked(entry, config, output, verbose, terminal or sys.stdout, storage, runner, image, resume)


def _run_locked(entry, config, output: Path, verbose, terminal, storage, runner, image, resume) -> dict:
    from kfp import local

    from kfnlp.launch.report import run_report_html
    from kfnlp.reports import run_report

    wanted = RunState(run="", pipeline=entry.name, runner=runner, storage=storage)
    previous = read_state(output)
    resumed = interrupted(output, previous, wanted, resume)
    try:
        for stale in ("summary.json", "report.md", "report.html"):
            (output / stale).unlink(missing_ok=True)  # never leave an old run's results looking current
        root = output / "artifacts"
        root.mkdir(exist_ok=True)
    except OSError as exc:
        raise StorageError(f"{output}: cannot use as the output directory ({exc.strerror or exc})") from None
    pipeline_fn = pipeline_function(entry, config)
    arguments = pipeline_arguments(config)
    stage_env = {
        STORAGE_ENV: storage,
        LOG_PREFIX_ENV: STAGE_PREFIX,
        "HF_HUB_DISABLE_PROGRESS_BARS": os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS", "1"),
        # what KFP's launcher sets in a pod: without it, `import kfp` in every stage process also
        # imports the KFP API client and the Kubernetes client, which no stage uses (~0.6 s each)
        KFP_RUNTIME_ENV: "true",
    }
    kfp_runner, exit_codes = local.SubprocessRunner(use_venv=False), contextlib.nullcontext()
    if runner == "docker":
        from kfnlp.launch import docker

        image = image or LOCAL_IMAGE
        pipeline_fn, config, kfp_runner = docker.prepare(pipeline_fn, config, image, root, stage_env)
        arguments = pipeline_arguments(config)  # with the input paths the containers see
        exit_codes = docker.real_exit_codes()
    if resumed is not None:
        state = resumed
        prepare_rerun(root / state.run, output / CACHE_DIR / state.run)
        print(f"kfnlp: resuming the interrupted run {state.run}: completed stages are reused", file=terminal)
    else:
        if previous is not None and previous.status != SUCCEEDED:  # --fresh: nothing can resume it
            shutil.rmtree(output / CACHE_DIR / previous.run, ignore_errors=True)
            for dropped in drop_checkpoints(root / previous.run):
                print(f"kfnlp: deleted the checkpoints of the abandoned run {previous.run}: {dropped}", file=terminal)
        state = dataclasses.replace(wanted, run=new_run_name(pipeline_fn.pipeline_spec.pipeline_info.name))
    state.status = RUNNING
    write_state(output, state)
    run_dir = root / state.run
    local.init(
        runner=kfp_runner,
        pipeline_root=str(root),
        raise_on_error=False,
        enable_caching=True,
        cache_root=str(output / CACHE_DIR / state.run),
    )
    started = time.time()
    log_path = output / "pipeline.log"
    with (
        open(log_path, "a" if resumed else "w", encoding="utf-8") as log,
        contextlib.redirect_stdout(LogRouter(log, terminal, verbose)),
        _environment(stage_env),  # the stage subprocesses inherit it
        exit_codes,
        run_named(state.run),
    ):
        pipeline_fn(**arguments)
    wall = time.time() - started
    if not run_dir.is_dir():
        raise PipelineError(f"kfp.local produced no run directory {run_dir}; see {log_path}")
    stages = collect_stages(run_dir, display_names(pipeline_fn))
    for stage in stages:
        if stage["status"] == "succeeded" and stage.get("started", started) < started:
            stage["reused"] = True  # served from the interrupted attempt
    metrics, artifacts = results(stages)
    failed = [s for s in stages if s["status"] not in ("succeeded", TRIAL_FAILED)]  # a failed trial: the sweep went on
    state.status = FAILED if failed else SUCCEEDED
    if not failed:
        shutil.rmtree(output / CACHE_DIR / state.run, ignore_errors=True)  # a succeeded run is never resumed
        if not keeps_checkpoints(config):
            drop_checkpoints(run_dir)
    summary = {
        "pipeline": entry.name,
        "run": run_dir.name,
        "resumed": resumed is not None,
        "status": state.status,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "wall_time_s": round(wall, 2),
        "parameters": to_dict(config),
        "storage": storage or str(root),
        "runner": runner,
        "image": image,
        "stages": stages,
        "metrics": metrics,
        "sweep": metrics.pop("sweep", None),  # every trial: its values, metric, status and whether it was chosen
        "artifacts": artifacts,
        "log": str(log_path),
    }
    _write_atomic(output / "summary.json", json.dumps(summary, indent=2, default=str))
    _write_atomic(output / "report.md", run_report(summary))
    _write_atomic(output / "report.html", run_report_html(summary))
    write_state(output, state)
    return summary
