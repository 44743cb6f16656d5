r"""CoNLL-style token files: one token per line, the token first and its tag last.

Tolerated, by design: tab or space separators (extra middle columns such as POS tags
are ignored), ``-DOCSTART-`` lines, blank or whitespace-only lines between sentences
(WNUT-16 separates sentences with a line holding only a tab), CRLF line ends and a
UTF-8 byte-order mark. Only tabs and spaces separate columns and only ``\n``, ``\r\n``
or ``\r`` end a line, so a token keeps any other character it holds (U+2028, a
no-break space). Everything else is an :class:`InputError` naming file and line.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from kfnlp.errors import InputError


@dataclass
class Sentence:
    tokens: list[str]
    tags: list[str]
    origin: str  # "file:line" of the first token, for error messages

    def where(self, index: int) -> str:
        """Where token ``index`` (0-based) came from: its own line in a file."""
        path, _, line = self.origin.rpartition(":")
        if path and line.isdigit():
            return f"{path}:{int(line) + index}"
        return f"{self.origin} (token {index + 1})"


def _decode(raw: bytes, path: Path, encoding: str) -> str:
    codec = "utf-8-sig" if encoding.lower().replace("_", "-") in ("utf-8", "utf8") else encoding
    try:
        return raw.decode(codec)
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise InputError(
            f"{path}:{line}: byte 0x{raw[exc.start]:02x} at column {column} is not valid {encoding}; "
            "convert the file to UTF-8 or set the source encoding (e.g. encoding: latin-1)"
        ) from None
    except LookupError:
        raise InputError(f"{path}: unknown encoding {encoding!r}") from None


_FIELD_SEPARATOR = re.compile(r"[ \t]+")


def _lines(text: str) -> list[str]:
    r"""Lines as a text-mode ``open`` gives them (``\n``, ``\r\n`` or ``\r``), not
    ``str.splitlines``, which also breaks on U+2028, U+0085 and other characters a
    token (a tweet) may hold, and would shift every line number after them."""
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def read_conll(path: str | Path, encoding: str = "utf-8") -> list[Sentence]:
    """Sentences of a CoNLL file; raises InputError for a line without a tag column
    or a file without sentences."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from None
    text = _decode(raw, path, encoding)
    sentences: list[Sentence] = []
    tokens: list[str] = []
    tags: list[str] = []
    start = 0
    for number, line in enumerate(_lines(text), start=1):
        fields = _FIELD_SEPARATOR.split(line.strip(" \t")) if line.strip() else []
        if not fields or fields[0] == "-DOCSTART-":
            if tokens:
                sentences.append(Sentence(tokens, tags, f"{path}:{start}"))
                tokens, tags = [], []
            continue
        if len(fields) < 2:
            raise InputError(
                f"{path}:{number}: expected a token and a tag separated by a tab or space, got {line.strip()!r}"
            )
        if not tokens:
            start = number
        tokens.append(fields[0])
        tags.append(fields[-1])
    if tokens:
        sentences.append(Sentence(tokens, tags, f"{path}:{start}"))
    if not sentences:
        raise InputError(f"{path}: no sentences (the file is empty or holds only blank lines)")
    return sentences


def write_conll(path: str | Path, rows: Iterable[Iterable[list[str]]]) -> None:
    """Write sentences as tab-separated columns, a blank line after each sentence.

    ``rows`` yields, per sentence, the per-token column lists, e.g.
    ``(tokens, gold, predicted)``.
    """
    with open(path, "w", encoding="utf-8", newline="\n") as handle:
        for columns in rows:
            for fields in zip(*columns, strict=True):
                handle.write("\t".join(fields) + "\n")
            handle.write("\n")
