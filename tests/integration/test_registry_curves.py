"""Training curves in MLflow: register logs the model's recorded step history (loss, learning rate,
grad norm, eval metrics, samples/s) as the step metrics of the run its version is created from, read
back through the MLflow client on the embedded store and on the loopback server."""

from __future__ import annotations

import json
import math
import uuid
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from kfnlp.registry import Registry
from kfnlp.registry.store import CURVE_PREFIX, curve_points
from tests.support.cli import MODEL


@pytest.fixture(params=["embedded", "server"])
def tracking_uri(request, tmp_path_factory) -> str:
    if request.param == "server":
        return request.getfixturevalue("mlflow_server").uri
    return f"sqlite:///{tmp_path_factory.mktemp('curves') / 'mlflow.db'}"


@pytest.fixture(scope="module")
def trained(tiny_dataset, tiny_eval_set, tmp_path_factory) -> tuple[Path, Path]:
    """A real train-mlm run that logs every step and evaluates every 2 steps, and its evaluation."""
    from kfnlp.stages.evaluate import EvaluateConfig, evaluate_mlm
    from kfnlp.stages.train_mlm import TrainMlmConfig, train_mlm

    root = tmp_path_factory.mktemp("curves-model")
    config = TrainMlmConfig(
        learning_rate=5e-4,
        batch_size=8,
        max_steps=4,
        logging_steps=1,
        eval_strategy="steps",
        eval_steps=2,
        save_steps=100,
        max_train_chunks=64,
        checkpoint_dir=str(root / "ckpt"),
    )
    train_mlm(str(tiny_dataset), str(tiny_eval_set), str(root / "model"), config, MODEL)
    evaluate_mlm(str(root / "model"), str(tiny_eval_set), str(root / "eval"), EvaluateConfig(prompts=[]))
    return root / "model", root / "eval"


def curves(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def test_the_registered_version_runs_curves_are_the_models_step_history(trained, tracking_uri):
    from kfnlp.stages.register import RegisterConfig, register

    model, evaluation = trained
    manifest = json.loads((model / "kfnlp-manifest.json").read_text())
    history, config = manifest["training"]["history"], manifest["training"]["config"]
    assert [row["step"] for row in history if "loss" in row] == [1, 2, 3, 4]
    assert [row["step"] for row in history if "eval_loss" in row] == [2, 4]
    assert {"learning_rate", "grad_norm", "epoch"} <= history[0].keys()
    assert {"eval_runtime", "eval_samples_per_second"} <= history[1].keys() | history[2].keys()

    name = f"curves-{uuid.uuid4().hex[:8]}"
    entry = register(str(model), str(evaluation), RegisterConfig(model_name=name, tracking_uri=tracking_uri))
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)  # a fresh client, as the UI reads
    assert client.get_model_version(name, "1").run_id == entry["run_id"]
    run = client.get_run(entry["run_id"])

    keys = {key for row in history for key in row} - {"step"}
    assert keys >= {"loss", "learning_rate", "grad_norm", "epoch", "eval_loss", "eval_samples_per_second"}
    for key in keys:
        logged = f"{CURVE_PREFIX}{key}" if key in entry["metrics"] else key
        expected = {row["step"]: row[key] for row in history if key in row}  # epoch: train and eval rows agree
        assert curves(client, run.info.run_id, logged) == sorted(expected.items()), key
    # the version's own eval_loss (the evaluation's) stays what the gate and `registry show` read
    result = json.loads((evaluation / "metrics.json").read_text())
    assert run.data.metrics["eval_loss"] == result["metrics"]["eval_loss"]
    assert curves(client, run.info.run_id, "eval_loss") == [(0, result["metrics"]["eval_loss"])]
    assert run.data.metrics["train_loss"] == manifest["training"]["train_loss"]
    # the training config as params
    assert run.data.params["learning_rate"] == str(config["learning_rate"]) == "0.0005"
    assert run.data.params["max_steps"] == "4" and set(run.data.params) == set(config)


def test_long_histories_go_in_batches_within_mlflows_limit(tmp_path, tracking_uri):
    """3 x 700 points: more than one log_batch of 1000; a non-finite value is kept as it was logged."""
    model = tmp_path / "stub-model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    history = [
        {"step": s, "loss": 1 / s, "learning_rate": 1e-3 * (1 - s / 700), "epoch": s / 70} for s in range(1, 701)
    ]
    history[9]["grad_norm"] = math.nan
    name = f"long-{uuid.uuid4().hex[:8]}"
    entry = Registry(tracking_uri).register(
        name, model, metrics={"perplexity": 9.0}, params={"lr": 1e-3}, tags={}, files={}, history=history
    )
    client = MlflowClient(tracking_uri=tracking_uri)
    for key in ("loss", "learning_rate", "epoch"):
        assert curves(client, entry["run_id"], key) == [(row["step"], row[key]) for row in history], key
    (nan,) = client.get_metric_history(entry["run_id"], "grad_norm")
    assert nan.step == 10 and math.isnan(nan.value)
    assert client.get_run(entry["run_id"]).data.metrics["perplexity"] == 9.0


def test_a_step_logged_twice_keeps_its_later_value_and_clashing_keys_are_prefixed():
    history = [{"step": 2, "loss": 3.0, "epoch": 0.5}, {"step": 2, "eval_loss": 2.5, "epoch": 0.5}]
    history += [{"step": 2, "loss": 2.9}, {"loss": 1.0}, {"step": 4, "loss": 2.0, "flag": True}]
    assert sorted(curve_points(history, {"eval_loss"})) == [
        ("epoch", 2, 0.5),
        ("loss", 2, 2.9),
        ("loss", 4, 2.0),
        (f"{CURVE_PREFIX}eval_loss", 2, 2.5),
    ]


def test_step_history_keeps_the_log_rows_by_step_without_the_totals_row():
    from kfnlp.training import step_history

    log_history = [
        {"loss": 3.0, "grad_norm": 1.5, "learning_rate": 1e-3, "epoch": 0.5, "step": 2},
        {"eval_loss": 2.8, "eval_runtime": 0.1, "eval_samples_per_second": 640.0, "epoch": 0.5, "step": 2},
        {"loss": 2.9, "grad_norm": 1.4, "learning_rate": 5e-4, "epoch": 1.0, "step": 4},
        {"loss": 2.95, "grad_norm": 1.3, "learning_rate": 5e-4, "epoch": 1.0, "step": 4},  # logged again
        {"train_runtime": 9.0, "train_samples_per_second": 7.1, "train_loss": 2.9, "epoch": 1.0, "step": 4},
    ]
    assert step_history(log_history) == [log_history[0], log_history[1], log_history[3]]


def test_secret_looking_params_are_left_out_and_uris_lose_credentials(caplog):
    from kfnlp.registry.store import safe_params

    assert safe_params({"checkpoint_dir": "https://u:p@host/x", "lr": 0.1}) == {
        "checkpoint_dir": "https://host/x",
        "lr": "0.1",
    }
    assert safe_params({"hf_token": "hf_x", "seed": 1}) == {"seed": "1"}
    assert "not recording the param 'hf_token'" in caplog.text and "hf_x" not in caplog.text
