"""A loopback stand-in for the Kubeflow Pipelines REST API (v2beta1), for ``kfnlp submit`` and
``kfnlp upload`` tests.

No Kubernetes API server (and so no KFP backend) can run on the test machines, and the kfp
SDK ships no fake. This server answers the endpoints ``kfp.Client`` 2.17 calls for those
commands, with the JSON shapes of the real API (grpc-gateway field names, errors as
``{"error", "code", "message"}``):

- ``GET  /apis/v2beta1/healthz``
- ``GET  /apis/v2beta1/experiments`` (``filter`` on ``display_name``, ``namespace``) and ``POST``
- ``POST /apis/v2beta1/runs``, ``GET /apis/v2beta1/runs/{id}``
- ``GET  /apis/v2beta1/pipelines`` (``filter`` on ``display_name``, ``namespace``)
- ``POST /apis/v2beta1/pipelines/upload`` and ``/upload_version`` (multipart ``uploadfile``)

It records every request (method, path, query, headers, JSON body or uploaded file) and
can be told to demand a bearer token or a cookie (401 otherwise), to answer a fixed
status (everywhere, or on given paths for a number of requests), to redirect to a login page as Dex/oauth2-proxy do, or to walk a run through a
sequence of states, one step per ``GET`` of the run.
"""

from __future__ import annotations

import email.parser
import email.policy
import itertools
import json
import threading
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.support.loopback import LoopbackHttp

API = "/apis/v2beta1"
CREATED = "2025-01-01T00:00:00Z"


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # header names lower-cased
    body: Any = None  # parsed JSON body, if any
    upload: bytes | None = None  # the multipart ``uploadfile`` content, if any


@dataclass
class Run:
    body: dict[str, Any]
    states: list[str]
    error: str | None
    polls: int = 0


