"""An artifact opened for reading, the base of each kind's reader."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from kfnlp.artifacts.vocabulary import check_same_vocabulary
from kfnlp.storage import open_artifact

T = TypeVar("T", bound="Opened")


@dataclass(frozen=True)
class Opened:
    """``uri`` as the caller named it (errors quote it), its local directory and its manifest."""

    uri: str
    path: Path
    manifest: dict[str, Any]

    @classmethod
    def open(cls: type[T], uri: str, kind: str) -> T:
        path, manifest = open_artifact(uri, kind=kind)
        return cls(str(uri), path, manifest)

    @property
    def fingerprint(self) -> str:
        return self.manifest["fingerprint"]

    def check_vocabulary(self, tokenizer) -> None:
        """Refuse a ``tokenizer`` whose vocabulary is not the one this artifact's token ids come from."""
        check_same_vocabulary(tokenizer, self.manifest, self.uri)
