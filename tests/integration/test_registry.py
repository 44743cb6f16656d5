"""register: a new version in a real embedded MLflow store, lineage tags, no secrets; one identity
per registry, the per-registry models:/ cache, and the registry commands' flags and refusals."""

from __future__ import annotations

import json

import pytest

from kfnlp.errors import ConfigError, RegistryError
from kfnlp.registry import Registry
from kfnlp.registry.lock import lock_file
from kfnlp.registry.store import normalise_uri, redact_uri, safe_tags
from tests.support.cli import run_cli


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


def test_one_registry_has_one_identity_however_its_uri_is_spelled(tmp_path, monkeypatch):
    """The identity keys the promotion lock and the models:/ cache: credentials, a trailing slash, the
    case of scheme and host and a relative sqlite path do not make another registry."""
    monkeypatch.chdir(tmp_path)
    same = ["http://mlflow.example:5000", "HTTP://ci:s3cret@MLflow.Example:5000/", "http://mlflow.example:5000//"]
    assert {normalise_uri(uri) for uri in same} == {"http://mlflow.example:5000"}
    assert normalise_uri("sqlite:///reg/mlflow.db") == f"sqlite:///{tmp_path}/reg/mlflow.db"
    assert normalise_uri(f"sqlite:///{tmp_path}/reg/../reg/mlflow.db") == f"sqlite:///{tmp_path}/reg/mlflow.db"
    assert normalise_uri("http://a.example/mlflow/") != normalise_uri("http://b.example/mlflow")
    assert len({lock_file(uri, "m") for uri in same}) == 1
    assert lock_file(same[0], "m") != lock_file(same[0], "n")


def test_models_cache_is_per_registry_and_verified_before_reuse(tmp_path):
    """models:/m/1 of registry B is not registry A's models:/m/1, and a damaged cached copy is fetched again."""
    registries = {}
    for label in ("A", "B"):
        (tmp_path / label).mkdir()
        registries[label] = registry = Registry(f"sqlite:///{tmp_path / label / 'mlflow.db'}")
        model = tmp_path / f"model-{label}"
        model.mkdir()
        (model / "config.json").write_text(json.dumps({"registry": label}))
        registry.register("m", model, metrics={}, params={}, tags={}, files={})

    local = {label: registry.download("models:/m/1") for label, registry in registries.items()}
    assert local["A"] != local["B"]
    for label, path in local.items():
        assert json.loads((path / "config.json").read_text()) == {"registry": label}

    (local["B"] / "config.json").write_text(json.dumps({"registry": "tampered"}))
    again = registries["B"].download("models:/m/1")
    assert json.loads((again / "config.json").read_text()) == {"registry": "B"}
    assert registries["A"].download("models:/m/1") == local["A"], "an intact copy is reused"


def test_run_local_refuses_a_password_in_the_tracking_uri_before_any_stage(tmp_path):
    """The config travels into every stage's process arguments and into summary.json: credentials
    must come from $MLFLOW_TRACKING_USERNAME/PASSWORD instead."""
    from kfnlp import catalog
    from kfnlp.launch.local import run_local

    entry = catalog.get("ner")
    config = catalog.load_config(entry, None, ["register.tracking_uri=https://ci:hunter2-pw@mlflow.example/"])
    with pytest.raises(ConfigError, match="MLFLOW_TRACKING_USERNAME") as caught:
        run_local(entry, config, tmp_path / "out")
    assert "hunter2" not in str(caught.value) and caught.value.key == "register.tracking_uri"
    assert not (tmp_path / "out").exists(), "refused before anything is written or started"


def test_every_registry_subcommand_takes_json_and_the_uri_after_the_action(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    Registry(uri).register("m", model, metrics={"f1": 0.5}, params={}, tags={}, files={})
    for args in (["list"], ["list", "m"], ["show", "m", "1"], ["diff", "m", "1", "1"], ["promote", "m", "1"]):
        result = run_cli("registry", *args, "--json", "--tracking-uri", uri)
        assert result.returncode == 0, (args, result.stderr)
        json.loads(result.stdout)
    before = run_cli("registry", "--json", "--tracking-uri", uri, "list", "m")
    assert before.returncode == 0 and json.loads(before.stdout)[0]["version"] == 1, "the flags still work before"


def test_reading_a_sqlite_registry_whose_directory_does_not_exist_is_refused(tmp_path):
    missing = tmp_path / "no-such-dir" / "mlflow.db"
    for args in (["list"], ["show", "m"]):
        result = run_cli("registry", "--tracking-uri", f"sqlite:///{missing}", *args)
        assert result.returncode != 0 and result.stdout == ""
        assert result.stderr.strip().splitlines() == [
            f"kfnlp: error: no registry at sqlite:///{missing}: {missing.parent} does not exist"
        ]
    assert not missing.parent.exists()
