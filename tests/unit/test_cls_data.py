"""Labelled texts for sequence classification: the file formats, dotted paths, text pairs,
label naming, the Hub and builtin readers, and one clear line for each kind of bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kfnlp.data.cls_corpus import (
    Columns,
    check_cls_source,
    load_cls_source,
    name_labels,
    read_file,
    read_files,
)
from kfnlp.errors import InputError

ROWS = [("a fine film", "pos"), ("a dull film", "neg"), ("great fun", "pos")]


def _csv(path: Path, rows=ROWS, header="text,label", delimiter=",") -> Path:
    path.write_text(header + "\n" + "".join(f"{t}{delimiter}{label}\n" for t, label in rows), encoding="utf-8")
    return path


def _jsonl(path: Path, records: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def _texts_labels(examples) -> list[tuple[str, object]]:
    return [(e.text, e.label) for e in examples]


# ---- formats -----------------------------------------------------------------------


def test_csv_tsv_jsonl_json_and_parquet_read_alike(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    records = [{"text": t, "label": label} for t, label in ROWS]
    files = [
        _csv(tmp_path / "a.csv"),
        _csv(tmp_path / "a.tsv", header="text\tlabel", delimiter="\t"),
        _jsonl(tmp_path / "a.jsonl", records),
        tmp_path / "a.json",
        tmp_path / "a.parquet",
    ]
    files[3].write_text(json.dumps(records), encoding="utf-8")
    pq.write_table(pa.Table.from_pylist(records), files[4])
    for file in files:
        assert _texts_labels(read_file(file, Columns())) == ROWS, file.name


def test_each_example_remembers_where_it_was_read(tmp_path):
    csv_file = tmp_path / "quoted.csv"
    csv_file.write_text('text,label\n"two\nlines",pos\nnext,neg\n', encoding="utf-8")
    assert [e.where for e in read_file(csv_file, Columns())] == [f"{csv_file}:2", f"{csv_file}:4"]
    jsonl = tmp_path / "blank.jsonl"
    jsonl.write_text('{"text": "a", "label": 1}\n\n{"text": "b", "label": 0}\n', encoding="utf-8")
    assert [e.where for e in read_file(jsonl, Columns())] == [f"{jsonl}:1", f"{jsonl}:3"]


def test_dotted_paths_and_lists_of_strings(tmp_path):
    path = _jsonl(
        tmp_path / "nested.jsonl",
        [
            {"review": {"body": "good", "meta": {"stars": 5}}, "title": ["Very", "good"]},
            {"review": {"body": "bad", "meta": {"stars": 1}}, "title": ["Not", "good"]},
        ],
    )
    examples = read_file(path, Columns(text="review.body", label="review.meta.stars", text_pair="title"))
    assert [(e.text, e.text_pair, e.label) for e in examples] == [("good", "Very good", 5), ("bad", "Not good", 1)]


def test_directory_and_glob_read_every_labelled_file_but_not_text_files(tmp_path):
    _csv(tmp_path / "part-1.csv", ROWS[:1])
    _csv(tmp_path / "part-2.csv", ROWS[1:])
    (tmp_path / "notes.txt").write_text("not labelled\n", encoding="utf-8")
    examples, origin = read_files(str(tmp_path), Columns())
    assert _texts_labels(examples) == ROWS
    assert [o["file"] for o in origin] == ["part-1.csv", "part-2.csv"]
    assert _texts_labels(read_files(str(tmp_path / "part-*.csv"), Columns())[0]) == ROWS


def test_builtin_imdb_is_the_imdb_train_set_with_a_rotten_tomatoes_cross_domain_split():
    source = load_cls_source("builtin:imdb", Columns())
    assert source.labels == ["neg", "pos"]
    assert {name: len(examples) for name, examples in source.splits.items()} == {
        "train": 25_000,
        "cross_domain": 8_530,
    }
    assert {e.label for e in source.splits["cross_domain"]} == {"neg", "pos"}
    assert sum(e.label == "pos" for e in source.splits["train"]) == 12_500
    with pytest.raises(InputError, match="builtin:imdb has a text and a label column only"):
        load_cls_source("builtin:imdb", Columns(text="review"))


def test_hub_dataset_keeps_its_splits_and_classlabel_names(tmp_path, monkeypatch):
    """`hf:` goes through datasets.load_dataset; a local Parquet directory stands in for a Hub repo."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")
    names = ["negative", "neutral", "positive"]
    features = datasets.Features({"sentence": datasets.Value("string"), "label": datasets.ClassLabel(names=names)})
    repo = tmp_path / "repo" / "data"
    repo.mkdir(parents=True)
    splits = {"train": [0, 1, 2, 2], "dev": [2, 0, 1], "test": [-1, -1]}  # GLUE-style hidden test labels
    for split, labels in splits.items():
        rows = {"sentence": [f"{split} {i}" for i in range(len(labels))], "label": labels}
        datasets.Dataset.from_dict(rows, features=features).to_parquet(str(repo / f"{split}-00000-of-00001.parquet"))
    source = load_cls_source(f"hf:{repo.parent}", Columns(text="sentence"))
    assert source.labels == names
    assert sorted(source.splits) == ["train", "validation"]  # dev is validation; the unlabelled test is left out
    assert _texts_labels(source.splits["validation"]) == [
        ("dev 0", "positive"),
        ("dev 1", "negative"),
        ("dev 2", "neutral"),
    ]
    assert source.splits["train"][1].where == f"hf:{repo.parent}/train row 1"
    with pytest.raises(InputError, match=r"/train: no label column 'stars'; available columns: 'sentence', 'label'"):
        load_cls_source(f"hf:{repo.parent}", Columns(text="sentence", label="stars"))


