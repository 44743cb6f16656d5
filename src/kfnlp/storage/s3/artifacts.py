"""The versioned-artifact layout on S3 (a pointer manifest naming the current ``.v/<version>/``) and
the operations that read or remove whole artifacts without transferring their files."""

from __future__ import annotations

import calendar
import re
import time
import uuid
from typing import Any

from kfnlp.errors import StorageError
from kfnlp.storage.manifest import MANIFEST, is_safe_name
from kfnlp.storage.s3.settings import S3Settings
from kfnlp.storage.s3.transport import open_transport
from kfnlp.storage.s3.uri import VERSIONS, S3Location

POINTER_VERSION_KEY = "s3_version"
ORPHAN_GRACE_SECONDS = 24 * 3600
_VERSION_RE = re.compile(r"^(\d{8}T\d{6}Z)-[0-9a-f]+$")


def new_version_id() -> str:
    return f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{uuid.uuid4().hex[:12]}"


def version_age(version: str, now: float) -> float | None:
    match = _VERSION_RE.match(version)
    if not match:
        return None
    return now - calendar.timegm(time.strptime(match.group(1), "%Y%m%dT%H%M%SZ"))


def file_entries(manifest: dict[str, Any], where: str) -> list[dict[str, Any]]:
    entries = manifest.get("files")
    if not isinstance(entries, list):
        raise StorageError(f"{where}: the manifest has no file list")
    for entry in entries:
        rel = entry.get("path") if isinstance(entry, dict) else None
        if (
            not is_safe_name(rel)
            or rel == MANIFEST
            or rel.split("/")[0] == VERSIONS
            or not isinstance(entry.get("size"), int)
            or not isinstance(entry.get("sha256"), str)
        ):
            raise StorageError(f"{where}: the manifest lists an invalid file entry {entry!r}")
    return entries


def version_base(loc: S3Location, pointer: dict[str, Any]) -> S3Location:
    version = pointer.get(POINTER_VERSION_KEY)
    if version is None:
        return loc  # a plain artifact copied to the prefix
    if not isinstance(version, str) or not re.fullmatch(r"[0-9A-Za-z_\-]+", version):
        raise StorageError(f"{loc}: the manifest names an invalid stored version {version!r}")
    return loc.child(VERSIONS, version)


def incomplete(loc: S3Location) -> StorageError:
    return StorageError(
        f"{loc}: incomplete or not a kfnlp artifact (no {MANIFEST}); was the stage that writes it interrupted?"
    )


def exists_complete(uri: str, settings: S3Settings | None = None, *, kind: str | None = None) -> bool:
    """True if ``uri`` holds a complete artifact (its manifest, and that version's own manifest), of
    ``kind`` when given."""
    with open_transport(uri, settings) as ctx:
        found = ctx.get_json(ctx.loc.child(MANIFEST))
        if found is None or (kind is not None and found[0].get("kind") != kind):
            return False
        base = version_base(ctx.loc, found[0])
        if base == ctx.loc:
            return True
        return ctx.get_json(base.child(MANIFEST)) is not None


def resolve_version(uri: str, settings: S3Settings | None = None) -> str:
    """The URI of the files of the current version (itself a plain artifact prefix), for tools that
    read S3 directly (e.g. ``datasets.load_from_disk``); it stays readable until it is replaced."""
    with open_transport(uri, settings) as ctx:
        found = ctx.get_json(ctx.loc.child(MANIFEST))
        if found is None:
            raise incomplete(ctx.loc)
        return version_base(ctx.loc, found[0]).uri


def read_pointer(uri: str, settings: S3Settings | None = None) -> dict[str, Any]:
    """The manifest of the complete artifact at ``uri`` (no file is downloaded), or a StorageError."""
    with open_transport(uri, settings) as ctx:
        found = ctx.get_json(ctx.loc.child(MANIFEST))
        if found is None:
            raise incomplete(ctx.loc)
        return found[0]


def list_children(uri: str, settings: S3Settings | None = None) -> list[str]:
    """Names of the "directories" directly under ``uri`` (e.g. the checkpoints of a run)."""
    with open_transport(uri, settings) as ctx:
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
    with open_transport(uri, settings) as ctx:
        ctx.delete_keys([ctx.loc.child(MANIFEST).key])
        ctx.delete_keys(ctx.list_keys(ctx.loc.key + "/"))


def check_writable(uri: str, settings: S3Settings | None = None) -> None:
    """Fail early, naming the URI and the cause, unless objects can be written and deleted under ``uri``."""
    with open_transport(uri, settings) as ctx:
        probe = ctx.loc.child(f".kfnlp-probe-{uuid.uuid4().hex[:12]}")
        ctx.put_bytes(probe, b"{}", "checking write access")
        ctx.delete_keys([probe.key])
