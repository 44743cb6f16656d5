"""kfnlp registry export on a real embedded MLflow store: a registered LoRA adapter (tagged with its base) comes
out as the adapter, or merged into its base as a plain model directory that plain transformers loads."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import pipeline

from kfnlp import cli
from kfnlp.modeling import load_causal_lm
from kfnlp.stages.train_clm import train_clm
from kfnlp.storage import read_manifest
from tests.stages.test_train_clm import CHUNK, logits, quick, sentences, tiny_gpt2

NAME = "clm-lora"


@pytest.fixture(scope="module")
def registered(tmp_path_factory) -> dict:
    """A LoRA adapter trained by train-clm on a tiny GPT-2, registered (with an evaluation) as NAME version 1."""
    from kfnlp.artifacts import write_evaluation
    from kfnlp.data.bpe import train_bpe
    from kfnlp.stages.preprocess import PreprocessConfig, preprocess
    from kfnlp.stages.register import RegisterConfig, register

    root = tmp_path_factory.mktemp("export")
    lines = sentences(200)
    (root / "corpus.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    base = tiny_gpt2(root / "base", train_bpe(lines, vocab_size=300, min_frequency=1, model_max_length=64))
    preprocess(str(root / "dataset"), PreprocessConfig(source=str(root / "corpus.txt"), chunk_size=CHUNK), str(base))
    adapter = root / "adapter"
    config = quick(lora=True, learning_rate=5e-2, max_steps=2)
    manifest = train_clm(str(root / "dataset"), str(adapter), config, str(base))
    metrics = {"perplexity": 200.0, "eval_loss": math.log(200.0), "tokens": 1000, "eval_chunks": 10}
    result = {
        "task": "clm",
        "label": "adapted",
        "model": str(adapter),
        "split": "test",
        "dataset_fingerprint": manifest["dataset_fingerprint"],
        "eval_set_fingerprint": "e" * 64,
        "metrics": metrics,
        "samples": [],
    }
    evaluation = root / "evaluation"
    write_evaluation(
        str(evaluation), result, "# evaluation\n", task="clm", eval_set_fingerprint="e" * 64, metrics=metrics
    )
    uri = f"sqlite:///{root / 'registry' / 'mlflow.db'}"
    entry = register(str(adapter), str(evaluation), RegisterConfig(model_name=NAME, tracking_uri=uri))
    return {"root": root, "base": base, "adapter": adapter, "uri": uri, "entry": entry}


def export(registered, *args: str) -> int:
    return cli.main(["registry", "--tracking-uri", registered["uri"], "export", *args])


def test_a_lora_version_is_tagged_with_its_base(registered):
    assert registered["entry"]["tags"]["kfnlp.adapter_base"] == str(registered["base"])


def test_export_merge_writes_a_plain_model_with_the_adapters_outputs(registered, tmp_path, capsys):
    out = tmp_path / "merged"
    assert export(registered, f"{NAME}/1", "--output", str(out), "--merge") == 0
    assert f"exported models:/{NAME}/1 to {out}: merged into its base" in capsys.readouterr().out
    files = {p.name for p in out.iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer.json", "README.md"} <= files  # README: the model card
    assert not files & {"adapter_config.json", "adapter_model.safetensors", ".kfnlp-download.json"}
    manifest = read_manifest(out, kind="model")
    assert manifest["exported_from"] == f"models:/{NAME}/1" and manifest["merged"] is True
    generator = pipeline("text-generation", model=str(out))
    assert type(generator.model).__name__ == "GPT2LMHeadModel"
    expected = logits(load_causal_lm(str(registered["adapter"])))
    assert torch.allclose(logits(generator.model), expected, atol=1e-5)
    generator("The movie", max_new_tokens=3, do_sample=False)


def test_export_without_merge_keeps_the_adapter_and_its_base(registered, tmp_path, capsys):
    out = tmp_path / "adapter"
    assert export(registered, f"{NAME}/1", "--output", str(out), "--json") == 0
    assert '"adapter": true' in capsys.readouterr().out
    assert (out / "adapter_model.safetensors").is_file() and not (out / "model.safetensors").exists()
    assert read_manifest(out, kind="model")["adapter_base"] == str(registered["base"])
    model = load_causal_lm(str(out))  # onto the base the manifest names
    assert type(model).__name__ == "PeftModelForCausalLM"
    assert torch.allclose(logits(model), logits(load_causal_lm(str(registered["adapter"]))), atol=1e-6)


def test_export_refuses_a_directory_that_is_not_empty(registered, tmp_path, capsys):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert export(registered, f"{NAME}/1", "--output", str(out), "--merge") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not an empty directory" in err
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_a_registered_adapter_loads_by_its_registry_uri(registered, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registered["uri"])
    model = load_causal_lm(f"models:/{NAME}/1")
    assert type(model).__name__ == "PeftModelForCausalLM"


def test_export_names_versions_and_aliases():
    from kfnlp.cli.registry import export_ref

    assert export_ref("m") == "models:/m@champion"
    assert export_ref("m@staging") == "models:/m@staging"
    assert export_ref("m/3") == "models:/m/3"
    assert export_ref("team/m") == "models:/team/m@champion"


def test_export_cli_help_names_merge():
    from tests.support.cli import run_cli

    result = run_cli("registry", "export", "--help")
    assert result.returncode == 0 and "--merge" in result.stdout and "--output" in result.stdout
