"""Resuming ``kfnlp run --local``: an interrupted run is picked up where it stopped.

A run's identity is its kfp.local run directory, ``OUTPUT/artifacts/<run>`` (the name
``dsl.PIPELINE_JOB_NAME_PLACEHOLDER`` resolves to). ``OUTPUT/run.json`` names the last run
and whether it finished. A rerun into the same OUTPUT whose last run did not succeed (killed,
or a stage failed) runs again in that same directory, so that:

- every task writes to the same artifact paths as before, and a training stage, whose
  checkpoints are keyed by its output path, config and inputs
  (:mod:`kfnlp.training.checkpoints`), resumes from its newest complete checkpoint;
- kfp.local's task cache, kept per run (``OUTPUT/.kfp-cache/<run>``), serves the stages
  that completed: same component, image, config and input artifacts. Before the rerun,
  entries whose artifacts are no longer complete (no manifest) are dropped, so those
  stages run again. The cache key does not cover kfnlp's own code: after changing it,
  start anew (``--fresh``).

A run that succeeded is never resumed: the next one gets a new directory. A lock on
OUTPUT keeps two runs from sharing one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from kfnlp.errors import ConfigError, StorageError
from kfnlp.launch.in_pod import ERROR_FILE
from kfnlp.storage import read_any_manifest

STATE_FILE = "run.json"
LOCK_FILE = ".run.lock"
CACHE_DIR = ".kfp-cache"
CHECKPOINTS_GLOB = "*/*-checkpoints"  # a training stage's default checkpoint store, next to its output
RUNNING, SUCCEEDED, FAILED = "running", "succeeded", "failed"


@dataclass
class RunState:
    """What ``OUTPUT/run.json`` records: the run directory and what it must be resumed with."""

    run: str
    pipeline: str
    runner: str
    storage: str | None
    status: str = RUNNING

    def settings(self) -> str:
        return f"runner {self.runner}, storage {self.storage or 'local'}"


def read_state(output: Path) -> RunState | None:
    path = output / STATE_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return RunState(**{k: data[k] for k in ("run", "pipeline", "runner", "storage", "status")})
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise StorageError(f"{path}: unreadable ({exc}); delete it to start a new run") from None


def write_state(output: Path, state: RunState) -> None:
    tmp = output / f".{STATE_FILE}.tmp"
    tmp.write_text(json.dumps(asdict(state), indent=2), encoding="utf-8")
    os.replace(tmp, output / STATE_FILE)


@contextlib.contextmanager
def locked(output: Path) -> Iterator[None]:
    """Hold OUTPUT for one run (released by the kernel if the process dies)."""
    with open(output / LOCK_FILE, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(f"{output}: another kfnlp run is using this output directory") from None
        yield


def interrupted(output: Path, last: RunState | None, wanted: RunState, resume: bool | None) -> RunState | None:
    """The run to resume (``last``, the one ``output`` records, if it did not succeed), or None for a
    new one. ``resume``: None resumes when there is one, True insists on it, False (``--fresh``) never
    resumes. An interrupted run of other settings is never silently abandoned."""
    if resume is False or last is None or last.status == SUCCEEDED:
        if resume and last is None:
            raise ConfigError(f"--resume: {output} holds no run to resume")
        if resume and last is not None:
            raise ConfigError(f"--resume: the last run in {output} ({last.run}) succeeded; nothing to resume")
        return None
    if (last.pipeline, last.runner, last.storage) != (wanted.pipeline, wanted.runner, wanted.storage):
        raise ConfigError(
            f"{output} holds an interrupted {last.pipeline} run ({last.run}, {last.settings()}): rerun it with "
            "those settings to resume it, or pass --fresh to start a new run"
        )
    return last


@contextlib.contextmanager
def run_named(name: str) -> Iterator[None]:
    """kfp.local names the run directory (and the job name) ``name`` while the block runs.

    kfp 2.17 names it ``<pipeline>-<timestamp>`` in ``get_local_pipeline_resource_name``,
    which its orchestrator looks up on the module for each run: the one patch point."""
    from kfp.local import executor_input_utils

    original = executor_input_utils.get_local_pipeline_resource_name
    executor_input_utils.get_local_pipeline_resource_name = lambda pipeline_name: name
    try:
        yield
    finally:
        executor_input_utils.get_local_pipeline_resource_name = original


def new_run_name(pipeline_name: str) -> str:
    """A fresh run directory name, as kfp.local makes it."""
    from kfp.local import executor_input_utils

    return executor_input_utils.get_local_pipeline_resource_name(pipeline_name)


def _complete(uri: str) -> bool:
    """A cached output is usable: a kfnlp artifact with its manifest, or a plain file that exists."""
    if not uri.startswith("s3://") and not Path(uri).is_dir():
        return Path(uri).is_file()
    try:
        read_any_manifest(uri)
    except StorageError:
        return False
    return True


def _artifact_uris(value: Any) -> list[str]:
    if isinstance(value, dict) and value.get("__kfp_artifact__"):
        return [value.get("uri", "")]
    if isinstance(value, dict) and value.get("__kfp_artifact_list__"):
        return [a.get("uri", "") for a in value.get("artifacts", [])]
    return []


def prepare_rerun(run_dir: Path, cache: Path) -> None:
    """Before a rerun in ``run_dir``: drop the cache entries of stages whose outputs are no longer
    complete, and the bookkeeping (executor output, error file) of every stage that will run again,
    so that the summary reads only this attempt's outcome for them."""
    served: set[str] = set()
    for entry in sorted(cache.glob("*.json")) if cache.is_dir() else []:
        try:
            outputs = json.loads(entry.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            entry.unlink(missing_ok=True)
            continue
        uris = [uri for value in outputs.values() for uri in _artifact_uris(value)]
        if uris and all(_complete(uri) for uri in uris):
            served.update(uri.rstrip("/").split("/")[-2] for uri in uris)  # <run>/<task>/<output>
        else:
            entry.unlink(missing_ok=True)
    for task_dir in run_dir.iterdir() if run_dir.is_dir() else []:
        if task_dir.is_dir() and task_dir.name not in served:
            for stale in (ERROR_FILE, "executor_output.json"):
                (task_dir / stale).unlink(missing_ok=True)


def drop_checkpoints(run_dir: Path) -> list[Path]:
    """Delete the training checkpoints stored in ``run_dir`` (the stages' default place); return them."""
    dropped = sorted(p for p in run_dir.glob(CHECKPOINTS_GLOB) if p.is_dir())
    for path in dropped:
        shutil.rmtree(path, ignore_errors=True)
    return dropped


def keeps_checkpoints(config) -> bool:
    """Whether any training stage of ``config`` asks to keep its checkpoints after success."""
    return any(getattr(getattr(config, f.name), "keep_checkpoints", False) is True for f in dataclasses.fields(config))
