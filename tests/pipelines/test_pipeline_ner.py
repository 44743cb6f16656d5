"""The ner and adapt-then-ner pipelines through `kfnlp run --local` (real kfp.local), on tiny sizes.
adapt-then-ner is the session's run with its artifacts on the loopback S3 server (tests/conftest.py),
which tests/integration/test_pipeline_s3.py checks too: one run of ~100 s, not two."""

from __future__ import annotations

import json

import pytest

from kfnlp.storage import open_artifact, read_any_manifest
from tests.support.cli import run_cli

TINY_NER = [
    "--set",
    "model=builtin:splade-tiny",
    "--set",
    "preprocess_ner.max_sentences=300",
    "--set",
    "train_ner.num_epochs=2",
    "--set",
    "train_ner.learning_rate=1e-3",
    "--set",
    "train_ner.batch_size=16",
]
TINY_ADAPT = [
    *TINY_NER,
    "--set",
    "train_mlm.max_steps=10",
    "--set",
    "train_mlm.batch_size=8",
    "--set",
    "mask_eval.max_chunks=16",
    "--set",
    "compare.bootstrap_samples=200",
]


def _run(name: str, args: list[str], tmp_path_factory):
    out = tmp_path_factory.mktemp(name)
    home = tmp_path_factory.mktemp("home")
    result = run_cli("run", name, "--local", "--output", str(out), *args, env={"KFNLP_HOME": str(home)})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out, json.loads((out / "summary.json").read_text()), result


@pytest.fixture(scope="module")
def ner_run(tmp_path_factory):
    return _run("ner", TINY_NER, tmp_path_factory)


@pytest.fixture
def adapt_run(adapt_then_ner_on_s3, monkeypatch):
    """The run's output directory, summary and CLI result; its artifacts read through kfnlp.storage."""
    run = adapt_then_ner_on_s3
    run["server"].start()  # a test before may have stopped it
    for name, value in run["server"].env().items():
        monkeypatch.setenv(name, value)
    return run["out"], run["summary"], run["result"]


def test_ner_pipeline_trains_scores_and_registers(ner_run):
    out, summary, result = ner_run
    assert summary["pipeline"] == "ner" and summary["status"] == "succeeded"
    names = [s["name"] for s in summary["stages"]]
    assert names == ["preprocess-ner", "train-ner", "evaluate-ner", "register", "promote"]
    assert summary["metrics"]["promotion"]["outcome"] == "promoted"  # the first version of a fresh registry
    metrics = summary["metrics"]["ner"]
    assert 0 <= metrics["f1"] <= 1 and metrics["entities"] > 0
    assert summary["artifacts"]["registry"]["name"] == "kfnlp-ner-wnut16"
    assert summary["artifacts"]["model"] == summary["artifacts"]["models"]["train-ner"]
    assert "NER F1 (ner):" in result.stdout
    report = (out / "report.md").read_text()
    assert "| ner |" in report and "token-classification" in report


def test_ner_registry_version_carries_f1_as_primary_metric(ner_run):
    from mlflow.tracking import MlflowClient

    _, summary, _ = ner_run
    reg = summary["artifacts"]["registry"]
    client = MlflowClient(tracking_uri=reg["tracking_uri"], registry_uri=reg["tracking_uri"])
    version = client.get_model_version(reg["name"], str(reg["version"]))
    assert version.tags["kfnlp.task"] == "token-classification"
    assert version.tags["kfnlp.primary_metric"] == "f1"
    run = client.get_run(version.run_id)
    assert run.data.metrics["f1"] == pytest.approx(summary["metrics"]["ner"]["f1"])


def test_adapt_then_ner_compares_base_and_adapted_on_the_same_split(adapt_run):
    out, summary, result = adapt_run
    assert summary["status"] == "succeeded"
    names = [s["name"] for s in summary["stages"]]
    assert sorted(names) == sorted(
        [
            "preprocess-ner",
            "preprocess",
            "mask-eval",
            "evaluate-base",
            "train-mlm",
            "evaluate-adapted",
            "train-ner-base",
            "train-ner-adapted",
            "evaluate-ner-base",
            "evaluate-ner-adapted",
            "compare",
            "register",
            "promote",
        ]
    )
    assert names.index("train-mlm") < names.index("train-ner-adapted") < names.index("evaluate-ner-adapted")
    assert names.index("compare") > max(names.index("evaluate-ner-base"), names.index("evaluate-ner-adapted"))
    metrics = summary["metrics"]
    base, adapted = metrics["ner-base"], metrics["ner-adapted"]
    assert base["sentences"] == adapted["sentences"] and base["entities"] == adapted["entities"]
    comparison = metrics["comparison"]
    assert comparison["metrics"]["f1"]["delta"] == pytest.approx(adapted["f1"] - base["f1"])
    assert comparison["perplexity"]["adapted"] == pytest.approx(metrics["perplexity_after"])
    assert comparison["primary"]["name"] == "f1" and comparison["primary"]["base"] == pytest.approx(base["f1"])
    assert comparison["winner"] in ("base", "adapted", "tie") and comparison["verdict"]
    assert "verdict:" in result.stdout
    report = (out / "report.md").read_text()
    assert "Does domain adaptation help NER?" in report
    comparison_dir, _ = open_artifact(summary["artifacts"]["comparison"], kind="comparison")
    comparison_report = (comparison_dir / "report.md").read_text()
    assert "Per entity type" in comparison_report and comparison["verdict"] in comparison_report
    # the masked-LM adapted on the NER training sentences, not on another corpus
    counts = metrics["data"]["preprocess"]
    ner_counts = metrics["data"]["preprocess-ner"]
    assert counts["train"]["documents"] + counts["test"]["documents"] == ner_counts["train"]["sentences"]


def test_adapt_then_ner_registers_the_adapted_encoder_model(adapt_run):
    _, summary, _ = adapt_run
    artifacts = summary["artifacts"]
    assert artifacts["model"] == artifacts["models"]["train-ner-adapted"]
    manifest = read_any_manifest(artifacts["model"], kind="model")
    assert manifest["base_model"] == artifacts["models"]["train-mlm"]
