"""S3 as an :class:`~kfnlp.storage.store.ArtifactStore`: versioned artifacts, read through a verified
local cache in ``$KFNLP_HOME/cache``."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kfnlp.assets import kfnlp_home
from kfnlp.storage.manifest import ArtifactWriter, check_kind
from kfnlp.storage.s3.artifacts import check_writable, delete_artifact, exists_complete, list_children, read_pointer
from kfnlp.storage.s3.download import download_artifact, fetch_artifact
from kfnlp.storage.s3.objects import check_objects, fetch_objects
from kfnlp.storage.s3.upload import write_artifact
from kfnlp.storage.store import ArtifactStore, Ref


class S3Store(ArtifactStore):
    """``s3://bucket/prefix`` URIs, configured by the standard AWS environment (see :mod:`kfnlp.storage.s3`)."""

    def local_path(self, ref: Ref) -> None:
        return None

    def write_artifact(self, ref: Ref, kind: str) -> contextlib.AbstractContextManager[ArtifactWriter]:
        return write_artifact(str(ref), kind)

    def open_artifact(self, ref: Ref, kind: str | None = None) -> tuple[Path, dict[str, Any]]:
        """Downloaded (verified) once per stored version into ``$KFNLP_HOME/cache/s3``."""
        return fetch_artifact(str(ref), kfnlp_home() / "cache" / "s3", kind=kind)

    def read_manifest(self, ref: Ref, kind: str | None = None) -> dict[str, Any]:
        manifest = read_pointer(str(ref))
        check_kind(manifest, kind, ref)
        return manifest

    def exists(self, ref: Ref, kind: str | None = None) -> bool:
        return exists_complete(str(ref), kind=kind)

    def fetch(self, ref: Ref, dest: Path, kind: str | None = None) -> dict[str, Any]:
        return download_artifact(str(ref), dest, kind=kind)

    def delete(self, ref: Ref) -> None:
        delete_artifact(str(ref))

    def children(self, ref: Ref) -> list[str]:
        return list_children(str(ref))

    def remove_dir(self, ref: Ref) -> None:
        """Nothing to do: a prefix has no existence of its own once its objects are gone."""

    def fetch_input(self, source: str) -> str:
        """Objects or prefixes are downloaded once into ``$KFNLP_HOME/cache/s3-objects``."""
        return str(fetch_objects(source, kfnlp_home() / "cache" / "s3-objects"))

    def check_input(self, source: str, check_local: Callable[[str], object]) -> None:
        """Lists the object or prefix; the reader's own checks run on the local copy, when it is read."""
        check_objects(source)

    def check_writable(self, ref: Ref) -> None:
        """Fail early, naming the URI and the cause, unless objects can be written and deleted under ``ref``."""
        check_writable(str(ref))
