"""Artifacts on S3-compatible storage (AWS S3, MinIO, Ceph RGW, ...), complete only with their manifest.

An artifact URI ``s3://bucket/prefix`` holds the same directory artifact as a local one
(see :mod:`kfnlp.storage`: files plus ``kfnlp-manifest.json`` with sizes and SHA-256), laid
out so that a write never damages the previous complete version::

    prefix/kfnlp-manifest.json            the pointer: the current version's manifest plus
                                          "s3_version"; an artifact exists iff this exists
    prefix/.v/<version>/<file>...         the files of one version
    prefix/.v/<version>/kfnlp-manifest.json   that version's own manifest (exact local bytes)

``<version>`` is ``<UTC time>-<random>``, fresh for every upload. An upload
(:func:`upload_artifact`) writes every file of the new version, then the version's
manifest, then the pointer (one PUT, atomic and strongly consistent on S3), and only then
deletes the previous version. So a crash, a lost connection or a refused request at any
point leaves either the old complete artifact (before the pointer PUT) or the new complete
one (after it) readable at the URI; what a crash leaves behind is an unreferenced
``.v/<version>/`` that readers never look at and that later uploads prune once it is older
than ``ORPHAN_GRACE_SECONDS`` (a grace period, so that concurrent writers do not delete each
other's in-progress versions; concurrent writers to one URI are last-writer-wins).
A reader (:func:`download_artifact`) reads the pointer, downloads into a hidden staging
directory, checks every size and SHA-256 against the manifest, writes the manifest last
and renames the directory into place; if the version it is reading is replaced and
deleted meanwhile, it starts again from the new pointer. An artifact whose pointer has no
``s3_version`` (e.g. a local artifact copied with ``aws s3 sync``) is read from the prefix
itself.

Configuration is the standard AWS environment: ``AWS_ENDPOINT_URL_S3`` (or
``AWS_ENDPOINT_URL``) for a non-AWS server, ``AWS_ACCESS_KEY_ID`` /
``AWS_SECRET_ACCESS_KEY`` / ``AWS_SESSION_TOKEN`` or ``AWS_PROFILE`` (and every other
credential source boto3 knows), ``AWS_REGION`` / ``AWS_DEFAULT_REGION`` (``us-east-1`` when
none is set). kfnlp's own knobs, all optional (see :class:`S3Settings`):
``KFNLP_S3_ADDRESSING_STYLE`` (``path`` | ``virtual`` | ``auto``; ``path`` by default when a
custom endpoint is set, as MinIO-like servers need), ``KFNLP_S3_CHECKSUM`` (the per-request
transfer checksum: ``CRC32`` by default, as boto3; ``SHA256`` | ``CRC32C`` | ``CRC64NVME`` | ``SHA1``,
or ``none`` for servers without flexible checksums; end-to-end integrity is the manifest's SHA-256
of every file, checked on every download whatever this is), ``KFNLP_S3_MULTIPART_THRESHOLD`` / ``KFNLP_S3_MULTIPART_CHUNKSIZE``
(bytes, or with a KiB/MiB/GiB suffix), ``KFNLP_S3_MAX_CONCURRENCY``,
``KFNLP_S3_MAX_ATTEMPTS`` and ``KFNLP_S3_RETRY_MODE`` (botocore's per-request retries),
``KFNLP_S3_RETRY_SECONDS`` (how long an outage a transfer rides out).

Errors: transient ones (connection refused or reset, timeouts, 5xx, throttling such as
SlowDown) are retried by botocore per request and then by kfnlp around each whole file
with exponential backoff, until ``KFNLP_S3_RETRY_SECONDS`` have passed since the first
failure; then a :class:`~kfnlp.errors.StorageError` names the URI and the cause. Permanent
ones (no such bucket, access denied, unknown access key, wrong secret, an endpoint that is
malformed or whose host does not resolve) fail at once with the same kind of message.
Messages and log lines never contain the secret key or session token.

Permissions needed: s3:GetObject, s3:PutObject and s3:ListBucket to write;
s3:DeleteObject (and s3:AbortMultipartUpload) to clean up old versions; s3:GetObject
to read.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import re
import shutil
import socket
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlparse

from kfnlp.errors import ConfigError, StorageError
from kfnlp.storage import MANIFEST, ArtifactWriter, install, read_manifest, sha256_file, staging_dir

log = logging.getLogger(__name__)

SCHEME = "s3://"
VERSIONS = ".v"
POINTER_VERSION_KEY = "s3_version"
ORPHAN_GRACE_SECONDS = 24 * 3600
DEFAULT_REGION = "us-east-1"
CHECKSUMS = ("SHA256", "CRC32", "CRC32C", "CRC64NVME", "SHA1", "none")
MIB = 1 << 20

# Error codes S3 and S3-compatible servers answer for load, throttling and server trouble.
TRANSIENT_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "BandwidthLimitExceeded",
        "RequestTimeout",
        "RequestTimeoutException",
        "InternalError",
        "ServiceUnavailable",
        "PriorRequestNotComplete",
        "XMinioServerNotInitialized",
    }
)
_MISSING_CODES = frozenset({"NoSuchKey", "404", "NotFound"})
_VERSION_RE = re.compile(r"^(\d{8}T\d{6}Z)-[0-9a-f]+$")
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.\-_]{1,61}[a-z0-9]$")


# --------------------------------------------------------------------------- URIs


@dataclass(frozen=True)
class S3Location:
    """``s3://bucket/key``; ``key`` has no leading or trailing slash ("" is the bucket's root)."""

    bucket: str
    key: str

    @property
    def uri(self) -> str:
        return f"{SCHEME}{self.bucket}/{self.key}" if self.key else f"{SCHEME}{self.bucket}"

    def child(self, *parts: str) -> S3Location:
        key = "/".join(p.strip("/") for p in (self.key, *parts) if p.strip("/"))
        return S3Location(self.bucket, key)

    def __str__(self) -> str:
        return self.uri


