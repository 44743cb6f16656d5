"""The whole mlm-adapt pipeline through `kfnlp run --local` (real kfp.local), on tiny sizes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.cli import run_cli

TINY = [
    "--set",
    "preprocess.max_documents=300",
    "--set",
    "mask_eval.max_chunks=64",
    "--set",
    "train_mlm.max_steps=40",
    "--set",
    "train_mlm.batch_size=16",
    "--set",
    "train_mlm.logging_steps=20",
    "--set",
    "evaluate.batch_size=32",
]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    home = tmp_path_factory.mktemp("home")
    result = run_cli("run", "mlm-adapt", "--local", "--output", str(out), *TINY, env={"KFNLP_HOME": str(home)})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out, home, result


def test_summary_lists_every_stage_with_status_time_and_artifacts(finished_run):
    out, _, result = finished_run
    summary = json.loads((out / "summary.json").read_text())
    assert summary["pipeline"] == "mlm-adapt" and summary["status"] == "succeeded"
    names = [s["name"] for s in summary["stages"]]
    # in execution order; kfp.local may run evaluate-base anywhere after mask-eval
    assert sorted(names) == sorted(
        ["preprocess", "mask-eval", "evaluate-base", "train-mlm", "evaluate-adapted", "register", "promote"]
    )
    assert names[:2] == ["preprocess", "mask-eval"] and names[-2:] == ["register", "promote"]
    assert names.index("train-mlm") < names.index("evaluate-adapted")
    assert all(s["status"] == "succeeded" and s["wall_time_s"] > 0 for s in summary["stages"])
    assert summary["parameters"]["train_mlm"]["max_steps"] == 40
    assert summary["parameters"]["preprocess"]["max_documents"] == 300
    datasets = summary["artifacts"]["datasets"]
    for location in (datasets["preprocess"], datasets["mask-eval"], summary["artifacts"]["model"]):
        assert Path(location, "kfnlp-manifest.json").is_file()
    assert summary["artifacts"]["models"] == {"train-mlm": summary["artifacts"]["model"]}
    assert str(out / "summary.json") in result.stdout and str(out / "report.md") in result.stdout


def test_perplexity_falls_on_the_same_masked_set(finished_run):
    out, _, result = finished_run
    metrics = json.loads((out / "summary.json").read_text())["metrics"]
    assert metrics["base"]["masked_tokens"] == metrics["adapted"]["masked_tokens"] > 0
    assert metrics["perplexity_after"] < metrics["perplexity_before"]
    assert "perplexity:" in result.stdout
    report = (out / "report.md").read_text()
    assert "Perplexity on the fixed masked eval set fell" in report
    assert "| train-mlm | succeeded |" in report


def test_model_loads_with_plain_transformers_pipeline(finished_run):
    from transformers import pipeline

    out, _, _ = finished_run
    model_dir = json.loads((out / "summary.json").read_text())["artifacts"]["model"]
    preds = pipeline("fill-mask", model=model_dir)("This is a great [MASK].")
    assert len(preds) == 5


def test_registry_holds_the_version_with_lineage(finished_run):
    from mlflow.tracking import MlflowClient

    out, home, _ = finished_run
    summary = json.loads((out / "summary.json").read_text())
    reg = summary["artifacts"]["registry"]
    assert reg["tracking_uri"].startswith(f"sqlite:///{home}")
    client = MlflowClient(tracking_uri=reg["tracking_uri"], registry_uri=reg["tracking_uri"])
    version = client.get_model_version(reg["name"], str(reg["version"]))
    dataset_fp = json.loads(Path(summary["artifacts"]["datasets"]["preprocess"], "kfnlp-manifest.json").read_text())[
        "fingerprint"
    ]
    assert version.tags["kfnlp.dataset_fingerprint"] == dataset_fp
    assert version.tags["kfnlp.eval_set_fingerprint"]
    assert version.tags["kfnlp.pipeline_run"] == summary["run"]
    run = client.get_run(version.run_id)
    assert run.data.metrics["perplexity"] == pytest.approx(summary["metrics"]["perplexity_after"])
    assert run.data.metrics["perplexity_base"] == pytest.approx(summary["metrics"]["perplexity_before"])
