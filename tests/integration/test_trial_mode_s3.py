"""A sweep's failed trial with ``$KFNLP_STORAGE`` on a real S3 server: the record lands where the stage
writes its output (on S3, the artifact's URI pointed there), and the next stage reads it from there."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from kfp import dsl

from kfnlp.components.evaluate_ner.component import evaluate_ner
from kfnlp.components.train_ner.component import train_ner
from kfnlp.launch.in_pod import STORAGE_ENV
from kfnlp.storage import read_any_manifest
from kfnlp.sweep import FAILED_TRIAL_KIND, TRIAL_ENV

MODEL = "builtin:splade-tiny"
CONFIG = {"num_epochs": 1, "batch_size": 16, "save_strategy": "no"}


@pytest.fixture(scope="module")
def ner_dataset(tmp_path_factory) -> Path:
    from kfnlp.stages.preprocess_ner import NerPreprocessConfig, preprocess_ner

    out = tmp_path_factory.mktemp("trial") / "dataset"
    preprocess_ner(str(out), NerPreprocessConfig(max_sentences=200), MODEL)
    return out


def train(dataset: Path, model: dsl.Model, trial: dict) -> None:
    train_ner.python_func(
        config=json.dumps(CONFIG),
        dataset=dsl.Dataset(uri=str(dataset)),
        model=model,
        base_model_ref=MODEL,
        trial=json.dumps(trial),
    )


def test_a_failed_trial_is_recorded_on_s3_and_read_from_there(s3_bucket, ner_dataset, tmp_path, monkeypatch):
    monkeypatch.setenv(TRIAL_ENV, "1")
    monkeypatch.setenv(STORAGE_ENV, s3_bucket.uri("runs"))
    run = tmp_path / "sweep-run"
    model = dsl.Model(uri=str(run / "for-loop-1-iteration-0" / "train-ner" / "model"))
    train(ner_dataset, model, {"checkpoint_dir": "/dev/null/x"})
    assert model.uri == s3_bucket.uri("runs/for-loop-1-iteration-0/train-ner/model")
    record = read_any_manifest(model.uri, FAILED_TRIAL_KIND)
    assert record["stage"] == "train-ner" and "Not a directory" in record["error"]
    assert not Path(model.path).exists()  # nothing local that a reader could take for the output

    task = run / "for-loop-1-iteration-0" / "evaluate-ner"
    results = dsl.Artifact(uri=str(task / "results"))
    metrics, report = dsl.Metrics(uri=str(task / "metrics")), dsl.Markdown(uri=str(task / "report"))
    html, confusion = dsl.HTML(uri=str(task / "html")), dsl.ClassificationMetrics(uri=str(task / "confusion"))
    evaluate_ner.python_func(
        config="{}",
        label="trial",
        dataset=dsl.Dataset(uri=str(ner_dataset)),
        model=model,
        results=results,
        metrics=metrics,
        report=report,
        html=html,
        confusion=confusion,
    )
    assert results.uri == s3_bucket.uri("runs/for-loop-1-iteration-0/evaluate-ner/results")
    evaluation = read_any_manifest(results.uri, FAILED_TRIAL_KIND)
    assert evaluation["stage"] == "evaluate-ner" and "found 'failed-trial'" in evaluation["error"]
    assert Path(metrics.path).read_bytes() == Path(report.path).read_bytes() == b""
    assert Path(html.path).read_bytes() == Path(confusion.path).read_bytes() == b""


def test_a_diverged_trial_replaces_its_model_on_s3(s3_bucket, ner_dataset, tmp_path, monkeypatch):
    monkeypatch.setenv(TRIAL_ENV, "1")
    monkeypatch.setenv(STORAGE_ENV, s3_bucket.uri("runs"))
    model = dsl.Model(uri=str(tmp_path / "sweep-run" / "train-ner" / "model"))
    train(ner_dataset, model, {"learning_rate": 1e30, "eval_strategy": "no"})
    record = read_any_manifest(model.uri, FAILED_TRIAL_KIND)
    assert record["error"].startswith("the trial diverged: non-finite weights")
    assert record["values"] == {"learning_rate": 1e30, "eval_strategy": "no"}
