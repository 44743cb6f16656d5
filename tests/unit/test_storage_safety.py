"""What a write or a download may touch on the local disk: relative names from outside stay under
their directory, an artifact replaces only what kfnlp wrote and never a stage's input, and the
checkpoint scratch cannot be redirected by another user. (The S3 side: tests/integration/test_s3_safety.py.)"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path

import pytest

from kfnlp.errors import StorageError
from kfnlp.storage import MANIFEST, check_output, private_temp_dir, read_manifest, write_artifact
from kfnlp.storage.manifest import contained, is_safe_name
from tests.support.cli import run_cli

UNSAFE = ["", "/home/u/.bashrc", "../escape", "a/../../x", "a//b", "./a", "a/.", "a/..", "..", "a\\b", "\\x", "a\x00b"]


@pytest.mark.parametrize("name", ["a", "a/b.txt", ".hidden", "a/.b/c", "..a", "a..", "…"])
def test_safe_names_stay_under_their_root(name, tmp_path):
    assert is_safe_name(name)
    assert contained(tmp_path, name) == tmp_path / name


@pytest.mark.parametrize("name", [*UNSAFE, None, 3])
def test_unsafe_names_are_refused(name, tmp_path):
    assert not is_safe_name(name)
    assert contained(tmp_path, name) is None


def test_a_name_through_a_symlink_out_of_the_root_is_refused(tmp_path):
    root, elsewhere = tmp_path / "root", tmp_path / "elsewhere"
    root.mkdir()
    elsewhere.mkdir()
    (root / "link").symlink_to(elsewhere)
    assert contained(root, "link/file") is None


@pytest.mark.parametrize("bad", ["/etc/hostname", "../outside.txt", "a//b"])
def test_a_local_manifest_naming_a_path_outside_the_artifact_is_refused(bad, tmp_path):
    (tmp_path / "outside.txt").write_text("x")
    art = tmp_path / "art"
    with write_artifact(art, kind="model") as out:
        (out.path / "a.txt").write_text("x")
    manifest = json.loads((art / MANIFEST).read_text())
    manifest["files"].append({"path": bad, "size": 1, "sha256": "0" * 64})
    (art / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(StorageError, match="invalid file entry"):
        read_manifest(art)


# ---- an artifact replaces only what kfnlp wrote


def _write(dest: Path, tag: str = "new") -> None:
    with write_artifact(dest, kind="dataset") as out:
        (out.path / "data.txt").write_text(tag)


def test_an_artifact_replaces_nothing_an_empty_directory_a_previous_artifact_or_leftovers(tmp_path):
    fresh, empty, previous, leftovers = (tmp_path / n for n in ("fresh", "empty", "previous", "leftovers"))
    empty.mkdir()
    _write(previous, "old")
    leftovers.mkdir()
    (leftovers / ".data.tmp-0123abcd").mkdir()  # what an interrupted write leaves behind
    for dest in (fresh, empty, previous, leftovers):
        _write(dest)
        assert (dest / "data.txt").read_text() == "new"
        assert sorted(p.name for p in dest.iterdir()) == ["data.txt", MANIFEST]


def test_an_artifact_never_replaces_a_directory_of_someone_elses_files(tmp_path):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    with pytest.raises(
        StorageError, match=r"precious: the output is a directory that is not a kfnlp artifact.*thesis\.tex"
    ):
        _write(precious)
    assert (precious / "thesis.tex").read_text() == "years of work"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["precious"]  # no staging directory left either


def test_an_artifact_never_replaces_a_file_or_the_current_directory(tmp_path, monkeypatch):
    notes = tmp_path / "notes.txt"
    notes.write_text("keep me")
    with pytest.raises(StorageError, match="notes.txt: the output is an existing file"):
        _write(notes)
    assert notes.read_text() == "keep me"
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    for dest, verb in ((Path("."), "is"), (work, "is"), (Path(".."), "holds")):
        with pytest.raises(StorageError, match=f"the output {verb} the current directory {work}"):
            _write(dest)
    assert notes.read_text() == "keep me" and list(work.iterdir()) == []


def test_the_output_is_never_an_input_nor_holds_one_nor_lies_inside_one(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text("text")
    file_source = {"preprocess.source": str(corpus / "a.txt")}
    cases = [
        (corpus, {"preprocess.source": str(corpus)}, "is"),
        (corpus / "a.txt", file_source, "is"),
        (tmp_path, file_source, "holds"),
        (corpus / "out", {"preprocess.source": str(corpus)}, "lies inside"),
        (tmp_path, {"preprocess.source": f"{corpus}/*.txt"}, "holds"),  # a glob: the files it matches
    ]
    for output, inputs, verb in cases:
        name, value = next(iter(inputs.items()))
        with pytest.raises(StorageError, match=re.escape(f"the output {verb} the stage's input {name}={value}")):
            check_output(str(output), inputs)
    # what names no local path is not an input here: a Hub id, a dataset, an S3 prefix
    check_output(str(tmp_path / "new"), {"source": "hf:imdb", "--tokenizer": "bert-base-uncased", "s": "s3://b/c"})
    check_output("s3://bucket/out", {"preprocess.source": str(corpus)})


# ---- the same through `kfnlp stage`: refused before the stage does any work, one line, nothing lost


@pytest.fixture
def corpus(tmp_path) -> Path:
    data = tmp_path / "corpus"
    data.mkdir()
    (data / "reviews.txt").write_text(
        "".join(f"review {i}: a film worth watching twice. " * 4 + "\n" for i in range(20))
    )
    return data


def _stage(output: Path | str, source: Path | str, cwd: Path):
    return run_cli(
        "stage", "preprocess", "--output", str(output), "--set", f"source={source}", "--set", "chunk_size=16", cwd=cwd
    )


def _refused(result, *fragments: str) -> None:
    assert result.returncode == 4, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kfnlp: error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_kfnlp_stage_refuses_an_output_that_would_lose_files(corpus, tmp_path):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.md").write_text("mine")
    notes = tmp_path / "notes.txt"
    notes.write_text("mine too")
    work = tmp_path / "work"
    work.mkdir()
    before = _tree(tmp_path)
    cases = [
        (precious, corpus, ["precious: the output is a directory that is not a kfnlp artifact", "notes.md"]),
        (corpus, corpus, [f"{corpus}: the output is the stage's input preprocess.source={corpus}"]),
        (tmp_path, corpus / "reviews.txt", ["the output holds the stage's input preprocess.source="]),
        (corpus / "out", corpus, ["the output lies inside the stage's input preprocess.source="]),
        (".", corpus, [f"the output is the current directory {work}"]),
        (notes, corpus, ["notes.txt: the output is an existing file"]),
    ]
    for output, source, fragments in cases:
        _refused(_stage(output, source, cwd=work if output == "." else tmp_path), *fragments)
        assert _tree(tmp_path) == before, output


def test_kfnlp_stage_output_in_the_corpus_directory_names_both_paths(corpus):
    """The reported case: run from inside the corpus with ``--output .``."""
    _refused(_stage(".", ".", cwd=corpus), f".: the output is the stage's input preprocess.source=. ({corpus})")
    assert [p.name for p in corpus.iterdir()] == ["reviews.txt"]


# ---- the checkpoint scratch


@pytest.fixture
def temp_root(tmp_path, monkeypatch) -> Path:
    """A fresh temp directory, as TMPDIR would name it."""
    root = tmp_path / "tmp"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    return root


def test_the_private_scratch_is_this_users_alone(temp_root):
    scratch = private_temp_dir("checkpoints-abc")
    parent = temp_root / f"kfnlp-{os.getuid()}"
    assert scratch == parent / "checkpoints-abc"
    assert parent.is_dir() and not parent.is_symlink()
    assert parent.stat().st_mode & 0o777 == 0o700
    assert private_temp_dir("other") == parent / "other"  # the same parent every time (workers agree)


def test_a_squatted_or_shared_scratch_parent_is_refused(temp_root, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    parent = temp_root / f"kfnlp-{os.getuid()}"
    parent.symlink_to(elsewhere)  # another user's trap: a symlink to a directory they can read
    with pytest.raises(StorageError, match=re.escape(f"{parent}: not a private directory of this user")):
        private_temp_dir("checkpoints-abc")
    assert list(elsewhere.iterdir()) == []
    parent.unlink()
    parent.mkdir(mode=0o777)
    parent.chmod(0o777)  # open to everyone: someone else could plant a symlink inside
    with pytest.raises(StorageError, match="not a private directory of this user"):
        private_temp_dir("checkpoints-abc")


def test_kfnlp_stage_refuses_an_output_that_is_its_input_artifact(tiny_dataset, tmp_path):
    """mask-eval --dataset d --output d would replace the dataset it reads (d is a kfnlp artifact, so the
    destination check alone allows it): the artifact inputs count as inputs too."""
    import shutil

    dataset = tmp_path / "dataset"
    shutil.copytree(tiny_dataset, dataset)
    before = _tree(dataset)
    result = run_cli("stage", "mask-eval", "--dataset", str(dataset), "--output", str(dataset), cwd=tmp_path)
    _refused(result, f"the output is the stage's input --dataset={dataset}")
    assert _tree(dataset) == before
