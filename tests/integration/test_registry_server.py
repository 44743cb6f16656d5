"""The model registry for real, on both backends: the embedded sqlite store and an
``mlflow server`` on loopback (artifacts uploaded and downloaded through it).

One test body runs register -> promote -> reject -> rollback on each backend; the others
cover unknown models and versions, credentials in the URI, and an unreachable server.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest

from kfnlp.errors import RegistryError
from kfnlp.registry import Registry
from kfnlp.registry.promotion import PromoteConfig, decisions, promote, rollback
from kfnlp.registry.store import default_tracking_uri, models_cache
from tests.support.cli import MODEL, run_cli
from tests.support.mlflow_server import free_port

LABELS = ["O", "B-X", "I-X"]
EVAL_A = "a1" * 32  # eval-set fingerprints
EVAL_B = "b2" * 32


@pytest.fixture(scope="module")
def tiny_ner_model(tmp_path_factory) -> Path:
    """A real (untrained) token classifier with its tokenizer, as a model directory (18 MB)."""
    from kfnlp.modeling import load_token_classifier, load_tokenizer

    out = tmp_path_factory.mktemp("tiny-ner") / "model"
    load_token_classifier(MODEL, LABELS).save_pretrained(out)
    load_tokenizer(MODEL).save_pretrained(out)
    return out


@pytest.fixture
def stub_model(tmp_path) -> Path:
    """A model directory that only has to be uploaded, not loaded."""
    out = tmp_path / "stub-model"
    out.mkdir()
    (out / "config.json").write_text("{}")
    return out


@pytest.fixture(params=["embedded", "server"])
def tracking_uri(request, kfnlp_home) -> str:
    if request.param == "server":
        return request.getfixturevalue("mlflow_server").uri
    return default_tracking_uri()  # sqlite under this test's KFNLP_HOME


def unique(prefix: str) -> str:
    """Model names are per test: the server lives for the whole session."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def register(registry: Registry, name: str, model: Path, f1: float, eval_set: str = EVAL_A, card: Path | None = None):
    """A version as the register stage records an NER model."""
    return registry.register(
        name,
        model,
        metrics={"f1": f1, "precision": f1 + 0.02, "recall": f1 - 0.02, "strict_f1": f1 - 0.05},
        params={"learning_rate": 5e-5, "epochs": 1},
        tags={
            "kfnlp.task": "token-classification",
            "kfnlp.base_model": MODEL,
            "kfnlp.eval_set_fingerprint": eval_set,
            "kfnlp.primary_metric": "f1",
            "kfnlp.pipeline_run": f"run-{f1}",
        },
        files={"model": card} if card else {},
    )


def aliases(uri: str, name: str) -> dict[str, int]:
    """As a fresh client sees them."""
    return {alias: int(version) for alias, version in Registry(uri).get_model(name).aliases.items()}


