"""register and the promotion gate with causal-LM evaluations on a real embedded MLflow store: perplexity is
the primary metric, lower is better, and only scores on the same held-out chunks are compared."""

from __future__ import annotations

from pathlib import Path

import pytest

from kfnlp.registry import Registry
from kfnlp.registry.promotion import CHAMPION, PromoteConfig, promote
from tests.stages.test_evaluate_clm import sentences, tiny_gpt2

DATASET = "d" * 64  # the fingerprint of the dataset the evaluations scored
EVAL_SET = "e" * 64  # the held-out chunks of it


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory) -> str:
    """One embedded store for the module (its schema migrations take seconds); tests use their own names."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('clm-registry') / 'mlflow.db'}"
    Registry(uri).client.search_registered_models()
    return uri


@pytest.fixture(scope="module")
def clm_model(tmp_path_factory) -> Path:
    """A real (untrained) tiny GPT-2 written as a train-clm model artifact."""
    from kfnlp.artifacts import write_model
    from kfnlp.modeling import load_causal_lm, load_tokenizer

    root = tmp_path_factory.mktemp("clm")
    base = tiny_gpt2(root / "base", sentences())
    out = root / "model"
    summary = {"global_step": 4, "train_loss": 5.9, "train_chunks": 32, "config": {"learning_rate": 5e-4}}
    write_model(
        str(out),
        load_causal_lm(str(base)),
        load_tokenizer(str(base)),
        summary,
        task="clm",
        base_model=str(base),
        dataset_fingerprint=DATASET,
        tokenizer_fingerprint="t" * 64,
    )
    return out


def clm_evaluation(path: Path, perplexity: float, eval_set: str = EVAL_SET) -> str:
    """An evaluate-clm result with this perplexity, written by the evaluation writer."""
    import math

    from kfnlp.artifacts import write_evaluation

    metrics = {"perplexity": perplexity, "eval_loss": math.log(perplexity), "tokens": 3100, "eval_chunks": 100}
    result = {
        "task": "clm",
        "label": path.name,
        "model": "m",
        "split": "test",
        "dataset_fingerprint": DATASET,
        "eval_set_fingerprint": eval_set,
        "metrics": metrics,
        "samples": [{"prompt": "This movie was", "greedy": " great", "sampled": " long"}],
    }
    write_evaluation(str(path), result, "# evaluation\n", task="clm", eval_set_fingerprint=eval_set, metrics=metrics)
    return str(path)


def register_version(clm_model, tmp_path, name, tracking_uri, perplexity, eval_set=EVAL_SET, baseline=None):
    from kfnlp.stages.register import RegisterConfig, register

    evaluation = clm_evaluation(tmp_path / f"eval-{perplexity}-{eval_set[:4]}", perplexity, eval_set)
    config = RegisterConfig(model_name=name, tracking_uri=tracking_uri)
    return register(str(clm_model), evaluation, config, baseline=baseline)


def test_register_logs_clm_metrics_tags_and_a_model_card(clm_model, tmp_path, tracking_uri):
    baseline = clm_evaluation(tmp_path / "base", 900.0)
    entry = register_version(clm_model, tmp_path, "clm-card", tracking_uri, 120.0, baseline=baseline)
    assert entry["metrics"]["perplexity"] == 120.0 and entry["metrics"]["perplexity_base"] == 900.0
    assert {"eval_loss", "train_loss", "global_step"} <= set(entry["metrics"])
    assert entry["tags"]["kfnlp.task"] == "text-generation"
    assert entry["tags"]["kfnlp.primary_metric"] == "perplexity"
    assert entry["tags"]["kfnlp.eval_set_fingerprint"] == EVAL_SET
    card = (Registry(tracking_uri).download("models:/clm-card/1") / "README.md").read_text()
    assert "causal language modelling (text generation)" in card and "not the quality" in card
    assert "3100 predicted positions" in card and "32 chunks, 4 optimizer steps" in card
    assert 'pipeline("text-generation"' in card and "LoRA" not in card and "tiny GPT-2" not in card


def test_gate_on_perplexity_lower_is_better(clm_model, tmp_path, tracking_uri):
    registry = Registry(tracking_uri)
    gate = PromoteConfig()
    versions = [
        register_version(clm_model, tmp_path, "clm-ppl", tracking_uri, ppl)["version"] for ppl in (80.0, 60.0, 70.0)
    ]
    outcomes = [promote(registry, "clm-ppl", v, gate) for v in versions]
    assert [d.outcome for d in outcomes] == ["promoted", "promoted", "rejected"]
    assert "lower" in outcomes[2].reason and "70" in outcomes[2].reason and "60" in outcomes[2].reason
    assert int(registry.get_model("clm-ppl").aliases[CHAMPION]) == versions[1]
    # a far lower perplexity on other held-out chunks is not a like-for-like score
    elsewhere = register_version(clm_model, tmp_path, "clm-ppl", tracking_uri, 5.0, eval_set="f" * 64)["version"]
    decision = promote(registry, "clm-ppl", elsewhere, gate)
    assert decision.outcome == "rejected" and "another eval set" in decision.reason
    assert int(registry.get_model("clm-ppl").aliases[CHAMPION]) == versions[1]


def test_registry_metrics_of_a_clm_evaluation():
    from kfnlp.errors import ConfigError
    from kfnlp.stages.register import registry_metrics

    clm = {"task": "clm", "metrics": {"perplexity": 40.0, "eval_loss": 3.7, "tokens": 10}}
    assert registry_metrics(clm, clm) == ({"perplexity": 40.0, "eval_loss": 3.7, "perplexity_base": 40.0}, "perplexity")
    assert registry_metrics(clm, None, "eval_loss")[1] == "eval_loss"
    with pytest.raises(ConfigError, match="not a metric of a clm evaluation"):
        registry_metrics(clm, None, "accuracy")


def test_model_card_of_a_lora_adapter_names_its_base_and_the_merged_export():
    from kfnlp.stages.register import model_card

    evaluation = {
        "task": "clm",
        "split": "test",
        "eval_set_fingerprint": EVAL_SET,
        "metrics": {"perplexity": 40.0, "eval_loss": 3.7, "tokens": 310, "eval_chunks": 10},
    }
    manifest = {"base_model": "builtin:gpt2-imdb", "adapter_base": "builtin:gpt2-imdb", "dataset_fingerprint": DATASET}
    card = model_card("clm-rt", manifest, evaluation, None)
    assert (
        "A LoRA adapter on `builtin:gpt2-imdb`" in card
        and "kfnlp registry export clm-rt/VERSION --output DIR --merge" in card
    )
    assert "first 10 chunks of the dataset's test split" in card and "tiny GPT-2" in card