def is_s3_uri(path: str | os.PathLike | None) -> bool:
    return isinstance(path, str) and path.startswith(SCHEME)


def parse_uri(uri: str) -> S3Location:
    """``s3://bucket/some/prefix`` → ``S3Location("bucket", "some/prefix")``, or a StorageError."""
    if not is_s3_uri(uri):
        raise StorageError(f"{uri}: not an s3:// URI (expected s3://bucket/prefix)")
    bucket, _, key = uri[len(SCHEME) :].partition("/")
    key = key.strip("/")
    if not _BUCKET_RE.match(bucket):
        raise StorageError(f"{uri}: {bucket!r} is not a valid bucket name (3-63 lowercase letters, digits, '.', '-')")
    parts = key.split("/") if key else []
    if any(p in ("", ".", "..") for p in parts):
        raise StorageError(f"{uri}: the key may not contain empty, '.' or '..' segments")
    if VERSIONS in parts:
        raise StorageError(f"{uri}: {VERSIONS!r} is reserved for stored versions; use the artifact's own URI")
    return S3Location(bucket, key)


# --------------------------------------------------------------------------- settings and client


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


def _cached_client(settings: S3Settings, checksum: str) -> tuple[Any, Any]:
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


# --------------------------------------------------------------------------- errors


def _exception_chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    stack = [exc]
    while stack:
        current = stack.pop(0)
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        stack.extend([getattr(current, "last_exception", None), current.__cause__, current.__context__])


def _error_code(exc: BaseException) -> tuple[str, int, str]:
    response = getattr(exc, "response", None) or {}
    error = response.get("Error", {})
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    return str(error.get("Code", "")), int(status or 0), str(error.get("Message", ""))


def _classify(exc: BaseException, loc: S3Location, endpoint: str) -> tuple[str | None, str]:
    """("transient" | "permanent" | "foreign" | None, a description without secrets); None: not an S3
    error; "foreign": an error of the caller's (e.g. its progress callback) that botocore wrapped."""
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        EndpointConnectionError,
        HTTPClientError,
        IncompleteReadError,
        NoCredentialsError,
        PartialCredentialsError,
        ResponseStreamingError,
    )

    for current in _exception_chain(exc):
        if isinstance(current, ClientError):
            code, status, message = _error_code(current)
            return _describe_client_error(code, status, message, loc)
        if isinstance(current, EndpointConnectionError):
            cause = current.kwargs.get("error")
            if isinstance(cause, socket.gaierror) or "Name or service not known" in str(cause):
                return "permanent", f"cannot resolve the S3 endpoint's host ({endpoint}); check AWS_ENDPOINT_URL_S3"
            return "transient", f"cannot connect to the S3 endpoint {endpoint} ({_short(cause)})"
        if type(current) is HTTPClientError:  # botocore wraps whatever failed while sending, e.g. a callback's error
            cause = current.kwargs.get("error")
            if cause is not None and not _network_error(cause):
                return "foreign", ""
            return "transient", f"the connection to {endpoint} failed ({_short(cause)})"
        if isinstance(current, (HTTPClientError, IncompleteReadError, ResponseStreamingError)):
            return "transient", f"the connection to {endpoint} failed ({type(current).__name__})"
        if isinstance(current, (NoCredentialsError, PartialCredentialsError)):
            return "permanent", (
                "no usable S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE"
            )
        if isinstance(current, BotoCoreError):
            return "permanent", str(current)
        if isinstance(current, (ConnectionError, socket.timeout, TimeoutError)):
            return "transient", f"the connection to {endpoint} failed ({type(current).__name__})"
    return None, ""


def _network_error(exc: BaseException) -> bool:
    from urllib3.exceptions import HTTPError

    return isinstance(exc, (OSError, HTTPError))


def _foreign_cause(exc: BaseException) -> BaseException:
    """What botocore wrapped in an HTTPClientError that is not a network failure."""
    from botocore.exceptions import HTTPClientError

    for current in _exception_chain(exc):
        if type(current) is HTTPClientError and current.kwargs.get("error") is not None:
            return current.kwargs["error"]
    return exc


