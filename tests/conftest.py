"""Shared fixtures: an isolated kfnlp home, offline Hub, and small real artifacts
built once per session from the embedded model and IMDB reviews."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")

from tests.support.cli import MODEL, REPO, run_cli  # noqa: F401  (REPO, run_cli: for the fixtures below)


@pytest.fixture(autouse=True)
def kfnlp_home(tmp_path_factory, monkeypatch) -> Path:
    """Each test gets its own registry/home directory."""
    home = tmp_path_factory.mktemp("kfnlp-home")
    monkeypatch.setenv("KFNLP_HOME", str(home))
    return home


@pytest.fixture(autouse=True)
def kfnlp_logger():
    """The ``kfnlp`` logger as it was before the test: a test that runs ``kfnlp.cli.main`` in this process
    (which configures the logger, as a command does for its process) leaves no handler or level to the next."""
    import logging

    logger = logging.getLogger("kfnlp")
    saved = (list(logger.handlers), logger.propagate, logger.level)
    yield logger
    logger.handlers[:], logger.propagate, logger.level = saved[0], saved[1], saved[2]


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """A preprocessed IMDB sample (300 reviews) as a dataset artifact."""
    from kfnlp.stages.preprocess import PreprocessConfig, preprocess

    out = tmp_path_factory.mktemp("artifacts") / "dataset"
    preprocess(str(out), PreprocessConfig(max_documents=300, test_size=0.2), tokenizer=MODEL)
    return out


@pytest.fixture(scope="session")
def tiny_eval_set(tiny_dataset, tmp_path_factory) -> Path:
    from kfnlp.stages.mask_eval import MaskEvalConfig, mask_eval

    out = tmp_path_factory.mktemp("artifacts") / "eval_set"
    mask_eval(str(tiny_dataset), str(out), MaskEvalConfig(max_chunks=64))
    return out


def _serve(server, unavailable: type[Exception]):
    """Start a loopback test server for the session; fail (never skip) when its venv is
    missing: CI must not pass without the tests that need it."""
    failure = None
    try:
        server.start()
    except unavailable as exc:
        failure = str(exc)
    if failure:
        pytest.fail(failure, pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A real ``mlflow server`` on a free loopback port for the whole session (started on
    first use, 10-25 s): an ``MlflowServer`` whose ``.uri`` is the tracking URI. Tests may
    ``stop()`` and ``start()`` it again (same store, same port)."""
    from tests.support.mlflow_server import MlflowServer, ServerUnavailable

    yield from _serve(MlflowServer(tmp_path_factory.mktemp("mlflow-server")), ServerUnavailable)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A real S3-compatible server (ministack) on a free loopback port for the whole session
    (started on first use, ~0.5 s): an ``S3Server`` whose ``.uri`` is the endpoint. Tests may
    ``stop()``/``kill()`` and ``start()`` it again (same objects, same port)."""
    from tests.support.s3_server import S3Server, ServerUnavailable

    yield from _serve(S3Server(tmp_path_factory.mktemp("s3-server")), ServerUnavailable)


@pytest.fixture(scope="session")
def adapt_then_ner_on_s3(s3_server, tmp_path_factory):
    """One ``kfnlp run adapt-then-ner --local --storage s3://...`` at tiny sizes (about 100 s), every
    artifact on ``s3_server``: what both the pipeline's checks (tests/pipelines/test_pipeline_ner.py)
    and the S3 storage checks (tests/integration/test_pipeline_s3.py) look at, run once. A dict:
    server, bucket, storage, out, home, summary, result."""
    from tests.pipelines.test_pipeline_ner import TINY_ADAPT

    s3_server.start()  # a test before may have stopped it
    bucket = s3_server.create_bucket()
    out, home, cwd = (tmp_path_factory.mktemp(name) for name in ("adapt-then-ner", "home", "cwd"))
    storage = f"s3://{bucket}/team/runs"
    args = ("run", "adapt-then-ner", "--local", "--output", str(out), "--storage", storage, *TINY_ADAPT)
    result = run_cli(*args, env={**s3_server.env(), "KFNLP_HOME": str(home)}, cwd=cwd)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert list(cwd.iterdir()) == []  # nothing written to a local path that looks like the URI
    summary = json.loads((out / "summary.json").read_text())
    return {
        "server": s3_server, "bucket": bucket, "storage": storage, "out": out, "home": home,
        "summary": summary, "result": result,
    }  # fmt: skip


@pytest.fixture
def s3_bucket(s3_server, monkeypatch, tmp_path):
    """A fresh bucket on ``s3_server`` and the standard AWS environment (endpoint, fake root keys)
    pointing at it, isolated from any AWS config on the machine. ``s3_bucket.uri("x")`` is
    ``s3://<bucket>/x``. (ministack keeps only objects on disk: an empty bucket does not survive
    a restart of the server.)"""
    from tests.support.s3_server import S3Bucket

    s3_server.start()  # a test before may have stopped it
    for name in list(os.environ):
        if name.startswith(("AWS_", "KFNLP_S3_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    return S3Bucket(s3_server, s3_server.create_bucket())


@pytest.fixture(scope="session")
def entity_model(tmp_path_factory) -> Path:
    """A token classifier from preprocess-ner and train-ner on a CoNLL file where places and people are easy to
    learn (a few seconds: it must find entities for the grouping to be tested): for kfnlp serve and the client of a
    deployed model."""
    from kfnlp.stages.preprocess_ner import NerPreprocessConfig, preprocess_ner
    from kfnlp.stages.train_ner import TrainNerConfig, train_ner

    root = tmp_path_factory.mktemp("entity-model")
    places, people = ["Paris", "London", "Berlin", "Madrid"], ["Obama", "Merkel", "Macron", "Sunak"]
    lines = []
    for i in range(80):
        place, person = places[i % 4], people[(i // 4) % 4]
        words = [("we", "O"), ("met", "O"), (person, "B-PER"), ("in", "O"), (place, "B-LOC"), (f"on day {i}", "O")]
        lines += [f"{w} {tag}" for word, tag in words for w in word.split()] + [""]
    (root / "train.conll").write_text("\n".join(lines), encoding="utf-8")
    preprocess_ner(str(root / "dataset"), NerPreprocessConfig(source=str(root / "train.conll")), "builtin:splade-tiny")
    config = TrainNerConfig(learning_rate=5e-3, batch_size=16, max_steps=24, logging_steps=50, save_strategy="no")
    train_ner(str(root / "dataset"), str(root / "model"), config, "builtin:splade-tiny")
    return root / "model"


@pytest.fixture(scope="session")
def sentiment_model(tmp_path_factory) -> Path:
    """An IMDB sentiment classifier, from preprocess-cls and a few steps of train-cls."""
    from kfnlp.stages.preprocess_cls import PreprocessClsConfig, preprocess_cls
    from kfnlp.stages.train_cls import TrainClsConfig, train_cls

    root = tmp_path_factory.mktemp("sentiment-model")
    preprocess_cls(str(root / "dataset"), PreprocessClsConfig(max_examples=16, max_length=64), "builtin:splade-tiny")
    config = TrainClsConfig(learning_rate=1e-3, batch_size=8, max_steps=2, logging_steps=50, save_strategy="no")
    train_cls(str(root / "dataset"), str(root / "model"), config, "builtin:splade-tiny")
    return root / "model"
