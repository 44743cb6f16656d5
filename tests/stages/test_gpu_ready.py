"""GPU-ready training and inference, checked as far as a CPU allows: the device choice, SDPA attention,
gradient accumulation equal to one large batch, torch.compile, fused AdamW, data loader workers, and
benchmarks/gpu.sh refusing to run without a GPU. What needs a real GPU (speed, memory, CUDA kernels)
is for benchmarks/gpu.sh on a GPU machine."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import torch

from tests.support.cli import MODEL, REPO

NO_GPU = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only path; this machine has a GPU")


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory) -> Path:
    """The embedded tiny BERT without dropout, so that a step depends only on the rows it sees
    (dropout draws differ between one batch of 8 and two of 4)."""
    from kfnlp.modeling import load_masked_lm, load_tokenizer

    out = tmp_path_factory.mktemp("gpu-ready") / "encoder"
    model = load_masked_lm(MODEL)
    model.config.hidden_dropout_prob = model.config.attention_probs_dropout_prob = 0.0
    model.save_pretrained(out)
    load_tokenizer(MODEL).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def ner_dataset(tiny_encoder, tmp_path_factory) -> Path:
    from kfnlp.stages.preprocess_ner import NerPreprocessConfig, preprocess_ner

    out = tmp_path_factory.mktemp("gpu-ready") / "dataset"
    preprocess_ner(str(out), NerPreprocessConfig(max_sentences=96), str(tiny_encoder))
    return out


def train(dataset: Path, encoder: Path, output: Path, **settings) -> tuple[dict, dict[str, torch.Tensor]]:
    """train-ner for a few steps in random batch order (the same rows whatever the batch size);
    returns the training summary and the trained weights."""
    from safetensors.torch import load_file

    from kfnlp.stages.train_ner import TrainNerConfig, train_ner

    defaults = {"max_steps": 3, "group_by_length": False, "eval_strategy": "no", "save_strategy": "no"}
    config = TrainNerConfig(learning_rate=1e-4, logging_steps=1, **{**defaults, **settings})
    manifest = train_ner(str(dataset), str(output), config, str(encoder))
    return manifest["training"], load_file(output / "model.safetensors")


def max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[name] - b[name]).abs().max()) for name in a)


def test_inference_runs_on_the_gpu_when_torch_sees_one(monkeypatch):
    """torch.cuda.is_available is patched only because this machine has no GPU: the device choice
    and the pinned-memory setting follow it."""
    from kfnlp.modeling import inference_device
    from kfnlp.stages.train_ner import TrainNerConfig
    from kfnlp.training.run import speed_arguments

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert inference_device() == torch.device("cpu")
    assert speed_arguments(TrainNerConfig())["dataloader_pin_memory"] is False
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert inference_device() == torch.device("cuda")
    assert speed_arguments(TrainNerConfig())["dataloader_pin_memory"] is True


@NO_GPU
def test_evaluation_and_predict_move_the_model_to_the_gpu(monkeypatch, tiny_eval_set, tmp_path):
    """With torch.cuda.is_available patched (there is no GPU here), predict and evaluate ask torch
    to put the model on CUDA, which this CPU-only torch refuses: proof that they would use a GPU."""
    from kfnlp import predict
    from kfnlp.stages.evaluate import EvaluateConfig, evaluate_mlm

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.raises((AssertionError, RuntimeError), match="CUDA"):
        predict.fill_mask(MODEL, ["A [MASK] film."])
    with pytest.raises((AssertionError, RuntimeError), match="CUDA"):
        evaluate_mlm(MODEL, str(tiny_eval_set), str(tmp_path / "evaluation"), EvaluateConfig())
    assert not (tmp_path / "evaluation").exists()


def test_models_load_with_sdpa_attention(tiny_encoder):
    """transformers 5 picks PyTorch's scaled_dot_product_attention wherever a model supports it
    (FlashAttention kernels on a GPU); kfnlp keeps that default rather than naming it."""
    from kfnlp.modeling import load_masked_lm, load_token_classifier

    assert load_masked_lm(MODEL).config._attn_implementation == "sdpa"
    assert load_token_classifier(str(tiny_encoder), ["O", "B-X"]).config._attn_implementation == "sdpa"


def test_gradient_accumulation_trains_as_one_large_batch(ner_dataset, tiny_encoder, tmp_path):
    """Batches of 4 accumulated twice take the steps batches of 8 take: the same reported loss and the
    same weights after 3 AdamW steps, to float32 rounding (atol 1e-6: 1% of one step's largest change,
    lr 1e-4). BERT's token-classification head averages its loss per batch yet takes **kwargs, so the
    Trainer does not divide it by the accumulation steps: without kfnlp's labelled-token loss the
    reported loss doubles and the gradients are summed, not averaged. Two data loader workers then
    prepare the same batches and train the same weights."""
    large, large_weights = train(ner_dataset, tiny_encoder, tmp_path / "large", batch_size=8)
    small, small_weights = train(
        ner_dataset, tiny_encoder, tmp_path / "accumulated", batch_size=4, gradient_accumulation_steps=2
    )
    assert large["global_batch_size"] == small["global_batch_size"] == 8
    assert large["global_step"] == small["global_step"] == 3
    assert small["train_loss"] == pytest.approx(large["train_loss"], rel=1e-5)
    assert [e["loss"] for e in small["losses"]] == pytest.approx([e["loss"] for e in large["losses"]], rel=1e-5)
    assert max_difference(large_weights, small_weights) < 1e-6

    workers, workers_weights = train(
        ner_dataset,
        tiny_encoder,
        tmp_path / "workers",
        batch_size=4,
        gradient_accumulation_steps=2,
        dataloader_num_workers=2,
    )
    assert workers["config"]["dataloader_num_workers"] == 2
    assert workers["train_loss"] == small["train_loss"]
    assert max_difference(small_weights, workers_weights) == 0.0


def test_fused_adamw_is_the_optimizer_on_cpu_too(tiny_encoder, tmp_path):
    """torch >= 2.8 has a fused AdamW kernel for CPU tensors as well as CUDA ones; the Trainer builds it
    from the config's optim and it takes a step here."""
    from transformers import AutoModelForTokenClassification, Trainer

    from kfnlp.stages.train_ner import TrainNerConfig
    from kfnlp.training import training_arguments
    from kfnlp.training.run import speed_arguments

    for optim, fused in (("adamw_torch_fused", True), ("adamw_torch", None)):
        model = AutoModelForTokenClassification.from_pretrained(tiny_encoder, num_labels=3)
        args = training_arguments(str(tmp_path), precision="no", **speed_arguments(TrainNerConfig(optim=optim)))
        optimizer = Trainer(model=model, args=args).create_optimizer()
        assert isinstance(optimizer, torch.optim.AdamW) and optimizer.defaults["fused"] is fused
        for parameter in model.parameters():
            parameter.grad = torch.ones_like(parameter)
        before = model.classifier.weight.detach().clone()
        optimizer.step()
        assert not torch.equal(before, model.classifier.weight)