def _short(exc: BaseException | None) -> str:
    if exc is None:
        return "no answer"
    text = str(exc)
    if "Connection refused" in text:
        return "connection refused"
    if "reset" in text.lower():
        return "connection reset"
    return type(exc).__name__


def _describe_client_error(code: str, status: int, message: str, loc: S3Location) -> tuple[str, str]:
    if code in TRANSIENT_CODES or status >= 500 or status == 429:
        return "transient", f"the server answered {code or status} ({message or 'no message'})"
    if code == "NoSuchBucket":
        return "permanent", f"bucket {loc.bucket!r} does not exist (NoSuchBucket)"
    if code == "InvalidAccessKeyId":
        return "permanent", "the server does not know the access key (InvalidAccessKeyId); check AWS_ACCESS_KEY_ID"
    if code == "SignatureDoesNotMatch":
        return "permanent", (
            "the secret key does not match the access key (SignatureDoesNotMatch); check AWS_SECRET_ACCESS_KEY"
        )
    if code in ("ExpiredToken", "InvalidToken", "TokenRefreshRequired"):
        return "permanent", f"the session token is invalid or expired ({code}); refresh AWS_SESSION_TOKEN"
    if code in ("AccessDenied", "AllAccessDisabled", "403") or status == 403:
        detail = f": {message}" if message and message != "Forbidden" else ""
        return "permanent", f"access denied ({code}){detail}; check the bucket policy and the credentials' permissions"
    if code in ("PermanentRedirect", "AuthorizationHeaderMalformed", "IllegalLocationConstraintException"):
        return "permanent", f"the bucket is in another region ({code}); set AWS_REGION"
    if code == "RequestTimeTooSkewed":
        return "permanent", "this machine's clock is too far from the server's (RequestTimeTooSkewed)"
    return "permanent", f"{code or status}: {message or 'no message'}"


def _is_missing(exc: BaseException) -> bool:
    from botocore.exceptions import ClientError

    return any(isinstance(e, ClientError) and _error_code(e)[0] in _MISSING_CODES for e in _exception_chain(exc))


def _checksum_refused(exc: BaseException) -> bool:
    from botocore.exceptions import ClientError

    for e in _exception_chain(exc):
        if isinstance(e, ClientError):
            code, _, message = _error_code(e)
            if code in ("NotImplemented", "InvalidArgument", "InvalidRequest") and "checksum" in message.lower():
                return True
    return False


# --------------------------------------------------------------------------- one operation's context