@dataclass
class FakeKfpApi:
    """Start with ``with FakeKfpApi(...) as api:``; ``api.url`` is the ``--host``."""

    token: str | None = None  # demand ``Authorization: Bearer <token>``
    cookie: str | None = None  # demand this ``name=value`` in the Cookie header
    status: int | None = None  # answer every API request with this HTTP status
    # path (or prefix ending in "/") -> statuses for its next requests, one each, then normal answers
    fail_on: dict[str, list[int]] = field(default_factory=dict)
    login_redirect: bool = False  # answer unauthenticated requests with a 302 to an HTML login page
    multi_user: bool = False
    run_states: tuple[str, ...] = ("PENDING", "RUNNING", "SUCCEEDED")
    run_error: str = "task train-ner failed: exit code 1"  # error message of a run that ends FAILED
    requests: list[Request] = field(default_factory=list)
    experiments: dict[str, dict[str, Any]] = field(default_factory=dict)
    pipelines: dict[str, dict[str, Any]] = field(default_factory=dict)
    versions: dict[str, dict[str, Any]] = field(default_factory=dict)
    runs: dict[str, Run] = field(default_factory=dict)

    def __post_init__(self):
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._http: LoopbackHttp | None = None
        self._url: str | None = None

    # -- lifecycle ---------------------------------------------------------------------
    def __enter__(self) -> FakeKfpApi:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        api = self

        class Handler(_Handler):
            fake = api

        self._http = LoopbackHttp(Handler)
        self._url = self._http.url

    def stop(self) -> None:
        if self._http:
            self._http.stop()
            self._http = None

    @property
    def url(self) -> str:
        """The base URL (kept after ``stop()``, for checking output)."""
        assert self._url, "not started"
        return self._url

    # -- helpers for tests -------------------------------------------------------------
    def calls(self, method: str | None = None, path: str | None = None) -> list[Request]:
        return [r for r in self.requests if (method is None or r.method == method) and (path in (None, r.path))]

    def add_pipeline(self, name: str, namespace: str = "") -> str:
        pipeline_id = self.new_id("pipeline")
        self.pipelines[pipeline_id] = _pipeline(pipeline_id, name, namespace)
        return pipeline_id

    def new_id(self, kind: str) -> str:
        return f"{kind}-{next(self._ids)}"

    def injected(self, path: str) -> int | None:
        with self._lock:
            for key, statuses in self.fail_on.items():
                if statuses and (path == key or (key.endswith("/") and path.startswith(key))):
                    return statuses.pop(0)
        return None

    # -- the API -----------------------------------------------------------------------
    def authorized(self, headers: dict[str, str]) -> bool:
        if self.token is not None and headers.get("authorization") != f"Bearer {self.token}":
            return False
        if self.cookie is not None:
            cookies = [c.strip() for c in headers.get("cookie", "").split(";")]
            if self.cookie not in cookies:
                return False
        return True

    def handle(self, req: Request) -> tuple[int, Any]:
        with self._lock:
            return self._route(req)

    def _route(self, req: Request) -> tuple[int, Any]:
        method, path, q = req.method, req.path, req.query
        if method == "GET" and path == f"{API}/healthz":
            return 200, {"commit_sha": "fake", "tag_name": "2.5.0", "multi_user": self.multi_user}
        if path == f"{API}/experiments":
            if method == "GET":
                found = [
                    e
                    for e in self.experiments.values()
                    if _matches(e, q.get("filter")) and q.get("namespace", "") == e.get("namespace", "")
                ]
                return 200, ({"experiments": found, "total_size": len(found)} if found else {})
            if method == "POST":
                body = req.body or {}
                experiment_id = self.new_id("experiment")
                experiment = {
                    "experiment_id": experiment_id,
                    "display_name": body.get("display_name"),
                    "namespace": body.get("namespace") or "",
                    "created_at": CREATED,
                    "storage_state": "AVAILABLE",
                }
                self.experiments[experiment_id] = experiment
                return 200, experiment
        if path == f"{API}/runs" and method == "POST":
            body = req.body or {}
            if body.get("experiment_id") not in self.experiments:
                return _error(404, f"experiment {body.get('experiment_id')!r} not found")
            run_id = self.new_id("run")
            self.runs[run_id] = Run(body=body, states=list(self.run_states), error=self.run_error)
            return 200, self._run_json(run_id, "PENDING")
        if path.startswith(f"{API}/runs/") and method == "GET":
            run = self.runs.get(path.rsplit("/", 1)[1])
            if run is None:
                return _error(404, "run not found")
            state = run.states[min(run.polls, len(run.states) - 1)]
            run.polls += 1
            return 200, self._run_json(path.rsplit("/", 1)[1], state)
        if path == f"{API}/pipelines" and method == "GET":
            found = [
                p
                for p in self.pipelines.values()
                if _matches(p, q.get("filter")) and q.get("namespace", "") == p.get("namespace", "")
            ]
            return 200, ({"pipelines": found, "total_size": len(found)} if found else {})
        if path == f"{API}/pipelines/upload" and method == "POST":
            name = q.get("display_name") or q.get("name")
            if not req.upload:
                return _error(400, "missing uploadfile")
            if any(p["display_name"] == name for p in self.pipelines.values()):
                return _error(409, f"pipeline {name!r} already exists")
            pipeline_id = self.new_id("pipeline")
            self.pipelines[pipeline_id] = _pipeline(pipeline_id, name, q.get("namespace", ""))
            self._add_version(pipeline_id, name, req.upload)
            return 200, self.pipelines[pipeline_id]
        if path == f"{API}/pipelines/upload_version" and method == "POST":
            pipeline_id, name = q.get("pipelineid"), q.get("display_name") or q.get("name")
            if pipeline_id not in self.pipelines:
                return _error(404, f"pipeline {pipeline_id!r} not found")
            if not req.upload:
                return _error(400, "missing uploadfile")
            if any(v["pipeline_id"] == pipeline_id and v["display_name"] == name for v in self.versions.values()):
                return _error(409, f"version {name!r} already exists")
            return 200, self._add_version(pipeline_id, name, req.upload)
        return _error(404, f"no route for {method} {path}")

    def _add_version(self, pipeline_id: str, name: str, upload: bytes) -> dict[str, Any]:
        version_id = self.new_id("version")
        version = {
            "pipeline_id": pipeline_id,
            "pipeline_version_id": version_id,
            "display_name": name,
            "name": name,
            "created_at": CREATED,
            "package": upload.decode("utf-8"),
        }
        self.versions[version_id] = version
        return {k: v for k, v in version.items() if k != "package"}

    def _run_json(self, run_id: str, state: str) -> dict[str, Any]:
        run = self.runs[run_id]
        out = {
            "run_id": run_id,
            "experiment_id": run.body.get("experiment_id"),
            "display_name": run.body.get("display_name"),
            "runtime_config": run.body.get("runtime_config"),
            "created_at": CREATED,
            "state": state,
            "storage_state": "AVAILABLE",
        }
        if state == "FAILED":
            out["error"] = {"code": 2, "message": run.error}
            out["run_details"] = {
                "task_details": [
                    {"display_name": "preprocess-ner", "state": "SUCCEEDED"},
                    {"display_name": "train-ner", "state": "FAILED", "error": {"code": 2, "message": "exit code 1"}},
                ]
            }
        return out


