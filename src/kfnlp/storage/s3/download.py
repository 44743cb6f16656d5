"""Downloading an artifact's current version, verified against its manifest, and a cache of them."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from kfnlp.errors import StorageError
from kfnlp.storage.manifest import (
    MANIFEST,
    check_kind,
    install,
    read_manifest,
    sha256_file,
    staging_dir,
    verify_checksums,
)
from kfnlp.storage.s3.artifacts import POINTER_VERSION_KEY, file_entries, incomplete, read_pointer, version_base
from kfnlp.storage.s3.errors import is_missing
from kfnlp.storage.s3.settings import S3Settings
from kfnlp.storage.s3.transport import Progress, Transport, open_transport

log = logging.getLogger(__name__)


def fetch_artifact(
    uri: str, cache_root: str | os.PathLike, *, kind: str | None = None, settings: S3Settings | None = None
) -> tuple[Path, dict[str, Any]]:
    """A verified local copy of the artifact at ``uri`` and its manifest, downloaded once per stored
    version into ``cache_root`` (older cached versions of the same URI are removed). A cached copy is
    reused only if it still matches the stored manifest, SHA-256 of every file included; else it is
    downloaded again."""
    slot = Path(cache_root) / hashlib.sha256(uri.rstrip("/").encode()).hexdigest()[:24]
    pointer = read_pointer(uri, settings)
    check_kind(pointer, kind, uri)
    version = pointer.get(POINTER_VERSION_KEY) or pointer.get("created", "plain")
    local = slot / re.sub(r"[^0-9A-Za-z_\-]", "_", str(version))
    if (local / MANIFEST).is_file():
        try:
            return local, _verified_copy(local, pointer, kind)
        except StorageError as exc:
            log.warning("%s: the cached copy in %s is damaged (%s); downloading it again", uri, local, exc)
    manifest = download_artifact(uri, local, kind=kind, settings=settings)
    for other in slot.iterdir():
        if other.name != local.name and not other.name.startswith("."):
            shutil.rmtree(other, ignore_errors=True)
    return local, manifest


def _verified_copy(local: Path, pointer: dict[str, Any], kind: str | None) -> dict[str, Any]:
    """The manifest of the cached copy ``local`` once it lists the stored version's files and every
    file matches its size and SHA-256, or a StorageError."""
    manifest = read_manifest(local, kind)
    if manifest.get("files") != pointer.get("files"):
        raise StorageError(f"{local}: {MANIFEST} does not match the stored artifact's")
    verify_checksums(local)
    return manifest


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
    with open_transport(uri, settings) as ctx:
        for _ in range(5):
            found = ctx.get_json(ctx.loc.child(MANIFEST))
            if found is None:
                raise incomplete(ctx.loc)
            pointer, raw = found
            check_kind(pointer, kind, ctx.loc)
            manifest = _download_version(ctx, pointer, raw, local_dir, progress)
            if manifest is not None:
                return manifest
            log.info("%s: the version being read was replaced; reading the new one", ctx.loc)
        raise StorageError(f"{ctx.loc}: the artifact kept changing while it was being downloaded; try again")


def _download_version(
    ctx: Transport,
    pointer: dict[str, Any],
    raw_pointer: bytes,
    local_dir: Path,
    progress: Callable[[int], None] | None,
) -> dict[str, Any] | None:
    """Download one version; None if it vanished meanwhile (replaced by a newer one)."""
    loc = ctx.loc
    base = version_base(loc, pointer)
    entries = file_entries(pointer, str(loc))
    staging = staging_dir(local_dir)
    bar = Progress(sum(e["size"] for e in entries), f"download {loc}", progress)
    try:
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="kfnlp-sha256") as hasher:
            checks = []
            for entry in entries:
                target = staging / entry["path"]
                target.parent.mkdir(parents=True, exist_ok=True)
                try:
                    ctx.download_file(base.child(entry["path"]), target, bar)
                except StorageError as exc:
                    if is_missing(exc) and _replaced(ctx, pointer):
                        return None
                    if is_missing(exc):
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


def _replaced(ctx: Transport, pointer: dict[str, Any]) -> bool:
    found = ctx.get_json(ctx.loc.child(MANIFEST))
    return found is not None and found[0].get(POINTER_VERSION_KEY) != pointer.get(POINTER_VERSION_KEY)
