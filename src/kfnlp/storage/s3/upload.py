"""Uploading an artifact as a new version, switching to it, and pruning what older uploads left."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from kfnlp.errors import StorageError
from kfnlp.storage.manifest import MANIFEST, ArtifactWriter, read_manifest, sha256_file
from kfnlp.storage.s3.artifacts import (
    ORPHAN_GRACE_SECONDS,
    POINTER_VERSION_KEY,
    file_entries,
    new_version_id,
    version_age,
    version_base,
)
from kfnlp.storage.s3.settings import S3Settings
from kfnlp.storage.s3.transport import Progress, Transport, open_transport
from kfnlp.storage.s3.uri import VERSIONS, S3Location, parse_uri

log = logging.getLogger(__name__)


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
        entries = file_entries(manifest, str(local_dir))
        manifest_bytes = (local_dir / MANIFEST).read_bytes()
    else:
        entries = writer.files()
        verify_local = True  # the hashes go into the manifest
    with open_transport(uri, settings) as ctx, ThreadPoolExecutor(1, thread_name_prefix="kfnlp-sha256") as hasher:
        loc = ctx.loc
        previous = ctx.get_json(loc.child(MANIFEST))  # also the preflight: a missing bucket fails here
        version = new_version_id()
        base = loc.child(VERSIONS, version)
        # the local files are re-hashed while they upload; a mismatch stops before the switch
        digests = [hasher.submit(sha256_file, local_dir / e["path"]) for e in entries] if verify_local else []
        bar = Progress(sum(e["size"] for e in entries), f"upload {loc}", progress)
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
            manifest = writer.manifest({e["path"]: d.result() for e, d in zip(entries, digests, strict=True)})
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


def _check_stored(ctx: Transport, base: S3Location, entries: list[dict[str, Any]]) -> None:
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


def _remove_replaced(ctx: Transport, previous: dict[str, Any] | None, current: str) -> None:
    if previous is None:
        return
    old = previous.get(POINTER_VERSION_KEY)
    if old is None:  # a plain artifact at the prefix: remove the files its manifest listed
        try:
            entries = file_entries(previous, str(ctx.loc))
        except StorageError:
            return
        ctx.delete_keys([ctx.loc.child(e["path"]).key for e in entries])
    elif old != current:
        old_base = version_base(ctx.loc, previous)
        ctx.delete_keys(ctx.list_keys(old_base.key + "/"))


def _prune(ctx: Transport, keep: set[str], older_than: float) -> list[str]:
    now = time.time()
    removed = []
    for version in ctx.list_versions():
        age = version_age(version, now)
        if version in keep or age is None or age < older_than:
            continue
        ctx.delete_keys(ctx.list_keys(ctx.loc.child(VERSIONS, version).key + "/"))
        removed.append(version)
    with contextlib.suppress(Exception):  # servers without ListMultipartUploads: lifecycle rules clean up
        prefix = ctx.loc.child(VERSIONS).key + "/"
        uploads = ctx.s3.list_multipart_uploads(Bucket=ctx.loc.bucket, Prefix=prefix).get("Uploads", [])
        for upload in uploads:
            version = upload["Key"][len(prefix) :].split("/", 1)[0]
            age = version_age(version, now)
            if version not in keep and age is not None and age >= older_than:
                ctx.s3.abort_multipart_upload(Bucket=ctx.loc.bucket, Key=upload["Key"], UploadId=upload["UploadId"])
    return removed


def prune_versions(uri: str, older_than: float = ORPHAN_GRACE_SECONDS, settings: S3Settings | None = None) -> list[str]:
    """Delete stored versions that are not current and older than ``older_than`` seconds (left by
    interrupted uploads); returns their ids. Never touches the current version."""
    with open_transport(uri, settings) as ctx:
        found = ctx.get_json(ctx.loc.child(MANIFEST))
        current = found[0].get(POINTER_VERSION_KEY) if found else None
        return _prune(ctx, keep={current} if current else set(), older_than=older_than)


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