@pytest.mark.slow
def test_compile_runs_torch_compile(ner_dataset, tiny_encoder, tmp_path):
    """compile: true trains through torch.compile (inductor, which builds C++ kernels with the
    machine's compiler on a CPU), and the artifact holds the plain model's weights. One step: each
    new batch shape compiles again at first (1-3 minutes on 2 loaded cores for one step)."""
    from torch._dynamo.utils import counters

    from kfnlp.modeling import load_token_classifier

    graphs = counters["stats"]["unique_graphs"]
    summary, weights = train(ner_dataset, tiny_encoder, tmp_path / "compiled", batch_size=8, max_steps=1, compile=True)
    assert counters["stats"]["unique_graphs"] > graphs  # dynamo captured the model's forward
    assert summary["global_step"] == 1 and summary["config"]["compile"] is True
    assert not any(name.startswith("_orig_mod") for name in weights)
    load_token_classifier(str(tmp_path / "compiled"))


def test_train_mlm_refuses_data_loader_workers():
    from kfnlp.stages.train_mlm import TrainMlmConfig

    with pytest.raises(ValueError, match="dataloader_num_workers must be 0 for train-mlm"):
        TrainMlmConfig(dataloader_num_workers=2)
    assert TrainMlmConfig(gradient_accumulation_steps=4, compile=True).gradient_accumulation_steps == 4


@pytest.mark.parametrize("field", ["gradient_accumulation_steps", "dataloader_num_workers"])
def test_bad_speed_settings_fail_in_one_line(field):
    from kfnlp.config import FieldError
    from kfnlp.stages.train_ner import TrainNerConfig

    with pytest.raises(FieldError, match=field):
        TrainNerConfig(**{field: -1})


@NO_GPU
def test_gpu_benchmark_refuses_without_a_gpu():
    result = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "gpu.sh")], capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode != 0
    lines = (result.stdout + result.stderr).strip().splitlines()
    assert len(lines) == 1 and "no GPU" in lines[0], lines