class _Progress:
    """A byte counter for the caller's callback and, on a terminal, a tqdm bar."""

    def __init__(self, total: int, desc: str, callback: Callable[[int], None] | None):
        self.callback = callback
        self.bar = None
        if sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024, leave=False)

    def __call__(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)
        if self.callback is not None:
            self.callback(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


@dataclass
class _Context:
    loc: S3Location
    settings: S3Settings
    session: Any = None
    s3: Any = None
    endpoint: str = ""
    secrets: tuple[str, ...] = ()
    checksum: str = "CRC32"
    _manager: Any = field(default=None, repr=False)

    @classmethod
    def open(cls, loc: S3Location, settings: S3Settings | None) -> _Context:
        settings = settings or S3Settings.from_env()
        try:
            session, ctx_client = _cached_client(settings, settings.checksum)
        except StorageError as exc:
            raise StorageError(f"{loc}: {exc}") from None
        ctx = cls(loc, settings, session=session, checksum=settings.checksum)
        ctx.s3 = ctx_client
        ctx.endpoint = ctx.s3.meta.endpoint_url
        try:
            credentials = session.get_credentials()
        except Exception as exc:  # a broken credential source (bad profile, unreachable SSO) is reported as such
            raise StorageError(f"{loc}: cannot load S3 credentials ({type(exc).__name__})") from None
        if credentials is None:
            raise StorageError(
                f"{loc}: no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE"
            )
        frozen = credentials.get_frozen_credentials()
        ctx.secrets = tuple(s for s in (frozen.secret_key, frozen.token) if s and len(s) >= 4)
        return ctx

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text

    def transfer_config(self):
        from boto3.s3.transfer import TransferConfig

        return TransferConfig(
            multipart_threshold=self.settings.multipart_threshold,
            multipart_chunksize=self.settings.multipart_chunksize,
            max_concurrency=self.settings.max_concurrency,
            use_threads=True,
        )

    def manager(self):
        if self._manager is None:
            from boto3.s3.transfer import create_transfer_manager

            self._manager = create_transfer_manager(self.s3, self.transfer_config())
        return self._manager

    def close(self) -> None:
        if self._manager is not None:
            self._manager.shutdown()
            self._manager = None

    def downgrade_checksum(self) -> None:
        log.warning(
            "%s: the server refuses %s upload checksums; continuing without them (the manifest's SHA-256 "
            "is still verified on download; set KFNLP_S3_CHECKSUM=none to skip this attempt)",
            self.loc,
            self.checksum,
        )
        self.close()
        self.checksum = "none"
        self.session, self.s3 = _cached_client(self.settings, "none")

    def call(self, what: str, fn: Callable[[], Any], on_retry: Callable[[], None] | None = None) -> Any:
        """Run ``fn``; retry transient failures with backoff within the retry budget."""
        attempt = 0
        started = time.monotonic()
        first_failure = None
        while True:
            try:
                return fn()
            except Exception as exc:
                kind, cause = _classify(exc, self.loc, self.endpoint)
                if kind is None:
                    raise
                if kind == "foreign":
                    raise _foreign_cause(exc) from None
                cause = self.redact(cause)
                if kind == "permanent":
                    raise StorageError(f"{self.loc}: {what} failed: {cause}") from exc
                attempt += 1
                now = time.monotonic()
                first_failure = first_failure or now
                budget = self.settings.retry_seconds
                delay = min(8.0, 0.5 * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)
                if now + delay - first_failure > budget:
                    raise StorageError(
                        f"{self.loc}: {what} failed after {attempt} attempt(s) in {now - started:.1f} s "
                        f"(retry budget {budget:g} s, KFNLP_S3_RETRY_SECONDS): {cause}"
                    ) from exc
                log.warning("%s: %s: %s; retrying in %.1f s (attempt %d)", self.loc, what, cause, delay, attempt + 1)
                if on_retry is not None:
                    on_retry()
                time.sleep(delay)

    # ---- small objects

    def get_json(self, loc: S3Location) -> tuple[dict[str, Any], bytes] | None:
        """The parsed object and its bytes, or None if there is no such object."""

        def get():
            try:
                return self.s3.get_object(Bucket=loc.bucket, Key=loc.key)["Body"].read()
            except Exception as exc:
                if _is_missing(exc):
                    return None
                raise

        raw = self.call(f"reading {loc.key or '/'}", get)
        if raw is None:
            return None
        try:
            return json.loads(raw.decode("utf-8")), raw
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise StorageError(f"{loc}: unreadable manifest ({exc})") from None

    def put_bytes(self, loc: S3Location, body: bytes, what: str) -> None:
        extra = {} if self.checksum == "none" else {"ChecksumAlgorithm": self.checksum}
        self.call(
            what,
            lambda: self.s3.put_object(
                Bucket=loc.bucket, Key=loc.key, Body=body, ContentType="application/json", **extra
            ),
        )

    def list_keys(self, prefix: str) -> list[str]:
        def listing():
            keys = []
            for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.loc.bucket, Prefix=prefix):
                keys.extend(item["Key"] for item in page.get("Contents", []))
            return keys

        return self.call(f"listing {prefix}", listing)

    def list_versions(self) -> list[str]:
        prefix = self.loc.child(VERSIONS).key + "/"

        def listing():
            names = []
            paginator = self.s3.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.loc.bucket, Prefix=prefix, Delimiter="/"):
                names.extend(p["Prefix"][len(prefix) :].rstrip("/") for p in page.get("CommonPrefixes", []))
            return names

        return self.call("listing stored versions", listing)

    def delete_keys(self, keys: list[str]) -> None:
        for start in range(0, len(keys), 1000):
            batch = [{"Key": k} for k in keys[start : start + 1000]]

            def delete(batch=batch):
                answer = self.s3.delete_objects(Bucket=self.loc.bucket, Delete={"Objects": batch, "Quiet": True})
                errors = answer.get("Errors") or []
                if errors:
                    first = errors[0]
                    raise StorageError(
                        f"{self.loc}: could not delete {len(errors)} object(s), e.g. {first.get('Key')}: "
                        f"{first.get('Code')} {first.get('Message', '')}"
                    )

            self.call("deleting an old version", delete)

    # ---- files

    def upload_file(self, path: Path, loc: S3Location, progress: _Progress) -> None:
        from boto3.s3.transfer import ProgressCallbackInvoker

        sent = [0]

        def count(n: int) -> None:
            sent[0] += n
            progress(n)

        def upload():
            extra = {} if self.checksum == "none" else {"ChecksumAlgorithm": self.checksum}
            future = self.manager().upload(
                str(path), loc.bucket, loc.key, extra_args=extra, subscribers=[ProgressCallbackInvoker(count)]
            )
            try:
                return future.result()
            except Exception as exc:
                if self.checksum != "none" and _checksum_refused(exc):
                    self.downgrade_checksum()
                    return upload()
                raise

        def rewind() -> None:  # the next attempt sends the whole file again
            if progress.bar is not None and sent[0]:
                progress.bar.update(-sent[0])
            sent[0] = 0

        self.call(f"uploading {path.name}", upload, on_retry=rewind)

    def download_file(self, loc: S3Location, path: Path, progress: _Progress) -> None:
        from boto3.s3.transfer import ProgressCallbackInvoker

        received = [0]

        def count(n: int) -> None:
            received[0] += n
            progress(n)

        def download():
            future = self.manager().download(
                loc.bucket, loc.key, str(path), subscribers=[ProgressCallbackInvoker(count)]
            )
            return future.result()

        def rewind() -> None:
            if progress.bar is not None and received[0]:
                progress.bar.update(-received[0])
            received[0] = 0

        self.call(f"downloading {loc.key}", download, on_retry=rewind)


