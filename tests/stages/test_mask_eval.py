"""mask-eval: the stored masked set is identical for a seed and differs for another."""

from __future__ import annotations

import json

import pytest

from kfnlp.errors import StorageError
from kfnlp.stages.mask_eval import MaskEvalConfig, mask_eval
from kfnlp.storage import MANIFEST, read_manifest


def data_hashes(path) -> dict[str, str]:
    manifest = json.loads((path / MANIFEST).read_text())
    return {f["path"]: f["sha256"] for f in manifest["files"] if f["path"].endswith(".arrow")}


def test_same_seed_is_byte_identical_other_seed_differs(tiny_dataset, tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    ma = mask_eval(str(tiny_dataset), str(a), MaskEvalConfig(seed=1))
    mb = mask_eval(str(tiny_dataset), str(b), MaskEvalConfig(seed=1))
    mc = mask_eval(str(tiny_dataset), str(c), MaskEvalConfig(seed=2))
    assert data_hashes(a) and data_hashes(a) == data_hashes(b)
    assert data_hashes(a) != data_hashes(c)
    assert ma["fingerprint"] == mb["fingerprint"] != mc["fingerprint"]


def test_whole_word_eval_set_records_its_config(tiny_dataset, tmp_path):
    manifest = mask_eval(str(tiny_dataset), str(tmp_path / "ww"), MaskEvalConfig(strategy="whole_word"))
    assert manifest["config"]["strategy"] == "whole_word"
    assert manifest["counts"]["masked_tokens"] > 0
    assert read_manifest(tmp_path / "ww", kind="eval_set")["fingerprint"] == manifest["fingerprint"]


def test_refuses_an_incomplete_dataset(tiny_dataset, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "data").mkdir()
    with pytest.raises(StorageError, match="incomplete"):
        mask_eval(str(broken), str(tmp_path / "out"), MaskEvalConfig())
    assert not (tmp_path / "out").exists()
