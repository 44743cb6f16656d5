"""Shared fixtures: an isolated kfnlp home, offline Hub, and small real artifacts
built once per session from the embedded model and IMDB reviews."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")

REPO = Path(__file__).resolve().parent.parent
MODEL = "builtin:splade-tiny"


@pytest.fixture(autouse=True)
def kfnlp_home(tmp_path_factory, monkeypatch) -> Path:
    """Each test gets its own registry/home directory."""
    home = tmp_path_factory.mktemp("kfnlp-home")
    monkeypatch.setenv("KFNLP_HOME", str(home))
    return home


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


def run_cli(*args: str, env: dict | None = None, cwd: Path | None = None, timeout: int = 600):
    """Run the installed ``kfnlp`` command as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "kfnlp", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=cwd,
        timeout=timeout,
    )


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A real ``mlflow server`` on a free loopback port for the whole session (started on
    first use, 10-25 s): an ``MlflowServer`` whose ``.uri`` is the tracking URI. Tests may
    ``stop()`` and ``start()`` it again (same store, same port). Without the server venv the
    tests fail, never skip: CI must not pass without the server-mode tests."""
    from tests.mlflow_server import MlflowServer, ServerUnavailable

    server = MlflowServer(tmp_path_factory.mktemp("mlflow-server"))
    failure = None
    try:
        server.start()
    except ServerUnavailable as exc:
        failure = str(exc)
    if failure:
        pytest.fail(failure, pytrace=False)
    try:
        yield server
    finally:
        server.stop()
