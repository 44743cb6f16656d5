"""Where labelled texts for sequence classification come from: CSV/TSV/JSON Lines/Parquet
files (a file, a directory or a glob), a Hub dataset (``hf:DATASET``) or the embedded IMDB
sentiment reviews (``builtin:imdb``, whose Rotten Tomatoes rows make a cross-domain split).

Each :class:`Example` remembers where it was read (``file:line``, ``hf:ID/split row N``) so
that a bad label or text names its place. A label is read as the source gives it: a string
(a name) or an integer (a class id, named by the source's ClassLabel names when it has them);
:func:`name_labels` turns them all into names of one label list.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kfnlp.assets import BUILTIN_PREFIX, builtin_data_file
from kfnlp.data.corpus import CSV_FIELD_LIMIT, decode_file, extract_text, json_records, local_files
from kfnlp.data.ner_corpus import HUB_SPLITS
from kfnlp.errors import InputError, KfnlpError
from kfnlp.storage import check_input, local_input, sha256_file

SUFFIXES = frozenset({".csv", ".tsv", ".jsonl", ".json", ".parquet"})
# builtin datasets with class labels -> the names of label ids 0, 1, ... (IMDB's ClassLabel names)
BUILTIN_LABELS = {"imdb": ["neg", "pos"]}
# the rows of builtin:imdb's package CSV by its `source` column: IMDB is the data, Rotten Tomatoes the cross-domain split
BUILTIN_SPLITS = {"imdb": "train", "rotten_tomatoes": "cross_domain"}
CROSS_DOMAIN = "cross_domain"
_INTEGER = re.compile(r"-?[0-9]+")
_MISSING = object()


@dataclass
class Example:
    text: str
    label: str | int  # a label name, or a class id the source did not name
    where: str  # file:line or hf:ID/split row N
    text_pair: str | None = None


@dataclass(frozen=True)
class Columns:
    """Which fields of a record hold the text, its optional pair and the label (dotted paths)."""

    text: str = "text"
    label: str = "label"
    text_pair: str | None = None

    def paths(self) -> list[tuple[str, str]]:
        """(what, dotted path) of every configured column."""
        paths = [("text", self.text), ("label", self.label), ("text pair", self.text_pair)]
        return [(what, path) for what, path in paths if path]


@dataclass
class ClsSource:
    splits: dict[str, list[Example]]  # "train" always; others when the source has them
    labels: list[str] | None = None  # the source's own label names (ClassLabel, builtin)
    origin: list[dict] = field(default_factory=list)


def _follow(record: Any, path: str) -> Any:
    """The value at a dotted path through dicts, or ``_MISSING``."""
    value = record
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return _MISSING
        value = value[part]
    return value


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _missing(where: str, what: str, path: str, available: list[str]) -> InputError:
    key = {"text": "text_column", "label": "label_column", "text pair": "text_pair_column"}[what]
    names = ", ".join(repr(str(a)) for a in available) or "(none)"
    return InputError(f"{where}: no {what} column {path!r}; available columns: {names} (set preprocess_cls.{key})")


def _text(record: dict, path: str, what: str, where: str) -> str:
    value = _follow(record, path)
    if value is _MISSING or (isinstance(value, list) and all(isinstance(v, str) for v in value)):
        value = extract_text(record, path)  # a path through lists, or a list of strings: joined, as preprocess does
        if value is None:
            raise _missing(where, what, path, list(record))
    if not isinstance(value, str):
        raise InputError(f"{where}: {what} column {path!r} is not text: {type(value).__name__} {_shown(value)}")
    if not value.strip():
        raise InputError(f"{where}: {what} column {path!r} is empty")
    return value


def _label(record: dict, path: str, where: str, names: list[str] | None) -> str | int:
    value = _follow(record, path)
    if value is _MISSING:
        raise _missing(where, "label", path, list(record))
    if isinstance(value, bool):
        value = str(value).lower()
    elif isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str):
        value = value.strip()
        if not value:
            raise InputError(f"{where}: label column {path!r} is empty")
        return value
    if not isinstance(value, int):
        raise InputError(
            f"{where}: label column {path!r} holds {type(value).__name__} {_shown(value)}; expected a label name or a class id"
        )
    if names is None:
        return value
    if not 0 <= value < len(names):
        raise InputError(f"{where}: label {value} is outside the {len(names)} class ids of {names}")
    return names[value]


def example(record: dict, columns: Columns, where: str, names: list[str] | None = None) -> Example:
    """One labelled example from a record; ``names`` name integer labels (ClassLabel names)."""
    pair = _text(record, columns.text_pair, "text pair", where) if columns.text_pair else None
    return Example(_text(record, columns.text, "text", where), _label(record, columns.label, where, names), where, pair)


def _delimited_records(path: Path, delimiter: str, columns: Columns) -> Iterator[tuple[str, dict]]:
    kind = "TSV" if delimiter == "\t" else "CSV"
    if csv.field_size_limit() < CSV_FIELD_LIMIT:
        csv.field_size_limit(CSV_FIELD_LIMIT)
    reader = csv.DictReader(io.StringIO(decode_file(path), newline=""), delimiter=delimiter, strict=True)
    try:
        header = reader.fieldnames or []
    except csv.Error as exc:
        raise InputError(f"{path}:1: malformed {kind} header ({exc})") from None
    for what, column in columns.paths():
        if column.split(".")[0] not in header:
            raise _missing(f"{path}:1", what, column, header)
    while True:
        line = reader.line_num + 1  # where the next record starts
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            hint = "; a quoted field is never closed" if "end of data" in str(exc) else ""
            raise InputError(f"{path}:{line}: malformed {kind} record ({exc}{hint})") from None
        if None in row or None in row.values():
            fields = len(row.get(None, ())) + sum(v is not None for k, v in row.items() if k is not None)
            raise InputError(f"{path}:{line}: {fields} fields, but the header has {len(header)} ({', '.join(header)})")
        yield f"{path}:{line}", row


def _json_records(path: Path) -> Iterator[tuple[str, Any]]:
    text = decode_file(path)
    if path.suffix.lower() == ".json":  # a whole JSON document (array of objects) or JSON Lines
        try:
            whole = json.loads(text)
        except json.JSONDecodeError as exc:
            if text.lstrip().startswith("["):
                raise InputError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg} at column {exc.colno})") from None
        else:
            yield from (
                (f"{path}: item {i}", item) for i, item in enumerate(whole if isinstance(whole, list) else [whole])
            )
            return
    yield from ((f"{path}:{line}", record) for line, record in json_records(path, text))


def _parquet_records(path: Path) -> Iterator[tuple[str, Any]]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several unrelated types
        raise InputError(f"{path}: not a readable Parquet file ({' '.join(str(exc).split())})") from None
    yield from ((f"{path}: row {i}", row) for i, row in enumerate(table.to_pylist()))


def read_file(path: Path, columns: Columns, names: list[str] | None = None) -> list[Example]:
    """The examples of one CSV, TSV, JSON Lines (or JSON array) or Parquet file."""
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        records = _delimited_records(path, "\t" if suffix == ".tsv" else ",", columns)
    elif suffix in (".jsonl", ".json"):
        records = _json_records(path)
    elif suffix == ".parquet":
        records = _parquet_records(path)
    else:
        raise InputError(f"{path}: unsupported file type {suffix or '(none)'}; expected {', '.join(sorted(SUFFIXES))}")
    examples = []
    for where, record in records:
        if not isinstance(record, dict):
            raise InputError(f"{where}: expected a JSON object, got {type(record).__name__}")
        examples.append(example(record, columns, where, names))
    if not examples:
        raise InputError(f"{path}: no examples")
    return examples


def read_files(source: str, columns: Columns, names: list[str] | None = None) -> tuple[list[Example], list[dict]]:
    """The examples of a local (or ``s3://``) file, directory or glob, and what was read (for fingerprints)."""
    files = local_files(local_input(source), SUFFIXES)
    examples = [e for file in files for e in read_file(file, columns, names)]
    return examples, [{"file": file.name, "sha256": sha256_file(file)} for file in files]


def read_builtin(name: str, columns: Columns) -> ClsSource:
    """``builtin:imdb``: the package CSV's IMDB rows as train, its Rotten Tomatoes rows as cross_domain."""
    if name not in BUILTIN_LABELS:
        raise InputError(f"{BUILTIN_PREFIX}{name} is not a labelled text dataset; available: builtin:imdb")
    if columns != Columns():
        raise InputError(
            f"{BUILTIN_PREFIX}{name} has a text and a label column only: leave preprocess_cls.text_column, "
            "label_column and text_pair_column at their defaults (they name the columns of files and hf: datasets)"
        )
    path = builtin_data_file(name)
    names = BUILTIN_LABELS[name]
    splits: dict[str, list[Example]] = {}
    with open(path, encoding="utf-8", newline="") as handle:
        for i, row in enumerate(csv.DictReader(handle)):
            split = BUILTIN_SPLITS.get(row["source"])
            if split is not None:
                record = {"text": row["text"], "label": int(row["label"])}
                splits.setdefault(split, []).append(example(record, columns, f"{BUILTIN_PREFIX}{name} row {i}", names))
    return ClsSource(splits, list(names), [{"builtin": name, "sha256": sha256_file(path)}])


def read_hub(dataset_id: str, config: str | None, columns: Columns) -> ClsSource:
    """The train/validation/test splits of a Hub dataset; class ids are named by the ClassLabel feature.
    A split whose labels are all -1 (GLUE's hidden test labels) is left out."""
    import datasets

    try:
        data = datasets.load_dataset(dataset_id, config)
    except Exception as exc:  # network, auth and missing-dataset errors differ by version
        raise InputError(f"hf:{dataset_id}: cannot load from the Hub ({' '.join(str(exc).split())})") from None
    splits: dict[str, list[Example]] = {}
    fingerprints: dict[str, str] = {}
    labels: list[str] | None = None
    label_top = columns.label.split(".")[0]
    for name, aliases in HUB_SPLITS.items():
        alias = next((a for a in aliases if a in data), None)
        if alias is None:
            continue
        split = data[alias]
        tops = [path.split(".")[0] for _, path in columns.paths()]
        for what, path in columns.paths():
            if path.split(".")[0] not in split.column_names:
                raise _missing(f"hf:{dataset_id}/{alias}", what, path, split.column_names)
        feature = split.features[label_top]
        names = list(feature.names) if isinstance(feature, datasets.ClassLabel) else None
        labels = names or labels
        if names and len(split) and all(v == -1 for v in split[label_top]):
            continue
        rows = split.select_columns(list(dict.fromkeys(tops)))
        fingerprints[alias] = split._fingerprint
        splits[name] = [
            example(record, columns, f"hf:{dataset_id}/{alias} row {i}", names) for i, record in enumerate(rows)
        ]
    if "train" not in splits:
        raise InputError(f"hf:{dataset_id}: no labelled train split (found {', '.join(data)})")
    return ClsSource(splits, labels, [{"hub": dataset_id, "config": config, "fingerprints": fingerprints}])


def load_cls_source(
    source: str,
    columns: Columns,
    validation_source: str | None = None,
    test_source: str | None = None,
    hf_config: str | None = None,
) -> ClsSource:
    """The labelled examples of ``source`` by split, plus those of the extra validation and test files."""
    if source.startswith("hf:"):
        result = read_hub(source[3:], hf_config, columns)
    elif source.startswith(BUILTIN_PREFIX):
        result = read_builtin(source[len(BUILTIN_PREFIX) :], columns)
    else:
        if not source.strip():
            raise InputError("preprocess_cls.source: empty source")
        train, origin = read_files(source, columns)
        result = ClsSource({"train": train}, None, origin)
    for name, extra in (("validation", validation_source), ("test", test_source)):
        if extra:
            if extra.startswith(("hf:", BUILTIN_PREFIX)):
                raise InputError(f"preprocess_cls.{name}_source: {extra}: expected a file, directory or glob")
            result.splits[name], origin = read_files(extra, columns, result.labels)
            result.origin += [{**o, "split": name} for o in origin]
    return result


def _sorted_names(names: set[str]) -> list[str]:
    """Label names sorted, numerically when they are all integers ("2" before "10")."""
    if all(_INTEGER.fullmatch(n) for n in names):
        return sorted(names, key=int)
    return sorted(names)


def check_label_list(labels: list[str], key: str) -> None:
    if len(labels) < 2:
        raise InputError(f"{key}: {labels}: a classifier needs at least two labels")
    if len(set(labels)) != len(labels):
        raise InputError(f"{key}: duplicate labels in {labels}")
    bad = next((n for n in labels if not isinstance(n, str) or not n.strip()), None)
    if bad is not None:
        raise InputError(f"{key}: label {bad!r} is not a name; labels are non-empty strings")


def _configured_name(label: str | int, labels: list[str], known: set[str]) -> str | None:
    if isinstance(label, str) and label in known:
        return label
    if isinstance(label, int) or _INTEGER.fullmatch(label):
        return labels[int(label)] if 0 <= int(label) < len(labels) else None
    return None


def name_labels(splits: dict[str, list[Example]], configured: list[str] | None, source: str) -> list[str]:
    """Name every example's label (in place) and return the label list in class-id order.

    With ``configured`` names a label must be one of them, or a class id into them (an
    integer, or an integer string that is not itself a name: CSV has no integers). Without,
    the names are the labels found, sorted; a class id without a name is named by its number."""
    examples = [e for split in splits.values() for e in split]
    if not configured:
        for e in examples:
            e.label = str(e.label)
        labels = _sorted_names({e.label for e in examples})
        check_label_list(labels, f"{source}: the labels found")
        return labels
    check_label_list(configured, "preprocess_cls.labels")
    known = set(configured)
    for e in examples:
        name = _configured_name(e.label, configured, known)
        if name is None:
            raise InputError(f"{e.where}: label {e.label!r} is not in the label set {configured}")
        e.label = name
    return list(configured)


def check_cls_source(source: str, key: str) -> None:
    """Fast check, without reading it, that a classification source can be read."""
    if not source or not source.strip():
        raise InputError(
            f"{key}: empty source; expected a CSV/TSV/JSONL/Parquet file, directory, glob, hf:DATASET or builtin:imdb"
        )
    if source.startswith("hf:"):
        if not source[3:].strip():
            raise InputError(f"{key}: {source!r}: expected hf:DATASET_ID")
        return
    if source.startswith(BUILTIN_PREFIX):
        name = source[len(BUILTIN_PREFIX) :]
        if name not in BUILTIN_LABELS:
            raise InputError(f"{key}: {source} is not a labelled text dataset; available: builtin:imdb")
        try:
            builtin_data_file(name)
        except KfnlpError as exc:
            raise InputError(f"{key}: {exc}") from None
        return
    try:
        check_input(source, lambda path: local_files(path, SUFFIXES))
    except KfnlpError as exc:
        raise type(exc)(f"{key}: {exc}") from None
