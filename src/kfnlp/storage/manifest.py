"""Manifest primitives: what makes a directory a complete artifact, whatever store holds it.

A stage writes into a hidden staging directory next to the destination; the manifest (file
list, sizes, SHA-256, plus stage-specific facts such as a content fingerprint) is written last
and the directory is then renamed into place. A crash mid-write leaves only the hidden staging
directory, never something that looks complete, and a previous complete version is replaced only
by a complete new one.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kfnlp.errors import StorageError

MANIFEST = "kfnlp-manifest.json"
FORMAT_VERSION = 1
UNSAFE_NAME = "no leading '/', backslash, or empty, '.' or '..' segment"  # what a relative name may not have


def is_safe_name(name: object) -> bool:
    """True for a relative POSIX name that stays where it is joined: not empty, no leading ``/``, no
    backslash or NUL, no empty, ``.`` or ``..`` segment. Names read from outside (manifest entries,
    S3 object keys under a prefix) must pass before they become local paths."""
    return (
        isinstance(name, str)
        and "\\" not in name
        and "\x00" not in name
        and all(part not in ("", ".", "..") for part in name.split("/"))
    )


def contained(root: Path, name: object) -> Path | None:
    """``root / name`` if ``name`` :func:`is_safe_name` and the resolved path lies under ``root``
    (no symlink leads out of it); None otherwise."""
    if not is_safe_name(name):
        return None
    path = root / name
    return path if path.resolve().is_relative_to(root.resolve()) else None


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

    def manifest(self, digests: dict[str, str] | None = None) -> dict[str, Any]:
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


# the hidden names staging_dir and install use next to a destination: what a crash there leaves behind
LEFTOVER_RE = re.compile(r"^\.[^/]*\.(tmp|old)-[0-9a-f]{8}$")


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


def read_manifest(path: str | os.PathLike, kind: str | None = None) -> dict[str, Any]:
    """Return the manifest of a complete local artifact, or raise a clear StorageError."""
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
    check_kind(manifest, kind, path)
    for entry in manifest.get("files", []):
        file = contained(path, entry.get("path")) if isinstance(entry, dict) else None
        if file is None:
            raise StorageError(f"{manifest_path}: the manifest lists an invalid file entry {entry!r} ({UNSAFE_NAME})")
        if not file.is_file() or file.stat().st_size != entry["size"]:
            raise StorageError(f"{path}: {entry['path']} is missing or has the wrong size; the artifact is damaged")
    return manifest


def check_kind(manifest: dict[str, Any], kind: str | None, where: object) -> None:
    """A StorageError unless the artifact is of ``kind`` (None: any kind)."""
    if kind is not None and manifest.get("kind") != kind:
        raise StorageError(f"{where}: expected a {kind} artifact, found {manifest.get('kind')!r}")


def verify_checksums(path: str | os.PathLike) -> None:
    """Re-hash every file of a local artifact against its manifest."""
    path = Path(path)
    for entry in read_manifest(path).get("files", []):
        if sha256_file(path / entry["path"]) != entry["sha256"]:
            raise StorageError(f"{path}: checksum mismatch for {entry['path']}")


def fingerprint(*parts: Any) -> str:
    """A stable SHA-256 over JSON-serialisable parts (configs, file hashes, names)."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()
