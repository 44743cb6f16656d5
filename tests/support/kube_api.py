"""A loopback stand-in of the Kubernetes API, for the scale-out launcher's tests.

No Kubernetes API server can run on the test machines (no kind, k3s or kube-apiserver is reachable: see the
platform notes), so this real HTTP server on 127.0.0.1 answers the calls the launcher makes through the
official ``kubernetes`` client, with the API's JSON shapes (objects with ``metadata.uid``/``resourceVersion``,
errors as ``Status`` objects with ``reason`` and ``code``, watch events as JSON lines over chunked HTTP):

- custom objects of the ``trainjobs`` (trainer.kubeflow.org) and ``pytorchjobs`` (kubeflow.org) plurals:
  create (409 ``AlreadyExists`` on a taken name), get, list and watch (``?watch=true`` from a
  ``resourceVersion``, ``fieldSelector=metadata.name=``, ``labelSelector``, ``timeoutSeconds``), delete
  (its pods go too, as garbage collection would take them), patch (JSON merge patch);
- get of ``clustertrainingruntimes`` (cluster-scoped) and ``trainingruntimes`` (namespaced);
- pods: list by label selector, get, and ``pods/NAME/log`` (``follow``, ``tailLines``, ``container``);
- ``inferenceservices`` (serving.kserve.io) as custom objects, and the core ``serviceaccounts`` (create, get,
  patch) and ``secrets`` (get; :meth:`KubeApi.add_secret`) that ``kfnlp deploy --apply`` uses.

The test scripts a job's life with :meth:`KubeApi.add_pod` (pending, with the scheduler's message),
:meth:`KubeApi.run_pod`, :meth:`KubeApi.log`, :meth:`KubeApi.finish_pod` (exit code) and
:meth:`KubeApi.set_condition` (the engines' real condition types and fields). ``refuse_watch`` answers
watches 403, as a Role without the ``watch`` verb does. Every request is recorded in ``requests``.
"""

from __future__ import annotations

import copy
import datetime
import itertools
import json
import re
import threading
import time
import urllib.parse
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from tests.support.loopback import LoopbackHttp

# plural -> (group, kind, namespaced)
RESOURCES = {
    "trainjobs": ("trainer.kubeflow.org", "TrainJob", True),
    "trainingruntimes": ("trainer.kubeflow.org", "TrainingRuntime", True),
    "clustertrainingruntimes": ("trainer.kubeflow.org", "ClusterTrainingRuntime", False),
    "pytorchjobs": ("kubeflow.org", "PyTorchJob", True),
    "inferenceservices": ("serving.kserve.io", "InferenceService", True),
}
# core (v1) objects besides pods: plural -> kind; the deploy tests create service accounts and read secrets
CORE = {"serviceaccounts": "ServiceAccount", "secrets": "Secret"}
WATCH_DEFAULT_S = 30


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    body: Any = None


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def status(code: int, reason: str, message: str) -> dict[str, Any]:
    """The API's error body."""
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


def selected(labels: dict[str, str], selector: str | None) -> bool:
    """Equality-based label selectors: ``a=b``, ``a==b``, ``a!=b``, ``a``, ``!a``, comma-separated."""
    for term in filter(None, (t.strip() for t in (selector or "").split(","))):
        if "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key.strip()) == value.strip():
                return False
        elif "=" in term:
            key, value = re.split("==?", term, maxsplit=1)
            if labels.get(key.strip()) != value.strip():
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


