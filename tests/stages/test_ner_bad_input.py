"""Bad NER input through the real CLI (``kfnlp stage preprocess-ner``, tokenizer
builtin:minilm): either a documented tolerance, visible in the manifest's counts, or
one clear ``kfnlp: error:`` line naming the file (and line), a non-zero exit, no
traceback and no output that looks complete."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.cli import run_cli

MANIFEST = "kfnlp-manifest.json"
N_SENTENCES = 24  # enough for the seeded 10% validation and test splits
ZWSP = "\u200b"


def _sentence(i: int) -> list[tuple[str, str]]:
    return [(f"Alice{i}", "B-PER"), ("visited", "O"), ("Paris", "B-LOC"), ("on", "O"), ("day", "O"), (str(i), "O")]


def _conll(sentences: list[list[tuple[str, str]]]) -> str:
    return "".join("".join(f"{token}\t{tag}\n" for token, tag in s) + "\n" for s in sentences)


def _start_line(sentences, index: int) -> int:
    """Line of the first token of sentence ``index`` in :func:`_conll` output."""
    return sum(len(s) + 1 for s in sentences[:index]) + 1


def _file(tmp_path: Path, content: str | bytes, name: str = "data.conll") -> Path:
    path = tmp_path / name
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


def _preprocess(tmp_path: Path, source: Path | str, *overrides: str):
    out = tmp_path / "out"
    result = run_cli("stage", "preprocess-ner", "--output", str(out), "--set", f"source={source}", *overrides)
    return result, out


def _ok(result) -> dict:
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return json.loads(result.stdout)


def _total(manifest: dict, key: str) -> int:
    return sum(split.get(key, 0) for split in manifest["counts"].values())


def _error(result, out: Path, *fragments: str) -> str:
    assert result.returncode != 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert line.startswith("kfnlp: error: "), line
    for fragment in fragments:
        assert fragment in line, line
    if out.exists():
        assert not list(out.rglob(MANIFEST))
    return line


def _load(out: Path):
    import datasets

    return datasets.load_from_disk(str(out / "data"))


def _tags(out: Path, labels: list[str]) -> dict[tuple[str, ...], list[str]]:
    """Stored tag names of every sentence, by its tokens."""
    return {
        tuple(tokens): [labels[i] for i in ids]
        for split in _load(out).values()
        for tokens, ids in zip(split["tokens"], split["ner_tags"], strict=True)
    }


# ---- errors ------------------------------------------------------------------------


def test_line_without_tag_column(tmp_path):
    sentences = [_sentence(i) for i in range(N_SENTENCES)]
    lines = _conll(sentences).splitlines(keepends=True)
    lines.insert(9, "lonely\n")  # in the second sentence, after its first two tokens
    path = _file(tmp_path, "".join(lines))
    result, out = _preprocess(tmp_path, path)
    _error(result, out, f"{path}:10: expected a token and a tag separated by a tab or space, got 'lonely'")


def test_tag_outside_the_configured_label_set(tmp_path):
    sentences = [_sentence(i) for i in range(N_SENTENCES)]
    sentences = [[(t, "O" if tag == "B-LOC" else tag) for t, tag in s] for s in sentences]
    sentences[5][2] = ("Paris", "B-LOC")  # the only tag outside O/B-PER/I-PER
    path = _file(tmp_path, _conll(sentences))
    result, out = _preprocess(tmp_path, path, "--set", 'labels=["O","B-PER","I-PER"]')
    _error(
        result,
        out,
        f"{path}:{_start_line(sentences, 5) + 2}: tag 'B-LOC' is not in the label set",
        "['O', 'B-PER', 'I-PER']",
    )


def test_bad_configured_label_set(tmp_path):
    path = _file(tmp_path, _conll([_sentence(i) for i in range(N_SENTENCES)]))
    result, out = _preprocess(tmp_path, path, "--set", "labels=[O, B-PER]")
    _error(result, out, "preprocess_ner.labels: I-PER missing")


def test_non_iob_tag(tmp_path):
    sentences = [_sentence(i) for i in range(N_SENTENCES)]
    sentences[7][0] = ("Alice7", "E-PER")
    path = _file(tmp_path, _conll(sentences))
    result, out = _preprocess(tmp_path, path)
    _error(
        result,
        out,
        f"{path}:{_start_line(sentences, 7)}: tag 'E-PER' is not IOB2 (expected O, B-TYPE or I-TYPE)",
    )


@pytest.mark.parametrize("content", ["", "\n\n\t\n   \n\n"], ids=["empty", "blank-lines"])
def test_file_without_sentences(tmp_path, content):
    path = _file(tmp_path, content)
    result, out = _preprocess(tmp_path, path)
    _error(result, out, f"{path}: no sentences (the file is empty or holds only blank lines)")


def test_latin1_bytes(tmp_path):
    sentences = [_sentence(i) for i in range(N_SENTENCES)]
    sentences[0][1] = ("caf\u00e9", "O")  # line 2, byte 0xe9 at column 4
    path = _file(tmp_path, _conll(sentences).encode("latin-1"))
    result, out = _preprocess(tmp_path, path)
    line = _error(result, out, f"{path}:2: byte 0xe9 at column 4 is not valid utf-8")
    assert "encoding: latin-1" in line

    manifest = _ok(_preprocess(tmp_path, path, "--set", "encoding=latin-1")[0])
    assert manifest["config"]["encoding"] == "latin-1"
    tokens = [t for split in _load(out).values() for s in split["tokens"] for t in s]
    assert "caf\u00e9" in tokens


def test_nonexistent_source(tmp_path):
    missing = tmp_path / "nope.conll"
    result, out = _preprocess(tmp_path, missing)
    _error(result, out, f"{missing}: no such file")
    assert not out.exists()


def test_failed_run_keeps_a_previous_complete_output(tmp_path):
    good = _file(tmp_path, _conll([_sentence(i) for i in range(N_SENTENCES)]), "good.conll")
    _ok(_preprocess(tmp_path, good)[0])
    result, out = _preprocess(tmp_path, _file(tmp_path, "a\tO\nb\n", "bad.conll"))
    assert result.returncode != 0 and "bad.conll:2" in result.stderr
    # the earlier artifact is untouched, not replaced by a half-written one
    manifest = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
    assert manifest["config"]["source"] == str(good)


# ---- tolerances ------------------------------------------------------------------


def test_i_tag_after_o_is_repaired_and_counted(tmp_path):
    sentences = [_sentence(i) for i in range(N_SENTENCES)]
    sentences[3][2] = ("Paris", "I-LOC")  # after O: IOB1 way of starting an entity
    path = _file(tmp_path, _conll(sentences))

    result, out = _preprocess(tmp_path, path)
    manifest = _ok(result)
    assert _total(manifest, "iob_repairs") == 1
    labels = manifest["labels"]
    assert labels == ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
    tags = _tags(out, labels)
    assert tags[tuple(t for t, _ in sentences[3])][2] == "B-LOC"

    manifest = _ok(_preprocess(tmp_path, path, "--set", "repair_iob=false")[0])
    assert _total(manifest, "iob_repairs") == 0
    assert manifest["config"]["repair_iob"] is False
    tags = _tags(out, labels)
    assert tags[tuple(t for t, _ in sentences[3])][2] == "I-LOC"  # kept as written


def test_very_long_sentence_is_truncated(tmp_path):
    sentences = [_sentence(i) for i in range(N_SENTENCES)]
    long = [(f"w{i}", "B-MISC" if i % 100 == 0 else "O") for i in range(5000)]
    sentences.insert(10, long)
    path = _file(tmp_path, _conll(sentences))

    result, out = _preprocess(tmp_path, path)
    manifest = _ok(result)
    assert _total(manifest, "truncated_sentences") == 1
    assert _total(manifest, "sentences") == N_SENTENCES + 1
    assert "truncated" in result.stderr
    lengths = [n for split in _load(out).values() for n in split["length"]]
    assert max(lengths) == 256

    # a small max_length: the short sentences ([CLS] alice ##N visited paris on day N [SEP]) still fit
    result, out = _preprocess(tmp_path, path, "--set", "max_length=16")
    manifest = _ok(result)
    assert _total(manifest, "truncated_sentences") == 1
    data = _load(out)
    for split in data.values():
        for ids, labels, word_ids in zip(split["input_ids"], split["labels"], split["word_ids"], strict=True):
            assert len(ids) == len(labels) == len(word_ids) <= 16

    manifest = _ok(_preprocess(tmp_path, path, "--set", "max_length=6")[0])
    assert _total(manifest, "truncated_sentences") == N_SENTENCES + 1


def test_emoji_and_zero_width_characters(tmp_path):
    sentences = [_sentence(i) for i in range(N_SENTENCES)]
    sentences[1][3:3] = [("\U0001f600", "O"), (ZWSP, "O")]
    sentences[2][1:1] = [("\u200d", "O"), ("👍🏽", "O"), ("wor\u2028ld", "O")]
    sentences[4][0] = (f"Alice{ZWSP}4", "B-PER")  # a zero-width char inside a word: the word stays
    path = _file(tmp_path, _conll(sentences))

    result, out = _preprocess(tmp_path, path)
    manifest = _ok(result)
    assert _total(manifest, "empty_words") == 2  # U+200B and U+200D alone; emoji are [UNK]
    assert _total(manifest, "words") == sum(len(s) for s in sentences)
    data = _load(out)
    kept = {tuple(t) for split in data.values() for t in split["tokens"]}
    for index in (1, 2, 4):
        assert tuple(t for t, _ in sentences[index]) in kept
    for split in data.values():
        for tokens, word_ids in zip(split["tokens"], split["word_ids"], strict=True):
            assert sorted({w for w in word_ids if w >= 0}) == list(range(len(tokens)))
