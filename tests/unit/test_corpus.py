"""Corpus readers: every supported format on tiny files, and every bad input as an
InputError whose message names the file (and the line, where there is one)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kfnlp.data.corpus import check_source, extract_text, load_corpus, local_files
from kfnlp.errors import ConfigError, InputError


def _jsonl(*records) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in records).encode()


def _parquet(path: Path, columns: dict) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table(columns), path)


def _write(tmp_path: Path, name: str, content) -> Path:
    path = tmp_path / name
    if callable(content):
        content(path)
    else:
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


# name, content (bytes/str, or a function writing the file), text_column, expected documents
GOOD = [
    ("csv", "a.csv", "id,text\n1,hello world\n2,second doc\n", "text", ["hello world", "second doc"]),
    (
        "csv-quoted-multiline",
        "a.csv",
        'text\n"line one\nline two, with comma"\nplain\n',
        "text",
        ["line one\nline two, with comma", "plain"],
    ),
    ("csv-crlf", "a.csv", "text\r\nfirst\r\nsecond\r\n", "text", ["first", "second"]),
    ("csv-bom", "a.csv", b"\xef\xbb\xbftext\nwith bom\n", "text", ["with bom"]),
    ("csv-skips-blank-text", "a.csv", "text,n\n,1\n  ,2\nkept,3\n", "text", ["kept"]),
    ("csv-other-column", "a.csv", "body,label\nsome review,1\n", "body", ["some review"]),
    ("tsv", "a.tsv", "label\ttext\n1\thello, world\n0\tbye\n", "text", ["hello, world", "bye"]),
    ("jsonl", "a.jsonl", _jsonl({"text": "one"}, {"text": "two", "x": 1}), "text", ["one", "two"]),
    ("jsonl-blank-lines", "a.jsonl", b'{"text": "one"}\n\n   \n{"text": "two"}\n', "text", ["one", "two"]),
    ("jsonl-bom", "a.jsonl", b'\xef\xbb\xbf{"text": "bom"}\n', "text", ["bom"]),
    ("jsonl-crlf", "a.jsonl", b'{"text": "a"}\r\n{"text": "b"}\r\n', "text", ["a", "b"]),
    ("jsonl-u2028-inside-string", "a.jsonl", '{"text": "a\u2028b"}\n{"text": "c"}\n', "text", ["a\u2028b", "c"]),
    ("json-array", "a.json", '[\n  {"text": "one"},\n  {"text": "two"}\n]\n', "text", ["one", "two"]),
    ("json-lines-in-.json", "a.json", _jsonl({"text": "one"}, {"text": "two"}), "text", ["one", "two"]),
    ("txt", "a.txt", "first line\n\n  \nsecond line\n", "text", ["first line", "second line"]),
    ("txt-bom", "a.txt", b"\xef\xbb\xbfbom line\n", "text", ["bom line"]),
    (
        "parquet",
        "a.parquet",
        lambda p: _parquet(p, {"text": ["p one", "p two"], "n": [1, 2]}),
        "text",
        ["p one", "p two"],
    ),
    (
        "eli5-jsonl-nested-list",
        "eli5.jsonl",
        _jsonl(
            {"title": "q", "answers": {"text": ["first answer", "second answer"], "score": [3, 1]}},
            {"title": "r", "answers": {"text": ["only"]}},
        ),
        "answers.text",
        ["first answer second answer", "only"],
    ),
    (
        "eli5-parquet-nested-list",
        "eli5.parquet",
        lambda p: _parquet(p, {"answers": [{"text": ["a1", "a2"]}, {"text": ["b1"]}]}),
        "answers.text",
        ["a1 a2", "b1"],
    ),
    ("nested-list-of-dicts", "n.jsonl", _jsonl({"comments": [{"body": "x"}, {"body": "y"}]}), "comments.body", ["x y"]),
]


@pytest.mark.parametrize(("name", "content", "column", "expected"), [g[1:] for g in GOOD], ids=[g[0] for g in GOOD])
def test_reads_supported_formats(tmp_path, name, content, column, expected):
    path = _write(tmp_path, name, content)
    corpus = load_corpus(str(path), column)
    assert corpus.documents == expected
    assert corpus.origin[0]["file"] == name and len(corpus.origin[0]["sha256"]) == 64


def test_directory_source_reads_every_supported_file_in_order(tmp_path):
    (tmp_path / "sub").mkdir()
    _write(tmp_path, "b.csv", "text\nfrom b\n")
    _write(tmp_path, "a.jsonl", _jsonl({"text": "from a"}))
    _write(tmp_path, "sub/c.txt", "from c\n")
    _write(tmp_path, "README.md", "# not a corpus file\n")
    corpus = load_corpus(str(tmp_path))
    assert corpus.documents == ["from a", "from b", "from c"]
    assert [o["file"] for o in corpus.origin] == ["a.jsonl", "b.csv", "c.txt"]


def test_glob_source(tmp_path):
    _write(tmp_path, "part-1.csv", "text\none\n")
    _write(tmp_path, "part-2.csv", "text\ntwo\n")
    _write(tmp_path, "other.csv", "text\nnot me\n")
    assert load_corpus(str(tmp_path / "part-*.csv")).documents == ["one", "two"]
    assert [p.name for p in local_files(str(tmp_path / "**" / "*.csv"))] == ["other.csv", "part-1.csv", "part-2.csv"]


def test_builtin_imdb_source():
    corpus = load_corpus("builtin:imdb")
    assert len(corpus.documents) > 1000 and corpus.origin[0]["builtin"] == "imdb"


def test_builtin_rotten_tomatoes_source_is_the_other_rows_of_the_same_file():
    imdb, rt = load_corpus("builtin:imdb"), load_corpus("builtin:rotten-tomatoes")
    assert (len(imdb.documents), len(rt.documents)) == (25_000, 8_530)
    assert not set(imdb.documents) & set(rt.documents)
    assert rt.origin == [{"builtin": "rotten-tomatoes", "sha256": imdb.origin[0]["sha256"]}]
    assert max(len(d) for d in rt.documents) < 400 < max(len(d) for d in imdb.documents)  # sentences vs reviews
    check_source("builtin:rotten-tomatoes")


@pytest.mark.parametrize(
    ("record", "path", "expected"),
    [
        ({"text": "plain"}, "text", "plain"),
        ({"a": {"b": "deep"}}, "a.b", "deep"),
        ({"a": {"b": ["x", "", None, "y"]}}, "a.b", "x y"),
        ({"a": [{"b": "x"}, {"c": "skip"}, {"b": ["y", "z"]}]}, "a.b", "x y z"),
        ({"text": 42}, "text", "42"),
        ({"other": "x"}, "text", None),
        ({"a": "not a mapping"}, "a.b", None),
    ],
)
def test_extract_text(record, path, expected):
    assert extract_text(record, path) == expected


def _fifty_six_good_lines_then_broken() -> bytes:
    good = _jsonl(*({"text": f"document {i}"} for i in range(56)))
    return good + b'{"text": "unterminated\n' + _jsonl({"text": "after"})


# name, file name (None: the source is given as-is), content, text_column, message fragments
BAD = [
    ("missing-file", "nope.csv", None, "text", ["nope.csv", "no such file or directory"]),
    ("empty-file", "empty.csv", b"", "text", ["empty.csv", "file is empty"]),
    ("empty-jsonl", "empty.jsonl", b"", "text", ["empty.jsonl", "file is empty"]),
    ("header-only-csv", "h.csv", "text\n", "text", ["h.csv", "no text found"]),
    ("blank-txt", "blank.txt", "\n  \n\n", "text", ["blank.txt", "no text found"]),
    (
        "csv-missing-column",
        "c.csv",
        "body,label\nhi,1\n",
        "text",
        ["c.csv", "no text column 'text'", "available columns: 'body', 'label'"],
    ),
    ("tsv-missing-column", "c.tsv", "body\tlabel\nhi\t1\n", "text", ["c.tsv", "no text column 'text'", "'body'"]),
    (
        "jsonl-missing-column",
        "c.jsonl",
        _jsonl({"body": "hi"}, {"title": "t"}),
        "text",
        ["c.jsonl", "no text column 'text'", "'body', 'title'"],
    ),
    (
        "jsonl-missing-nested-column",
        "c.jsonl",
        _jsonl({"answers": {"score": [1]}}),
        "answers.text",
        ["c.jsonl", "no text column 'answers.text'", "'answers'"],
    ),
    (
        "parquet-missing-column",
        "c.parquet",
        lambda p: _parquet(p, {"body": ["x"]}),
        "text",
        ["c.parquet", "no text column 'text'", "'body'"],
    ),
    (
        "csv-not-utf8",
        "latin1.csv",
        "text\nfine\ncaf\u00e9 cr\u00e8me\n".encode("latin-1"),
        "text",
        ["latin1.csv:3:", "not valid UTF-8", "0xe9"],
    ),
    (
        "jsonl-not-utf8",
        "latin1.jsonl",
        b'{"text": "ok"}\n{"text": "caf\xe9"}\n',
        "text",
        ["latin1.jsonl:2:", "not valid UTF-8"],
    ),
    ("txt-not-utf8", "latin1.txt", b"ok\n\xff\xfe\n", "text", ["latin1.txt:2:", "not valid UTF-8"]),
    ("utf16-csv", "utf16.csv", "text\nhello\n".encode("utf-16"), "text", ["utf16.csv:1:", "not valid UTF-8"]),
    (
        "broken-jsonl-line-57",
        "broken.jsonl",
        _fifty_six_good_lines_then_broken(),
        "text",
        ["broken.jsonl:57:", "broken JSON line"],
    ),
    (
        "jsonl-line-not-object",
        "list.jsonl",
        b'{"text": "ok"}\n[1, 2]\n',
        "text",
        ["list.jsonl:2:", "expected a JSON object, got list"],
    ),
    (
        "json-array-broken",
        "arr.json",
        b'[\n  {"text": "a"},\n  {"text": }\n]\n',
        "text",
        ["arr.json:3:", "invalid JSON"],
    ),
    ("json-array-of-strings", "arr.json", b'["a", "b"]', "text", ["arr.json: item 0:", "expected a JSON object"]),
    (
        "csv-unclosed-quote",
        "q.csv",
        'text\nfine\n"never closed\nmore\n',
        "text",
        ["q.csv:3:", "malformed CSV record", "never closed"],
    ),
    ("csv-junk-after-quote", "j.csv", 'text,n\n"quoted"junk,1\n', "text", ["j.csv:2:", "malformed CSV record"]),
    ("not-parquet", "fake.parquet", b"this is not parquet", "text", ["fake.parquet", "not a readable Parquet file"]),
    ("unsupported-type", "sheet.xlsx", b"PK\x03\x04", "text", ["sheet.xlsx", "unsupported file type .xlsx", ".csv"]),
]


@pytest.mark.parametrize(("name", "content", "column", "fragments"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input_raises_input_error_naming_the_file(tmp_path, name, content, column, fragments):
    path = tmp_path / name if content is None else _write(tmp_path, name, content)
    with pytest.raises(InputError) as info:
        load_corpus(str(path), column)
    message = str(info.value)
    assert "\n" not in message
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message


def test_bad_file_inside_a_directory_is_named(tmp_path):
    _write(tmp_path, "a.jsonl", _jsonl({"text": "fine"}))
    _write(tmp_path, "b.jsonl", b'{"text": "fine"}\n{oops}\n')
    with pytest.raises(InputError, match=r"b\.jsonl:2: broken JSON line"):
        load_corpus(str(tmp_path))


def test_empty_file_inside_a_directory_is_named(tmp_path):
    _write(tmp_path, "a.csv", "text\nfine\n")
    empty = _write(tmp_path, "zz.csv", b"")
    with pytest.raises(InputError, match="file is empty") as info:
        load_corpus(str(tmp_path))
    assert str(empty) in str(info.value)


@pytest.mark.parametrize(
    ("source", "fragments"),
    [
        ("{tmp}/empty-dir", ["empty-dir", "directory holds no"]),
        ("{tmp}/*.nothing", ["*.nothing", "matches no files"]),
        ("", ["empty source"]),
        ("   ", ["empty source"]),
    ],
    ids=["empty-directory", "glob-without-matches", "empty", "blank"],
)
def test_bad_sources(tmp_path, source, fragments):
    (tmp_path / "empty-dir").mkdir()
    with pytest.raises(InputError) as info:
        load_corpus(source.format(tmp=tmp_path))
    for fragment in fragments:
        assert fragment in str(info.value)


def test_unknown_builtin_dataset_lists_the_known_ones():
    with pytest.raises(ConfigError, match=r"unknown builtin dataset builtin:nope; available: builtin:imdb"):
        load_corpus("builtin:nope")


# check_source: the preflight `kfnlp run` does before starting any stage


def test_check_source_accepts_readable_sources_without_reading_them(tmp_path):
    path = _write(tmp_path, "broken.jsonl", b"{not json\n")  # content is the stage's business
    check_source(str(path))
    check_source(str(tmp_path))
    check_source("builtin:imdb")
    check_source("hf:some/dataset")


@pytest.mark.parametrize(
    ("source", "error", "fragments"),
    [
        ("{tmp}/missing.csv", InputError, ["preprocess.source: ", "missing.csv: no such file or directory"]),
        ("{tmp}/empty.csv", InputError, ["preprocess.source: ", "empty.csv: file is empty"]),
        ("{tmp}/data.xlsx", InputError, ["preprocess.source: ", "unsupported file type .xlsx"]),
        ("{tmp}/*.none", InputError, ["preprocess.source: ", "matches no files"]),
        ("", InputError, ["preprocess.source: empty source"]),
        ("hf:", InputError, ["preprocess.source: 'hf:': expected hf:DATASET_ID"]),
        ("builtin:nope", ConfigError, ["preprocess.source: unknown builtin dataset builtin:nope"]),
    ],
    ids=["missing", "empty", "unsupported", "glob", "blank", "hf-without-id", "unknown-builtin"],
)
def test_check_source_errors_name_the_key(tmp_path, source, error, fragments):
    _write(tmp_path, "empty.csv", b"")
    _write(tmp_path, "data.xlsx", b"x")
    with pytest.raises(error) as info:
        check_source(source.format(tmp=tmp_path))
    for fragment in fragments:
        assert fragment in str(info.value)


def test_csv_field_longer_than_the_csv_module_default_limit(tmp_path):
    """A 150 KB review was refused with "field larger than field limit (131072)"."""
    from kfnlp.data.corpus import load_corpus

    long_text = "word " * 30_000
    path = tmp_path / "long.csv"
    path.write_text(f'text\n"{long_text}"\nshort one\n', encoding="utf-8")
    docs = load_corpus(str(path), "text").documents
    assert [len(d) for d in docs] == [len(long_text), len("short one")]
