"""kfnlp.storage.s3 against a real S3-compatible server on loopback (ministack, see tests/support/s3_server.py):
round trips, refused and damaged artifacts, crash-safe overwrites, outages, bad credentials."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import traceback

import pytest

from kfnlp.errors import ConfigError, StorageError
from kfnlp.storage import MANIFEST, read_manifest, verify_checksums, write_artifact
from kfnlp.storage.s3 import settings as s3_settings
from kfnlp.storage.s3.artifacts import exists_complete, resolve_version
from kfnlp.storage.s3.download import download_artifact
from kfnlp.storage.s3.settings import S3Settings
from kfnlp.storage.s3.upload import prune_versions, upload_artifact
from kfnlp.storage.s3.uri import parse_uri

MIB = 1 << 20
# multipart above 5 MiB in 5 MiB parts (S3's smallest part), so the 12 MiB file goes in 3 parts
SMALL_PARTS = S3Settings(multipart_threshold=5 * MIB, multipart_chunksize=5 * MIB, max_concurrency=4)


def make_artifact(path, tag: str, big: int = 12 * MIB):
    """A model-like artifact: two small files and one large one whose bytes depend on ``tag``."""
    with write_artifact(path, kind="model") as out:
        (out.path / "config.json").write_text(json.dumps({"tag": tag}))
        (out.path / "tokenizer").mkdir()
        (out.path / "tokenizer" / "vocab.txt").write_text(f"[PAD]\n[UNK]\n{tag}\n")
        block = (tag.encode() * 64)[:64] + os.urandom(64)
        (out.path / "weights.bin").write_bytes((block * (big // len(block) + 1))[:big])
        out.info["fingerprint"] = tag
    return path


def tag_of(local_dir) -> str:
    return json.loads((local_dir / "config.json").read_text())["tag"]


def pointer(bucket, prefix: str) -> dict:
    body = bucket.server.client().get_object(Bucket=bucket.name, Key=f"{prefix}/{MANIFEST}")["Body"].read()
    return json.loads(body)


@pytest.fixture
def spy(monkeypatch):
    """Every S3 request kfnlp.storage.s3 sends, in order: (operation, key, checksum algorithm)."""
    calls = []
    real = s3_settings.client
    monkeypatch.setattr(s3_settings, "_CLIENTS", {})  # no client made before the spy

    def spying(*args, **kwargs):
        client = real(*args, **kwargs)

        def record(model, params, **_):
            calls.append((model.name, params.get("Key"), params.get("ChecksumAlgorithm")))

        client.meta.events.register("before-parameter-build.s3", record)
        return client

    monkeypatch.setattr(s3_settings, "client", spying)
    return calls


def test_round_trip_with_multipart_and_the_manifest_last(s3_bucket, tmp_path, spy):
    src = make_artifact(tmp_path / "src", "v1")
    uri = s3_bucket.uri("models/m1")
    stored = upload_artifact(src, uri, settings=SMALL_PARTS)
    version = stored["s3_version"]
    base = f"models/m1/.v/{version}"
    assert s3_bucket.keys() == sorted(
        [
            f"models/m1/{MANIFEST}",
            f"{base}/{MANIFEST}",
            f"{base}/config.json",
            f"{base}/tokenizer/vocab.txt",
            f"{base}/weights.bin",
        ]
    )
    # every file (the large one in 3 checksummed parts: CRC32 by default) before the version's manifest, the pointer last
    writes = [(op, key, algo) for op, key, algo in spy if op in ("PutObject", "CreateMultipartUpload", "UploadPart")]
    assert [key for op, key, _ in writes if op == "PutObject"][-2:] == [f"{base}/{MANIFEST}", f"models/m1/{MANIFEST}"]
    assert sum(op == "UploadPart" for op, _, _ in writes) == 3
    assert all(algo == "CRC32" for _, _, algo in writes)
    head = s3_bucket.server.client().head_object(
        Bucket=s3_bucket.name, Key=f"{base}/weights.bin", ChecksumMode="ENABLED"
    )
    assert head.get("ChecksumCRC32")

    assert exists_complete(uri)
    assert resolve_version(uri) == f"s3://{s3_bucket.name}/{base}"
    dest = tmp_path / "dest"
    manifest = download_artifact(uri, dest, kind="model", settings=SMALL_PARTS)
    assert manifest == read_manifest(src)
    assert (dest / MANIFEST).read_bytes() == (src / MANIFEST).read_bytes()
    for name in ("config.json", "tokenizer/vocab.txt", "weights.bin"):
        assert (dest / name).read_bytes() == (src / name).read_bytes()
    verify_checksums(dest)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dest", "src"]  # no staging left behind


def test_a_prefix_without_a_manifest_is_refused(s3_bucket, tmp_path):
    s3_bucket.server.client().put_object(Bucket=s3_bucket.name, Key="half/weights.bin", Body=b"123")
    for prefix in ("half", "nothing-here"):
        uri = s3_bucket.uri(prefix)
        assert not exists_complete(uri)
        with pytest.raises(StorageError, match=rf"{uri}: incomplete or not a kfnlp artifact \(no {MANIFEST}\)"):
            download_artifact(uri, tmp_path / "dest")
        with pytest.raises(StorageError, match="incomplete"):
            resolve_version(uri)
    assert list(tmp_path.iterdir()) == []  # nothing created locally
    upload_artifact(make_artifact(tmp_path / "m", "x", big=10), s3_bucket.uri("m"))
    with pytest.raises(StorageError, match="expected a dataset artifact, found 'model'"):
        download_artifact(s3_bucket.uri("m"), tmp_path / "dest", kind="dataset")


def test_a_damaged_object_is_detected_and_the_local_copy_kept(s3_bucket, tmp_path):
    src = make_artifact(tmp_path / "src", "v1")
    uri = s3_bucket.uri("m")
    version = upload_artifact(src, uri, settings=SMALL_PARTS)["s3_version"]
    dest = tmp_path / "dest"
    download_artifact(uri, dest)
    admin = s3_bucket.server.client()
    key = f"m/.v/{version}/weights.bin"
    size = (src / "weights.bin").stat().st_size
    admin.put_object(Bucket=s3_bucket.name, Key=key, Body=b"\0" * size)  # same size, other bytes
    with pytest.raises(StorageError, match=f"{uri}: checksum mismatch for weights.bin"):
        download_artifact(uri, dest, settings=SMALL_PARTS)
    admin.put_object(Bucket=s3_bucket.name, Key=key, Body=b"short")
    with pytest.raises(StorageError, match="weights.bin has 5 bytes, its manifest says"):
        download_artifact(uri, dest)
    admin.delete_object(Bucket=s3_bucket.name, Key=key)
    with pytest.raises(StorageError, match="weights.bin is missing from .* the stored artifact is damaged"):
        download_artifact(uri, dest)
    verify_checksums(dest)  # the earlier good download is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dest", "src"]


class Crash(Exception):
    """The uploading stage fails."""


class HardCrash(BaseException):
    """Like KeyboardInterrupt: s3transfer's worker threads swallow it and report success."""


