"""The clm-adapt pipeline through `kfnlp run --local` (real kfp.local) on a tiny GPT-2 built here (a BPE
tokenizer trained in a second, a randomly initialised one-layer model), never on builtin:gpt2-imdb:
perplexity on the same held-out chunks before and after, generation samples of both models, the
adapted model registered and promoted; and its compiled form (every catalog pipeline also compiles in
tests/pipelines/test_compile.py and tests/unit/test_components.py)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2

from tests.support.cli import run_cli

EOS = "<|endoftext|>"
TINY_CLM = [
    "--set",
    "preprocess.max_documents=400",
    "--set",
    "preprocess.chunk_size=32",
    "--set",
    "train_clm.max_steps=20",
    "--set",
    "train_clm.batch_size=8",
    "--set",
    "train_clm.learning_rate=3.0e-3",
    "--set",
    "train_clm.warmup_ratio=0.0",
    "--set",
    "evaluate_clm.max_chunks=24",
    "--set",
    "evaluate_clm.batch_size=8",
    "--set",
    "evaluate_clm.max_new_tokens=6",
]


@pytest.fixture(scope="module")
def tiny_gpt2(tmp_path_factory) -> Path:
    """A GPT-2-style model directory: byte-level BPE (vocabulary 400, `<|endoftext|>` as bos/eos/unk and
    no pad token, as GPT-2's own) trained on 300 IMDB reviews, and a one-layer GPT-2 of 64 positions."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast, set_seed

    from kfnlp.data.corpus import open_corpus

    documents = open_corpus("builtin:imdb", "text", None, "train").documents()
    texts = [next(documents) for _ in range(300)]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(
        texts,
        trainers.BpeTrainer(vocab_size=400, special_tokens=[EOS], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()),
    )
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token=EOS, eos_token=EOS, unk_token=EOS)
    set_seed(0)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=64,
        n_embd=32,
        n_layer=1,
        n_head=2,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    out = tmp_path_factory.mktemp("tiny-gpt2")
    GPT2LMHeadModel(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def clm_run(tiny_gpt2, tmp_path_factory):
    out = tmp_path_factory.mktemp("clm-adapt")
    home = tmp_path_factory.mktemp("home")
    result = run_cli(
        "run",
        "clm-adapt",
        "--local",
        "--output",
        str(out),
        "--set",
        f"model={tiny_gpt2}",
        *TINY_CLM,
        env={"KFNLP_HOME": str(home)},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out, json.loads((out / "summary.json").read_text()), result


def test_clm_adapt_runs_every_stage_in_order(clm_run):
    _, summary, _ = clm_run
    assert summary["pipeline"] == "clm-adapt" and summary["status"] == "succeeded"
    names = [s["name"] for s in summary["stages"]]
    assert sorted(names) == sorted(
        ["preprocess", "evaluate-clm-base", "train-clm", "evaluate-clm-adapted", "register", "promote"]
    )
    assert names[0] == "preprocess" and names[-2:] == ["register", "promote"]
    assert names.index("train-clm") < names.index("evaluate-clm-adapted")
    assert all(s["status"] == "succeeded" and s["wall_time_s"] > 0 for s in summary["stages"])
    assert summary["parameters"]["preprocess"]["source"] == "builtin:rotten-tomatoes"
    assert summary["metrics"]["training"]["train-clm"]["global_step"] == 20


def test_perplexity_before_and_after_on_the_same_held_out_chunks(clm_run):
    out, summary, result = clm_run
    metrics = summary["metrics"]
    base, adapted = metrics["base"], metrics["adapted"]
    assert base["eval_chunks"] == adapted["eval_chunks"] == 24
    assert base["tokens"] == adapted["tokens"] > 0
    for m in (base, adapted):
        assert m["perplexity"] == pytest.approx(math.exp(m["eval_loss"]), rel=1e-6)
    assert metrics["perplexity_before"] == base["perplexity"] and metrics["perplexity_after"] == adapted["perplexity"]
    # an untrained model of a 400-token vocabulary starts near 400; 20 steps learn at least the token frequencies
    assert metrics["perplexity_after"] < metrics["perplexity_before"]
    line = f"perplexity: {metrics['perplexity_before']:,.2f} (base) -> {metrics['perplexity_after']:,.2f} (adapted)"
    assert line in result.stdout
    evaluations = summary["artifacts"]["evaluations"]
    fingerprints = {
        json.loads(Path(evaluations[label], "kfnlp-manifest.json").read_text())["eval_set_fingerprint"]
        for label in ("base", "adapted")
    }
    assert len(fingerprints) == 1  # the same held-out set
    report = (out / "report.md").read_text()
    assert "Perplexity on the held-out chunks (next-token prediction) fell" in report
    assert "| train-clm | succeeded |" in report


def test_generation_samples_of_both_models_are_in_the_report(clm_run):
    out, summary, _ = clm_run
    report = (out / "report.md").read_text()
    for label in ("base", "adapted"):
        result = json.loads(Path(summary["artifacts"]["evaluations"][label], "metrics.json").read_text())
        assert result["task"] == "clm" and result["samples"]
        for sample in result["samples"]:
            assert sample["prompt"] in report and isinstance(sample["greedy"], str) and "sampled" in sample
        assert f"## Generation samples: {label}" in report


def test_adapted_model_loads_with_plain_transformers_and_is_registered_as_champion(clm_run):
    from mlflow.tracking import MlflowClient
    from transformers import pipeline

    _, summary, _ = clm_run
    artifacts = summary["artifacts"]
    assert artifacts["model"] == artifacts["models"]["train-clm"]
    manifest = json.loads(Path(artifacts["model"], "kfnlp-manifest.json").read_text())
    assert manifest["task"] == "clm"
    generated = pipeline("text-generation", model=artifacts["model"])("This movie", max_new_tokens=3, do_sample=False)
    assert generated[0]["generated_text"].startswith("This movie")

    assert summary["metrics"]["promotion"]["outcome"] == "promoted"  # the first version of a fresh registry
    reg = artifacts["registry"]
    assert reg["name"] == "kfnlp-clm-rt" and str(reg["version"]) == "1"
    client = MlflowClient(tracking_uri=reg["tracking_uri"], registry_uri=reg["tracking_uri"])
    champion = client.get_model_version_by_alias(reg["name"], "champion")
    assert str(champion.version) == str(reg["version"])
    assert champion.tags["kfnlp.task"] == "text-generation"
    assert champion.tags["kfnlp.primary_metric"] == "perplexity"
    run = client.get_run(champion.run_id)
    assert run.data.metrics["perplexity"] == pytest.approx(summary["metrics"]["perplexity_after"])
    assert run.data.metrics["perplexity_base"] == pytest.approx(summary["metrics"]["perplexity_before"])


def test_compiled_clm_adapt_parses_and_wires_both_evaluations_to_one_dataset(tmp_path):
    """`kfnlp compile clm-adapt` (the cluster form): strict KFP v2 IR; both evaluate-clm tasks score
    preprocess's dataset, the base one by reference without waiting for training."""
    out = tmp_path / "clm-adapt.yaml"
    image = "registry.example.com/kfnlp@sha256:" + "0123456789abcdef" * 4
    result = run_cli("compile", "clm-adapt", "-o", str(out), env={"KFNLP_IMAGE": image})
    assert result.returncode == 0, result.stderr
    documents = [d for d in yaml.safe_load_all(out.read_text(encoding="utf-8")) if d is not None]
    spec = json_format.ParseDict(documents[0], pipeline_spec_pb2.PipelineSpec(), ignore_unknown_fields=False)
    tasks = {task.task_info.name: task for task in spec.root.dag.tasks.values()}
    key = {task.task_info.name: name for name, task in spec.root.dag.tasks.items()}
    assert set(tasks) == {
        "preprocess",
        "evaluate-clm-base",
        "train-clm",
        "evaluate-clm-adapted",
        "register",
        "promote",
    }

    def producer(task: str, artifact: str) -> tuple[str, str]:
        ref = tasks[task].inputs.artifacts[artifact].task_output_artifact
        return ref.producer_task, ref.output_artifact_key

    dataset = (key["preprocess"], "dataset")
    assert producer("train-clm", "dataset") == producer("evaluate-clm-base", "dataset") == dataset
    assert producer("evaluate-clm-adapted", "dataset") == dataset
    assert "model" not in tasks["evaluate-clm-base"].inputs.artifacts  # the base model comes by reference
    assert key["train-clm"] not in tasks["evaluate-clm-base"].dependent_tasks
    assert producer("evaluate-clm-adapted", "model") == (key["train-clm"], "model")
    assert producer("register", "model") == (key["train-clm"], "model")
    assert producer("register", "evaluation") == (key["evaluate-clm-adapted"], "results")
    assert producer("register", "baseline") == (key["evaluate-clm-base"], "results")
    params = spec.root.input_definitions.parameters
    assert params["model"].default_value.string_value == "builtin:gpt2-imdb"
    assert '"source": "builtin:rotten-tomatoes"' in params["preprocess_config"].default_value.string_value
    executor = documents[0]["deploymentSpec"]["executors"]
    assert {e["container"]["image"] for e in executor.values()} == {image}
