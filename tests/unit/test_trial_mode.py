"""A sweep's trial in the pod: the real train and evaluate components on a tiny real NER dataset.

Under ``$KFNLP_SWEEP_TRIAL`` a failing trial leaves a failed-trial record where its output goes and
returns (a failing task would fail the whole sweep); without it the component fails as it always
did. A trial's values reach the training; a diverged training is a failed trial.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from kfp import dsl

from kfnlp.components.evaluate_ner.component import evaluate_ner
from kfnlp.components.train_ner.component import train_ner
from kfnlp.errors import ConfigError, StorageError
from kfnlp.launch.in_pod import ERROR_FILE, STATUS_KEY
from kfnlp.storage import MANIFEST, read_manifest
from kfnlp.sweep import FAILED_TRIAL_KIND, TRIAL_ENV

MODEL = "builtin:splade-tiny"
CONFIG = {"num_epochs": 1, "batch_size": 16, "learning_rate": 1e-3, "save_strategy": "no", "logging_steps": 5}
BROKEN = {"checkpoint_dir": "/dev/null/x", "learning_rate": 5e-4}  # fails once training sets up its checkpoints


@pytest.fixture(scope="module")
def ner_dataset(tmp_path_factory) -> Path:
    from kfnlp.stages.preprocess_ner import NerPreprocessConfig, preprocess_ner

    out = tmp_path_factory.mktemp("trial") / "dataset"
    preprocess_ner(str(out), NerPreprocessConfig(max_sentences=200), MODEL)
    return out


def train(dataset: Path, task_dir: Path, trial: dict | None, config: dict = CONFIG) -> dsl.Model:
    """The train-ner component's body, as KFP's executor calls it, writing ``task_dir/model``."""
    model = dsl.Model(uri=str(task_dir / "model"))
    train_ner.python_func(
        config=json.dumps(config),
        dataset=dsl.Dataset(uri=str(dataset)),
        model=model,
        base_model_ref=MODEL,
        trial=json.dumps(trial) if trial is not None else "",
    )
    return model


def evaluate_outputs(task_dir: Path) -> dict:
    return {
        "results": dsl.Artifact(uri=str(task_dir / "results")),
        "metrics": dsl.Metrics(uri=str(task_dir / "metrics")),
        "report": dsl.Markdown(uri=str(task_dir / "report")),
        "html": dsl.HTML(uri=str(task_dir / "html")),
        "confusion": dsl.ClassificationMetrics(uri=str(task_dir / "confusion")),
    }


@pytest.fixture(scope="module")
def failed_trial(ner_dataset, tmp_path_factory) -> tuple[dsl.Model, Path]:
    """A train-ner trial that fails at run time, in trial mode."""
    task_dir = tmp_path_factory.mktemp("run") / "train-ner"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(TRIAL_ENV, "1")
        model = train(ner_dataset, task_dir, BROKEN)
    return model, task_dir


def test_a_failing_trial_records_its_failure_where_its_model_goes_and_returns(failed_trial):
    model, task_dir = failed_trial
    record = read_manifest(task_dir / "model", FAILED_TRIAL_KIND)
    assert record["stage"] == "train-ner"
    assert record["type"] == "NotADirectoryError"
    assert record["error"].startswith("NotADirectoryError: ") and "Not a directory" in record["error"]
    assert "\n" not in record["error"]
    assert record["values"] == BROKEN
    assert record["files"] == []
    assert not (task_dir / ERROR_FILE).exists()  # the task succeeded: kfnlp run must not call it failed
    assert model.metadata[STATUS_KEY]["stage"] == "train-ner"
    assert "Not a directory" in model.metadata[STATUS_KEY]["trial_failed"]
    with pytest.raises(StorageError, match="expected a model artifact, found 'failed-trial'"):
        read_manifest(task_dir / "model", "model")  # what a reader of models sees


def test_without_the_variable_the_same_trial_fails_as_before(ner_dataset, tmp_path, monkeypatch):
    monkeypatch.delenv(TRIAL_ENV, raising=False)
    task_dir = tmp_path / "train-ner"
    with pytest.raises(NotADirectoryError):
        train(ner_dataset, task_dir, BROKEN)
    assert not (task_dir / "model" / MANIFEST).exists()  # nothing that looks complete


def test_an_empty_variable_is_no_trial(ner_dataset, tmp_path, monkeypatch):
    monkeypatch.setenv(TRIAL_ENV, "")
    with pytest.raises(NotADirectoryError):
        train(ner_dataset, tmp_path / "train-ner", BROKEN)


def test_a_trials_values_reach_the_training(ner_dataset, tmp_path, monkeypatch):
    monkeypatch.setenv(TRIAL_ENV, "1")
    values = {"learning_rate": 5e-4, "seed": 7, "max_train_sentences": 100}
    model = train(ner_dataset, tmp_path / "train-ner", values)
    manifest = read_manifest(tmp_path / "train-ner" / "model", "model")
    trained = manifest["training"]["config"]
    assert (trained["learning_rate"], trained["seed"], trained["max_train_sentences"]) == (5e-4, 7, 100)
    assert (trained["batch_size"], trained["num_epochs"]) == (16, 1.0)  # the rest from the config
    assert manifest["training"]["global_step"] == 7  # 100 sentences in batches of 16, one epoch
    assert "trial_failed" not in model.metadata[STATUS_KEY]


def test_a_trial_value_the_config_refuses_is_a_failed_trial(ner_dataset, tmp_path, monkeypatch):
    monkeypatch.setenv(TRIAL_ENV, "1")
    train(ner_dataset, tmp_path / "train-ner", {"learning_rate": -1.0})
    record = read_manifest(tmp_path / "train-ner" / "model", FAILED_TRIAL_KIND)
    assert record["type"] == "ConfigError" and "learning_rate" in record["error"]
    assert record["values"] == {"learning_rate": -1.0}


def test_a_diverged_trial_is_a_failed_trial(ner_dataset, tmp_path, monkeypatch):
    """At a learning rate of 1e30 every weight turns nan; the Trainer leaves nan step losses out of
    its train loss (0.38 here) and, without evaluations, nothing else says so: the weights do."""
    monkeypatch.setenv(TRIAL_ENV, "1")
    task_dir = tmp_path / "train-ner"
    train(ner_dataset, task_dir, {"learning_rate": 1e30, "eval_strategy": "no"})
    record = read_manifest(task_dir / "model", FAILED_TRIAL_KIND)  # it replaced the trained model
    assert record["error"].startswith("the trial diverged: non-finite weights (model.safetensors: ")
    assert record["type"] == "KfnlpError"
    assert sorted(path.name for path in (task_dir / "model").iterdir()) == [MANIFEST]
    assert not [path.name for path in task_dir.iterdir() if path.name.startswith(".")]  # no staging left


def test_a_diverged_evaluation_loss_is_a_failed_trial(ner_dataset, tmp_path, monkeypatch):
    monkeypatch.setenv(TRIAL_ENV, "1")
    train(ner_dataset, tmp_path / "train-ner", {"learning_rate": 1e30})
    record = read_manifest(tmp_path / "train-ner" / "model", FAILED_TRIAL_KIND)
    assert record["error"] == "the trial diverged: last eval loss nan"


def test_an_evaluation_of_a_failed_trial_records_its_own_failure(failed_trial, ner_dataset, tmp_path, monkeypatch):
    monkeypatch.setenv(TRIAL_ENV, "1")
    model, _ = failed_trial
    outputs = evaluate_outputs(tmp_path / "evaluate-ner")
    outputs["metrics"].log_metric("f1", 0.5)  # as if logged before a failure: a failed trial has none
    evaluate_ner.python_func(
        config="{}", label="trial", dataset=dsl.Dataset(uri=str(ner_dataset)), model=model, **outputs
    )
    record = read_manifest(tmp_path / "evaluate-ner" / "results", FAILED_TRIAL_KIND)
    assert record["stage"] == "evaluate-ner" and record["type"] == "ConfigError"
    assert record["error"].endswith(": a failed-trial artifact, not a model")
    assert record["values"] is None
    # the other outputs exist, empty: kfp.local's cache needs them
    for name in ("metrics", "report", "html", "confusion"):
        assert Path(outputs[name].path).read_bytes() == b""
    assert outputs["metrics"].metadata == {}
    assert not (tmp_path / "evaluate-ner" / ERROR_FILE).exists()


def test_without_the_variable_an_evaluation_of_a_failed_trial_fails_as_before(
    failed_trial, ner_dataset, tmp_path, monkeypatch
):
    monkeypatch.delenv(TRIAL_ENV, raising=False)
    model, _ = failed_trial
    with pytest.raises(SystemExit) as exited:
        evaluate_ner.python_func(
            config="{}",
            label="trial",
            dataset=dsl.Dataset(uri=str(ner_dataset)),
            model=model,
            **evaluate_outputs(tmp_path / "evaluate-ner"),
        )
    assert exited.value.code == ConfigError.exit_code
    error = json.loads((tmp_path / "evaluate-ner" / ERROR_FILE).read_text(encoding="utf-8"))
    assert error["stage"] == "evaluate-ner" and error["type"] == "ConfigError"
    assert not (tmp_path / "evaluate-ner" / "results").exists()


def test_a_failed_trial_that_cannot_be_recorded_fails_the_task(failed_trial, ner_dataset, tmp_path, monkeypatch):
    """The record goes where the output goes; where nothing may be written, the task fails as without a sweep."""
    monkeypatch.setenv(TRIAL_ENV, "1")
    model, _ = failed_trial
    task_dir = tmp_path / "evaluate-ner"
    (task_dir / "results").mkdir(parents=True)
    (task_dir / "results" / "notes.txt").write_text("someone else's", encoding="utf-8")
    with pytest.raises(SystemExit) as exited:
        evaluate_ner.python_func(
            config="{}",
            label="trial",
            dataset=dsl.Dataset(uri=str(ner_dataset)),
            model=model,
            **evaluate_outputs(task_dir),
        )
    assert exited.value.code == ConfigError.exit_code  # the stage's own error, as without a sweep
    assert json.loads((task_dir / ERROR_FILE).read_text(encoding="utf-8"))["type"] == "ConfigError"
    assert (task_dir / "results" / "notes.txt").read_text(encoding="utf-8") == "someone else's"


EVALUATE = textwrap.dedent(
    """
    import sys
    from kfp import dsl
    from kfnlp.components.evaluate_ner.component import evaluate_ner

    dataset, model, out = sys.argv[1:]
    evaluate_ner.python_func(
        config="{}", label="trial", dataset=dsl.Dataset(uri=dataset), model=dsl.Model(uri=model),
        results=dsl.Artifact(uri=out + "/results"), metrics=dsl.Metrics(uri=out + "/metrics"),
        report=dsl.Markdown(uri=out + "/report"), html=dsl.HTML(uri=out + "/html"),
        confusion=dsl.ClassificationMetrics(uri=out + "/confusion"),
    )
    """
)


@pytest.mark.parametrize("trial", [True, False])
def test_the_process_exit_status(trial, failed_trial, ner_dataset, tmp_path):
    """What KFP sees: a failed trial's process exits 0 with one log line; outside a sweep it exits with the error's code."""
    env = {k: v for k, v in os.environ.items() if k != TRIAL_ENV}
    if trial:
        env[TRIAL_ENV] = "1"
    model, _ = failed_trial
    args = [str(ner_dataset), model.uri, str(tmp_path / "evaluate-ner")]
    result = subprocess.run(
        [sys.executable, "-c", EVALUATE, *args], env=env, capture_output=True, text=True, timeout=120
    )
    if trial:
        assert result.returncode == 0, result.stderr
        assert "kfnlp evaluate-ner: trial failed: " in result.stderr
        assert "Traceback" not in result.stderr  # a kfnlp error is one line
    else:
        assert result.returncode == ConfigError.exit_code
        assert "kfnlp evaluate-ner: error: " in result.stderr