@pytest.mark.parametrize("crash", [Crash, HardCrash])
def test_a_crash_mid_upload_keeps_the_previous_version(s3_bucket, tmp_path, crash):
    uri = s3_bucket.uri("m")
    upload_artifact(make_artifact(tmp_path / "v1", "v1"), uri, settings=SMALL_PARTS)
    before = pointer(s3_bucket, "m")
    sent = [0]

    def crash_after_the_first_part(n):
        sent[0] += n
        if sent[0] > 6 * MIB:
            raise crash()

    with pytest.raises(Crash if crash is Crash else StorageError) as caught:
        upload_artifact(
            make_artifact(tmp_path / "v2", "v2"), uri, settings=SMALL_PARTS, progress=crash_after_the_first_part
        )
    if crash is HardCrash:
        assert "the upload of weights.bin did not complete" in str(caught.value)
    assert pointer(s3_bucket, "m") == before
    download_artifact(uri, tmp_path / "dest")
    assert tag_of(tmp_path / "dest") == "v1"
    # the interrupted version is an orphan nobody reads; pruning (after the grace period) removes it
    versions = {k.split("/")[2] for k in s3_bucket.keys("m/.v/")}
    assert len(versions) == 2
    assert prune_versions(uri) == []  # younger than the grace period
    assert prune_versions(uri, older_than=0) == list(versions - {before["s3_version"]})
    assert {k.split("/")[2] for k in s3_bucket.keys("m/.v/")} == {before["s3_version"]}
    # a complete upload replaces v1 and deletes it
    after = upload_artifact(tmp_path / "v2", uri, settings=SMALL_PARTS)
    assert {k.split("/")[2] for k in s3_bucket.keys("m/.v/")} == {after["s3_version"]}
    download_artifact(uri, tmp_path / "dest")
    assert tag_of(tmp_path / "dest") == "v2"


