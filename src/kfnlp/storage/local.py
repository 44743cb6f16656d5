"""Artifacts in local directories, renamed into place once complete (see :mod:`kfnlp.storage.manifest`)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from kfnlp.errors import StorageError, disk_full
from kfnlp.storage.destination import check_destination
from kfnlp.storage.manifest import MANIFEST, ArtifactWriter, install, read_manifest, staging_dir
from kfnlp.storage.store import ArtifactStore, Ref


@contextlib.contextmanager
def write_local_artifact(dest: Ref, kind: str) -> Iterator[ArtifactWriter]:
    """Write an artifact directory atomically; the manifest is written last. What is at ``dest`` is
    replaced only if kfnlp wrote it (see :func:`~kfnlp.storage.destination.check_destination`)."""
    check_destination(dest)
    dest = Path(dest)
    tmp = staging_dir(dest)
    writer = ArtifactWriter(tmp, kind)
    try:
        yield writer
        manifest = writer.manifest()
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True), encoding="utf-8")
        install(tmp, dest)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if disk_full(exc):  # the library that hit it rarely names the file; nothing was installed
            raise StorageError(
                f"{dest}: no space left on the device writing this {kind} artifact; no partial artifact was left"
            ) from exc
        raise


def private_temp_dir(name: str) -> Path:
    """``<temp dir>/kfnlp-<uid>/<name>``: a scratch path every process of this user on this machine
    agrees on (the data-parallel workers of a node share the Trainer's checkpoint scratch), which no
    other user can create first or redirect through a symlink: the parent is made mode 0700 and used
    only while it is a real directory of this user that nobody else may enter."""
    parent = Path(tempfile.gettempdir()) / f"kfnlp-{os.getuid()}"
    try:
        parent.mkdir(mode=0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        raise StorageError(f"{parent}: cannot create a private scratch directory ({exc.strerror})") from None
    found = parent.lstat()
    if not stat.S_ISDIR(found.st_mode) or found.st_uid != os.getuid() or found.st_mode & 0o077:
        raise StorageError(
            f"{parent}: not a private directory of this user (a symlink, another user's, or open to others); "
            "remove it, or point TMPDIR at a private directory"
        )
    return parent / name


class LocalStore(ArtifactStore):
    """Local paths: artifacts are read in place."""

    def local_path(self, ref: Ref) -> Path:
        return Path(ref)

    def write_artifact(self, ref: Ref, kind: str) -> contextlib.AbstractContextManager[ArtifactWriter]:
        return write_local_artifact(ref, kind)

    def open_artifact(self, ref: Ref, kind: str | None = None) -> tuple[Path, dict[str, Any]]:
        return Path(ref), read_manifest(ref, kind)

    def read_manifest(self, ref: Ref, kind: str | None = None) -> dict[str, Any]:
        return read_manifest(ref, kind)

    def exists(self, ref: Ref, kind: str | None = None) -> bool:
        try:
            read_manifest(ref, kind)
        except StorageError:
            return False
        return True

    def fetch(self, ref: Ref, dest: Path, kind: str | None = None) -> dict[str, Any]:
        return read_manifest(ref, kind)  # in place: dest is local_path(ref)

    def delete(self, ref: Ref) -> None:
        path = Path(ref)
        (path / MANIFEST).unlink(missing_ok=True)  # no longer complete before any file goes
        shutil.rmtree(path, ignore_errors=True)

    def children(self, ref: Ref) -> list[str]:
        root = Path(ref)
        return [path.name for path in root.iterdir()] if root.is_dir() else []

    def remove_dir(self, ref: Ref) -> None:
        shutil.rmtree(ref, ignore_errors=True)

    def fetch_input(self, source: str) -> str:
        return source

    def check_input(self, source: str, check_local: Callable[[str], object]) -> None:
        check_local(source)
