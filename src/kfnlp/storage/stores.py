"""Which store holds a reference: the one place in kfnlp that reads a URI's scheme."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from kfnlp.storage.destination import check_apart, check_destination
from kfnlp.storage.local import LocalStore
from kfnlp.storage.manifest import ArtifactWriter
from kfnlp.storage.s3.settings import endpoint_url
from kfnlp.storage.s3.store import S3Store
from kfnlp.storage.s3.uri import SCHEME
from kfnlp.storage.store import ArtifactStore, Ref

MINIO_SCHEME = "minio://"  # how KFP names artifacts on its own MinIO


def store_for(ref: Ref) -> ArtifactStore:
    """The store of a local path or an ``s3://`` URI (the one remote scheme kfnlp stores artifacts under)."""
    if isinstance(ref, str) and ref.startswith(SCHEME):
        return S3Store()
    return LocalStore()


def shared_uri(kfp_uri: str) -> str | None:
    """The ``s3://`` URI of a KFP artifact URI whose pipeline root is on S3, or on KFP's MinIO
    (``minio://``) with the S3 endpoint set to it; None for anything else (a pod's own disk, ``gs://``)."""
    if kfp_uri.startswith(MINIO_SCHEME) and endpoint_url():
        kfp_uri = SCHEME + kfp_uri[len(MINIO_SCHEME) :]
    return kfp_uri if store_for(kfp_uri).local_path(kfp_uri) is None else None


def write_artifact(dest: Ref, kind: str) -> contextlib.AbstractContextManager[ArtifactWriter]:
    """Write an artifact to a local directory or an ``s3://`` URI; complete only with its manifest.
    The stage writes into the yielded ``.path`` (always a local directory)."""
    return store_for(dest).write_artifact(dest, kind)


def open_artifact(ref: Ref, kind: str | None = None) -> tuple[Path, dict[str, Any]]:
    """A complete artifact as a local directory, with its manifest: a local one in place, an ``s3://``
    one downloaded (verified) once per stored version into ``$KFNLP_HOME/cache/s3``."""
    return store_for(ref).open_artifact(ref, kind)


def read_any_manifest(ref: Ref, kind: str | None = None) -> dict[str, Any]:
    """The manifest of a complete local or ``s3://`` artifact, without downloading its files."""
    return store_for(ref).read_manifest(ref, kind)


def local_input(source: str) -> str:
    """An input file or directory (a corpus, a CoNLL file) as a local path: ``s3://`` objects or prefixes
    are downloaded once into ``$KFNLP_HOME/cache/s3-objects``; anything else is returned as it is."""
    return store_for(source).fetch_input(source)


def check_input(source: str, check_local: Callable[[str], object]) -> None:
    """Cheap check that an input can be read: a local one by ``check_local`` (the reader's own rules),
    an ``s3://`` one (an object, or a prefix with objects) by listing it."""
    store_for(source).check_input(source, check_local)


def files_uri(ref: Ref) -> str:
    """Where a complete artifact's files lie as a plain directory, for a reader outside kfnlp (KServe's storage
    initializer downloads a prefix as it is): a local artifact's own path; on S3 the current stored version's
    prefix, readable until that version is replaced."""
    if store_for(ref).local_path(ref) is not None:
        return str(ref)
    from kfnlp.storage.s3.artifacts import resolve_version

    return resolve_version(str(ref))


def check_output(output: Ref, inputs: Mapping[str, str | None]) -> None:
    """Cheap check, before a stage does any work, that writing its artifact to ``output`` loses
    nothing: a local output may replace only what kfnlp wrote (see
    :func:`~kfnlp.storage.destination.check_destination`) and none of the stage's local ``inputs``
    (what names each, e.g. ``preprocess.source``, -> its value). An ``s3://`` output loses nothing:
    an upload adds a version and deletes only versions kfnlp stored there."""
    path = store_for(output).local_path(output)
    if path is None:
        return
    local = {name: value for name, value in inputs.items() if value and store_for(value).local_path(value) is not None}
    check_apart(path, local)
    check_destination(path)