def test_register_promote_reject_rollback(tracking_uri, tiny_ner_model, tmp_path, kfnlp_home, request):
    server = tracking_uri.startswith("http")
    name = unique("ner")
    card = tmp_path / "README.md"
    card.write_text("# tiny ner\n")
    registry = Registry(tracking_uri)
    gate = PromoteConfig()

    first = register(registry, name, tiny_ner_model, 0.60, card=card)
    assert (first["name"], first["version"], first["uri"]) == (name, 1, f"models:/{name}/1")
    if server:  # uploaded through the server, stored where the server keeps artifacts
        assert first["source"].startswith("mlflow-artifacts:/")
        stored = request.getfixturevalue("mlflow_server").artifacts
        assert any(first["run_id"] in str(path) for path in stored.rglob("model.safetensors"))
    else:
        assert str(kfnlp_home) in first["source"]
    decision = promote(registry, name, 1, gate)
    assert (decision.outcome, decision.champion_after) == ("promoted", 1)
    assert "first champion" in decision.reason
    assert aliases(tracking_uri, name) == {"champion": 1}

    register(registry, name, tiny_ner_model, 0.70)
    decision = promote(registry, name, 2, gate)
    assert (decision.outcome, decision.champion_before, decision.champion_after) == ("promoted", 1, 2)
    assert "f1 0.7 vs champion 0.6" in decision.reason
    assert aliases(tracking_uri, name) == {"champion": 2, "previous-champion": 1}

    # worse: rejected through the CLI (exit 3), with the reason; aliases unchanged
    register(registry, name, tiny_ner_model, 0.65)
    result = run_cli("registry", "--tracking-uri", tracking_uri, "promote", name, "3")
    assert result.returncode == 3, result.stderr
    assert result.stdout.strip() == f"{name} v3: rejected (f1 0.65 vs champion 0.7: not higher by at least 0)"
    assert aliases(tracking_uri, name) == {"champion": 2, "previous-champion": 1}
    v3 = Registry(tracking_uri).get_version(name, 3)
    assert v3.tags["kfnlp.decision"] == "rejected"
    assert "not higher" in v3.tags["kfnlp.decision.reason"]

    # far better, but on another eval set: not comparable, rejected
    register(registry, name, tiny_ner_model, 0.90, eval_set=EVAL_B)
    decision = promote(registry, name, 4, gate)
    assert decision.outcome == "rejected"
    assert "another eval set" in decision.reason and EVAL_B[:12] in decision.reason
    assert aliases(tracking_uri, name) == {"champion": 2, "previous-champion": 1}

    decision = rollback(registry, name)
    assert (decision.outcome, decision.version, decision.champion_before) == ("rollback", 1, 2)
    assert aliases(tracking_uri, name) == {"champion": 1, "previous-champion": 2}

    trail = decisions(Registry(tracking_uri), name)
    assert [(d["sequence"], d["version"], d["outcome"]) for d in trail] == [
        (1, 1, "promoted"),
        (2, 2, "promoted"),
        (3, 3, "rejected"),
        (4, 4, "rejected"),
        (5, 1, "rollback"),
    ]
    assert [d["champion_after"] for d in trail] == [1, 2, 2, 2, 1]
    assert all(d["time"] and d["by"] and d["reason"] for d in trail)
    assert trail[1]["candidate"]["f1"] == pytest.approx(0.70) and trail[1]["champion"]["f1"] == pytest.approx(0.60)

    # the CLI's tables
    result = run_cli("registry", "--tracking-uri", tracking_uri, "list", name)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    header = ["version", "aliases", "f1", "precision", "recall", "strict_f1", "eval", "set", "decision"]
    assert lines[0].split() == header
    assert set(lines[1]) == {"-", " "}
    rows = {int(line.split()[0]): line for line in lines[2:]}
    assert sorted(rows) == [1, 2, 3, 4]
    assert rows[1].split()[1:3] == ["champion", "0.6"] and rows[1].split()[-1] == "rollback"
    assert rows[2].split()[1:3] == ["previous-champion", "0.7"]
    assert rows[3].split()[1:2] == ["0.65"] and rows[3].split()[-1] == "rejected"
    assert EVAL_A[:12] in rows[1] and EVAL_B[:12] in rows[4]

    result = run_cli("registry", "--tracking-uri", tracking_uri, "show", name)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.splitlines()[0] == f"{name} version 1 @champion"
    cells = {line.split()[0]: line.split()[1:] for line in out.splitlines()[1:] if line.strip()}
    assert cells["f1"] == ["0.6"] and cells["kfnlp.eval_set_fingerprint"] == [EVAL_A]
    shown = [line.split()[:2] for line in out.split("\n\n")[-1].splitlines()[2:]]
    assert shown == [["1", "promoted"], ["5", "rollback"]]

    result = run_cli("registry", "--tracking-uri", tracking_uri, "diff", name, "@previous-champion", "4")
    assert result.returncode == 0, result.stderr
    table = {line.split()[0]: line.split()[1:] for line in result.stdout.splitlines()[2:]}
    assert result.stdout.splitlines()[0].split() == ["v2", "v4", "B", "-", "A"]
    assert table["f1"] == ["0.7", "0.9", "0.2"]
    assert table["eval"] == ["set", EVAL_A[:12], EVAL_B[:12], "DIFFERENT"]

    # the champion's files, loadable as the register stage's card says
    started = time.monotonic()
    local = Registry(tracking_uri).download(f"models:/{name}@champion")
    assert local == models_cache(tracking_uri) / name / "1"
    assert {"config.json", "model.safetensors", "tokenizer.json", "README.md"} <= {p.name for p in local.iterdir()}
    from transformers import pipeline

    tagger = pipeline("token-classification", model=str(local), device="cpu")
    assert isinstance(tagger("Ada Lovelace lived in London."), list)
    assert time.monotonic() - started < 120
    assert json.loads((local / "config.json").read_text())["id2label"] == {"0": "O", "1": "B-X", "2": "I-X"}


