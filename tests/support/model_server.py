"""``kfnlp serve`` in a subprocess on a loopback port, and a plain-urllib client for it (tests and bench_serve.py)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LISTENING = re.compile(r"on (http://\S+)$")


class ServedModel:
    """``kfnlp serve --model REF --port 0 ARGS...``: started, waited for until ready, stopped with SIGTERM."""

    def __init__(self, model: str, *args: str, log: Path | None = None, timeout: float = 120):
        self.command = [sys.executable, "-m", "kfnlp", "serve", "--model", str(model), "--port", "0", *args]
        self.log = log
        self.timeout = timeout
        self.url = ""
        self.name = ""
        self.process: subprocess.Popen | None = None

    def start(self) -> ServedModel:
        stderr = open(self.log, "wb") if self.log else subprocess.DEVNULL  # noqa: SIM115 - closed in stop()
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen(self.command, stdout=subprocess.PIPE, stderr=stderr, text=True, env=env)
        self._stderr = stderr
        deadline = time.monotonic() + self.timeout
        line = self.process.stdout.readline()  # "serving REF as NAME (TASK) on http://HOST:PORT"
        found = LISTENING.search(line.strip())
        if not found:
            self.stop()
            raise RuntimeError(f"kfnlp serve did not start: {line!r} (log: {self.log})")
        self.url = found.group(1)
        self.name = line.split(" as ", 1)[1].split(" (", 1)[0]
        while time.monotonic() < deadline:
            try:
                if self.get("/v2/health/ready")[0] == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"kfnlp serve at {self.url} not ready after {self.timeout} s")

    def stop(self) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._stderr is not subprocess.DEVNULL:
            self._stderr.close()
        return self.process.returncode

    def __enter__(self) -> ServedModel:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def get(self, path: str) -> tuple[int, bytes]:
        return request(self.url + path)

    def post(self, path: str, body, content_type: str = "application/json") -> tuple[int, dict]:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        status, raw = request(self.url + path, data, {"Content-Type": content_type})
        return status, json.loads(raw)

    def v1(self, texts: list) -> tuple[int, dict]:
        return self.post(f"/v1/models/{self.name}:predict", {"instances": texts})

    def v2(self, texts: list) -> tuple[int, dict]:
        tensor = {"name": "text", "shape": [len(texts)], "datatype": "BYTES", "data": texts}
        return self.post(f"/v2/models/{self.name}/infer", {"inputs": [tensor]})

    def metric(self, name: str) -> dict[str, float]:
        """A Prometheus histogram's buckets, ``count`` and ``sum`` from /metrics."""
        text = self.get("/metrics")[1].decode()
        found = {}
        for line in text.splitlines():
            if line.startswith(name):
                key, value = line.rsplit(" ", 1)
                bucket = re.search(r'le="([^"]+)"', key)
                found[bucket.group(1) if bucket else key[len(name) + 1 :]] = float(value)
        return found


def request(url: str, data: bytes | None = None, headers: dict | None = None, timeout: float = 60):
    """(status, body) of a GET or POST; an HTTP error status is returned, not raised."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data, headers or {}), timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