def _pipeline(pipeline_id: str, name: str, namespace: str) -> dict[str, Any]:
    return {
        "pipeline_id": pipeline_id,
        "display_name": name,
        "name": name,
        "namespace": namespace,
        "created_at": CREATED,
    }


def _matches(item: dict[str, Any], filter_json: str | None) -> bool:
    """The Filter protobuf as JSON: EQUALS predicates (operation 1 or "EQUALS") on string keys."""
    if not filter_json:
        return True
    for predicate in json.loads(filter_json).get("predicates", []):
        assert predicate.get("operation") in (1, "EQUALS"), predicate
        if item.get(predicate["key"]) != predicate.get("stringValue", predicate.get("string_value")):
            return False
    return True


def _error(status: int, message: str) -> tuple[int, dict[str, Any]]:
    codes = {400: 3, 401: 16, 403: 7, 404: 5, 409: 6, 500: 13}
    return status, {"error": message, "code": codes.get(status, 2), "message": message, "details": []}


def _multipart_file(content_type: str, body: bytes) -> bytes | None:
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body
    )
    for part in message.iter_parts():
        if part.get_param("name", header="content-disposition") == "uploadfile":
            return part.get_payload(decode=True)
    return None


LOGIN_PAGE = b"<!DOCTYPE html><html><head><title>Log in to Your Account</title></head><body>Dex</body></html>"


class _Handler(BaseHTTPRequestHandler):
    fake: FakeKfpApi
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # keep test output quiet
        pass

    def _serve(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        req = Request(self.command, url.path, dict(urllib.parse.parse_qsl(url.query)), headers)
        content_type = headers.get("content-type", "")
        if raw and content_type.startswith("multipart/form-data"):
            req.upload = _multipart_file(content_type, raw)
        elif raw:
            req.body = json.loads(raw)
        fake = self.fake
        fake.requests.append(req)
        if url.path.startswith("/dex/"):
            return self._send(200, LOGIN_PAGE, "text/html")
        if not fake.authorized(headers):
            if fake.login_redirect:
                return self._send(302, b"", "text/html", {"Location": "/dex/auth?client_id=kubeflow-oidc-authservice"})
            return self._json(*_error(401, "Unauthenticated: request is not authenticated"))
        status = fake.status if fake.status is not None else fake.injected(url.path)
        if status is not None:
            return self._json(*_error(status, f"injected HTTP {status}"))
        self._json(*fake.handle(req))

    do_GET = do_POST = do_DELETE = do_PATCH = _serve

    def _json(self, status: int, payload: Any) -> None:
        self._send(status, json.dumps(payload).encode("utf-8"), "application/json")

    def _send(self, status: int, body: bytes, content_type: str, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)