def test_unknown_models_versions_and_aliases_are_named(tracking_uri, stub_model):
    registry = Registry(tracking_uri)
    with pytest.raises(RegistryError, match="no model 'no-such-model'"):
        registry.get_model("no-such-model")
    with pytest.raises(RegistryError, match="no model 'no-such-model'"):
        registry.resolve("models:/no-such-model@champion")
    with pytest.raises(RegistryError, match="model 'no-such-model'"):
        promote(registry, "no-such-model", 1, PromoteConfig())

    name = unique("known")
    register(registry, name, stub_model, 0.5)
    with pytest.raises(RegistryError, match=f"no version 7 of model '{name}'"):
        registry.get_version(name, 7)
    with pytest.raises(RegistryError, match=f"no version 7 of model '{name}'"):
        promote(registry, name, 7, PromoteConfig())
    with pytest.raises(RegistryError, match=f"model '{name}' has no @champion"):
        registry.download(f"models:/{name}@champion")
    with pytest.raises(RegistryError, match="no @previous-champion"):
        rollback(registry, name)
    assert decisions(registry, name) == [] and aliases(tracking_uri, name) == {}

    result = run_cli("registry", "--tracking-uri", tracking_uri, "show", name, "7")
    assert result.returncode != 0 and result.stdout == ""
    assert result.stderr.splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith("kfnlp: error: ") and f"no version 7 of model '{name}'" in result.stderr


def test_credentials_in_a_server_uri_never_reach_outputs(mlflow_server, stub_model, capfd):
    uri = mlflow_server.uri.replace("http://", "http://ci-user:s3cret-pw@")
    registry = Registry(uri)
    assert registry.display_uri == mlflow_server.uri
    name = unique("creds")
    registered = register(registry, name, stub_model, 0.5)
    promote(registry, name, 1, PromoteConfig())
    captured = capfd.readouterr()
    assert "s3cret" not in captured.out + captured.err
    assert "s3cret" not in json.dumps(registered) and registered["tracking_uri"] == mlflow_server.uri
    assert "s3cret" not in registry.get_version(name, 1).source

    result = run_cli("registry", "--tracking-uri", uri, "show", name)
    assert result.returncode == 0, result.stderr
    assert "s3cret" not in result.stdout + result.stderr


def cli_error(result, uri: str, seconds: float) -> str:
    """The one stderr line of a failed command against an unreachable registry."""
    assert result.returncode != 0
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"kfnlp: error: cannot reach the registry at {uri}: connection refused")
    assert "s3cret" not in result.stderr
    assert seconds < 60, f"{seconds:.0f} s to give up on an unreachable registry"
    return lines[0]


def test_unreachable_server_is_a_quick_clear_error(kfnlp_home, stub_model, monkeypatch):
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with_secret = uri.replace("http://", "http://ci-user:s3cret-pw@")
    # with kfnlp's default retries (MLflow's own would retry for ~4 minutes), then without
    for args, env in ((["promote", "m", "2"], {}), (["list"], {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"})):
        started = time.monotonic()
        result = run_cli("registry", "--tracking-uri", with_secret, *args, env=env, timeout=300)
        cli_error(result, uri, time.monotonic() - started)

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # the same error, without the retries
    registry = Registry(with_secret)
    with pytest.raises(RegistryError, match=f"cannot reach the registry at {uri}: connection refused") as caught:
        register(registry, "m", stub_model, 0.5)
    assert "s3cret" not in str(caught.value)
    with pytest.raises(RegistryError, match="cannot reach"):
        rollback(registry, "m")
    with pytest.raises(RegistryError, match="cannot reach"):
        registry.download("models:/m@champion")
    # nothing fell back to the embedded store, nothing was cached
    assert not (kfnlp_home / "registry").exists() and not (kfnlp_home / "cache").exists()


def test_a_server_outage_changes_nothing(mlflow_server, stub_model, monkeypatch):
    uri = mlflow_server.uri
    name = unique("outage")
    registry = Registry(uri)
    register(registry, name, stub_model, 0.5)
    register(registry, name, stub_model, 0.6)
    promote(registry, name, 1, PromoteConfig())

    mlflow_server.stop()
    try:
        started = time.monotonic()
        result = run_cli(
            "registry", "--tracking-uri", uri, "promote", name, "2", env={"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}
        )
        cli_error(result, uri, time.monotonic() - started)
        with monkeypatch.context() as env:
            env.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
            with pytest.raises(RegistryError, match=f"cannot reach the registry at {uri}"):
                register(registry, name, stub_model, 0.7)
            with pytest.raises(RegistryError, match=f"cannot reach the registry at {uri}"):
                promote(registry, name, 2, PromoteConfig())
    finally:
        mlflow_server.start()

    assert aliases(uri, name) == {"champion": 1}
    assert [int(v.version) for v in registry.versions(name)] == [1, 2]
    assert "kfnlp.decision" not in registry.get_version(name, 2).tags
    assert [(d["version"], d["outcome"]) for d in decisions(registry, name)] == [(1, "promoted")]
    # and the same client carries on once the server is back
    assert register(registry, name, stub_model, 0.7)["version"] == 3
    assert promote(registry, name, 3, PromoteConfig()).outcome == "promoted"