# ---- labels ------------------------------------------------------------------------


def _named(rows, configured=None, source="src"):
    from kfnlp.data.cls_corpus import Example

    splits = {"train": [Example(f"t{i}", label, f"f.csv:{i + 2}") for i, label in enumerate(rows)]}
    labels = name_labels(splits, configured, source)
    return labels, [e.label for e in splits["train"]]


def test_labels_default_to_the_names_found_sorted_numerically_when_integers():
    assert _named(["pos", "neg", "pos"]) == (["neg", "pos"], ["pos", "neg", "pos"])
    assert _named(["10", "2", "1"]) == (["1", "2", "10"], ["10", "2", "1"])
    assert _named([1, 0, 1]) == (["0", "1"], ["1", "0", "1"])  # a JSON id without names: its number


def test_configured_labels_name_class_ids_and_fix_the_order():
    assert _named([1, 0], ["neg", "pos"]) == (["neg", "pos"], ["pos", "neg"])
    assert _named(["1", "neg"], ["neg", "pos"]) == (["neg", "pos"], ["pos", "neg"])  # CSV has no integers
    assert _named(["1", "5"], ["1", "5"]) == (["1", "5"], ["1", "5"])  # a name wins over an id


@pytest.mark.parametrize(
    ("rows", "configured", "message"),
    [
        (["pos", "meh"], ["neg", "pos"], "f.csv:3: label 'meh' is not in the label set ['neg', 'pos']"),
        ([0, 2], ["neg", "pos"], "f.csv:3: label 2 is not in the label set ['neg', 'pos']"),
        (["pos", "pos"], None, "src: the labels found: ['pos']: a classifier needs at least two labels"),
        (["a"], ["a", "a"], "preprocess_cls.labels: duplicate labels in ['a', 'a']"),
    ],
)
def test_bad_labels_name_the_place(rows, configured, message):
    with pytest.raises(InputError) as caught:
        _named(rows, configured)
    assert str(caught.value) == message


# ---- bad input: one line naming file, line and field ------------------------------------------


