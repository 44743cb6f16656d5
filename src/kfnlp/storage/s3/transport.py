"""One operation on S3: its client, and every request retried with backoff within the retry budget."""

from __future__ import annotations

import contextlib
import json
import logging
import random
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kfnlp.errors import StorageError
from kfnlp.storage.s3.errors import checksum_refused, classify, foreign_cause, is_missing
from kfnlp.storage.s3.settings import S3Settings, cached_client
from kfnlp.storage.s3.uri import VERSIONS, S3Location, parse_uri

log = logging.getLogger(__name__)


class Progress:
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
class Transport:
    """The client, credentials and transfer manager of one operation on ``loc``; :meth:`call` runs
    each request, retrying transient failures, and turns every failure into a StorageError that
    names the URI and never a secret."""

    loc: S3Location
    settings: S3Settings
    session: Any = None
    s3: Any = None
    endpoint: str = ""
    secrets: tuple[str, ...] = ()
    checksum: str = "CRC32"
    _manager: Any = field(default=None, repr=False)

    @classmethod
    def open(cls, loc: S3Location, settings: S3Settings | None) -> Transport:
        settings = settings or S3Settings.from_env()
        try:
            session, ctx_client = cached_client(settings, settings.checksum)
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
        self.session, self.s3 = cached_client(self.settings, "none")

    def call(self, what: str, fn: Callable[[], Any], on_retry: Callable[[], None] | None = None) -> Any:
        """Run ``fn``; retry transient failures with backoff within the retry budget."""
        attempt = 0
        started = time.monotonic()
        first_failure = None
        while True:
            try:
                return fn()
            except Exception as exc:
                kind, cause = classify(exc, self.loc, self.endpoint)
                if kind is None:
                    raise
                if kind == "foreign":
                    raise foreign_cause(exc) from None
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
                if is_missing(exc):
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

    def upload_file(self, path: Path, loc: S3Location, progress: Progress) -> None:
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
                if self.checksum != "none" and checksum_refused(exc):
                    self.downgrade_checksum()
                    return upload()
                raise

        def rewind() -> None:  # the next attempt sends the whole file again
            if progress.bar is not None and sent[0]:
                progress.bar.update(-sent[0])
            sent[0] = 0

        self.call(f"uploading {path.name}", upload, on_retry=rewind)

    def download_file(self, loc: S3Location, path: Path, progress: Progress) -> None:
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
def open_transport(uri: str, settings: S3Settings | None) -> Iterator[Transport]:
    """The transport of one operation on ``uri`` (parsed first: a bad URI fails before any request)."""
    ctx = Transport.open(parse_uri(uri), settings)
    try:
        yield ctx
    finally:
        ctx.close()
