"""What the loopback test servers share: finding their own venv's command (MLflow, S3), a free port, and the
threaded HTTP server the in-process API stand-ins (Kubernetes, KFP, Hub, KServe's runtime) answer on."""

from __future__ import annotations

import os
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# where `make test` puts the test tools' venvs (the Makefile's TOOLS_CACHE), shared by the clones on a machine
TOOLS_CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kfnlp"


class ServerUnavailable(RuntimeError):
    pass


def venv_command(venv_variable: str, default_venv: str, command: str, needed_by: str, make_target: str) -> Path:
    """``command`` in the server venv (``$venv_variable``, else ``default_venv`` in ``TOOLS_CACHE``);
    ServerUnavailable says how to install it."""
    venv = Path(os.environ.get(venv_variable) or TOOLS_CACHE / default_venv)
    executable = (venv if venv.is_absolute() else REPO / venv) / "bin" / command
    if not os.access(executable, os.X_OK):
        raise ServerUnavailable(
            f"no {command} at {executable}: {needed_by} need it; "
            f"run `make test` (it installs the server venv), or `make {make_target}`"
        )
    return executable


def free_port() -> int:
    """A loopback port nothing listens on (at the time of asking)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LoopbackHttp:
    """``handler`` answering on 127.0.0.1 (a free port) from a daemon thread, until :meth:`stop`."""

    def __init__(self, handler: type[BaseHTTPRequestHandler]):
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