@contextlib.contextmanager
def _context(uri: str, settings: S3Settings | None) -> Iterator[_Context]:
    ctx = _Context.open(parse_uri(uri), settings)
    try:
        yield ctx
    finally:
        ctx.close()


# --------------------------------------------------------------------------- layout helpers


def _new_version_id() -> str:
    return f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{uuid.uuid4().hex[:12]}"


def _version_age(version: str, now: float) -> float | None:
    match = _VERSION_RE.match(version)
    if not match:
        return None
    import calendar

    return now - calendar.timegm(time.strptime(match.group(1), "%Y%m%dT%H%M%SZ"))


def _file_entries(manifest: dict[str, Any], where: str) -> list[dict[str, Any]]:
    entries = manifest.get("files")
    if not isinstance(entries, list):
        raise StorageError(f"{where}: the manifest has no file list")
    for entry in entries:
        rel = entry.get("path") if isinstance(entry, dict) else None
        pure = PurePosixPath(rel) if isinstance(rel, str) else None
        if (
            pure is None
            or pure.is_absolute()
            or ".." in pure.parts
            or rel in ("", MANIFEST)
            or pure.parts[0] == VERSIONS
            or not isinstance(entry.get("size"), int)
            or not isinstance(entry.get("sha256"), str)
        ):
            raise StorageError(f"{where}: the manifest lists an invalid file entry {entry!r}")
    return entries


def _base(loc: S3Location, pointer: dict[str, Any]) -> S3Location:
    version = pointer.get(POINTER_VERSION_KEY)
    if version is None:
        return loc  # a plain artifact copied to the prefix
    if not isinstance(version, str) or not re.fullmatch(r"[0-9A-Za-z_\-]+", version):
        raise StorageError(f"{loc}: the manifest names an invalid stored version {version!r}")
    return loc.child(VERSIONS, version)


def _incomplete(loc: S3Location) -> StorageError:
    return StorageError(
        f"{loc}: incomplete or not a kfnlp artifact (no {MANIFEST}); was the stage that writes it interrupted?"
    )


# --------------------------------------------------------------------------- public operations


def exists_complete(uri: str, settings: S3Settings | None = None) -> bool:
    """True if ``uri`` holds a complete artifact (its manifest, and that version's own manifest)."""
    with _context(uri, settings) as ctx:
        found = ctx.get_json(ctx.loc.child(MANIFEST))
        if found is None:
            return False
        base = _base(ctx.loc, found[0])
        if base == ctx.loc:
            return True
        return ctx.get_json(base.child(MANIFEST)) is not None


def resolve_version(uri: str, settings: S3Settings | None = None) -> str:
    """The URI of the files of the current version (itself a plain artifact prefix), for tools that
    read S3 directly (e.g. ``datasets.load_from_disk``); it stays readable until it is replaced."""
    with _context(uri, settings) as ctx:
        found = ctx.get_json(ctx.loc.child(MANIFEST))
        if found is None:
            raise _incomplete(ctx.loc)
        return _base(ctx.loc, found[0]).uri


def upload_artifact(
    local_dir: str | os.PathLike,
    uri: str,
    *,
    settings: S3Settings | None = None,
    progress: Callable[[int], None] | None = None,
    verify_local: bool = True,
    prune_older_than: float = ORPHAN_GRACE_SECONDS,
    writer: ArtifactWriter | None = None,
) -> dict[str, Any]:
    """Upload the complete local artifact ``local_dir`` to ``uri`` as a new version and switch to it.

    Every file goes first (multipart above the threshold, with S3 checksums), then the
    version's manifest, then the pointer; the previous version is deleted only after
    that. ``verify_local`` re-hashes the local files against their manifest (during the upload).
    With ``writer`` (a stage's :class:`ArtifactWriter` whose ``local_dir`` has no manifest yet)
    the manifest is built from hashes computed during the upload, not in a pass before it.
    ``progress`` is called with byte counts as they are sent. Returns the stored manifest.
    """
    local_dir = Path(local_dir)
    if writer is None:
        manifest = read_manifest(local_dir)
        entries = _file_entries(manifest, str(local_dir))
        manifest_bytes = (local_dir / MANIFEST).read_bytes()
    else:
        entries = writer.files()
        verify_local = True  # the hashes go into the manifest
    with _context(uri, settings) as ctx, ThreadPoolExecutor(1, thread_name_prefix="kfnlp-sha256") as hasher:
        loc = ctx.loc
        previous = ctx.get_json(loc.child(MANIFEST))  # also the preflight: a missing bucket fails here
        version = _new_version_id()
        base = loc.child(VERSIONS, version)
        # the local files are re-hashed while they upload; a mismatch stops before the switch
        digests = [hasher.submit(sha256_file, local_dir / e["path"]) for e in entries] if verify_local else []
        bar = _Progress(sum(e["size"] for e in entries), f"upload {loc}", progress)
        try:
            for entry in entries:
                ctx.upload_file(local_dir / entry["path"], base.child(entry["path"]), bar)
        except BaseException:
            for digest in digests:
                digest.cancel()
            raise
        finally:
            bar.close()
        if writer is not None:
            manifest = writer._manifest({e["path"]: d.result() for e, d in zip(entries, digests, strict=True)})
            manifest_bytes = json.dumps(manifest, indent=2, sort_keys=True).encode("utf-8")
            entries = manifest["files"]
        for entry, digest in zip(entries, digests, strict=False):  # no digests without verify_local
            if digest.result() != entry["sha256"]:
                raise StorageError(
                    f"{local_dir}: {entry['path']} changed after its manifest was written; "
                    f"{loc} was not switched to the new version"
                )
        _check_stored(ctx, base, entries)
        ctx.put_bytes(base.child(MANIFEST), manifest_bytes, "writing the version's manifest")
        pointer = {**manifest, POINTER_VERSION_KEY: version}
        ctx.put_bytes(
            loc.child(MANIFEST),
            json.dumps(pointer, indent=2, sort_keys=True).encode("utf-8"),
            "writing the manifest (switching to the new version)",
        )
        log.info("%s: stored version %s (%d files)", loc, version, len(entries))
        try:
            _remove_replaced(ctx, previous[0] if previous else None, version)
            _prune(ctx, keep={version}, older_than=prune_older_than)
        except StorageError as exc:  # the new version is complete; leftovers are only wasted space
            log.warning("%s: could not remove old versions: %s", loc, exc)
    return pointer


