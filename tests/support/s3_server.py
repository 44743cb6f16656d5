"""A real S3-compatible server on loopback (ministack), for the S3 storage tests and benchmark.

The server runs from its own venv (``ministack`` pins botocore exactly, which would downgrade
the project's boto3): ``make test`` installs it at ``$S3_SERVER_VENV`` (default
``~/.cache/kfnlp/venv-s3-server``). It keeps objects on disk under its root directory
(``S3_PERSIST=1``), so ``stop()`` / ``kill()`` and ``start()`` again serve the same buckets on
the same port. ``AUTH=true``: requests signed with an IAM user's key (``create_user``) are
checked for their signature and against bucket policies; the root key used by default is
accepted whatever its secret, as ministack does.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
import uuid
from pathlib import Path

from tests.support.loopback import ServerUnavailable, free_port, venv_command

START_TIMEOUT = 30.0  # seconds; it starts in about 0.5 s
ROOT_KEY = "kfnlp-test-root"
ROOT_SECRET = "kfnlp-test-root-secret"
REGION = "us-east-1"


def server_executable() -> Path:
    return venv_command("S3_SERVER_VENV", "venv-s3-server", "ministack", "the S3 storage tests", "s3-server")


class S3Server:
    """``ministack`` serving S3 (and IAM/STS, for users and bucket policies) under ``root``."""

    def __init__(self, root: Path, port: int | None = None):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.data = self.root / "data"
        self.port = port or free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.log = self.root / "server.log"
        self.process: subprocess.Popen | None = None
        self.start_seconds: float | None = None

    def __str__(self) -> str:
        return self.uri

    def start(self, timeout: float = START_TIMEOUT) -> S3Server:
        if self.running():
            return self
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update(
            BIND_HOST="127.0.0.1",
            GATEWAY_PORT=str(self.port),
            S3_PERSIST="1",
            S3_DATA_DIR=str(self.data),
            SERVICES="s3,iam,sts",
            AUTH="true",
            AWS_ACCESS_KEY_ID=ROOT_KEY,
            AWS_SECRET_ACCESS_KEY=ROOT_SECRET,
            MINISTACK_REGION=REGION,
            LOG_LEVEL="WARNING",
            TMPDIR=str(self.root),  # its pid file
        )
        began = time.monotonic()
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [str(server_executable())],
                cwd=self.root,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stop() ends everything it started
            )
        deadline = began + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.process = None
                raise ServerUnavailable(f"ministack exited while starting:\n{self._log_tail()}")
            if self.healthy():
                self.start_seconds = time.monotonic() - began
                return self
            time.sleep(0.05)
        self.stop()
        raise ServerUnavailable(f"ministack did not answer {self.uri} within {timeout:.0f} s:\n{self._log_tail()}")

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.uri}/_ministack/health", timeout=2) as response:
                return response.status == 200 and json.load(response).get("services", {}).get("s3") == "available"
        except (OSError, ValueError):
            return False

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM to the server's process group, then SIGKILL to whatever is left."""
        self._end(signal.SIGTERM, timeout)

    def kill(self) -> None:
        """A crash: SIGKILL, no chance to finish anything in flight."""
        self._end(signal.SIGKILL, 5.0)

    def restart(self) -> S3Server:
        self.stop()
        return self.start()

    def _end(self, sig: int, timeout: float) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        deadline = time.monotonic() + timeout
        while self._accepting() and time.monotonic() < deadline:
            time.sleep(0.05)

    def _accepting(self) -> bool:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(0.5)
            return sock.connect_ex(("127.0.0.1", self.port)) == 0

    def _log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no server log)"

    # ---- administration (as the root user)

    def client(self, service: str = "s3", key: str = ROOT_KEY, secret: str = ROOT_SECRET):
        import boto3
        from botocore.config import Config

        return boto3.client(
            service,
            endpoint_url=self.uri,
            aws_access_key_id=key,
            aws_secret_access_key=secret,
            region_name=REGION,
            config=Config(retries={"max_attempts": 2, "mode": "standard"}, s3={"addressing_style": "path"}),
        )

    def create_bucket(self, name: str | None = None) -> str:
        name = name or f"kfnlp-test-{uuid.uuid4().hex[:10]}"
        self.client().create_bucket(Bucket=name)
        return name

    def create_user(self, actions: str | list[str] = "s3:*") -> tuple[str, str]:
        """A new IAM user allowed ``actions`` on every resource; returns its (access key, secret)."""
        iam = self.client("iam")
        name = f"kfnlp-{uuid.uuid4().hex[:8]}"
        iam.create_user(UserName=name)
        policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": actions, "Resource": "*"}]}
        iam.put_user_policy(UserName=name, PolicyName="s3", PolicyDocument=json.dumps(policy))
        key = iam.create_access_key(UserName=name)["AccessKey"]
        return key["AccessKeyId"], key["SecretAccessKey"]

    def env(self, key: str = ROOT_KEY, secret: str = ROOT_SECRET) -> dict[str, str]:
        """The standard AWS environment pointing at this server."""
        return {
            "AWS_ENDPOINT_URL_S3": self.uri,
            "AWS_ACCESS_KEY_ID": key,
            "AWS_SECRET_ACCESS_KEY": secret,
            "AWS_REGION": REGION,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def __enter__(self) -> S3Server:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class S3Bucket:
    """A bucket on a test server; ``uri("a/b")`` is ``s3://<bucket>/a/b``."""

    def __init__(self, server: S3Server, name: str):
        self.server = server
        self.name = name

    def uri(self, path: str = "") -> str:
        return f"s3://{self.name}/{path}".rstrip("/")

    def keys(self, prefix: str = "") -> list[str]:
        pages = self.server.client().get_paginator("list_objects_v2").paginate(Bucket=self.name, Prefix=prefix)
        return sorted(item["Key"] for page in pages for item in page.get("Contents", []))