def test_the_server_dying_mid_upload_gives_a_clear_error_within_the_budget(s3_bucket, tmp_path):
    server = s3_bucket.server
    uri = s3_bucket.uri("m")
    upload_artifact(make_artifact(tmp_path / "v1", "v1"), uri, settings=SMALL_PARTS)
    before = pointer(s3_bucket, "m")
    settings = S3Settings(
        multipart_threshold=5 * MIB, multipart_chunksize=5 * MIB, max_concurrency=2, max_attempts=2, retry_seconds=3
    )
    sent, killed = [0], []

    def kill_after_the_first_part(n):
        sent[0] += n
        if sent[0] > 6 * MIB and not killed:
            killed.append(time.monotonic())
            server.kill()

    with pytest.raises(StorageError) as caught:
        upload_artifact(
            make_artifact(tmp_path / "v2", "v2"), uri, settings=settings, progress=kill_after_the_first_part
        )
    elapsed = time.monotonic() - killed[0]
    message = str(caught.value)
    assert message.startswith(f"{uri}: uploading weights.bin failed after ")
    assert f"cannot connect to the S3 endpoint {server.uri}" in message
    assert "retry budget 3 s" in message
    assert elapsed < 3 + 6, elapsed  # the budget plus at most one request's own retries
    server.start()  # same data directory: the old version is still the artifact
    assert pointer(s3_bucket, "m") == before
    download_artifact(uri, tmp_path / "dest")
    assert tag_of(tmp_path / "dest") == "v1"


def test_an_upload_rides_out_a_server_restart(s3_bucket, tmp_path):
    server = s3_bucket.server
    uri = s3_bucket.uri("m")
    upload_artifact(make_artifact(tmp_path / "v1", "v1"), uri, settings=SMALL_PARTS)
    settings = S3Settings(
        multipart_threshold=5 * MIB, multipart_chunksize=5 * MIB, max_concurrency=2, max_attempts=2, retry_seconds=30
    )
    restarter = threading.Thread(target=lambda: (time.sleep(1.5), server.start()))
    sent = [0]

    def restart_after_the_first_part(n):
        sent[0] += n
        if sent[0] > 6 * MIB and not restarter.is_alive() and not restarter.ident:
            server.kill()
            restarter.start()

    try:
        stored = upload_artifact(
            make_artifact(tmp_path / "v2", "v2"), uri, settings=settings, progress=restart_after_the_first_part
        )
    finally:
        if restarter.ident:
            restarter.join()
    assert restarter.ident, "the server was never restarted"
    assert pointer(s3_bucket, "m")["s3_version"] == stored["s3_version"]
    download_artifact(uri, tmp_path / "dest")
    assert tag_of(tmp_path / "dest") == "v2"
    verify_checksums(tmp_path / "dest")


def test_wrong_credentials_fail_at_once_and_never_show_the_secret(s3_bucket, tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)  # botocore's own debug logging too
    key, secret = s3_bucket.server.create_user()
    caplog.clear()  # creating the user logged its secret (at DEBUG, in the answer's body)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    src = make_artifact(tmp_path / "src", "v1", big=1000)
    uri = s3_bucket.uri("m")
    upload_artifact(src, uri)  # the right secret works
    wrong = "wr0ng-" + secret[::-1]
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", wrong)
    for action in (lambda: upload_artifact(src, uri), lambda: download_artifact(uri, tmp_path / "d")):
        began = time.monotonic()
        with pytest.raises(StorageError) as caught:
            action()
        assert time.monotonic() - began < 5
        message = str(caught.value)
        assert message.startswith(f"{uri}: ")
        assert "the secret key does not match the access key (SignatureDoesNotMatch)" in message
        everything = message + "".join(traceback.format_exception(caught.value)) + caplog.text
        assert wrong not in everything
        assert secret not in everything
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIANOSUCHKEY0000000")
    with pytest.raises(StorageError, match="does not know the access key \\(InvalidAccessKeyId\\)") as caught:
        download_artifact(uri, tmp_path / "d")
    assert wrong not in str(caught.value) + caplog.text
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(StorageError, match="no S3 credentials"):
        exists_complete(uri)


def test_a_missing_bucket_or_a_bad_endpoint_fails_at_once(s3_bucket, tmp_path, monkeypatch):
    src = make_artifact(tmp_path / "src", "v1", big=1000)
    uri = "s3://kfnlp-no-such-bucket/m"
    began = time.monotonic()
    with pytest.raises(
        StorageError, match=f"^{uri}: .*bucket 'kfnlp-no-such-bucket' does not exist \\(NoSuchBucket\\)"
    ):
        upload_artifact(src, uri)
    with pytest.raises(StorageError, match="bucket 'kfnlp-no-such-bucket' does not exist"):
        download_artifact(uri, tmp_path / "d")
    with pytest.raises(StorageError, match="bucket 'kfnlp-no-such-bucket' does not exist"):
        exists_complete(uri)
    assert time.monotonic() - began < 5
    for bad in ("127.0.0.1:9000", "ftp://127.0.0.1", "http://127.0.0.1:port"):
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", bad)
        with pytest.raises(StorageError, match=f"^{s3_bucket.uri('m')}: bad S3 endpoint"):
            exists_complete(s3_bucket.uri("m"))
    for bad in ("s3:/x/y", "s3://UPPER/x", "s3://b/../x", "s3://bucket/m/.v/1", "/local/path"):
        with pytest.raises(StorageError, match="s3"):
            parse_uri(bad)