def _check_stored(ctx: _Context, base: S3Location, entries: list[dict[str, Any]]) -> None:
    """Every file of the new version is on the server with its size (one listing per 1000 files):
    a transfer that reported success without storing its object never gets switched to."""
    prefix = base.key + "/"

    def listing():
        sizes = {}
        for page in ctx.s3.get_paginator("list_objects_v2").paginate(Bucket=base.bucket, Prefix=prefix):
            sizes.update({item["Key"][len(prefix) :]: item["Size"] for item in page.get("Contents", [])})
        return sizes

    stored = ctx.call("checking the uploaded files", listing)
    for entry in entries:
        if stored.get(entry["path"]) != entry["size"]:
            found = "missing" if entry["path"] not in stored else f"{stored[entry['path']]} bytes"
            raise StorageError(
                f"{ctx.loc}: the upload of {entry['path']} did not complete ({found} on the server, "
                f"{entry['size']} bytes expected); the artifact was not switched to the new version"
            )


def _remove_replaced(ctx: _Context, previous: dict[str, Any] | None, current: str) -> None:
    if previous is None:
        return
    old = previous.get(POINTER_VERSION_KEY)
    if old is None:  # a plain artifact at the prefix: remove the files its manifest listed
        try:
            entries = _file_entries(previous, str(ctx.loc))
        except StorageError:
            return
        ctx.delete_keys([ctx.loc.child(e["path"]).key for e in entries])
    elif old != current:
        old_base = _base(ctx.loc, previous)
        ctx.delete_keys(ctx.list_keys(old_base.key + "/"))


def _prune(ctx: _Context, keep: set[str], older_than: float) -> list[str]:
    now = time.time()
    removed = []
    for version in ctx.list_versions():
        age = _version_age(version, now)
        if version in keep or age is None or age < older_than:
            continue
        ctx.delete_keys(ctx.list_keys(ctx.loc.child(VERSIONS, version).key + "/"))
        removed.append(version)
    with contextlib.suppress(Exception):  # servers without ListMultipartUploads: lifecycle rules clean up
        prefix = ctx.loc.child(VERSIONS).key + "/"
        uploads = ctx.s3.list_multipart_uploads(Bucket=ctx.loc.bucket, Prefix=prefix).get("Uploads", [])
        for upload in uploads:
            version = upload["Key"][len(prefix) :].split("/", 1)[0]
            age = _version_age(version, now)
            if version not in keep and age is not None and age >= older_than:
                ctx.s3.abort_multipart_upload(Bucket=ctx.loc.bucket, Key=upload["Key"], UploadId=upload["UploadId"])
    return removed


def prune_versions(uri: str, older_than: float = ORPHAN_GRACE_SECONDS, settings: S3Settings | None = None) -> list[str]:
    """Delete stored versions that are not current and older than ``older_than`` seconds (left by
    interrupted uploads); returns their ids. Never touches the current version."""
    with _context(uri, settings) as ctx:
        found = ctx.get_json(ctx.loc.child(MANIFEST))
        current = found[0].get(POINTER_VERSION_KEY) if found else None
        return _prune(ctx, keep={current} if current else set(), older_than=older_than)


