"""The adapt-then-cls pipeline through `kfnlp run --local` (real kfp.local), on tiny sizes: the
comparison's primary metric is the two evaluations' accuracy, and the adapted classifier is the
registry's champion. (Both cls pipelines compile in tests/pipelines/test_compile.py and
tests/unit/test_components.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.cli import run_cli

TINY_ADAPT_CLS = [
    "--set",
    "preprocess_cls.max_examples=120",
    "--set",
    "preprocess_cls.max_length=64",
    "--set",
    "train_cls.num_epochs=1",
    "--set",
    "train_cls.batch_size=16",
    "--set",
    "train_mlm.max_steps=5",
    "--set",
    "train_mlm.batch_size=8",
    "--set",
    "preprocess.chunk_size=64",
    "--set",
    "mask_eval.max_chunks=16",
    "--set",
    "compare.bootstrap_samples=200",
]


@pytest.fixture(scope="module")
def adapt_cls_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("adapt-then-cls")
    home = tmp_path_factory.mktemp("home")
    result = run_cli(
        "run", "adapt-then-cls", "--local", "--output", str(out), *TINY_ADAPT_CLS, env={"KFNLP_HOME": str(home)}
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out, json.loads((out / "summary.json").read_text()), result


def test_adapt_then_cls_compares_accuracy_on_the_same_test_split(adapt_cls_run):
    out, summary, result = adapt_cls_run
    assert summary["pipeline"] == "adapt-then-cls" and summary["status"] == "succeeded"
    names = [s["name"] for s in summary["stages"]]
    assert names.index("train-mlm") < names.index("train-cls-adapted") < names.index("evaluate-cls-adapted")
    assert names.index("compare") > max(names.index("evaluate-cls-base"), names.index("evaluate-cls-adapted"))
    metrics = summary["metrics"]
    base, adapted = metrics["cls-base"], metrics["cls-adapted"]
    assert base["examples"] == adapted["examples"] > 0
    comparison = metrics["comparison"]
    primary = comparison["primary"]
    assert comparison["task"] == "cls" and primary["name"] == "accuracy"
    assert primary["base"] == pytest.approx(base["accuracy"], abs=1e-12)
    assert primary["adapted"] == pytest.approx(adapted["accuracy"], abs=1e-12)
    assert primary["delta"] == pytest.approx(adapted["accuracy"] - base["accuracy"], abs=1e-12)
    assert primary["samples"] == 200 and primary["low"] <= primary["delta"] <= primary["high"]
    assert 0 <= primary["p_adapted_better"] <= 1
    assert comparison["metrics"]["macro_f1"]["base"] == pytest.approx(base["macro_f1"])
    assert comparison["perplexity"]["adapted"] == pytest.approx(metrics["perplexity_after"])
    assert comparison["verdict"].split(":")[0] in ("adaptation helped", "adaptation hurt", "no clear difference")
    assert f"verdict:  {comparison['verdict']}" in result.stdout and "accuracy (cls-adapted):" in result.stdout
    report = (out / "report.md").read_text()
    assert "Does domain adaptation help text classification?" in report and "predict text-classification" in report
    comparison_report = Path(summary["artifacts"]["comparison"], "report.md").read_text()
    assert "Per class (F1)" in comparison_report and comparison["verdict"] in comparison_report
    # the masked-LM adapted on the classifier's training texts, not on another corpus
    counts = metrics["data"]["preprocess"]
    assert (
        counts["train"]["documents"] + counts["test"]["documents"]
        == metrics["data"]["preprocess-cls"]["train"]["examples"]
    )


def test_adapt_then_cls_registers_the_adapted_classifier_as_champion(adapt_cls_run):
    from mlflow.tracking import MlflowClient

    _, summary, _ = adapt_cls_run
    artifacts = summary["artifacts"]
    assert artifacts["model"] == artifacts["models"]["train-cls-adapted"]
    manifest = json.loads(Path(artifacts["model"], "kfnlp-manifest.json").read_text())
    assert manifest["base_model"] == artifacts["models"]["train-mlm"]
    assert summary["metrics"]["promotion"]["outcome"] == "promoted"  # the first version of a fresh registry
    reg = artifacts["registry"]
    assert reg["name"] == "kfnlp-cls-imdb-adapted"
    client = MlflowClient(tracking_uri=reg["tracking_uri"], registry_uri=reg["tracking_uri"])
    champion = client.get_model_version_by_alias(reg["name"], "champion")
    assert str(champion.version) == str(reg["version"])
    assert champion.tags["kfnlp.task"] == "text-classification"
    assert champion.tags["kfnlp.primary_metric"] == "accuracy"
    run = client.get_run(champion.run_id)
    assert run.data.metrics["accuracy"] == pytest.approx(summary["metrics"]["cls-adapted"]["accuracy"])
    assert run.data.metrics["accuracy_base"] == pytest.approx(summary["metrics"]["cls-base"]["accuracy"])
