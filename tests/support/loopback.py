"""What the loopback test servers (MLflow, S3) share: finding their own venv's command, a free port."""

from __future__ import annotations

import os
import socket
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
