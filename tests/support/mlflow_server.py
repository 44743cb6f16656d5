"""A real MLflow tracking server on loopback, for the registry's server-mode tests and benchmark.

The server runs from its own venv (the full ``mlflow`` package; the project venv has only
``mlflow-skinny``): ``make test`` installs it at ``$MLFLOW_SERVER_VENV`` (default
``~/.cache/kfnlp/venv-mlflow-server``). The server keeps its runs and registry in a sqlite
file and serves artifacts itself (``mlflow-artifacts:/``), stored under its own directory,
so clients upload and download through HTTP as they would against a shared server.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

from tests.support.loopback import ServerUnavailable, free_port, venv_command

START_TIMEOUT = 90.0  # seconds; a cold start takes 11-25 s on 2 busy cores


def server_executable() -> Path:
    return venv_command(
        "MLFLOW_SERVER_VENV", "venv-mlflow-server", "mlflow", "the registry's server-mode tests", "mlflow-server"
    )


class MlflowServer:
    """``mlflow server`` with a sqlite store and proxied artifacts under ``root``.

    ``start()`` waits until ``/health`` answers; ``stop()`` ends the server and every
    process it started; ``start()`` again serves the same store on the same port.
    """

    def __init__(self, root: Path, port: int | None = None):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.artifacts = self.root / "artifacts"
        self.log = self.root / "server.log"
        self.process: subprocess.Popen | None = None
        self.start_seconds: float | None = None

    def __str__(self) -> str:
        return self.uri

    def command(self) -> list[str]:
        return [
            str(server_executable()),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--backend-store-uri",
            f"sqlite:///{self.root / 'mlflow.db'}",
            "--artifacts-destination",
            str(self.artifacts),
            "--workers",
            "1",
        ]

    def start(self, timeout: float = START_TIMEOUT) -> MlflowServer:
        if self.running():
            return self
        command = self.command()
        env = {
            **os.environ,
            # no background job runner (a handful of huey consumers): the registry does not use it
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        }
        for key in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
            env.pop(key, None)
        began = time.monotonic()
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                command,
                cwd=self.root,  # so nothing lands in the caller's working directory
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stop() ends uvicorn too
            )
        deadline = began + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = self._log_tail()
                self.process = None
                raise ServerUnavailable(f"mlflow server exited while starting:\n{tail}")
            if self.healthy():
                self.start_seconds = time.monotonic() - began
                return self
            time.sleep(0.25)
        self.stop()
        raise ServerUnavailable(
            f"mlflow server did not answer {self.uri}/health within {timeout:.0f} s:\n{self._log_tail()}"
        )

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM to the server's process group, then SIGKILL to whatever is left."""
        process, self.process = self.process, None
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout)
        with contextlib.suppress(ProcessLookupError):  # the group outlives its leader if a child ignores SIGTERM
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        deadline = time.monotonic() + timeout
        while self.healthy() and time.monotonic() < deadline:
            time.sleep(0.1)

    def _log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no server log)"

    def __enter__(self) -> MlflowServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
