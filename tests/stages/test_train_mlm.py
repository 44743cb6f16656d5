"""train-mlm: a real (tiny) Trainer run, outputs plain transformers can load."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import pipeline

from kfnlp.stages.train_mlm import TrainMlmConfig, train_mlm
from kfnlp.storage import read_manifest
from kfnlp.training import resolve_precision


def test_trains_saves_safetensors_and_loads_with_plain_pipeline(tiny_dataset, tiny_eval_set, tmp_path):
    out = tmp_path / "model"
    config = TrainMlmConfig(
        learning_rate=5e-4,
        batch_size=8,
        max_steps=4,
        save_steps=2,
        logging_steps=2,
        eval_strategy="steps",
        eval_steps=4,
        checkpoint_dir=str(tmp_path / "ckpt"),
        keep_checkpoints=True,
    )
    manifest = train_mlm(str(tiny_dataset), str(tiny_eval_set), str(out), config, "builtin:splade-tiny")
    assert manifest["training"]["global_step"] == 4
    assert manifest["training"]["sparse_head"] is True
    assert any(loss.get("eval_loss") for loss in manifest["training"]["losses"])
    files = {p.name for p in out.iterdir()}
    assert "model.safetensors" in files and not any(f.endswith(".bin") for f in files)
    assert read_manifest(out, kind="model")["eval_set_fingerprint"] == manifest["eval_set_fingerprint"]
    assert json.loads((out / "training_summary.json").read_text())["global_step"] == 4
    # step 2 only: the Trainer's extra save at the last step is skipped (the model is written right after)
    (checkpoint,) = (tmp_path / "ckpt").glob("*/step-*")
    assert checkpoint.name == "step-000000002" and manifest["training"]["checkpoints_saved"] == 1
    state = {e["path"] for e in read_manifest(checkpoint, kind="checkpoint")["files"]}
    assert {"model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json"} <= state
    preds = pipeline("fill-mask", model=str(out))("this movie is [MASK].")
    assert len(preds) == 5 and all("token_str" in p for p in preds)


def test_whole_word_masking_and_bf16_train_on_cpu(tiny_dataset, tiny_eval_set, tmp_path):
    """bf16 is a GPU feature; on CPU it runs through autocast, which is what we can check here."""
    config = TrainMlmConfig(
        batch_size=8, max_steps=2, masking="whole_word", mixed_precision="bf16", eval_strategy="no", save_steps=100
    )
    manifest = train_mlm(str(tiny_dataset), str(tiny_eval_set), str(tmp_path / "m"), config, "builtin:splade-tiny")
    assert manifest["training"]["precision"] == "bf16"
    assert manifest["training"]["global_step"] == 2
    assert manifest["training"]["train_loss"] > 0


@pytest.mark.parametrize(
    "cuda, bf16_ok, requested, expected",
    [
        (False, False, "auto", "no"),
        (True, True, "auto", "bf16"),
        (True, False, "auto", "fp16"),
        (False, False, "fp16", "no"),
        (False, False, "bf16", "bf16"),
        (True, True, "no", "no"),
    ],
)
def test_precision_resolution(monkeypatch, cuda, bf16_ok, requested, expected):
    """No GPU exists here: torch.cuda's availability is mocked to check the choice."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16_ok)
    assert resolve_precision(requested) == expected


def test_save_minutes_checkpoints_on_time_as_well_as_on_steps(tiny_dataset, tiny_eval_set, tmp_path):
    config = TrainMlmConfig(
        batch_size=8,
        max_steps=4,
        save_steps=1000,
        save_minutes=1e-6,  # due after every step
        eval_strategy="no",
        checkpoint_dir=str(tmp_path / "ckpt"),
        keep_checkpoints=True,
        save_total_limit=5,
    )
    manifest = train_mlm(str(tiny_dataset), str(tiny_eval_set), str(tmp_path / "m"), config, "builtin:splade-tiny")
    saved = sorted(p.name for p in (tmp_path / "ckpt").glob("*/step-*"))
    assert saved == ["step-000000001", "step-000000002", "step-000000003"], saved
    assert manifest["training"]["checkpoints_saved"] == 3
