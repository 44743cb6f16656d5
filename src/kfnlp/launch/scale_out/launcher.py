"""The launcher: a train task's pod creates the stage's multi-node job, follows it to its end and exits with
its outcome as one line.

The job is created through the official ``kubernetes`` client with the pod's service account. Its name comes
from the task's output URI, so a retried launcher pod finds the job its predecessor started (HTTP 409) and
attaches to it instead of starting a second one. Its owner is the launcher's pod: deleting the pod or the run
lets Kubernetes' garbage collector delete the job and free its GPUs, so SIGTERM needs no handler here.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import threading
import time
from pathlib import Path
from typing import Any

from kfnlp.errors import ScaleOutError
from kfnlp.launch.scale_out.manifests import (
    CLUSTER_RUNTIME,
    NAMESPACED_RUNTIME,
    RUNTIME_GROUP,
    build,
    container_name,
    engine,
    job_name,
    node_command,
    node_index,
    pod_selector,
    rank0_selector,
)
from kfnlp.launch.scale_out.spec import ScaleOut

POLL_S = 5.0
LOG_GRACE_S = 2.0  # after the job's end, how long rank 0's log may take to drain
SA_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
# the launcher pod's labels that tie the job to its KFP run (set by KFP's backend on every task pod)
RUN_LABELS = ("pipeline/runid", "workflows.argoproj.io/workflow")
# what a node's kfnlp says when a stage fails: "kfnlp: error: ..." or "kfnlp train-mlm: error: ..."
ERROR_LINE = re.compile(r"kfnlp\b.*?\berror: .*")
SUCCESS = {"trainjob": "Complete", "pytorchjob": "Succeeded"}

log = logging.getLogger("kfnlp")


def run_job(
    stage: str,
    spec: ScaleOut,
    inputs: dict[str, str],
    output_uri: str,
    config_json: str,
    *,
    api_client=None,
    namespace: str | None = None,
    poll_s: float = POLL_S,
) -> None:
    """Run ``stage`` as ``spec``'s job writing ``output_uri``; returns when it completed, raises
    :class:`ScaleOutError` with one line when it could not start, failed or was lost."""
    import urllib3
    from kubernetes.client.exceptions import ApiException

    if api_client is None:
        api_client, found = _connect()
        namespace = namespace or found
    job = _Job(stage, spec, api_client, namespace or _own_namespace(), poll_s)
    try:
        runtime_kind = job.runtime_kind()
        owners, labels = job.launcher_pod()
        command = node_command(stage, inputs, output_uri, config_json)
        job.start(build(spec, job_name(stage, output_uri), command, labels, owners, runtime_kind=runtime_kind))
        succeeded, why = job.follow()
    except urllib3.exceptions.HTTPError as exc:
        raise ScaleOutError(f"cannot reach the Kubernetes API at {api_client.configuration.host}: {exc}") from None
    except ApiException as exc:
        raise job._error(f"{spec.engine} {job.name or stage}", exc) from None
    job.clean_up(succeeded)
    if not succeeded:
        raise ScaleOutError(why)
    log.info("%s: job %s completed", stage, job.name)


def _connect() -> tuple[Any, str]:
    """The API client and namespace: the pod's service account in a cluster, else ``$KUBECONFIG``'s context."""
    from kubernetes import client, config

    try:
        if os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config()
            return client.ApiClient(), _own_namespace()
        kubeconfig = os.environ.get("KUBECONFIG")  # read now: the client reads it once, when first imported
        config.load_kube_config(config_file=kubeconfig)
        _, context = config.list_kube_config_contexts(config_file=kubeconfig)
    except config.ConfigException as exc:
        raise ScaleOutError(
            f"no Kubernetes API to create the job on (not in a pod, no usable kubeconfig): {exc}"
        ) from None
    return client.ApiClient(), context["context"].get("namespace") or "default"


def _own_namespace() -> str:
    try:
        return SA_NAMESPACE.read_text(encoding="utf-8").strip()
    except OSError:
        return "default"


def _api_message(exc) -> str:
    """The API's own message from an ApiException's Status body, else its HTTP status and reason."""
    import json

    with contextlib.suppress(TypeError, ValueError, AttributeError):
        return json.loads(exc.body)["message"]
    return f"HTTP {exc.status} {exc.reason}".strip()


class _Job:
    """One job as the launcher sees it through the API."""

    def __init__(self, stage: str, spec: ScaleOut, api_client, namespace: str, poll_s: float):
        from kubernetes import client

        self.stage, self.spec, self.namespace, self.poll_s = stage, spec, namespace, poll_s
        self.engine = engine(spec)
        self.api_client = api_client
        self.custom = client.CustomObjectsApi(api_client)
        self.core = client.CoreV1Api(api_client)
        self.name = ""
        self.polling = False  # the watch was refused: poll every poll_s instead

    # -- before the job -----------------------------------------------------------------------
    def runtime_kind(self) -> str:
        """The kind of the TrainJob's runtime: a ClusterTrainingRuntime, else a TrainingRuntime in the namespace;
        neither is one line now rather than a job that never starts."""
        from kubernetes.client.exceptions import ApiException

        if self.spec.engine != "trainjob":
            return CLUSTER_RUNTIME[0]
        (cluster_kind, cluster_plural), (kind, plural) = CLUSTER_RUNTIME, NAMESPACED_RUNTIME
        forbidden = False
        try:
            self.custom.get_cluster_custom_object(RUNTIME_GROUP, self.engine.version, cluster_plural, self.spec.runtime)
            return cluster_kind
        except ApiException as exc:
            if exc.status not in (403, 404):
                raise self._error(f"reading {cluster_kind} {self.spec.runtime}", exc) from None
            forbidden = exc.status == 403  # a namespaced Role cannot read cluster-scoped runtimes
        try:
            self.custom.get_namespaced_custom_object(
                RUNTIME_GROUP, self.engine.version, self.namespace, plural, self.spec.runtime
            )
            return kind
        except ApiException as exc:
            if exc.status != 404:
                raise self._error(f"reading {kind} {self.spec.runtime}", exc) from None
        if forbidden:
            log.info("%s: cannot read ClusterTrainingRuntimes; assuming %s is one", self.stage, self.spec.runtime)
            return cluster_kind
        raise ScaleOutError(
            f"no training runtime {self.spec.runtime!r}: neither a {cluster_kind} nor a {kind} in namespace "
            f"{self.namespace} (cluster.train.runtime; list them with `kubectl get {cluster_plural},{plural} -A`)"
        )

    def launcher_pod(self) -> tuple[list[dict[str, Any]], dict[str, str]]:
        """(owner references, labels) of the job: this pod owns it and lends it its run labels; a pod that
        cannot be read (no $HOSTNAME, no permission) leaves the job to the cleanup policy and TTL."""
        from kubernetes.client.exceptions import ApiException

        labels = {"app.kubernetes.io/managed-by": "kfnlp", "app.kubernetes.io/component": self.stage}
        name = os.environ.get("HOSTNAME", "")
        try:
            pod = self.core.read_namespaced_pod(name, self.namespace) if name else None
        except ApiException as exc:
            log.info("%s: cannot read the launcher's pod %s (%s): the job has no owner", self.stage, name, exc.status)
            pod = None
        if pod is None:
            return [], labels
        own = pod.metadata.labels or {}
        labels |= {key: own[key] for key in RUN_LABELS if key in own}
        owner = {"apiVersion": "v1", "kind": "Pod", "name": pod.metadata.name, "uid": pod.metadata.uid}
        return [owner], labels

    def start(self, manifest: dict[str, Any]) -> None:
        """Create the job, or attach to the one a previous launcher pod of this task created; a job that
        already failed is replaced (this pod is a retry: its nodes resume from the checkpoints)."""
        from kubernetes.client.exceptions import ApiException

        self.name = manifest["metadata"]["name"]
        try:
            self._create(manifest)
            log.info("%s: created %s %s in %s", self.stage, self.engine.kind, self.name, self.namespace)
            return
        except ApiException as exc:
            if exc.status != 409:
                raise self._error(f"creating {self.engine.kind} {self.name}", exc) from None
        existing = self.get()
        done = existing is not None and self._finished(existing)
        if existing is None or (done and not done[0]):
            log.info("%s: %s %s failed before; starting it again", self.stage, self.engine.kind, self.name)
            self.delete(wait=True)
            self._create(manifest)
            return
        log.info("%s: attached to %s %s (a retried launcher)", self.stage, self.engine.kind, self.name)
        owners = existing["metadata"].get("ownerReferences") or []
        mine = [o for o in manifest["metadata"].get("ownerReferences", []) if o not in owners]
        if mine:
            self.custom.patch_namespaced_custom_object(
                *self._where(), self.name, {"metadata": {"ownerReferences": owners + mine}}
            )

    def _create(self, manifest: dict[str, Any]) -> None:
        # Strict: an API server that does not know a field (a Trainer older than v2.3 and runtimePatches) refuses
        # the job instead of dropping the field with a warning and running the nodes without their settings
        self.custom.create_namespaced_custom_object(
            self.engine.group,
            self.engine.version,
            self.namespace,
            self.engine.plural,
            manifest,
            field_validation="Strict",
        )

    # -- while it runs --------------------------------------------------------------------------
    def follow(self) -> tuple[bool, str]:
        """Wait for the job's end while rank 0's log streams into this pod's; (succeeded, why it failed)."""
        started = time.monotonic()
        running = suspended = False
        rank0 = _RankZeroLog(self)
        rank0.start()
        try:
            while True:
                job = self.get()
                if job is None:
                    return False, f"{self.engine.kind} {self.name} was deleted before it finished"
                done = self._finished(job)
                if done:
                    return done
                suspension = self._condition(job, "Suspended")
                if suspension and not suspended:
                    log.info("%s: %s %s is suspended: %s", self.stage, self.engine.kind, self.name, suspension)
                suspended = bool(suspension)
                if not running:
                    running = self._all_running(started, suspension)
                self._wait_for_change(job["metadata"].get("resourceVersion"))
        finally:
            rank0.finish(grace=min(LOG_GRACE_S, 10 * self.poll_s))

    def _finished(self, job: dict[str, Any]) -> tuple[bool, str] | None:
        if self._condition(job, SUCCESS[self.spec.engine]) is not None:
            return True, ""
        failed = self._condition(job, "Failed")
        return (False, self._failure(failed)) if failed is not None else None

    @staticmethod
    def _condition(job: dict[str, Any], type_: str) -> str | None:
        """The message (or reason) of the job's condition ``type_`` when it is True, else None."""
        for condition in (job.get("status") or {}).get("conditions") or []:
            if condition.get("type") == type_ and condition.get("status") == "True":
                return condition.get("message") or condition.get("reason") or type_
        return None

    def _all_running(self, started: float, suspension: str | None) -> bool:
        """True once every node's pod runs; after start_timeout_s without that, delete the job and fail with
        why the pods wait (the scheduler's message)."""
        pods = self.pods()
        running = [p for p in pods if p["status"].get("phase") in ("Running", "Succeeded")]
        if len(running) >= self.spec.nodes:
            log.info("%s: all %d nodes of %s are running", self.stage, self.spec.nodes, self.name)
            return True
        if time.monotonic() - started < self.spec.start_timeout_s:
            return False
        why = next(filter(None, map(_unscheduled, pods)), None) or (
            f"suspended: {suspension}" if suspension else f"{len(pods)} of {self.spec.nodes} pods created"
        )
        self.delete()
        raise ScaleOutError(
            f"{self.engine.kind} {self.name}: {len(running)} of {self.spec.nodes} nodes running after "
            f"{self.spec.start_timeout_s} s (cluster.train.start_timeout); deleted it: {why}"
        )

    def _wait_for_change(self, version: str | None) -> None:
        """Until the job changes (a watch from its resourceVersion) or poll_s passes; a refused watch (a Role
        without the ``watch`` verb) turns this into polling. The response's status is read here: the client's
        ``Watch`` does not check it and would take an error for an event."""
        import urllib3
        from kubernetes.client.exceptions import ApiException
        from kubernetes.watch.watch import iter_resp_lines

        began = time.monotonic()
        if not self.polling:
            try:
                response = self.custom.list_namespaced_custom_object(
                    *self._where(),
                    field_selector=f"metadata.name={self.name}",
                    resource_version=version,
                    timeout_seconds=max(1, round(self.poll_s)),
                    watch=True,
                    _preload_content=False,
                )
                refused = None if response.status == 200 else f"HTTP {response.status}"
            except (ApiException, urllib3.exceptions.HTTPError) as exc:
                response, refused = None, type(exc).__name__
            if refused is None:
                try:
                    if next(iter_resp_lines(response), None) is not None:
                        return  # an event: look at the job again
                except urllib3.exceptions.HTTPError:
                    pass
                finally:  # closed, not just released: the server may still be streaming on it
                    response.close()
                    response.release_conn()
            else:
                log.info("%s: cannot watch %s (%s): polling every %g s", self.stage, self.name, refused, self.poll_s)
                self.polling = True
        time.sleep(max(0.0, self.poll_s - (time.monotonic() - began)))

    # -- its end ---------------------------------------------------------------------------------
    def _failure(self, message: str) -> str:
        """One line: the job's failure, which node failed first (index, pod, exit code) and its error line."""
        failed = []
        for pod in self.pods():
            for container in pod["status"].get("containerStatuses") or []:
                for state in (container.get("state"), container.get("lastState")):
                    ended = (state or {}).get("terminated") or {}
                    if ended.get("exitCode"):
                        failed.append((str(ended.get("finishedAt") or ""), pod, ended["exitCode"]))
        line = f"{self.engine.kind} {self.name} failed"
        if failed:
            _, pod, code = min(failed, key=lambda item: item[0])
            name = pod["metadata"]["name"]
            index = node_index(self.spec, pod)
            line += f" on node {'?' if index is None else index} (pod {name}, exit code {code})"
            said = self._error_line(name)
            return f"{line}: {message}" + (f"; {said}" if said else "")
        return f"{line}: {message}"

    def _error_line(self, pod: str) -> str | None:
        from kubernetes.client.exceptions import ApiException

        try:
            text = self.core.read_namespaced_pod_log(
                pod, self.namespace, container=container_name(self.spec), tail_lines=200
            )
        except ApiException:
            return None
        found = [m.group(0).strip() for m in map(ERROR_LINE.search, str(text).splitlines()) if m]
        return found[-1] if found else None

    def clean_up(self, succeeded: bool) -> None:
        policy = self.spec.cleanup
        if policy == "always" or (policy == "on-success" and succeeded):
            self.delete()
            log.info("%s: deleted %s %s (cleanup: %s)", self.stage, self.engine.kind, self.name, policy)
        else:
            log.info(
                "%s: kept %s %s (cleanup: %s): kubectl describe %s %s -n %s",
                *(self.stage, self.engine.kind, self.name, policy, self.engine.plural, self.name, self.namespace),
            )

    # -- the API ----------------------------------------------------------------------------------
    def _where(self) -> tuple[str, str, str, str]:
        return self.engine.group, self.engine.version, self.namespace, self.engine.plural

    def get(self) -> dict[str, Any] | None:
        from kubernetes.client.exceptions import ApiException

        try:
            return self.custom.get_namespaced_custom_object(*self._where(), self.name)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise self._error(f"reading {self.engine.kind} {self.name}", exc) from None

    def delete(self, wait: bool = False) -> None:
        """Delete the job with its pods (foreground: the job goes last); ``wait``: until the API no longer has it."""
        from kubernetes.client.exceptions import ApiException

        try:
            self.custom.delete_namespaced_custom_object(*self._where(), self.name, propagation_policy="Foreground")
        except ApiException as exc:
            if exc.status != 404:
                raise self._error(f"deleting {self.engine.kind} {self.name}", exc) from None
        while wait and self.get() is not None:
            time.sleep(self.poll_s)

    def pods(self, selector: str | None = None) -> list[dict[str, Any]]:
        """The job's pods (or those ``selector`` picks) as the API spells them."""
        found = self.core.list_namespaced_pod(
            self.namespace, label_selector=selector or pod_selector(self.spec, self.name)
        )
        return [self.api_client.sanitize_for_serialization(pod) for pod in found.items]

    def _error(self, doing: str, exc) -> ScaleOutError:
        return ScaleOutError(f"{doing} in namespace {self.namespace}: {_api_message(exc)}")


