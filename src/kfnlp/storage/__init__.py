"""Stored artifacts: directories that are complete only when their manifest exists.

A stage writes into a hidden temporary directory next to the destination; the
manifest (file list, sizes, SHA-256, plus stage-specific facts such as a content
fingerprint) is written last and the directory is then renamed into place. A crash
mid-write leaves only the hidden temporary directory, never something that looks
complete, and a previous complete version is replaced only by a complete new one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kfnlp.errors import StorageError

MANIFEST = "kfnlp-manifest.json"
FORMAT_VERSION = 1


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class ArtifactWriter:
    """The temporary directory a stage writes into, and the facts for its manifest."""

    path: Path
    kind: str
    info: dict[str, Any] = field(default_factory=dict)

    def files(self) -> list[dict[str, Any]]:
        """Path (relative, POSIX) and size of every file written so far."""
        return [
            {"path": file.relative_to(self.path).as_posix(), "size": file.stat().st_size}
            for file in sorted(p for p in self.path.rglob("*") if p.is_file())
        ]

    def _manifest(self, digests: dict[str, str] | None = None) -> dict[str, Any]:
        """The manifest; ``digests`` (path -> SHA-256) when they were computed already."""
        files = [
            {**entry, "sha256": digests[entry["path"]] if digests else sha256_file(self.path / entry["path"])}
            for entry in self.files()
        ]
        return {
            "format": FORMAT_VERSION,
            "kind": self.kind,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "files": files,
            **self.info,
        }


def _clear_path(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def is_remote(ref: str | os.PathLike | None) -> bool:
    """True for an ``s3://`` URI (the one remote scheme kfnlp stores artifacts under)."""
    return isinstance(ref, str) and ref.startswith("s3://")


def write_artifact(dest: str | os.PathLike, kind: str) -> contextlib.AbstractContextManager[ArtifactWriter]:
    """Write an artifact to a local directory or an ``s3://`` URI; complete only with its manifest.

    The stage writes into the yielded ``.path`` (always a local directory); see
    :func:`write_local_artifact` and :func:`kfnlp.storage.s3.write_artifact`.
    """
    if is_remote(dest):
        from kfnlp.storage import s3

        return s3.write_artifact(str(dest), kind)
    return write_local_artifact(dest, kind)


def open_artifact(ref: str | os.PathLike, kind: str | None = None) -> tuple[Path, dict[str, Any]]:
    """A complete artifact as a local directory, with its manifest: a local one in place, an ``s3://``
    one downloaded (verified) once per stored version into ``$KFNLP_HOME/cache/s3``."""
    if is_remote(ref):
        from kfnlp.assets import kfnlp_home
        from kfnlp.storage import s3

        return s3.fetch_artifact(str(ref), kfnlp_home() / "cache" / "s3", kind=kind)
    return Path(ref), read_manifest(ref, kind)


def local_input(source: str) -> str:
    """An input file or directory (a corpus, a CoNLL file) as a local path: ``s3://`` objects or prefixes
    are downloaded once into ``$KFNLP_HOME/cache/s3-objects``; anything else is returned as it is."""
    if not is_remote(source):
        return source
    from kfnlp.assets import kfnlp_home
    from kfnlp.storage import s3

    return str(s3.fetch_objects(source, kfnlp_home() / "cache" / "s3-objects"))


def check_input(source: str) -> None:
    """Cheap check that an ``s3://`` input (an object, or a prefix with objects) can be read."""
    from kfnlp.storage import s3

    s3.check_objects(source)


def read_any_manifest(ref: str | os.PathLike, kind: str | None = None) -> dict[str, Any]:
    """The manifest of a complete local or ``s3://`` artifact, without downloading its files."""
    if is_remote(ref):
        from kfnlp.storage import s3

        manifest = s3.read_pointer(str(ref))
        if kind is not None and manifest.get("kind") != kind:
            raise StorageError(f"{ref}: expected a {kind} artifact, found {manifest.get('kind')!r}")
        return manifest
    return read_manifest(ref, kind)


def staging_dir(dest: Path) -> Path:
    """A new hidden directory next to ``dest``, to fill and then :func:`install` as ``dest``."""
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"{dest}: cannot create the output directory ({exc.strerror})") from None
    staging = dest.parent / f".{dest.name}.tmp-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    return staging


def install(staging: Path, dest: Path) -> None:
    """Rename a complete staging directory to ``dest``; what was there is removed only afterwards."""
    old = None
    if dest.exists() or dest.is_symlink():
        old = dest.parent / f".{dest.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(dest, old)
    os.replace(staging, dest)
    if old is not None:
        _clear_path(old)


@contextlib.contextmanager
def write_local_artifact(dest: str | os.PathLike, kind: str) -> Iterator[ArtifactWriter]:
    """Write an artifact directory atomically; the manifest is written last."""
    dest = Path(dest)
    tmp = staging_dir(dest)
    writer = ArtifactWriter(tmp, kind)
    try:
        yield writer
        manifest = writer._manifest()
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True), encoding="utf-8")
        install(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def read_manifest(path: str | os.PathLike, kind: str | None = None) -> dict[str, Any]:
    """Return the manifest of a complete artifact, or raise a clear StorageError."""
    path = Path(path)
    if not path.exists():
        raise StorageError(f"{path}: no such artifact")
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise StorageError(
            f"{path}: incomplete or not a kfnlp artifact (no {MANIFEST}); was the stage that writes it interrupted?"
        )
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise StorageError(f"{manifest_path}: unreadable manifest ({exc})") from None
    if kind is not None and manifest.get("kind") != kind:
        raise StorageError(f"{path}: expected a {kind} artifact, found {manifest.get('kind')!r}")
    for entry in manifest.get("files", []):
        file = path / entry["path"]
        if not file.is_file() or file.stat().st_size != entry["size"]:
            raise StorageError(f"{path}: {entry['path']} is missing or has the wrong size; the artifact is damaged")
    return manifest


def verify_checksums(path: str | os.PathLike) -> None:
    """Re-hash every file of an artifact against its manifest."""
    path = Path(path)
    for entry in read_manifest(path).get("files", []):
        if sha256_file(path / entry["path"]) != entry["sha256"]:
            raise StorageError(f"{path}: checksum mismatch for {entry['path']}")


def fingerprint(*parts: Any) -> str:
    """A stable SHA-256 over JSON-serialisable parts (configs, file hashes, names)."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()
