"""Artifacts are complete only with their manifest; failed writes leave nothing behind."""

from __future__ import annotations

import pytest

from kfnlp.errors import StorageError
from kfnlp.storage import read_manifest, verify_checksums, write_artifact


def test_manifest_lists_files_with_sizes_and_hashes(tmp_path):
    with write_artifact(tmp_path / "a", kind="dataset") as out:
        (out.path / "x.bin").write_bytes(b"12345")
        out.info["fingerprint"] = "abc"
    manifest = read_manifest(tmp_path / "a", kind="dataset")
    assert manifest["fingerprint"] == "abc"
    assert manifest["files"] == [
        {"path": "x.bin", "size": 5, "sha256": "5994471abb01112afcc18159f6cc74b4f511b99806da59b3caf5a9c173cacfc5"}
    ]
    verify_checksums(tmp_path / "a")


def test_a_crash_mid_write_leaves_no_artifact_and_keeps_the_previous_one(tmp_path):
    with write_artifact(tmp_path / "a", kind="model") as out:
        (out.path / "v").write_text("1")
    with pytest.raises(RuntimeError), write_artifact(tmp_path / "a", kind="model") as out:
        (out.path / "v").write_text("2")
        raise RuntimeError("killed")
    assert (tmp_path / "a" / "v").read_text() == "1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]


def test_readers_refuse_incomplete_wrong_kind_and_damaged(tmp_path):
    (tmp_path / "partial").mkdir()
    with pytest.raises(StorageError, match="incomplete"):
        read_manifest(tmp_path / "partial")
    with pytest.raises(StorageError, match="no such artifact"):
        read_manifest(tmp_path / "missing")
    with write_artifact(tmp_path / "d", kind="dataset") as out:
        (out.path / "f").write_text("abc")
    with pytest.raises(StorageError, match="expected a model"):
        read_manifest(tmp_path / "d", kind="model")
    (tmp_path / "d" / "f").write_text("abcd")
    with pytest.raises(StorageError, match="wrong size"):
        read_manifest(tmp_path / "d")
    (tmp_path / "d" / "f").write_text("abd")
    with pytest.raises(StorageError, match="checksum"):
        verify_checksums(tmp_path / "d")
