"""Where a new local artifact may go: writing one replaces what is at its path, so that path must hold
nothing kfnlp did not write, and none of what the stage reads."""

from __future__ import annotations

import glob
from collections.abc import Mapping
from pathlib import Path

from kfnlp.errors import StorageError
from kfnlp.storage.manifest import LEFTOVER_RE, MANIFEST
from kfnlp.storage.store import Ref


def check_destination(dest: Ref) -> None:
    """A StorageError unless a new artifact may replace what is at the local path ``dest``: nothing,
    an empty directory, a previous kfnlp artifact (it has a manifest) or only kfnlp's own leftovers of
    an interrupted write; never a file, a directory of someone else's files, the current directory or
    a directory holding it."""
    path = Path(dest)
    resolved, cwd = path.resolve(), Path.cwd().resolve()
    if resolved == cwd or resolved in cwd.parents:
        held = "is" if resolved == cwd else "holds"
        raise StorageError(f"{dest}: the output {held} the current directory {cwd}; choose a new directory")
    if path.exists() and not path.is_dir():
        raise StorageError(f"{dest}: the output is an existing file; choose a new directory")
    if path.is_dir() and not (path / MANIFEST).is_file():
        foreign = sorted(item.name for item in path.iterdir() if not LEFTOVER_RE.match(item.name))
        if foreign:
            raise StorageError(
                f"{dest}: the output is a directory that is not a kfnlp artifact (no {MANIFEST}; it holds "
                f"e.g. {foreign[0]!r}); kfnlp replaces only an empty directory or a previous artifact: choose a new directory"
            )


def check_apart(output: Path, inputs: Mapping[str, str]) -> None:
    """A StorageError if the local ``output`` is one of the local paths a stage reads, holds one or
    lies inside one. ``inputs`` maps what names each input (a config key, a flag) to its value;
    values that name no existing path (a Hub id, ``hf:...``) are ignored, a glob stands for the files
    it matches."""
    target = output.resolve()
    for name, value in inputs.items():
        for read in _read_paths(value):
            named = f"{name}={value}" if value == str(read) else f"{name}={value} ({read})"
            if target == read:
                raise StorageError(f"{output}: the output is the stage's input {named}; choose a new directory")
            if target in read.parents:
                raise StorageError(f"{output}: the output holds the stage's input {named}; choose a new directory")
            if read in target.parents:
                raise StorageError(
                    f"{output}: the output lies inside the stage's input {named}; choose a directory outside it"
                )


def _read_paths(value: str) -> list[Path]:
    """The existing local paths (resolved) an input value names: itself, or the files a glob matches."""
    path = Path(value).expanduser()
    if path.exists():
        return [path.resolve()]
    if any(ch in value for ch in "*?["):
        return [Path(p).resolve() for p in glob.glob(str(path), recursive=True)]
    return []
