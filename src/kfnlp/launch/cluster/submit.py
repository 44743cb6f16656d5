"""``kfnlp submit`` and ``kfnlp upload``: send a pipeline to a Kubeflow Pipelines API.

Both compile the catalog pipeline in this process with the merged config (embedded
defaults <- --config <- --set) as its parameter defaults, then talk to the KFP REST API
(:mod:`kfnlp.launch.cluster.api`) with the credentials of :mod:`kfnlp.launch.cluster.auth`:

- ``submit`` finds or creates the experiment and creates a run whose runtime
  parameters are the same merged config (``<section>_config`` JSON strings, as
  ``kfnlp run --local`` passes them), optionally with a pipeline root; ``--wait``
  polls the run and prints one line per state change.
- ``upload`` creates the pipeline, or a new version of the pipeline of that name.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from kfnlp import __version__
from kfnlp.catalog import PipelineEntry, pipeline_arguments
from kfnlp.errors import PipelineError, SubmitError
from kfnlp.launch.cluster.api import CONNECT_TIMEOUT_S, DEFAULT_EXPERIMENT, READ_TIMEOUT_S, Api
from kfnlp.launch.cluster.auth import Auth
from kfnlp.launch.cluster.compile import compile_to, require_image
from kfnlp.launch.cluster.settings import ClusterConfig

SUCCEEDED = "SUCCEEDED"
FINAL_STATES = {"SUCCEEDED", "FAILED", "CANCELED", "SKIPPED", "ERROR"}  # ERROR: pre-v2 servers
WAIT_RETRIES = 3  # consecutive transient API failures tolerated while waiting


def compiled_pipeline(entry: PipelineEntry, config, cluster: ClusterConfig | None = None) -> str:
    """Compile ``entry``'s pipeline for the cluster (the ``kfnlp compile`` output: the
    config's values as parameter defaults, ``cluster``'s Kubernetes settings) into a new
    temporary YAML file and return its path; the caller deletes it."""
    fd, path = tempfile.mkstemp(prefix=f"kfnlp-{entry.name}-", suffix=".yaml")
    os.close(fd)
    try:
        compile_to(entry, config, cluster or ClusterConfig(), Path(path))
    except BaseException:
        os.unlink(path)
        raise
    return path


@contextlib.contextmanager
def _compiled(entry: PipelineEntry, config, cluster: ClusterConfig | None = None) -> Iterator[str]:
    path = compiled_pipeline(entry, config, cluster)
    try:
        yield path
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)


def submit(
    entry: PipelineEntry,
    config,
    *,
    host: str,
    auth: Auth,
    namespace: str | None = None,
    experiment: str | None = None,
    run_name: str | None = None,
    pipeline_root: str | None = None,
    wait: bool = False,
    timeout: float | None = None,
    poll_interval: float = 5.0,
    cluster: ClusterConfig | None = None,
    out: TextIO | None = None,
    insecure: bool = False,
) -> dict[str, Any]:
    """Compile, submit one run, and (``wait``) follow it to the end. Returns the run's
    id, name, experiment, url and last known state."""
    out = out or sys.stdout
    require_image(cluster or ClusterConfig())  # before any request
    api = Api(host, auth, namespace, insecure).connect(need_namespace=True)
    client = api.client
    arguments = pipeline_arguments(config)
    experiment = experiment or DEFAULT_EXPERIMENT
    run_name = run_name or f"{entry.name} {time.strftime('%Y-%m-%d %H-%M-%S', time.gmtime())}"
    with _compiled(entry, config, cluster) as package:
        with api.calling(f"finding or creating experiment {experiment!r}"):
            found = client.create_experiment(name=experiment, namespace=api.namespace)
        if not getattr(found, "experiment_id", None):
            raise SubmitError(f"{api.host}: experiment {experiment!r}: the server answered without an experiment id")
        scope = f" in namespace {api.namespace}" if api.namespace else ""
        print(f"kfnlp: experiment {experiment} ({found.experiment_id}){scope}", file=out)
        with api.calling(f"creating run {run_name!r}"):
            run = client.run_pipeline(
                experiment_id=found.experiment_id,
                job_name=run_name,
                pipeline_package_path=package,
                params=arguments,
                pipeline_root=pipeline_root,
            )
    if not getattr(run, "run_id", None):
        raise SubmitError(f"{api.host}: creating run {run_name!r}: the server answered without a run id")
    url = api.link(f"runs/details/{run.run_id}")
    print(f"kfnlp: submitted {entry.name} as run {run_name!r} ({run.run_id})", file=out)
    print(f"  {url}", file=out)
    result = {
        "run_id": run.run_id,
        "run_name": run_name,
        "experiment_id": found.experiment_id,
        "url": url,
        "state": run.state,
    }
    if wait:
        final = wait_for_run(api, run.run_id, run_name, timeout=timeout, poll_interval=poll_interval, out=out)
        result["state"] = final.state
    out.flush()
    return result


def wait_for_run(
    api: Api,
    run_id: str,
    run_name: str,
    *,
    timeout: float | None,
    poll_interval: float,
    out: TextIO,
):
    """Poll the run until it ends; one line per state change. Raises PipelineError when it
    ends other than SUCCEEDED, SubmitError when ``timeout`` seconds pass first."""
    url = api.link(f"runs/details/{run_id}")
    try:
        return _follow(api, run_id, run_name, url, timeout, poll_interval, out)
    except KeyboardInterrupt:
        print(f"kfnlp: stopped following run {run_id}; it goes on running: {url}", file=sys.stderr)
        raise


def _follow(api: Api, run_id: str, run_name: str, url: str, timeout: float | None, poll: float, out: TextIO):
    started = time.monotonic()
    last = None
    failures = 0
    while True:
        left = None if timeout is None else timeout - (time.monotonic() - started)
        read_timeout = READ_TIMEOUT_S if left is None else max(1.0, min(READ_TIMEOUT_S, left))
        try:
            with api.calling(f"reading run {run_id}"):
                # kfp's get_run takes no timeout; the generated API it wraps does, so a
                # hung server cannot hold the wait long past --timeout
                run = api.client.runs.run_service_get_run(
                    run_id=run_id, _request_timeout=(CONNECT_TIMEOUT_S, read_timeout)
                )
            failures = 0
        except SubmitError as exc:
            failures += 1
            if not getattr(exc, "transient", False) or failures > WAIT_RETRIES:
                raise
            print(f"  (retrying: {exc})", file=out, flush=True)
            run = None
        elapsed = time.monotonic() - started
        if run is not None:
            state = str(run.state or "RUNTIME_STATE_UNSPECIFIED").upper()
            if state != last:
                print(f"  [{elapsed:6.0f}s] {state}", file=out, flush=True)
                last = state
            if state in FINAL_STATES:
                if state == SUCCEEDED:
                    print(f"kfnlp: run {run_name!r} succeeded", file=out, flush=True)
                    return run
                raise PipelineError(f"run {run_name!r} ({run_id}) ended {state}{_why(run)}; see {url}")
        if timeout is not None and elapsed >= timeout:
            raise SubmitError(
                f"run {run_name!r} ({run_id}) is still {last or 'unknown'} after {timeout:g} s (--timeout); "
                f"it goes on running on the cluster: {url}"
            )
        time.sleep(poll if timeout is None else max(0.0, min(poll, timeout - elapsed)))


def _why(run) -> str:
    parts = []
    message = getattr(getattr(run, "error", None), "message", None)
    if message:
        parts.append(message)
    details = getattr(run, "run_details", None)
    tasks = getattr(details, "task_details", None) or []
    failed = [t.display_name for t in tasks if str(getattr(t, "state", "")).upper() == "FAILED" and t.display_name]
    if failed:
        parts.append("failed tasks: " + ", ".join(failed))
    return (": " + "; ".join(parts)) if parts else ""


def upload(
    entry: PipelineEntry,
    config,
    *,
    host: str,
    auth: Auth,
    namespace: str | None = None,
    version: str | None = None,
    out: TextIO | None = None,
    cluster: ClusterConfig | None = None,
    insecure: bool = False,
) -> dict[str, Any]:
    """Upload ``entry`` as a new pipeline named after it, or as a new version of the
    pipeline of that name. Returns pipeline id, version id and name, and whether the
    pipeline was created."""
    out = out or sys.stdout
    require_image(cluster or ClusterConfig())  # before any request
    api = Api(host, auth, namespace, insecure).connect(need_namespace=False)
    client = api.client
    name = entry.name
    existing = _find_pipeline(api, name)
    with _compiled(entry, config, cluster) as package:
        if existing is None:
            with api.calling(f"uploading pipeline {name!r}"):
                created = client.upload_pipeline(
                    package, pipeline_name=name, description=entry.description, namespace=api.namespace
                )
            pipeline_id = created.pipeline_id
            if not pipeline_id:
                raise SubmitError(f"{api.host}: uploading pipeline {name!r}: the server answered without a pipeline id")
            scope = f" in namespace {api.namespace}" if api.namespace else ""
            print(f"kfnlp: uploaded new pipeline {name} ({pipeline_id}){scope}", file=out)
            result = {"pipeline_id": pipeline_id, "created": True, "version_id": None, "version": None}
            if not version:  # KFP made its first version itself
                print(f"  {api.link(f'pipelines/details/{pipeline_id}')}", file=out)
                return result
        else:
            pipeline_id = existing
            result = {"pipeline_id": pipeline_id, "created": False}
            version = version or f"{name}-{__version__}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"
        with api.calling(f"uploading version {version!r} of pipeline {name!r}"):
            added = client.upload_pipeline_version(
                package, pipeline_version_name=version, pipeline_id=pipeline_id, description=entry.description
            )
    version_id = getattr(added, "pipeline_version_id", None)
    if not version_id:
        raise SubmitError(f"{api.host}: uploading version {version!r}: the server answered without a version id")
    print(f"kfnlp: uploaded version {version} ({version_id}) of pipeline {name} ({pipeline_id})", file=out)
    print(f"  {api.link(f'pipelines/details/{pipeline_id}/version/{version_id}')}", file=out)
    result.update(version_id=version_id, version=version)
    return result


def _find_pipeline(api: Api, name: str) -> str | None:
    """The id of the pipeline whose display name is ``name`` (in the namespace, if given)."""
    # the Filter protobuf as JSON, as kfp.Client.get_pipeline_id builds it (operation 1: EQUALS)
    query = json.dumps({"predicates": [{"operation": 1, "key": "display_name", "stringValue": name}]})
    with api.calling(f"looking up pipeline {name!r}"):
        listing = api.client.list_pipelines(filter=query, page_size=100, namespace=api.namespace)
    # match exactly here too: a server that ignores the filter must not pick another pipeline
    found = [p for p in (listing.pipelines or []) if p.display_name == name]
    if len(found) > 1:
        raise SubmitError(f"{api.host}: {len(found)} pipelines are named {name!r}; delete or rename the extras")
    return found[0].pipeline_id if found else None
