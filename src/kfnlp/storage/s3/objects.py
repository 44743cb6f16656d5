"""Plain input objects (corpora, CoNLL files): not kfnlp artifacts, cached locally by their ETags."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path, PurePosixPath

from kfnlp.errors import StorageError
from kfnlp.storage.manifest import UNSAFE_NAME, contained, is_safe_name
from kfnlp.storage.s3.errors import is_missing
from kfnlp.storage.s3.settings import S3Settings
from kfnlp.storage.s3.transport import Progress, Transport, open_transport
from kfnlp.storage.s3.uri import S3Location


def _input_entries(ctx: Transport) -> tuple[list[tuple[str, str, str, int]], bool]:
    """(key, relative name, ETag, size) of the plain object at the context's URI, or of every object
    under it as a prefix; and whether it was a single object."""
    loc = ctx.loc

    def head():
        try:
            return ctx.s3.head_object(Bucket=loc.bucket, Key=loc.key) if loc.key else None
        except Exception as exc:
            if is_missing(exc):
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
    for key, rel, _, _ in entries:
        if not is_safe_name(rel):
            raise _unsafe_key(loc, key)
    return entries, False


def _unsafe_key(loc: S3Location, key: str) -> StorageError:
    return StorageError(
        f"{loc}: the object key {key!r} cannot be a local file under the prefix (its name after "
        f"{loc.key + '/' if loc.key else 'the bucket'} may have {UNSAFE_NAME}); rename or remove that object"
    )


def check_objects(uri: str, settings: S3Settings | None = None) -> None:
    """Fail, naming the URI and the cause, unless ``uri`` is a readable object or a prefix with objects."""
    with open_transport(uri, settings) as ctx:
        _input_entries(ctx)


def fetch_objects(uri: str, cache_root: str | os.PathLike, settings: S3Settings | None = None) -> Path:
    """A local copy of the plain object at ``uri`` (a file), or of every object under it as a prefix (a
    directory): input files such as corpora and CoNLL files, which are not kfnlp artifacts. Cached by the
    objects' ETags, so a changed object is fetched again."""
    with open_transport(uri, settings) as ctx:
        entries, single = _input_entries(ctx)
        digest = hashlib.sha256(json.dumps([ctx.loc.uri, entries]).encode()).hexdigest()[:24]
        slot = Path(cache_root) / digest
        target = slot / (entries[0][1] if single else "objects")
        if (slot / ".complete").is_file():
            return target
        slot.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".fetch-", dir=slot))
        bar = Progress(sum(e[3] for e in entries), f"download {ctx.loc}", None)
        try:
            for key, rel, _, _ in entries:
                dest = contained(staging, rel)
                if dest is None:
                    raise _unsafe_key(ctx.loc, key)
                dest.parent.mkdir(parents=True, exist_ok=True)
                ctx.download_file(S3Location(ctx.loc.bucket, key), dest, bar)
            os.replace(staging / entries[0][1] if single else staging, target)
            (slot / ".complete").touch()
        finally:
            bar.close()
            shutil.rmtree(staging, ignore_errors=True)
        return target