def read_pointer(uri: str, settings: S3Settings | None = None) -> dict[str, Any]:
    """The manifest of the complete artifact at ``uri`` (no file is downloaded), or a StorageError."""
    with _context(uri, settings) as ctx:
        found = ctx.get_json(ctx.loc.child(MANIFEST))
        if found is None:
            raise _incomplete(ctx.loc)
        return found[0]


def list_children(uri: str, settings: S3Settings | None = None) -> list[str]:
    """Names of the "directories" directly under ``uri`` (e.g. the checkpoints of a run)."""
    with _context(uri, settings) as ctx:
        prefix = ctx.loc.key + "/" if ctx.loc.key else ""

        def listing():
            names = []
            paginator = ctx.s3.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=ctx.loc.bucket, Prefix=prefix, Delimiter="/"):
                names.extend(p["Prefix"][len(prefix) :].rstrip("/") for p in page.get("CommonPrefixes", []))
            return names

        return sorted(ctx.call(f"listing {ctx.loc}", listing))


def delete_artifact(uri: str, settings: S3Settings | None = None) -> None:
    """Delete the artifact at ``uri``: its manifest first (so it stops counting as complete at once),
    then every object under the prefix."""
    with _context(uri, settings) as ctx:
        ctx.delete_keys([ctx.loc.child(MANIFEST).key])
        ctx.delete_keys(ctx.list_keys(ctx.loc.key + "/"))


def check_writable(uri: str, settings: S3Settings | None = None) -> None:
    """Fail early, naming the URI and the cause, unless objects can be written and deleted under ``uri``."""
    with _context(uri, settings) as ctx:
        probe = ctx.loc.child(f".kfnlp-probe-{uuid.uuid4().hex[:12]}")
        ctx.put_bytes(probe, b"{}", "checking write access")
        ctx.delete_keys([probe.key])


def _input_entries(ctx: _Context) -> tuple[list[tuple[str, str, str, int]], bool]:
    """(key, relative name, ETag, size) of the plain object at the context's URI, or of every object
    under it as a prefix; and whether it was a single object."""
    loc = ctx.loc

    def head():
        try:
            return ctx.s3.head_object(Bucket=loc.bucket, Key=loc.key) if loc.key else None
        except Exception as exc:
            if _is_missing(exc):
                return None
            raise

    found = ctx.call(f"reading {loc.key or '/'}", head)
    if found is not None:
        return [(loc.key, PurePosixPath(loc.key).name, found["ETag"], found["ContentLength"])], True
    prefix = f"{loc.key}/" if loc.key else ""

    def listing():
        pages = ctx.s3.get_paginator("list_objects_v2").paginate(Bucket=loc.bucket, Prefix=prefix)
        return [item for page in pages for item in page.get("Contents", [])]

    entries = [
        (item["Key"], item["Key"][len(prefix) :], item["ETag"], item["Size"])
        for item in ctx.call(f"listing {loc}", listing)
        if not item["Key"].endswith("/")
    ]
    if not entries:
        raise StorageError(f"{loc}: no such object, and no objects under it as a prefix")
    return entries, False


def check_objects(uri: str, settings: S3Settings | None = None) -> None:
    """Fail, naming the URI and the cause, unless ``uri`` is a readable object or a prefix with objects."""
    with _context(uri, settings) as ctx:
        _input_entries(ctx)


def fetch_objects(uri: str, cache_root: str | os.PathLike, settings: S3Settings | None = None) -> Path:
    """A local copy of the plain object at ``uri`` (a file), or of every object under it as a prefix (a
    directory): input files such as corpora and CoNLL files, which are not kfnlp artifacts. Cached by the
    objects' ETags, so a changed object is fetched again."""
    import hashlib

    with _context(uri, settings) as ctx:
        entries, single = _input_entries(ctx)
        digest = hashlib.sha256(json.dumps([ctx.loc.uri, entries]).encode()).hexdigest()[:24]
        slot = Path(cache_root) / digest
        target = slot / (entries[0][1] if single else "objects")
        if (slot / ".complete").is_file():
            return target
        slot.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".fetch-", dir=slot))
        bar = _Progress(sum(e[3] for e in entries), f"download {ctx.loc}", None)
        try:
            for key, rel, _, _ in entries:
                dest = staging / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                ctx.download_file(S3Location(ctx.loc.bucket, key), dest, bar)
            os.replace(staging / entries[0][1] if single else staging, target)
            (slot / ".complete").touch()
        finally:
            bar.close()
            shutil.rmtree(staging, ignore_errors=True)
        return target


def fetch_artifact(
    uri: str, cache_root: str | os.PathLike, *, kind: str | None = None, settings: S3Settings | None = None
) -> tuple[Path, dict[str, Any]]:
    """A verified local copy of the artifact at ``uri`` and its manifest, downloaded once per stored
    version into ``cache_root`` (older cached versions of the same URI are removed)."""
    import hashlib

    slot = Path(cache_root) / hashlib.sha256(uri.rstrip("/").encode()).hexdigest()[:24]
    pointer = read_pointer(uri, settings)
    if kind is not None and pointer.get("kind") != kind:
        raise StorageError(f"{uri}: expected a {kind} artifact, found {pointer.get('kind')!r}")
    version = pointer.get(POINTER_VERSION_KEY) or pointer.get("created", "plain")
    local = slot / re.sub(r"[^0-9A-Za-z_\-]", "_", str(version))
    if (local / MANIFEST).is_file():
        with contextlib.suppress(StorageError):
            return local, read_manifest(local, kind)
    manifest = download_artifact(uri, local, kind=kind, settings=settings)
    for other in slot.iterdir():
        if other.name != local.name and not other.name.startswith("."):
            shutil.rmtree(other, ignore_errors=True)
    return local, manifest