def test_a_read_only_bucket_policy_refuses_the_upload_and_keeps_the_artifact(s3_bucket, tmp_path, monkeypatch):
    server = s3_bucket.server
    key, secret = server.create_user()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    uri = s3_bucket.uri("m")
    upload_artifact(make_artifact(tmp_path / "v1", "v1", big=1000), uri)
    keys = s3_bucket.keys()
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Deny",
                "Principal": "*",
                "Action": ["s3:PutObject", "s3:DeleteObject"],
                "Resource": f"arn:aws:s3:::{s3_bucket.name}/*",
            }
        ],
    }
    server.client().put_bucket_policy(Bucket=s3_bucket.name, Policy=json.dumps(policy))
    began = time.monotonic()
    with pytest.raises(StorageError, match=f"^{uri}: uploading config.json failed: access denied \\(AccessDenied\\)"):
        upload_artifact(make_artifact(tmp_path / "v2", "v2", big=1000), uri)
    assert time.monotonic() - began < 5
    assert s3_bucket.keys() == keys
    download_artifact(uri, tmp_path / "dest")  # reading is still allowed
    assert tag_of(tmp_path / "dest") == "v1"


def test_a_plain_copy_at_the_prefix_is_read_and_then_replaced(s3_bucket, tmp_path):
    src = make_artifact(tmp_path / "src", "plain", big=1000)
    admin = s3_bucket.server.client()
    for path in sorted(p for p in src.rglob("*") if p.is_file()):  # as `aws s3 sync` would copy it
        admin.upload_file(str(path), s3_bucket.name, f"p/{path.relative_to(src).as_posix()}")
    uri = s3_bucket.uri("p")
    assert exists_complete(uri)
    assert resolve_version(uri) == uri
    assert download_artifact(uri, tmp_path / "dest") == read_manifest(src)
    stored = upload_artifact(make_artifact(tmp_path / "v2", "v2", big=1000), uri)
    assert [k for k in s3_bucket.keys("p/") if "/.v/" not in k] == [f"p/{MANIFEST}"]
    assert resolve_version(uri).endswith(f"/p/.v/{stored['s3_version']}")


def test_write_artifact_stages_locally_and_uploads(s3_bucket):
    uri = s3_bucket.uri("data/d1")
    with write_artifact(uri, kind="dataset") as out:
        (out.path / "rows.jsonl").write_text('{"a": 1}\n')
        out.info["fingerprint"] = "f1"
    assert exists_complete(uri)
    with pytest.raises(RuntimeError), write_artifact(s3_bucket.uri("data/d2"), kind="dataset") as out:
        (out.path / "rows.jsonl").write_text("partial")
        raise RuntimeError("the stage failed")
    assert not exists_complete(s3_bucket.uri("data/d2"))
    assert s3_bucket.keys("data/d2") == []


def test_settings_from_the_environment(monkeypatch):
    monkeypatch.setenv("KFNLP_S3_MULTIPART_THRESHOLD", "64MiB")
    monkeypatch.setenv("KFNLP_S3_MULTIPART_CHUNKSIZE", "16 MiB")
    monkeypatch.setenv("KFNLP_S3_ADDRESSING_STYLE", "Virtual")
    monkeypatch.setenv("KFNLP_S3_CHECKSUM", "none")
    monkeypatch.setenv("KFNLP_S3_RETRY_SECONDS", "5")
    settings = S3Settings.from_env()
    assert (settings.multipart_threshold, settings.multipart_chunksize) == (64 * MIB, 16 * MIB)
    assert (settings.addressing_style, settings.checksum, settings.retry_seconds) == ("virtual", "none", 5.0)
    monkeypatch.setenv("KFNLP_S3_MULTIPART_CHUNKSIZE", "1MiB")
    with pytest.raises(ConfigError, match="KFNLP_S3_MULTIPART_CHUNKSIZE='1MiB': must be at least"):
        S3Settings.from_env()
    monkeypatch.setenv("KFNLP_S3_MULTIPART_CHUNKSIZE", "lots")
    with pytest.raises(ConfigError, match="KFNLP_S3_MULTIPART_CHUNKSIZE"):
        S3Settings.from_env()
