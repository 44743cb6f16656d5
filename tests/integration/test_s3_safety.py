"""What S3 reads may touch on the local disk, against a real S3-compatible server on loopback
(ministack, which stores keys with ``//`` and ``..`` as they are): object keys become files only
under the download's own directory, a cached artifact is reused only while it matches its stored
manifest, and the checkpoint scratch cannot be redirected through a pre-created symlink."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kfnlp.errors import StorageError
from kfnlp.stages.train_mlm import TrainMlmConfig
from kfnlp.storage import MANIFEST, check_input, local_input, open_artifact, read_manifest, write_artifact
from kfnlp.training.checkpoints import run_key
from tests.support.cli import MODEL


def _put(bucket, key: str, body: bytes = b"one document\n") -> None:
    bucket.server.client().put_object(Bucket=bucket.name, Key=key, Body=body)


def test_an_input_prefix_downloads_its_objects_under_the_cache(s3_bucket, kfnlp_home):
    _put(s3_bucket, "corpus/a.txt")
    _put(s3_bucket, "corpus/sub/.b.txt")
    _put(s3_bucket, "corpus/dir/")  # a "directory" marker, skipped
    local = local_input(s3_bucket.uri("corpus"))
    assert local.startswith(str(kfnlp_home / "cache" / "s3-objects"))
    files = sorted(str(p.relative_to(local)) for p in Path(local).rglob("*") if p.is_file())
    assert files == ["a.txt", "sub/.b.txt"]


@pytest.mark.parametrize("shape", ["absolute", "climbing", "dot", "empty", "backslash"])
def test_an_object_key_that_would_land_outside_the_cache_is_refused_naming_it(shape, s3_bucket, kfnlp_home):
    escaped = kfnlp_home.parent / f"escaped-{shape}.txt"  # where a careless download would write
    # from the staging directory $KFNLP_HOME/cache/s3-objects/<slot>/.fetch-*/ five levels up is kfnlp_home.parent
    key = {
        "absolute": f"corpus/{escaped}",  # corpus//tmp/.../escaped-absolute.txt
        "climbing": f"corpus/a/../../../../../../{escaped.name}",
        "dot": "corpus/./a.txt",
        "empty": "corpus/a//b.txt",
        "backslash": "corpus/a\\b.txt",
    }[shape]
    _put(s3_bucket, "corpus/good.txt")
    _put(s3_bucket, key)
    assert key in s3_bucket.keys("corpus/")  # the server stored the key as it is
    uri = s3_bucket.uri("corpus")
    try:
        for read in (lambda: check_input(uri, lambda _: None), lambda: local_input(uri)):
            with pytest.raises(StorageError) as refused:
                read()
            message = str(refused.value)
            assert message.startswith(f"{uri}: the object key {key!r} cannot be a local file under the prefix")
            assert "rename or remove that object" in message
        assert not escaped.exists()
        cache = kfnlp_home / "cache" / "s3-objects"
        assert not cache.exists() or not [p for p in cache.rglob("*") if p.is_file()]  # nothing downloaded
    finally:
        escaped.unlink(missing_ok=True)


# ---- the artifact cache


def test_a_tampered_cached_copy_is_downloaded_again(s3_bucket):
    uri = s3_bucket.uri("models/m")
    with write_artifact(uri, kind="model") as out:
        (out.path / "config.json").write_text("{}")
        (out.path / "weights.bin").write_bytes(b"good" * 4096)
    local, _ = open_artifact(uri, kind="model")
    weights = local / "weights.bin"
    good = weights.read_bytes()
    weights.write_bytes(b"E" * len(good))  # same size, other bytes
    local2, manifest = open_artifact(uri, kind="model")
    assert local2 == local and (local2 / "weights.bin").read_bytes() == good
    # a cached manifest edited to agree with a tampered file does not fool it either
    weights.write_bytes(b"E" * len(good))
    cached = json.loads((local / MANIFEST).read_text())
    for entry in cached["files"]:
        if entry["path"] == "weights.bin":
            entry["sha256"] = hashlib.sha256(b"E" * len(good)).hexdigest()
    (local / MANIFEST).write_text(json.dumps(cached))
    local3, manifest3 = open_artifact(uri, kind="model")
    assert (local3 / "weights.bin").read_bytes() == good
    assert manifest3["files"] == manifest["files"] == read_manifest(local3)["files"]


# ---- the checkpoint scratch


def test_the_checkpoint_scratch_is_not_written_through_a_pre_created_symlink(
    s3_bucket, tiny_dataset, tiny_eval_set, tmp_path
):
    """S3 checkpoints go through a local scratch directory; another user who pre-creates its old
    predictable path ($TMPDIR/kfnlp-checkpoints-<run key>) as a symlink must receive nothing."""
    temp, elsewhere = tmp_path / "tmp", tmp_path / "elsewhere"
    temp.mkdir()
    elsewhere.mkdir()
    out, checkpoints = tmp_path / "model", s3_bucket.uri("ckpt")
    settings = {"max_steps": 4, "save_steps": 2, "batch_size": 8, "eval_strategy": "no", "max_train_chunks": 32}
    config = TrainMlmConfig(**settings, checkpoint_dir=checkpoints)
    key = run_key(
        "train-mlm",
        str(out),
        config,
        base_model=MODEL,
        dataset=read_manifest(tiny_dataset)["fingerprint"],
        eval_set=read_manifest(tiny_eval_set)["fingerprint"],
    )
    (temp / f"kfnlp-checkpoints-{key}").symlink_to(elsewhere)
    untouched = elsewhere.stat().st_mtime_ns
    cmd = [sys.executable, "-m", "kfnlp", "stage", "train-mlm", "--output", str(out), "--base-model", MODEL]
    cmd += ["--dataset", str(tiny_dataset), "--eval-set", str(tiny_eval_set), "--set", f"checkpoint_dir={checkpoints}"]
    cmd += ["--set", "keep_checkpoints=true", *(arg for k, v in settings.items() for arg in ("--set", f"{k}={v}"))]
    result = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TMPDIR": str(temp)}, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert [k for k in s3_bucket.keys(f"ckpt/{key}/") if k.endswith(f"step-000000002/{MANIFEST}")]  # it checkpointed
    assert list(elsewhere.iterdir()) == [] and elsewhere.stat().st_mtime_ns == untouched  # nothing ever went there