def _unscheduled(pod: dict[str, Any]) -> str | None:
    """The scheduler's message on a pending pod (``0/3 nodes are available: 3 Insufficient nvidia.com/gpu``)."""
    for condition in pod["status"].get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
            return condition.get("message") or condition.get("reason")
    return None


class _RankZeroLog(threading.Thread):
    """Streams rank 0's log into this pod's stderr, each line prefixed, from every container it runs in
    (a restarted container or a replaced pod is followed from its start)."""

    def __init__(self, job: _Job):
        super().__init__(name="kfnlp-rank0-log", daemon=True)
        self.job = job
        self.prefix = f"[{job.stage} node 0] "
        self.seen: set[tuple[str, str]] = set()  # (pod uid, container id) streamed to their end
        self._stop_asked = threading.Event()

    def run(self) -> None:
        while True:
            last = self._stop_asked.is_set()  # one more look after the job ended: its last lines
            with contextlib.suppress(Exception):  # the log is a courtesy: the job's outcome decides
                self._stream_new(ended_only=last)
            if last:
                return
            self._stop_asked.wait(self.job.poll_s)

    def finish(self, grace: float) -> None:
        """Stream what ended, then stop; a rank 0 still running (another node failed) is left after ``grace``
        (a daemon thread: it ends with the launcher's process)."""
        self._stop_asked.set()
        self.join(grace)

    def _stream_new(self, ended_only: bool) -> None:
        """Stream each of rank 0's containers not streamed yet (``ended_only``: those that ended, whose
        log ends too)."""
        from kubernetes.watch.watch import iter_resp_lines

        job = self.job
        for pod in sorted(
            job.pods(rank0_selector(job.spec, job.name)), key=lambda p: p["metadata"]["creationTimestamp"]
        ):
            for container in pod["status"].get("containerStatuses") or []:
                key = (pod["metadata"]["uid"], container.get("containerID") or "")
                if container.get("name") != container_name(job.spec) or not key[1] or key in self.seen:
                    continue
                states = set(container.get("state") or {})
                if not ({"terminated"} if ended_only else {"running", "terminated"}) & states:
                    continue
                response = job.core.read_namespaced_pod_log(
                    pod["metadata"]["name"],
                    job.namespace,
                    container=container["name"],
                    follow=True,
                    _preload_content=False,
                )
                try:
                    for line in iter_resp_lines(response):
                        sys.stderr.write(self.prefix + line + "\n")
                        sys.stderr.flush()
                finally:
                    response.close()
                    response.release_conn()
                self.seen.add(key)
