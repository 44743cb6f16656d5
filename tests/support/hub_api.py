"""A loopback stand-in of the Hugging Face Hub API endpoints ``huggingface_hub`` calls to publish a model, for
``kfnlp registry publish`` tests (the client honours ``HF_ENDPOINT``; nothing here reaches the real Hub).

It answers, with the Hub's JSON shapes as ``huggingface_hub`` 2.x reads them:

- ``POST /api/repos/create`` (``{name, organization, visibility}``; 409 when the repository exists);
- ``POST /api/validate-yaml`` (the model card's front matter must parse as a YAML mapping);
- ``POST /api/models/NS/NAME/preupload/REV`` (every file ``regular``: its bytes travel base64 in the commit);
- ``POST /api/models/NS/NAME/commit/REV`` (the NDJSON commit: a header, then ``file`` entries), which makes a
  new commit whose tree is the branch's files plus these;
- ``POST /api/models/NS/NAME/tag/REV`` (``{tag}``; 409 when it exists).

Each request is recorded with its ``Authorization`` header; a request without the expected token is refused
401, as the Hub refuses a write without one.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

import yaml

from tests.support.loopback import LoopbackHttp


@dataclass
class Repo:
    private: bool
    branches: dict[str, str] = field(default_factory=dict)  # name -> commit id
    tags: dict[str, str] = field(default_factory=dict)
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)  # commit id -> {path: bytes}
    messages: dict[str, str] = field(default_factory=dict)

    def files(self, revision: str) -> dict[str, bytes]:
        commit = self.tags.get(revision) or self.branches.get(revision) or revision
        return self.commits[commit]


@dataclass
class Call:
    method: str
    path: str
    authorization: str | None
    body: bytes


class HubApi:
    """``with HubApi(token) as hub:``; ``hub.url`` is the endpoint for ``HF_ENDPOINT``."""

    def __init__(self, token: str):
        self.token = token
        self.repos: dict[str, Repo] = {}
        self.calls: list[Call] = []
        self._lock = threading.Lock()
        self._http: LoopbackHttp | None = None

    def __enter__(self) -> HubApi:
        hub = self

        class Handler(_Handler):
            api = hub

        self._http = LoopbackHttp(Handler)
        return self

    def __exit__(self, *exc) -> None:
        if self._http:
            self._http.stop()

    @property
    def url(self) -> str:
        assert self._http, "not started"
        return self._http.url

    def route(self, method: str, path: str, body: bytes, authorization: str | None) -> tuple[int, Any]:
        with self._lock:
            self.calls.append(Call(method, path, authorization, body))
            if authorization != f"Bearer {self.token}":
                return 401, {"error": "Invalid credentials in Authorization header"}
            parts = path.strip("/").split("/")
            if method == "POST" and path == "/api/repos/create":
                request = json.loads(body)
                repo_id = "/".join(p for p in (request.get("organization"), request["name"]) if p)
                if repo_id in self.repos:
                    return 409, {"error": "You already created this model repo", "url": f"{self.url}/{repo_id}"}
                private = request.get("visibility") == "private" or bool(request.get("private"))
                self.repos[repo_id] = Repo(private=private, branches={"main": "0" * 40}, commits={"0" * 40: {}})
                return 200, {"url": f"{self.url}/{repo_id}", "name": repo_id}
            if method == "POST" and path == "/api/validate-yaml":
                content = json.loads(body)["content"]
                if content.startswith("---\n"):
                    meta = yaml.safe_load(content.split("\n---\n", 1)[0][4:])
                    if not isinstance(meta, dict):
                        return 400, {"errors": [{"message": "metadata must be a mapping"}]}
                return 200, {"warnings": []}
            if method == "POST" and len(parts) >= 6 and parts[:2] == ["api", "models"]:
                repo_id, action, revision = f"{parts[2]}/{parts[3]}", parts[4], urllib.parse.unquote(parts[5])
                repo = self.repos.get(repo_id)
                if repo is None:
                    return 404, {"error": "Repository not found"}
                if action == "preupload":
                    files = json.loads(body)["files"]
                    return 200, {
                        "files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]
                    }
                if action == "commit":
                    return self._commit(repo_id, repo, revision, body)
                if action == "tag":
                    tag = json.loads(body)["tag"]
                    if tag in repo.tags:
                        return 409, {"error": f"Tag {tag} already exists"}
                    repo.tags[tag] = repo.branches.get(revision, revision)
                    return 200, {}
            return 404, {"error": f"no route {method} {path}"}

    def _commit(self, repo_id: str, repo: Repo, branch: str, body: bytes) -> tuple[int, Any]:
        entries = [json.loads(line) for line in body.splitlines() if line.strip()]
        if not entries or entries[0]["key"] != "header":
            return 400, {"error": "the commit has no header"}
        tree = dict(repo.commits[repo.branches[branch]])
        for entry in entries[1:]:
            if entry["key"] != "file" or entry["value"].get("encoding") != "base64":
                return 400, {"error": f"unsupported commit entry {entry['key']}"}
            tree[entry["value"]["path"]] = base64.b64decode(entry["value"]["content"])
        oid = hashlib.sha1(json.dumps(sorted((k, v.hex()) for k, v in tree.items())).encode()).hexdigest()
        repo.commits[oid] = tree
        repo.messages[oid] = entries[0]["value"].get("summary", "")
        repo.branches[branch] = oid
        return 200, {"commitUrl": f"{self.url}/{repo_id}/commit/{oid}", "commitOid": oid, "pullRequestUrl": None}


class _Handler(BaseHTTPRequestHandler):
    api: HubApi
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def _serve(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        path = urllib.parse.urlsplit(self.path).path
        code, answer = self.api.route(method, path, body, self.headers.get("Authorization"))
        data = json.dumps(answer).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")