class KubeApi:
    """Start with ``with KubeApi() as api:``; ``api.client()`` is a ``kubernetes`` ApiClient pointed at it."""

    def __init__(self, namespace: str = "kubeflow-user"):
        self.namespace = namespace
        self.requests: list[Request] = []
        self.refuse_watch = False
        self.objects: dict[tuple[str, str | None, str], dict[str, Any]] = {}  # (plural, namespace, name)
        self.pods: dict[str, dict[str, Any]] = {}  # in self.namespace, by name
        self.logs: dict[str, list[str]] = {}
        self.pod_owner: dict[str, tuple[str, str]] = {}  # pod -> (plural, job name)
        self.events: list[tuple[int, str, tuple[str, str | None, str], dict[str, Any]]] = []
        self._versions = itertools.count(100)
        self._changed = threading.Condition()
        self._http: LoopbackHttp | None = None
        self._stopping = False

    # -- lifecycle ----------------------------------------------------------------------
    def __enter__(self) -> KubeApi:
        api = self

        class Handler(_Handler):
            kube = api

        self._http = LoopbackHttp(Handler)
        return self

    def __exit__(self, *exc) -> None:
        self._stopping = True
        with self._changed:
            self._changed.notify_all()
        if self._http:
            self._http.stop()

    @property
    def url(self) -> str:
        assert self._http, "not started"
        return self._http.url

    def client(self):
        """The real client, configured as a kubeconfig would configure it."""
        from kubernetes import client

        configuration = client.Configuration()
        configuration.host = self.url
        return client.ApiClient(configuration)

    def kubeconfig(self, path: Path) -> Path:
        """A kubeconfig file for this server, its namespace the context's (``$KUBECONFIG`` for code that loads
        its own configuration)."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "stand-in", "cluster": {"server": self.url}}],
            "users": [{"name": "runner", "user": {"token": "stand-in-token"}}],
            "contexts": [
                {"name": "stand-in", "context": {"cluster": "stand-in", "user": "runner", "namespace": self.namespace}}
            ],
            "current-context": "stand-in",
        }
        path.write_text(json.dumps(config), encoding="utf-8")
        return path

    # -- what the test sees ----------------------------------------------------------------
    def calls(self, method: str, contains: str = "") -> list[Request]:
        return [r for r in self.requests if r.method == method and contains in r.path]

    def job(self, plural: str, name: str) -> dict[str, Any] | None:
        with self._changed:
            found = self.objects.get((plural, self.namespace, name))
            return copy.deepcopy(found) if found else None

    def jobs(self, plural: str) -> list[dict[str, Any]]:
        with self._changed:
            return [copy.deepcopy(o) for (p, _, _), o in self.objects.items() if p == plural]

    def wait_for_job(self, plural: str, timeout: float = 10.0) -> dict[str, Any]:
        """The first job of ``plural`` once the launcher has created it."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = [o for (p, _, _), o in self.objects.items() if p == plural]
                if found:
                    return copy.deepcopy(found[0])
                if not self._changed.wait(max(0.0, deadline - time.monotonic())):
                    raise AssertionError(f"no {plural} created within {timeout} s")

    # -- scripting a cluster ------------------------------------------------------------------
    def add_object(self, plural: str, body: dict[str, Any], namespaced: bool = True) -> dict[str, Any]:
        """An object that exists before the launcher runs (a runtime, a job of an earlier attempt)."""
        with self._changed:
            return self._create(plural, self.namespace if namespaced else None, body)

    def set_condition(
        self, plural: str, name: str, type_: str, status_: str = "True", reason: str = "", message: str = ""
    ) -> None:
        """Set a job's condition as its controller does: ``metav1.Condition`` for a TrainJob, the training
        operator's ``JobCondition`` (with ``lastUpdateTime``) for a PyTorchJob."""
        with self._changed:
            job = self.objects[(plural, self.namespace, name)]
            condition = {"type": type_, "status": status_, "reason": reason, "message": message}
            condition["lastTransitionTime"] = now()
            if plural == "pytorchjobs":
                condition["lastUpdateTime"] = now()
            else:
                condition["observedGeneration"] = job["metadata"].get("generation", 1)
            conditions = [c for c in job.setdefault("status", {}).get("conditions", []) if c["type"] != type_]
            job["status"]["conditions"] = [*conditions, condition]
            self._modified(plural, self.namespace, name)

    def add_pod(
        self,
        name: str,
        labels: dict[str, str],
        owner: tuple[str, str] | None = None,
        unschedulable: str = "",
        container: str = "node",
    ) -> None:
        """A Pending pod; ``unschedulable``: the scheduler's message on its ``PodScheduled=False`` condition.
        ``owner``: (plural, job name) whose deletion removes the pod."""
        conditions = []
        if unschedulable:
            conditions.append(
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": unschedulable,
                    "lastProbeTime": None,
                    "lastTransitionTime": now(),
                }
            )
        with self._changed:
            self.pods[name] = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": name,
                    "namespace": self.namespace,
                    "uid": str(uuid.uuid4()),
                    "labels": dict(labels),
                    "resourceVersion": str(next(self._versions)),
                    "creationTimestamp": now(),
                },
                "spec": {"containers": [{"name": container, "image": "kfnlp:test"}]},
                "status": {"phase": "Pending", "conditions": conditions},
            }
            self.logs[name] = []
            if owner:
                self.pod_owner[name] = owner
            self._changed.notify_all()

    def run_pod(self, name: str, restarts: int = 0) -> None:
        with self._changed:
            pod = self.pods[name]
            pod["status"] = {
                "phase": "Running",
                "conditions": [
                    {"type": t, "status": "True", "lastTransitionTime": now()}
                    for t in ("PodScheduled", "Initialized", "ContainersReady", "Ready")
                ],
                "containerStatuses": [
                    {
                        "name": pod["spec"]["containers"][0]["name"],
                        "image": "kfnlp:test",
                        "imageID": "",
                        "ready": True,
                        "restartCount": restarts,
                        "containerID": f"containerd://{uuid.uuid4().hex}",
                        "state": {"running": {"startedAt": now()}},
                    }
                ],
            }
            self._changed.notify_all()

    def log(self, name: str, *lines: str) -> None:
        with self._changed:
            self.logs[name].extend(lines)
            self._changed.notify_all()

    def finish_pod(self, name: str, exit_code: int = 0) -> None:
        """The pod's container ends with ``exit_code``: phase Succeeded or Failed; a follow of its log ends."""
        with self._changed:
            pod = self.pods[name]
            container = pod["status"]["containerStatuses"][0]
            container["ready"] = False
            container["state"] = {
                "terminated": {
                    "exitCode": exit_code,
                    "reason": "Completed" if exit_code == 0 else "Error",
                    "startedAt": container["state"].get("running", {}).get("startedAt", now()),
                    "finishedAt": now(),
                }
            }
            pod["status"]["phase"] = "Succeeded" if exit_code == 0 else "Failed"
            self._changed.notify_all()

    def delete_pod(self, name: str) -> None:
        with self._changed:
            self.pods.pop(name, None)
            self._changed.notify_all()

    # -- the API ------------------------------------------------------------------------------
    def _create(self, plural: str, namespace: str | None, body: dict[str, Any]) -> dict[str, Any]:
        obj = copy.deepcopy(body)
        meta = obj.setdefault("metadata", {})
        name = meta.get("name")
        key = (plural, namespace, name)
        if key in self.objects:
            group = RESOURCES[plural][0]
            raise _Refusal(409, "AlreadyExists", f'{plural}.{group} "{name}" already exists')
        meta.update(uid=str(uuid.uuid4()), creationTimestamp=now(), generation=1)
        if namespace:
            meta["namespace"] = namespace
        self.objects[key] = obj
        self._record("ADDED", key)
        return copy.deepcopy(obj)

    def _modified(self, plural: str, namespace: str | None, name: str) -> None:
        self._record("MODIFIED", (plural, namespace, name))

    def _record(self, type_: str, key: tuple[str, str | None, str], obj: dict[str, Any] | None = None) -> None:
        version = next(self._versions)
        obj = obj if obj is not None else self.objects[key]
        obj["metadata"]["resourceVersion"] = str(version)
        self.events.append((version, type_, key, copy.deepcopy(obj)))
        self._changed.notify_all()

    def route(self, method: str, path: str, query: dict[str, str], body: Any) -> tuple[int, Any]:
        """(status, JSON body) of one request; watches and log follows are streamed by the handler."""
        parts = path.strip("/").split("/")
        with self._changed:
            if parts[:2] == ["api", "v1"] and len(parts) >= 5 and parts[2] == "namespaces" and parts[4] == "pods":
                return self._pods(method, parts[3], parts[5:], query)
            if parts[:2] == ["api", "v1"] and len(parts) >= 5 and parts[2] == "namespaces" and parts[4] in CORE:
                return self._core(method, parts[3], parts[4], parts[5:], body)
            if parts[0] == "apis" and len(parts) >= 4:
                return self._custom(method, parts, query, body)
        return 404, status(404, "NotFound", "the server could not find the requested resource")

    def _pods(self, method: str, namespace: str, rest: list[str], query: dict[str, str]) -> tuple[int, Any]:
        if method != "GET" or namespace != self.namespace:
            return 404, status(404, "NotFound", "the server could not find the requested resource")
        if not rest:
            items = [
                copy.deepcopy(p)
                for p in self.pods.values()
                if selected(p["metadata"]["labels"], query.get("labelSelector"))
            ]
            return 200, {"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "1"}, "items": items}
        name = rest[0]
        if name not in self.pods:
            return 404, status(404, "NotFound", f'pods "{name}" not found')
        if rest[1:] == ["log"]:
            lines = self.logs[name]
            tail = query.get("tailLines")
            shown = lines[-int(tail) :] if tail else lines
            return 200, "".join(line + "\n" for line in shown)
        return 200, copy.deepcopy(self.pods[name])

    def add_secret(self, name: str, keys: dict[str, str]) -> None:
        """A Secret in the namespace (values base64-encoded, as the API keeps them)."""
        import base64

        data = {k: base64.b64encode(v.encode()).decode() for k, v in keys.items()}
        with self._changed:
            self._create(
                "secrets",
                self.namespace,
                {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "data": data},
            )

    def _core(self, method: str, namespace: str, plural: str, rest: list[str], body: Any) -> tuple[int, Any]:
        kind = CORE[plural]
        key = (plural, namespace, rest[0] if rest else None)
        if method == "POST" and not rest:
            if not isinstance(body, dict) or body.get("kind") != kind or not body.get("metadata", {}).get("name"):
                return 400, status(400, "BadRequest", f"the body is not a {kind} with a name")
            key = (plural, namespace, body["metadata"]["name"])
            if key in self.objects:
                return 409, status(409, "AlreadyExists", f'{plural} "{key[2]}" already exists')
            return 201, self._create(plural, namespace, body)
        if key not in self.objects:
            return 404, status(404, "NotFound", f'{plural} "{key[2]}" not found')
        if method == "GET":
            return 200, copy.deepcopy(self.objects[key])
        if method == "PATCH" and plural != "secrets":
            self.objects[key] = merge_patch(self.objects[key], body)
            self._modified(plural, namespace, key[2])
            return 200, copy.deepcopy(self.objects[key])
        return 405, status(405, "MethodNotAllowed", f"{method} is not supported on {plural}")

    def _custom(self, method: str, parts: list[str], query: dict[str, str], body: Any) -> tuple[int, Any]:
        group, version = parts[1], parts[2]
        if len(parts) >= 6 and parts[3] == "namespaces":
            namespace, plural, name = parts[4], parts[5], (parts[6] if len(parts) > 6 else None)
        else:
            namespace, plural, name = None, parts[3], (parts[4] if len(parts) > 4 else None)
        known = RESOURCES.get(plural)
        if not known or known[0] != group or known[2] != (namespace is not None):
            return 404, status(404, "NotFound", "the server could not find the requested resource")
        key = (plural, namespace, name)
        if method == "POST" and name is None:
            expected = f"{group}/{version}"
            if not isinstance(body, dict) or body.get("apiVersion") != expected or body.get("kind") != known[1]:
                return 400, status(400, "BadRequest", f"the body's apiVersion/kind is not {expected}/{known[1]}")
            if not body.get("metadata", {}).get("name"):
                return 422, status(422, "Invalid", f"{known[1]} is invalid: metadata.name: Required value")
            try:
                return 201, self._create(plural, namespace, body)
            except _Refusal as refusal:
                return refusal.code, status(refusal.code, refusal.reason, refusal.message)
        if name is None and method == "GET":
            items = [copy.deepcopy(o) for k, o in self.objects.items() if k[:2] == (plural, namespace)]
            items = [o for o in items if _fields_match(o, query.get("fieldSelector"))]
            items = [o for o in items if selected(o["metadata"].get("labels", {}), query.get("labelSelector"))]
            listed = {"resourceVersion": str(next(self._versions))}
            return 200, {
                "apiVersion": f"{group}/{version}",
                "kind": known[1] + "List",
                "metadata": listed,
                "items": items,
            }
        if key not in self.objects:
            return 404, status(404, "NotFound", f'{plural}.{group} "{name}" not found')
        if method == "GET":
            return 200, copy.deepcopy(self.objects[key])
        if method == "PATCH":
            self.objects[key] = merge_patch(self.objects[key], body)
            self._modified(plural, namespace, name)
            return 200, copy.deepcopy(self.objects[key])
        if method == "DELETE":
            gone = self.objects.pop(key)
            self._record("DELETED", key, gone)
            for pod, owner in list(self.pod_owner.items()):
                if owner == (plural, name):
                    self.pods.pop(pod, None)
                    del self.pod_owner[pod]
            return 200, status(200, "", "") | {"status": "Success", "details": {"name": name, "kind": plural}}
        return 405, status(405, "MethodNotAllowed", f"{method} is not supported")

    def watch(self, plural_path: list[str], query: dict[str, str]):
        """The events of a watch: JSON lines, until ``timeoutSeconds`` or the server stops."""
        namespace, plural = plural_path[4], plural_path[5]
        deadline = time.monotonic() + int(query.get("timeoutSeconds") or WATCH_DEFAULT_S)
        since = int(query.get("resourceVersion") or 0)
        if not since:  # a watch from "now": the current objects first, as ADDED
            with self._changed:
                current = [
                    copy.deepcopy(obj)
                    for key, obj in self.objects.items()
                    if key[:2] == (plural, namespace) and _fields_match(obj, query.get("fieldSelector"))
                ]
                since = max([v for v, *_ in self.events] or [0])
            for obj in current:
                yield json.dumps({"type": "ADDED", "object": obj})
        while not self._stopping:
            with self._changed:
                fresh = [
                    (v, t, obj)
                    for v, t, key, obj in self.events
                    if v > since and key[:2] == (plural, namespace) and _fields_match(obj, query.get("fieldSelector"))
                ]
                if not fresh:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return
                    self._changed.wait(min(left, 0.5))
                    continue
            for version, type_, obj in fresh:
                since = version
                yield json.dumps({"type": type_, "object": obj})

    def follow_log(self, name: str):
        """A pod's log lines as they come, until its container terminates (or the pod goes)."""
        sent = 0
        while not self._stopping:
            with self._changed:
                lines = list(self.logs.get(name, []))
                pod = self.pods.get(name)
                done = pod is None or pod["status"]["phase"] in ("Succeeded", "Failed")
                if sent >= len(lines) and not done:
                    self._changed.wait(0.5)
                    continue
            for line in lines[sent:]:
                yield line + "\n"
            sent = len(lines)
            if done:
                return


class _Refusal(Exception):
    def __init__(self, code: int, reason: str, message: str):
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message


def _fields_match(obj: dict[str, Any], selector: str | None) -> bool:
    """The one field selector the API offers on custom objects: ``metadata.name=NAME``
    (and ``metadata.namespace``)."""
    for term in filter(None, (selector or "").split(",")):
        key, _, value = term.partition("=")
        if obj["metadata"].get(key.strip().removeprefix("metadata.")) != value.strip().lstrip("="):
            return False
    return True


class _Handler(BaseHTTPRequestHandler):
    kube: KubeApi
    protocol_version = "HTTP/1.1"  # chunked streams: the client sees each watch event and log line as it comes

    def log_message(self, *args) -> None:
        pass

    def _serve(self, method: str) -> None:
        url = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        body = json.loads(raw) if raw else None
        self.kube.requests.append(Request(method, url.path, query, body))
        parts = url.path.strip("/").split("/")
        if method == "GET" and query.get("watch", "").lower() in ("true", "1"):
            if self.kube.refuse_watch:
                return self._json(403, status(403, "Forbidden", f'cannot watch resource "{parts[-1]}"'))
            return self._stream("application/json", (line + "\n" for line in self.kube.watch(parts, query)))
        if method == "GET" and parts[-1] == "log" and query.get("follow", "").lower() in ("true", "1"):
            with self.kube._changed:
                exists = len(parts) > 5 and parts[5] in self.kube.pods
            if exists:
                return self._stream("text/plain", self.kube.follow_log(parts[5]))
        code, answer = self.kube.route(method, url.path, query, body)
        if isinstance(answer, str):
            data, content_type = answer.encode(), "text/plain"
        else:
            return self._json(code, answer)
        self._send(code, content_type, data)

    def _json(self, code: int, answer: Any) -> None:
        self._send(code, "application/json", json.dumps(answer).encode())

    def _send(self, code: int, content_type: str, data: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _stream(self, content_type: str, chunks) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for chunk in chunks:
                data = chunk.encode()
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):  # the client stopped reading
            self.close_connection = True

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PATCH(self) -> None:
        self._serve("PATCH")

    def do_DELETE(self) -> None:
        self._serve("DELETE")
