"""Transfer and retry settings from the environment, and the boto3 clients made from them (cached)."""

from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from kfnlp.errors import ConfigError, StorageError

DEFAULT_REGION = "us-east-1"
CHECKSUMS = ("SHA256", "CRC32", "CRC32C", "CRC64NVME", "SHA1", "none")
MIB = 1 << 20


def _env_int(name: str, default: int, minimum: int = 1) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    match = re.fullmatch(r"(?i)(\d+)\s*(b|kib|kb|k|mib|mb|m|gib|gb|g)?", raw)
    if not match:
        raise ConfigError(f"{name}={raw!r}: expected a whole number (optionally with a KiB/MiB/GiB suffix)", key=name)
    unit = (match.group(2) or "b").lower()[0]
    value = int(match.group(1)) * {"b": 1, "k": 1 << 10, "m": MIB, "g": 1 << 30}[unit]
    if value < minimum:
        raise ConfigError(f"{name}={raw!r}: must be at least {minimum}", key=name)
    return value


def _env_choice(name: str, choices: tuple[str, ...], default: str | None) -> str | None:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    for choice in choices:
        if raw.lower() == choice.lower():
            return choice
    raise ConfigError(f"{name}={raw!r}: expected one of {', '.join(choices)}", key=name)


def endpoint_url() -> str | None:
    """The configured S3 endpoint (``AWS_ENDPOINT_URL_S3``, else ``AWS_ENDPOINT_URL``), or None for AWS."""
    for name in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"):
        value = os.environ.get(name, "").strip()
        if value:
            return value
    return None


@dataclass(frozen=True)
class S3Settings:
    """Transfer and retry settings; :meth:`from_env` reads the ``KFNLP_S3_*`` variables."""

    addressing_style: str | None = None  # None: "path" with a custom endpoint, else botocore's "auto"
    checksum: str = "CRC32"
    multipart_threshold: int = 8 * MIB
    multipart_chunksize: int = 8 * MIB
    max_concurrency: int = 10
    max_attempts: int = 4  # botocore's attempts per request
    retry_mode: str = "standard"
    retry_seconds: float = 60.0  # how long kfnlp keeps retrying a whole transfer after its first failure
    connect_timeout: float = 10.0
    read_timeout: float = 60.0

    @classmethod
    def from_env(cls) -> S3Settings:
        return cls(
            addressing_style=_env_choice("KFNLP_S3_ADDRESSING_STYLE", ("path", "virtual", "auto"), None),
            checksum=_env_choice("KFNLP_S3_CHECKSUM", CHECKSUMS, "CRC32"),
            multipart_threshold=_env_int("KFNLP_S3_MULTIPART_THRESHOLD", 8 * MIB),
            multipart_chunksize=_env_int("KFNLP_S3_MULTIPART_CHUNKSIZE", 8 * MIB, minimum=5 * MIB),
            max_concurrency=_env_int("KFNLP_S3_MAX_CONCURRENCY", 10),
            max_attempts=_env_int("KFNLP_S3_MAX_ATTEMPTS", 4),
            retry_mode=_env_choice("KFNLP_S3_RETRY_MODE", ("standard", "adaptive", "legacy"), "standard"),
            retry_seconds=float(_env_int("KFNLP_S3_RETRY_SECONDS", 60, minimum=0)),
        )


def _check_endpoint(url: str | None) -> None:
    if url is None:
        return
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise StorageError(f"bad S3 endpoint {url!r} (AWS_ENDPOINT_URL_S3): expected http(s)://host[:port]")
    try:
        parsed.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        raise StorageError(f"bad S3 endpoint {url!r} (AWS_ENDPOINT_URL_S3): the port is not a number") from None


def _boto_session():
    import boto3
    from botocore.exceptions import BotoCoreError

    try:
        return boto3.Session()
    except BotoCoreError as exc:  # ProfileNotFound and friends
        raise StorageError(f"S3 credentials: {exc}") from None


def client(settings: S3Settings | None = None, *, checksum: str | None = None, session=None):
    """A boto3 S3 client from the standard AWS environment plus ``settings`` (default: from the env)."""
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError

    settings = settings or S3Settings.from_env()
    checksum = checksum or settings.checksum
    session = session or _boto_session()
    url = endpoint_url()
    _check_endpoint(url)
    style = settings.addressing_style or ("path" if url else "auto")
    flexible = "when_required" if checksum == "none" else "when_supported"
    config = Config(
        retries={"mode": settings.retry_mode, "max_attempts": settings.max_attempts},
        connect_timeout=settings.connect_timeout,
        read_timeout=settings.read_timeout,
        max_pool_connections=max(10, settings.max_concurrency + 2),
        s3={"addressing_style": style},
        request_checksum_calculation=flexible,
        response_checksum_validation=flexible,
    )
    region = os.environ.get("AWS_REGION") or session.region_name or DEFAULT_REGION
    try:
        return session.client("s3", endpoint_url=url, region_name=region, config=config)
    except (BotoCoreError, ValueError) as exc:
        raise StorageError(f"cannot create an S3 client for endpoint {url or 'AWS'}: {exc}") from None


_CLIENTS: dict[tuple, tuple[Any, Any]] = {}
_CLIENTS_LOCK = threading.Lock()


def cached_client(settings: S3Settings, checksum: str) -> tuple[Any, Any]:
    """A (session, client) pair per settings and AWS environment: creating a client costs ~0.1 s,
    a large share of a small transfer. boto3 clients are thread-safe."""
    key = (settings, checksum, tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("AWS_"))))
    with _CLIENTS_LOCK:
        found = _CLIENTS.get(key)
    if found is not None:
        return found
    session = _boto_session()
    pair = (session, client(settings, checksum=checksum, session=session))
    with _CLIENTS_LOCK:
        if len(_CLIENTS) >= 8:
            _CLIENTS.clear()
        _CLIENTS[key] = pair
    return pair
