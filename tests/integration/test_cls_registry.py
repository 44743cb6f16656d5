"""register and the promotion gate with text-classification evaluations on a real embedded MLflow store:
accuracy (or macro F1, by register.primary_metric) is the primary metric, higher is better."""

from __future__ import annotations

from pathlib import Path

import pytest

from kfnlp.errors import ConfigError
from kfnlp.registry import Registry
from kfnlp.registry.promotion import CHAMPION, PromoteConfig, promote
from tests.support.cli import MODEL

LABELS = ["neg", "pos"]
DATASET = "c" * 64  # the fingerprint of the dataset the evaluations scored


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory) -> str:
    """One embedded store for the module (its schema migrations take seconds); tests use their own names."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('cls-registry') / 'mlflow.db'}"
    Registry(uri).client.search_registered_models()
    return uri


@pytest.fixture(scope="module")
def cls_model(tmp_path_factory) -> Path:
    """A real (untrained) text classifier written as a train-cls model artifact."""
    from kfnlp.artifacts import write_model
    from kfnlp.modeling import load_sequence_classifier, load_tokenizer

    out = tmp_path_factory.mktemp("cls") / "model"
    summary = {"global_step": 3, "train_loss": 0.69, "train_examples": 24, "config": {"learning_rate": 1e-3}}
    write_model(
        str(out),
        load_sequence_classifier(MODEL, LABELS),
        load_tokenizer(MODEL),
        summary,
        task="cls",
        base_model=MODEL,
        labels=LABELS,
        dataset_fingerprint=DATASET,
        tokenizer_fingerprint="t" * 64,
    )
    return out


def cls_evaluation(path: Path, accuracy: float, macro_f1: float) -> str:
    """An evaluate-cls result with these scores, written by the evaluation writer."""
    from kfnlp.artifacts import write_evaluation

    metrics = {"accuracy": accuracy, "macro_f1": macro_f1, "micro_f1": accuracy, "examples": 100}
    result = {
        "task": "cls",
        "label": path.name,
        "model": "m",
        "split": "test",
        "dataset_fingerprint": DATASET,
        "labels": LABELS,
        "metrics": metrics,
        "per_class": {n: {"precision": 0.5, "recall": 0.5, "f1": macro_f1, "support": 50} for n in LABELS},
    }
    write_evaluation(str(path), result, "# evaluation\n", task="cls", dataset_fingerprint=DATASET, metrics=metrics)
    return str(path)


def register_version(cls_model, tmp_path, name, tracking_uri, accuracy, macro_f1, primary=None, baseline=None):
    from kfnlp.stages.register import RegisterConfig, register

    evaluation = cls_evaluation(tmp_path / f"eval-{accuracy}-{macro_f1}", accuracy, macro_f1)
    config = RegisterConfig(model_name=name, tracking_uri=tracking_uri, primary_metric=primary)
    return register(str(cls_model), evaluation, config, baseline=baseline)


def test_register_logs_cls_metrics_tags_and_a_model_card(cls_model, tmp_path, tracking_uri):
    baseline = cls_evaluation(tmp_path / "base", 0.70, 0.68)
    entry = register_version(cls_model, tmp_path, "cls-card", tracking_uri, 0.80, 0.79, baseline=baseline)
    assert entry["metrics"]["accuracy"] == 0.80 and entry["metrics"]["accuracy_base"] == 0.70
    assert {"macro_f1", "micro_f1", "train_loss", "global_step"} <= set(entry["metrics"])
    assert entry["tags"]["kfnlp.task"] == "text-classification"
    assert entry["tags"]["kfnlp.primary_metric"] == "accuracy"
    assert entry["tags"]["kfnlp.eval_set_fingerprint"] == DATASET
    registry = Registry(tracking_uri)
    card = (registry.download("models:/cls-card/1") / "README.md").read_text()
    assert "text classification" in card and "Labels: neg, pos" in card
    assert 'pipeline("text-classification"' in card and "24 training examples" in card


def test_gate_on_accuracy_higher_is_better(cls_model, tmp_path, tracking_uri):
    registry = Registry(tracking_uri)
    gate = PromoteConfig()
    versions = [
        register_version(cls_model, tmp_path, "cls-acc", tracking_uri, acc, 0.5)["version"]
        for acc in (0.80, 0.85, 0.82)
    ]
    outcomes = [promote(registry, "cls-acc", v, gate) for v in versions]
    assert [d.outcome for d in outcomes] == ["promoted", "promoted", "rejected"]
    assert "higher" in outcomes[2].reason and "0.82" in outcomes[2].reason and "0.85" in outcomes[2].reason
    assert int(registry.get_model("cls-acc").aliases[CHAMPION]) == versions[1]


def test_gate_on_macro_f1_when_register_names_it(cls_model, tmp_path, tracking_uri):
    registry = Registry(tracking_uri)
    gate = PromoteConfig()
    first = register_version(cls_model, tmp_path, "cls-f1", tracking_uri, 0.90, 0.60, primary="macro_f1")
    assert first["tags"]["kfnlp.primary_metric"] == "macro_f1"
    # lower accuracy but a higher macro F1: the better model for a team that gates on macro F1
    second = register_version(cls_model, tmp_path, "cls-f1", tracking_uri, 0.85, 0.70, primary="macro_f1")
    third = register_version(cls_model, tmp_path, "cls-f1", tracking_uri, 0.95, 0.65, primary="macro_f1")
    outcomes = [promote(registry, "cls-f1", entry["version"], gate).outcome for entry in (first, second, third)]
    assert outcomes == ["promoted", "promoted", "rejected"]
    other_primary = register_version(cls_model, tmp_path, "cls-f1", tracking_uri, 0.99, 0.99)
    rejected = promote(registry, "cls-f1", other_primary["version"], gate)
    assert rejected.outcome == "rejected" and "primary metric" in rejected.reason


def test_unknown_primary_metric_is_a_config_error_and_registers_nothing(cls_model, tmp_path, tracking_uri):
    with pytest.raises(ConfigError, match=r"register.primary_metric: 'f1' is not a metric of a cls evaluation"):
        register_version(cls_model, tmp_path, "cls-bad", tracking_uri, 0.8, 0.8, primary="f1")
    assert "cls-bad" not in [m.name for m in Registry(tracking_uri).models()]


def test_registry_metrics_per_task():
    from kfnlp.stages.register import model_card, registry_metrics

    ner = {"task": "ner", "metrics": {"f1": 0.5, "precision": 0.5, "recall": 0.5, "strict_f1": 0.4, "accuracy": 0.9}}
    assert registry_metrics(ner, ner)[1] == "f1" and registry_metrics(ner, ner)[0]["f1_base"] == 0.5
    plain = {"task": "ner", "tag_scheme": "plain", "metrics": {"accuracy": 0.9, "macro_f1": 0.7, "words": 10}}
    assert registry_metrics(plain, None) == ({"accuracy": 0.9, "macro_f1": 0.7}, "accuracy")
    assert registry_metrics(plain, None, "macro_f1")[1] == "macro_f1"
    plain.update(split="test", metrics={**plain["metrics"], "sentences": 2})
    manifest = {"base_model": MODEL, "dataset_fingerprint": DATASET, "labels": ["NOUN", "VERB"], "training": {}}
    card = model_card("pos", manifest, plain, None)
    assert "word accuracy" in card and "Tags: NOUN, VERB" in card and "2 sentences, 10 words" in card
    mlm = {"task": "mlm", "metrics": {"perplexity": 12.0, "eval_loss": 2.5}}
    assert registry_metrics(mlm, mlm) == ({"perplexity": 12.0, "eval_loss": 2.5, "perplexity_base": 12.0}, "perplexity")
    with pytest.raises(ConfigError, match="not a metric of a mlm evaluation"):
        registry_metrics(mlm, None, "accuracy")
