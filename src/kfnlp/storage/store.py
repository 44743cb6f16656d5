"""The interface every artifact store implements; :func:`kfnlp.storage.store_for` picks one per URI.

Callers hand a store the reference they were given (a local path or a URI) and never look at
its scheme: what differs between a local directory and S3 is the store's business.
"""

from __future__ import annotations

import contextlib
import os
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kfnlp.storage.manifest import ArtifactWriter

Ref = str | os.PathLike


class ArtifactStore(ABC):
    """Where artifacts (directories complete only with their manifest) and plain input objects live."""

    @abstractmethod
    def local_path(self, ref: Ref) -> Path | None:
        """The local path ``ref`` names, or None for a remote store (read through a local copy)."""

    @abstractmethod
    def write_artifact(self, ref: Ref, kind: str) -> contextlib.AbstractContextManager[ArtifactWriter]:
        """Write an artifact: the stage fills the yielded ``.path`` (always a local directory); the
        artifact at ``ref`` becomes complete, with its manifest, only when the block succeeds."""

    @abstractmethod
    def open_artifact(self, ref: Ref, kind: str | None = None) -> tuple[Path, dict[str, Any]]:
        """A complete artifact as a local directory, with its manifest."""

    @abstractmethod
    def read_manifest(self, ref: Ref, kind: str | None = None) -> dict[str, Any]:
        """The manifest of a complete artifact, without downloading its files."""

    @abstractmethod
    def exists(self, ref: Ref, kind: str | None = None) -> bool:
        """True if ``ref`` holds a complete artifact (of ``kind``, when given)."""

    @abstractmethod
    def fetch(self, ref: Ref, dest: Path, kind: str | None = None) -> dict[str, Any]:
        """Make the complete artifact at ``ref`` readable at ``dest`` and return its manifest: a local
        one is checked in place (``dest`` is its :meth:`local_path`), a remote one downloaded and verified."""

    @abstractmethod
    def delete(self, ref: Ref) -> None:
        """Delete the artifact at ``ref``: it stops counting as complete before any of its files goes."""

    @abstractmethod
    def children(self, ref: Ref) -> list[str]:
        """Names of the "directories" directly under ``ref`` (e.g. the checkpoints of a run)."""

    @abstractmethod
    def remove_dir(self, ref: Ref) -> None:
        """Remove what is left under ``ref`` once its artifacts are deleted."""

    @abstractmethod
    def fetch_input(self, source: str) -> str:
        """An input file or directory (a corpus, a CoNLL file) as a local path."""

    @abstractmethod
    def check_input(self, source: str, check_local: Callable[[str], object]) -> None:
        """Cheap check that an input can be read, without reading it: a local one by ``check_local``
        (the reader's own rules), a remote one by listing its objects."""