@pytest.mark.parametrize(
    ("content", "columns", "message"),
    [
        ("text,stars\na,1\n", Columns(), ":1: no label column 'label'; available columns: 'text', 'stars'"),
        ("body,label\na,1\n", Columns(), ":1: no text column 'text'; available columns: 'body', 'label'"),
        ("text,label\na,1\n", Columns(text_pair="hypothesis"), ":1: no text pair column 'hypothesis'"),
        ("text,label\na,1\n,0\n", Columns(), ":3: text column 'text' is empty"),
        ("text,label\na,1\nb,\n", Columns(), ":3: label column 'label' is empty"),
        ("text,label\na,1\nb\n", Columns(), ":3: 1 fields, but the header has 2 (text, label)"),
        ("text,label\na,1\nb,0,extra\n", Columns(), ":3: 3 fields, but the header has 2 (text, label)"),
        ('text,label\n"open,1\n', Columns(), ":2: malformed CSV record"),
    ],
)
def test_bad_csv(tmp_path, content, columns, message):
    path = tmp_path / "data.csv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(InputError) as caught:
        read_file(path, columns)
    assert str(caught.value).startswith(f"{path}{message}"), caught.value
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"text": "b"}, ":2: no label column 'label'; available columns: 'text' (set preprocess_cls.label_column)"),
        ({"label": 1}, ":2: no text column 'text'; available columns: 'label' (set preprocess_cls.text_column)"),
        ({"text": 42, "label": 1}, ":2: text column 'text' is not text: int 42"),
        ({"text": None, "label": 1}, ":2: text column 'text' is not text: NoneType None"),
        ({"text": "  ", "label": 1}, ":2: text column 'text' is empty"),
        (
            {"text": "b", "label": None},
            ":2: label column 'label' holds NoneType None; expected a label name or a class id",
        ),
        ({"text": "b", "label": [1]}, ":2: label column 'label' holds list [1]"),
        ({"text": "b", "label": 1.5}, ":2: label column 'label' holds float 1.5"),
        ([1, 2], ":2: expected a JSON object, got list"),
    ],
)
def test_bad_json_lines(tmp_path, record, message):
    path = _jsonl(tmp_path / "data.jsonl", [{"text": "a", "label": 0}, record])
    with pytest.raises(InputError) as caught:
        read_file(path, Columns())
    assert str(caught.value).startswith(f"{path}{message}"), caught.value


def test_unreadable_files(tmp_path):
    latin = tmp_path / "latin.csv"
    latin.write_bytes("text,label\ncaf\xe9,pos\n".encode("latin-1"))
    with pytest.raises(InputError, match=rf"^{latin}:2: not valid UTF-8"):
        read_file(latin, Columns())
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"not parquet")
    with pytest.raises(InputError, match=rf"^{broken}: not a readable Parquet file"):
        read_file(broken, Columns())
    header_only = _csv(tmp_path / "empty.csv", [])
    with pytest.raises(InputError, match=rf"^{header_only}: no examples$"):
        read_file(header_only, Columns())


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("", "preprocess_cls.source: empty source"),
        ("hf:", "preprocess_cls.source: 'hf:': expected hf:DATASET_ID"),
        ("builtin:wnut16", "preprocess_cls.source: builtin:wnut16 is not a labelled text dataset"),
        ("{tmp}/missing.csv", "preprocess_cls.source: {tmp}/missing.csv: no such file or directory"),
        ("{tmp}/notes.txt", "preprocess_cls.source: {tmp}/notes.txt: unsupported file type .txt"),
        ("{tmp}/empty.csv", "preprocess_cls.source: {tmp}/empty.csv: file is empty"),
    ],
)
def test_check_cls_source_fails_fast(tmp_path, source, message):
    (tmp_path / "notes.txt").write_text("x\n", encoding="utf-8")
    (tmp_path / "empty.csv").write_text("", encoding="utf-8")
    with pytest.raises(InputError) as caught:
        check_cls_source(source.format(tmp=tmp_path), "preprocess_cls.source")
    assert str(caught.value).startswith(message.format(tmp=tmp_path)), caught.value


def test_check_cls_source_accepts_what_it_can_read(tmp_path):
    for source in ("builtin:imdb", "hf:stanfordnlp/imdb", str(_csv(tmp_path / "a.csv")), str(tmp_path)):
        check_cls_source(source, "preprocess_cls.source")