def download_artifact(
    uri: str,
    local_dir: str | os.PathLike,
    *,
    kind: str | None = None,
    settings: S3Settings | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Download the complete artifact at ``uri`` into ``local_dir`` (replacing what is there only
    once the download is complete and verified) and return its manifest.

    Refuses a prefix without a manifest; checks every file's size and SHA-256.
    """
    local_dir = Path(local_dir)
    with _context(uri, settings) as ctx:
        for _ in range(5):
            found = ctx.get_json(ctx.loc.child(MANIFEST))
            if found is None:
                raise _incomplete(ctx.loc)
            pointer, raw = found
            if kind is not None and pointer.get("kind") != kind:
                raise StorageError(f"{ctx.loc}: expected a {kind} artifact, found {pointer.get('kind')!r}")
            manifest = _download_version(ctx, pointer, raw, local_dir, progress)
            if manifest is not None:
                return manifest
            log.info("%s: the version being read was replaced; reading the new one", ctx.loc)
        raise StorageError(f"{ctx.loc}: the artifact kept changing while it was being downloaded; try again")


def _download_version(
    ctx: _Context,
    pointer: dict[str, Any],
    raw_pointer: bytes,
    local_dir: Path,
    progress: Callable[[int], None] | None,
) -> dict[str, Any] | None:
    """Download one version; None if it vanished meanwhile (replaced by a newer one)."""
    loc = ctx.loc
    base = _base(loc, pointer)
    entries = _file_entries(pointer, str(loc))
    staging = staging_dir(local_dir)
    bar = _Progress(sum(e["size"] for e in entries), f"download {loc}", progress)
    try:
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="kfnlp-sha256") as hasher:
            checks = []
            for entry in entries:
                target = staging / entry["path"]
                target.parent.mkdir(parents=True, exist_ok=True)
                try:
                    ctx.download_file(base.child(entry["path"]), target, bar)
                except StorageError as exc:
                    if _is_missing(exc) and _replaced(ctx, pointer):
                        return None
                    if _is_missing(exc):
                        raise StorageError(
                            f"{loc}: {entry['path']} is missing from {base}; the stored artifact is damaged"
                        ) from None
                    raise
                checks.append((entry, target, hasher.submit(sha256_file, target)))
            for entry, target, digest in checks:
                size = target.stat().st_size
                if size != entry["size"]:
                    raise StorageError(
                        f"{loc}: {entry['path']} has {size} bytes, its manifest says {entry['size']}; "
                        "the stored artifact is damaged"
                    )
                if digest.result() != entry["sha256"]:
                    raise StorageError(
                        f"{loc}: checksum mismatch for {entry['path']} (SHA-256 differs from the manifest); "
                        "the stored artifact is damaged"
                    )
        manifest_bytes = raw_pointer
        if base != loc:
            own = ctx.get_json(base.child(MANIFEST))
            if own is None:
                if _replaced(ctx, pointer):
                    return None
                raise StorageError(f"{loc}: {base} has no {MANIFEST}; the stored artifact is damaged")
            if own[0].get("files") != pointer.get("files"):
                raise StorageError(f"{loc}: {base}/{MANIFEST} does not match the artifact's manifest")
            manifest_bytes = own[1]
        (staging / MANIFEST).write_bytes(manifest_bytes)
        install(staging, local_dir)
        return json.loads(manifest_bytes.decode("utf-8"))
    finally:
        bar.close()
        shutil.rmtree(staging, ignore_errors=True)


def _replaced(ctx: _Context, pointer: dict[str, Any]) -> bool:
    found = ctx.get_json(ctx.loc.child(MANIFEST))
    return found is not None and found[0].get(POINTER_VERSION_KEY) != pointer.get(POINTER_VERSION_KEY)


@contextlib.contextmanager
def write_artifact(uri: str, kind: str, settings: S3Settings | None = None) -> Iterator[ArtifactWriter]:
    """Like :func:`kfnlp.storage.write_artifact` for an ``s3://`` destination: the stage writes into a
    local staging directory; on success it gets its manifest and is uploaded as a new version."""
    parse_uri(uri)  # fail before the stage does any work
    with tempfile.TemporaryDirectory(prefix="kfnlp-s3-") as tmp:
        writer = ArtifactWriter(Path(tmp) / "artifact", kind)
        writer.path.mkdir()
        yield writer
        upload_artifact(writer.path, uri, settings=settings, writer=writer)  # hashed while it uploads
