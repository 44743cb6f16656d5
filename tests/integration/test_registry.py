"""register: a new version in a real embedded MLflow store, lineage tags, no secrets."""

from __future__ import annotations

import pytest

from kfnlp.errors import RegistryError
from kfnlp.registry import Registry, redact_uri, safe_tags


def test_versions_increase_and_carry_tags_metrics_and_files(tmp_path, kfnlp_home):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    card = tmp_path / "README.md"
    card.write_text("# card")
    registry = Registry()
    assert registry.uri == f"sqlite:///{kfnlp_home}/registry/mlflow.db"
    first = registry.register(
        "m",
        model,
        metrics={"perplexity": 12.5},
        params={"lr": 0.1},
        tags={"kfnlp.base_model": "b", "kfnlp.pipeline_run": None},
        files={"model": card},
    )
    second = registry.register("m", model, metrics={"perplexity": 11.0}, params={}, tags={}, files={})
    assert (first["version"], second["version"]) == (1, 2)
    version = registry.get_version("m", 1)
    assert version.tags == {"kfnlp.base_model": "b"}
    assert registry.client.get_run(first["run_id"]).data.metrics == {"perplexity": 12.5}
    artifacts = {a.path for a in registry.client.list_artifacts(first["run_id"], "model")}
    assert {"model/config.json", "model/README.md"} <= artifacts
    assert str(kfnlp_home) in first["source"], "embedded artifacts live under the kfnlp home, not ./mlruns"
    with pytest.raises(RegistryError, match="no version 9"):
        registry.get_version("m", 9)


def test_secret_looking_tags_are_refused():
    assert safe_tags({"a": 1, "b": None}) == {"a": "1"}
    for key in ("aws_secret_access_key", "HF_TOKEN", "db.password"):
        with pytest.raises(RegistryError, match="secret"):
            safe_tags({key: "x"})


def test_credentials_in_a_tracking_uri_never_reach_outputs():
    assert redact_uri("https://user:s3cret@mlflow.example/") == "https://mlflow.example/"
    assert redact_uri("sqlite:////tmp/x.db") == "sqlite:////tmp/x.db"
