"""kfnlp registry publish --hub: the real ``huggingface_hub`` client against the loopback stand-in of the Hub's
API (tests/support/hub_api.py): one commit per publish with the model files, tokenizer and card, a tag per
registry version, the token sent as the Hub expects it and never echoed."""

from __future__ import annotations

import json

import yaml

from kfnlp.registry import Registry
from tests.integration.test_deploy import tiny_model
from tests.support.cli import run_cli
from tests.support.hub_api import HubApi

TOKEN = "hf_test_0123456789abcdefSECRET"


def register(registry: Registry, tmp_path, name: str, n: int, cased: bool) -> None:
    model = tiny_model(tmp_path / f"model{n}", cased=cased)
    (model / "README.md").write_text(f"# {name}\n\nIntended use and limitations: a test model ({n}).\n")
    registry.register(
        name,
        model,
        metrics={"f1": 0.5 + n / 10},
        params={},
        tags={
            "kfnlp.task": "token-classification",
            "kfnlp.base_model": "bert-base-cased",
            "kfnlp.dataset_fingerprint": f"data{n}",
            "kfnlp.eval_set_fingerprint": "eval-same",
            "kfnlp.primary_metric": "f1",
        },
        files={},
    )
    registry.client.set_registered_model_alias(name, "champion", str(n))


def test_publish_pushes_each_version_under_its_own_tag(tmp_path, kfnlp_home):
    registry = Registry()
    register(registry, tmp_path, "ner-pub", 1, cased=True)
    with HubApi(TOKEN) as hub:
        env = {
            "HF_TOKEN": TOKEN, "HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0", "HF_HOME": str(tmp_path / "hf"),
            "KFNLP_HOME": str(kfnlp_home),
        }  # fmt: skip
        first = run_cli(
            "registry", "publish", "ner-pub@champion", "--hub", "team/ner-pub", "--private", "--json", env=env
        )
        assert first.returncode == 0, first.stderr
        register(registry, tmp_path, "ner-pub", 2, cased=False)
        second = run_cli("registry", "publish", "ner-pub", "--hub", "team/ner-pub", env=env)
        assert second.returncode == 0, second.stderr
        assert "revision v2" in second.stdout
        repo = hub.repos["team/ner-pub"]
        assert repo.private
        assert set(repo.tags) == {"v1", "v2"} and repo.tags["v1"] != repo.tags["v2"]
        assert repo.branches["main"] == repo.tags["v2"]
        v1 = repo.files("v1")
        assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "README.md"} <= set(v1)
        assert (tmp_path / "model1" / "model.safetensors").read_bytes() == v1["model.safetensors"]
        assert json.loads(v1["tokenizer_config.json"])["do_lower_case"] is False
        assert json.loads(repo.files("v2")["tokenizer_config.json"])["do_lower_case"] is True
        card = v1["README.md"].decode()
        front = yaml.safe_load(card.split("---\n")[1])
        assert front == {
            "library_name": "transformers",
            "tags": ["kfnlp"],
            "pipeline_tag": "token-classification",
            "base_model": "bert-base-cased",
        }
        assert "limitations: a test model (1)" in card and "data1" in card and "eval-same" in card
        assert "| f1 | 0.6 |" in card
        assert ".kfnlp-download.json" not in v1 and "kfnlp-manifest.json" not in v1
        assert json.loads(v1["kfnlp-registry.json"])["version"] == 1
        # every write carried the token as the Hub expects it (huggingface_hub's own unauthenticated GET of
        # /api/agent-harnesses aside); no output shows it
        posts = [c for c in hub.calls if c.method == "POST"]
        assert posts and all(c.authorization == f"Bearer {TOKEN}" for c in posts)
        assert {c.authorization for c in hub.calls} <= {None, f"Bearer {TOKEN}"}
        for result in (first, second):
            assert TOKEN not in result.stdout + result.stderr
        assert json.loads(first.stdout)["revision"] == "v1"


def test_publish_needs_the_token_from_the_environment(tmp_path, kfnlp_home):
    registry = Registry()
    register(registry, tmp_path, "ner-tok", 1, cased=True)
    with HubApi(TOKEN) as hub:
        env = {
            "HF_TOKEN": "", "HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0", "HF_HOME": str(tmp_path / "hf"),
            "KFNLP_HOME": str(kfnlp_home),
        }  # fmt: skip
        missing = run_cli("registry", "publish", "ner-tok", "--hub", "team/x", env=env)
        assert missing.returncode == 2 and "$HF_TOKEN" in missing.stderr and missing.stderr.count("\n") == 1
        wrong = run_cli("registry", "publish", "ner-tok", "--hub", "team/x", env={**env, "HF_TOKEN": "hf_wrong_token"})
        assert wrong.returncode == 9 and "HTTP 401" in wrong.stderr and "hf_wrong_token" not in wrong.stderr
        absent = run_cli("registry", "publish", "ner-tok@staging", "--hub", "team/x", env={**env, "HF_TOKEN": TOKEN})
        assert absent.returncode == 2 and "has no @staging" in absent.stderr
        assert hub.repos == {}


def test_the_pipeline_step_publishes_only_what_the_gate_promoted(tmp_path, kfnlp_home):
    """The publish stage as a pipeline runs it after promote (through `kfnlp stage publish`, the same function the
    component calls): a rejected version is not pushed; a promoted one is, under its own tag."""
    registry = Registry()
    register(registry, tmp_path, "ner-step", 1, cased=True)
    registered = tmp_path / "registered.json"
    registered.write_text(json.dumps({"name": "ner-step", "version": 1}))
    rejected, promoted = tmp_path / "rejected.json", tmp_path / "promoted.json"
    rejected.write_text(json.dumps({"outcome": "rejected"}))
    promoted.write_text(json.dumps({"outcome": "promoted"}))
    with HubApi(TOKEN) as hub:
        env = {
            "HF_TOKEN": TOKEN, "HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0", "HF_HOME": str(tmp_path / "hf"),
            "KFNLP_HOME": str(kfnlp_home),
        }  # fmt: skip
        step = ("stage", "publish", "--registered", str(registered), "--set", "enabled=true")
        skipped = run_cli(*step, "--decision", str(rejected), "--set", "repo_id=team/ner-step", env=env)
        assert skipped.returncode == 0, skipped.stderr
        assert hub.repos == {}
        done = run_cli(*step, "--decision", str(promoted), "--set", "repo_id=team/ner-step", env=env)
        assert done.returncode == 0, done.stderr
        assert set(hub.repos["team/ner-step"].tags) == {"v1"}
        assert TOKEN not in done.stdout + done.stderr
        refused = run_cli(*step, "--decision", str(promoted), env=env)  # enabled without a repository
        assert refused.returncode == 2 and "repo_id: required when publish.enabled is true" in refused.stderr
