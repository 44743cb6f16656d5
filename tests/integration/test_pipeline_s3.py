"""`kfnlp run --storage s3://...`: every stage reads and writes its artifacts on a real
S3-compatible server (ministack on loopback), through real kfp.local.

adapt-then-ner is the pipeline used because it runs every component kind: preprocess-ner,
preprocess with a corpus input, mask-eval, evaluate, train-mlm, train-ner with an artifact
encoder, evaluate-ner, compare, register and promote.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kfnlp.storage import MANIFEST
from tests.support.cli import run_cli

ARTIFACT_FILES = {".safetensors", ".arrow", ".conll", ".jsonl"}


@pytest.fixture(scope="module")
def s3_run(adapt_then_ner_on_s3):
    """The session's adapt-then-ner run on S3 (tests/conftest.py), which the pipeline's own checks share."""
    run = adapt_then_ner_on_s3
    run["server"].start()  # a test before may have stopped it
    return run["server"], run["bucket"], run["storage"], run["out"], run["home"], run["summary"]


def test_every_artifact_is_a_complete_object_set_under_the_storage_prefix(s3_run):
    server, bucket, storage, out, _, summary = s3_run
    assert summary["status"] == "succeeded" and summary["storage"] == storage
    artifacts = summary["artifacts"]
    stored = [*artifacts["datasets"].values(), *artifacts["models"].values(), *artifacts["evaluations"].values()]
    stored.append(artifacts["comparison"])
    # 3 datasets (preprocess-ner, preprocess, mask-eval), 3 models (train-mlm, train-ner x2),
    # 4 evaluations (MLM and NER, base and adapted) and the comparison
    assert len(set(stored)) == 11
    client = server.client()
    for uri in stored:
        assert uri.startswith(storage + "/"), uri
        key = uri[len(f"s3://{bucket}/") :]
        pointer = json.loads(client.get_object(Bucket=bucket, Key=f"{key}/{MANIFEST}")["Body"].read())
        version = pointer["s3_version"]
        listed = client.list_objects_v2(Bucket=bucket, Prefix=f"{key}/.v/{version}/")["Contents"]
        names = {item["Key"].rsplit(f"{version}/", 1)[1]: item["Size"] for item in listed}
        assert names.pop(MANIFEST) > 0
        assert names == {f["path"]: f["size"] for f in pointer["files"]}, uri
    # the training stages checkpointed next to their models on S3, and cleared that once the models were stored
    everything = client.list_objects_v2(Bucket=bucket).get("Contents", [])
    assert everything and not [item["Key"] for item in everything if "-checkpoints/" in item["Key"]]
    # nothing but KFP bookkeeping, logs and the UI reports stayed on the local disk
    local = [p for p in (out / "artifacts").rglob("*") if p.is_file() and p.suffix in ARTIFACT_FILES]
    assert local == []


def test_results_are_read_back_from_s3(s3_run):
    *_, summary = s3_run
    metrics = summary["metrics"]
    assert metrics["perplexity_after"] < metrics["perplexity_before"]
    assert metrics["comparison"]["verdict"].split(":")[0] in ("helped", "hurt", "no clear difference")
    assert metrics["promotion"]["outcome"] == "promoted"
    assert str(summary["artifacts"]["registry"]["version"]) == "1"


def test_the_stored_model_loads_from_its_s3_uri(s3_run):
    server, _, _, _, home, summary = s3_run
    uri = summary["artifacts"]["models"]["train-ner-adapted"]
    env = {**server.env(), "KFNLP_HOME": str(home)}
    result = run_cli("predict", "ner", "--json", "--model", uri, "Alice flew to Paris with Bob", env=env)
    assert result.returncode == 0, result.stderr
    assert isinstance(json.loads(result.stdout), list)
    assert list(Path(home, "cache", "s3").glob(f"*/*/{MANIFEST}"))  # the verified cached copy


def test_a_missing_bucket_fails_before_any_stage(s3_server, tmp_path):
    env = {**s3_server.env(), "KFNLP_HOME": str(tmp_path / "home")}
    result = run_cli(
        "run", "ner", "--local", "--output", str(tmp_path / "out"), "--storage", "s3://no-such-bucket-kfnlp/x", env=env
    )
    assert result.returncode != 0
    err = result.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("kfnlp: error: s3://no-such-bucket-kfnlp/x"), result.stderr
    assert "bucket" in err[0].lower()
    assert not (tmp_path / "out" / "summary.json").exists()


def test_a_wrong_secret_fails_before_any_stage_and_is_never_printed(s3_server, tmp_path):
    bucket = s3_server.create_bucket()
    key, _ = s3_server.create_user()  # ministack checks signatures of IAM users, not of its root key
    wrong = "wrongSecretValue1234567890abcdefghijklmn"
    env = {**s3_server.env(key, wrong), "KFNLP_HOME": str(tmp_path / "home")}
    result = run_cli(
        "run", "ner", "--local", "--output", str(tmp_path / "out"), "--storage", f"s3://{bucket}/x", env=env
    )
    assert result.returncode != 0
    assert f"s3://{bucket}/x" in result.stderr and wrong not in result.stdout + result.stderr
    assert not (tmp_path / "out" / "summary.json").exists()


def _artifact(uri: str):
    from kfp import dsl

    return dsl.Model(uri=uri)


def test_stage_locations_follow_kfnlp_storage(monkeypatch, tmp_path):
    from kfnlp.launch.in_pod import destination, source

    local = str(tmp_path / "artifacts" / "ner-2026-11-23" / "train-ner" / "model")
    monkeypatch.delenv("KFNLP_STORAGE", raising=False)
    assert destination(_artifact(local)) == local and source(_artifact(local)) == local
    monkeypatch.setenv("KFNLP_STORAGE", "s3://team-bucket/runs/")
    out = _artifact(local)
    assert destination(out) == "s3://team-bucket/runs/ner-2026-11-23/train-ner/model" == out.uri
    assert source(out) == out.uri  # the next stage reads what this one wrote
    # an artifact that is not under the storage root (e.g. an importer's local file) is read in place
    assert source(_artifact(local)) == local


def test_checkpoints_default_next_to_an_s3_or_minio_output_on_a_cluster(monkeypatch):
    from kfnlp.launch.in_pod import with_checkpoint_dir
    from kfnlp.stages.train_mlm import TrainMlmConfig

    monkeypatch.delenv("KFNLP_STORAGE", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    root = "s3://ml/v2/artifacts/pipe/run-1/train-mlm/model"
    assert with_checkpoint_dir(TrainMlmConfig(), _artifact(root)).checkpoint_dir == root + "-checkpoints"
    minio = "minio://mlpipeline/v2/artifacts/pipe/run-1/train-mlm/model"
    assert with_checkpoint_dir(TrainMlmConfig(), _artifact(minio)).checkpoint_dir is None  # no endpoint: local
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://minio-service.kubeflow:9000")
    expected = "s3://mlpipeline/v2/artifacts/pipe/run-1/train-mlm/model-checkpoints"
    assert with_checkpoint_dir(TrainMlmConfig(), _artifact(minio)).checkpoint_dir == expected
    named = TrainMlmConfig(checkpoint_dir="s3://elsewhere/ckpt")
    assert with_checkpoint_dir(named, _artifact(root)).checkpoint_dir == "s3://elsewhere/ckpt"
    assert with_checkpoint_dir(TrainMlmConfig(), _artifact("/tmp/x/model")).checkpoint_dir is None


def test_a_stage_writing_to_a_read_only_bucket_fails_clearly_and_keeps_what_is_there(
    s3_bucket, tiny_dataset, tmp_path, monkeypatch
):
    """A stage's output on S3 under a bucket policy that denies writes: one error line naming the URI
    and the cause, exit 4, the stored artifact unchanged."""
    server = s3_bucket.server
    key, secret = server.create_user()
    env = {**server.env(key, secret), "KFNLP_HOME": str(tmp_path / "home")}
    out = s3_bucket.uri("eval-set")
    stage = ("stage", "mask-eval", "--dataset", str(tiny_dataset), "--output", out, "--set", "max_chunks=16")
    first = run_cli(*stage, env=env)
    assert first.returncode == 0, first.stderr

    def etags() -> dict[str, str]:
        client = server.client()
        return {k: client.head_object(Bucket=s3_bucket.name, Key=k)["ETag"] for k in s3_bucket.keys(prefix="")}

    before = etags()
    deny = {
        "Effect": "Deny",
        "Principal": "*",
        "Action": ["s3:PutObject", "s3:DeleteObject"],
        "Resource": f"arn:aws:s3:::{s3_bucket.name}/*",
    }
    policy = {"Version": "2012-10-17", "Statement": [deny]}
    server.client().put_bucket_policy(Bucket=s3_bucket.name, Policy=json.dumps(policy))
    second = run_cli(*stage[:-1], "max_chunks=32", env=env)
    assert second.returncode == 4
    lines = second.stderr.strip().splitlines()
    assert lines[-1].startswith(f"kfnlp: error: {out}: ") and "access denied" in lines[-1], second.stderr
    assert secret not in second.stderr
    assert etags() == before
    # what is stored still reads, and is the first run's
    from kfnlp.storage import read_any_manifest

    assert read_any_manifest(out, kind="eval_set")["counts"]["chunks"] == 16


def test_stage_inputs_read_from_s3_objects_and_prefixes(s3_bucket, tmp_path):
    """Raw inputs (corpus files, CoNLL files) on S3: a single object, or every object under a prefix."""
    from kfnlp.assets import builtin_data_file

    client = s3_bucket.server.client()
    conll = builtin_data_file("wnut16")
    client.upload_file(str(conll), s3_bucket.name, "raw/wnut/train.conll")
    lines = [f"review {i}: the film was {'great' if i % 2 else 'dull'} and the plot moved slowly" for i in range(400)]
    for part in range(2):
        body = "\n".join(lines[part::2]).encode()
        client.put_object(Bucket=s3_bucket.name, Key=f"raw/reviews/part-{part}.txt", Body=body)
    env = {"KFNLP_HOME": str(tmp_path / "home")}

    ner = run_cli(
        "stage",
        "preprocess-ner",
        "--output",
        str(tmp_path / "ner"),
        "--tokenizer",
        "builtin:splade-tiny",
        "--set",
        f"source={s3_bucket.uri('raw/wnut/train.conll')}",
        "--set",
        "max_sentences=200",
        env=env,
    )
    assert ner.returncode == 0, ner.stderr
    assert json.loads((tmp_path / "ner" / MANIFEST).read_text())["counts"]["train"]["sentences"] > 0

    mlm = run_cli(
        "stage",
        "preprocess",
        "--output",
        s3_bucket.uri("datasets/reviews"),
        "--tokenizer",
        "builtin:splade-tiny",
        "--set",
        f"source={s3_bucket.uri('raw/reviews')}",
        env=env,
    )
    assert mlm.returncode == 0, mlm.stderr
    from kfnlp.storage import read_any_manifest

    counts = read_any_manifest(s3_bucket.uri("datasets/reviews"), kind="dataset")["counts"]
    assert counts["train"]["documents"] + counts["test"]["documents"] == 400

    missing = run_cli(
        "stage",
        "preprocess",
        "--output",
        str(tmp_path / "x"),
        "--set",
        f"source={s3_bucket.uri('raw/nothing')}",
        env=env,
    )
    assert missing.returncode != 0
    last = missing.stderr.strip().splitlines()[-1]
    assert last.startswith("kfnlp: error: ") and f"{s3_bucket.uri('raw/nothing')}: no such object" in last, last
    assert not (tmp_path / "x").exists()
