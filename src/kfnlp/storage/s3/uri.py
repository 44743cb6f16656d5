"""``s3://bucket/key`` URIs: parsing and checking them, and naming the objects under one."""

from __future__ import annotations

import re
from dataclasses import dataclass

from kfnlp.errors import StorageError

SCHEME = "s3://"
VERSIONS = ".v"  # the prefix of stored versions, reserved under every artifact
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.\-_]{1,61}[a-z0-9]$")


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


def parse_uri(uri: str) -> S3Location:
    """``s3://bucket/some/prefix`` → ``S3Location("bucket", "some/prefix")``, or a StorageError."""
    if not isinstance(uri, str) or not uri.startswith(SCHEME):
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
