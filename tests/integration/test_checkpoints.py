"""Checkpoints and resume for the training stages: real Trainer runs in real processes, killed
with real signals, with checkpoints on the local disk and on a real S3-compatible server.

The equality checks compare a run that was killed and started again with one that was not,
on CPU with fixed seeds: same optimizer steps, and the same final eval loss and weights.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kfnlp.stages.train_mlm import TrainMlmConfig
from kfnlp.storage import MANIFEST, read_manifest
from kfnlp.training.checkpoints import CheckpointStore, run_key
from tests.support.cli import MODEL

MLM = ["--set", "max_steps=24", "--set", "batch_size=8", "--set", "save_steps=4", "--set", "logging_steps=4"]
MLM += ["--set", "eval_strategy=no", "--set", "max_train_chunks=96"]
NER = ["--set", "num_epochs=3", "--set", "batch_size=16", "--set", "save_strategy=epoch"]
NER += ["--set", "max_train_sentences=96", "--set", "eval_strategy=no", "--set", "learning_rate=1e-3"]


def _command(stage: str, inputs: dict[str, str], output: Path | str, extra: list[str]) -> list[str]:
    cmd = [sys.executable, "-m", "kfnlp", "stage", stage, "--output", str(output), "--base-model", MODEL]
    for flag, value in inputs.items():
        cmd += [f"--{flag}", value]
    return cmd + extra


def _run(cmd: list[str], env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def _eval_loss(model: Path, eval_set: Path, tmp: Path) -> float:
    from kfnlp.stages.evaluate import EvaluateConfig, evaluate_mlm

    return evaluate_mlm(str(model), str(eval_set), str(tmp / "eval"), EvaluateConfig(prompts=[]))["metrics"][
        "eval_loss"
    ]


def _assert_same_weights(a: Path, b: Path) -> None:
    from safetensors.numpy import load_file

    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert wa.keys() == wb.keys()
    differ = [k for k in wa if not (wa[k] == wb[k]).all()]
    assert not differ, f"{len(differ)} tensors differ, e.g. {differ[:3]}"


def _wait_for(predicate, timeout: float, what: str, process: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if process is not None and process.poll() is not None:
            raise AssertionError(f"the stage ended (exit {process.returncode}) before {what}")
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def mlm_inputs(tiny_dataset, tiny_eval_set):
    return {"dataset": str(tiny_dataset), "eval-set": str(tiny_eval_set)}


@pytest.fixture(scope="module")
def uninterrupted_mlm(mlm_inputs, tmp_path_factory):
    out = tmp_path_factory.mktemp("straight") / "model"
    _run(_command("train-mlm", mlm_inputs, out, MLM))
    return out


def _store(output, checkpoint_dir, dataset, eval_set, extra_config=None) -> CheckpointStore:
    """The store a train-mlm run with MLM settings uses (same run key computation as the stage)."""
    config = TrainMlmConfig(
        max_steps=24, batch_size=8, save_steps=4, logging_steps=4, eval_strategy="no", max_train_chunks=96
    )
    for key, value in (extra_config or {}).items():
        setattr(config, key, value)
    key = run_key(
        "train-mlm",
        str(output),
        config,
        base_model=MODEL,
        dataset=read_manifest(dataset)["fingerprint"],
        eval_set=read_manifest(eval_set)["fingerprint"],
    )
    return CheckpointStore(f"{str(checkpoint_dir).rstrip('/')}/{key}")


def test_sigkill_at_a_random_point_then_resume_matches_an_uninterrupted_run(
    mlm_inputs, uninterrupted_mlm, tiny_dataset, tiny_eval_set, tmp_path
):
    out = tmp_path / "model"
    store = _store(out, f"{out}-checkpoints", tiny_dataset, tiny_eval_set)
    cmd = _command("train-mlm", mlm_inputs, out, MLM)
    process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: store.steps(), 300, "the first checkpoint", process)
        time.sleep(random.uniform(0.0, 1.5))  # anywhere: mid-step, mid-save, mid-commit
        process.send_signal(signal.SIGKILL)
        process.wait(30)
    finally:
        process.kill()
    killed_at = store.latest()
    assert killed_at is not None and 4 <= killed_at < 24, killed_at
    assert not (out / MANIFEST).exists()  # no final model yet

    result = _run(cmd)
    assert f"resuming from {store.uri(killed_at)} (step {killed_at})" in result.stderr
    summary = json.loads((out / "training_summary.json").read_text())
    straight = json.loads((uninterrupted_mlm / "training_summary.json").read_text())
    assert summary["global_step"] == straight["global_step"] == 24
    assert summary["resumed_from_step"] == killed_at
    # the whole run's mean loss, not only the steps after the resume (the checkpoint carries the running sum)
    assert summary["train_loss"] == pytest.approx(straight["train_loss"], rel=0, abs=1e-6)
    # one curve, as if never killed: the checkpoint's log rows (restored by the Trainer), then the resumed run's
    assert [row["step"] for row in summary["history"]] == [4, 8, 12, 16, 20, 24]
    assert summary["history"] == straight["history"]
    # same masks, same batches, same dropout, same optimizer state: on CPU, bit-identical
    assert _eval_loss(out, tiny_eval_set, tmp_path) == _eval_loss(uninterrupted_mlm, tiny_eval_set, tmp_path)
    _assert_same_weights(out, uninterrupted_mlm)
    assert store.steps() == []  # the run's checkpoints go once the model is stored
    assert not Path(f"{out}-checkpoints", store.root.rsplit("/", 1)[1]).exists()


def test_sigterm_saves_a_checkpoint_at_the_current_step_and_exits(mlm_inputs, tiny_dataset, tiny_eval_set, tmp_path):
    out = tmp_path / "model"
    # periodic saves every 10 steps: the SIGTERM checkpoint lands in between
    extra = [*MLM, "--set", "save_steps=10"]
    store = _store(out, f"{out}-checkpoints", tiny_dataset, tiny_eval_set)
    cmd = _command("train-mlm", mlm_inputs, out, extra)
    process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    stderr = ""
    try:
        _wait_for(lambda: store.steps() == [10], 300, "the step-10 checkpoint", process)
        sent = time.monotonic()
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
        grace = time.monotonic() - sent
    finally:
        process.kill()
    assert process.returncode == 143, stderr[-2000:]
    saved = store.steps()
    assert saved[-1] > 10, saved  # a checkpoint at the step the signal arrived, not only the periodic one
    assert grace < 20, grace  # well inside Kubernetes' default 30 s grace period
    assert "stopped by SIGTERM" in stderr and "run the stage again" in stderr
    assert not (out / MANIFEST).exists()
    result = _run(cmd)
    assert f"(step {saved[-1]})" in result.stderr
    summary = json.loads((out / "training_summary.json").read_text())
    assert summary["global_step"] == 24
    # stopped between logging steps: each logging step once all the same
    assert [row["step"] for row in summary["history"]] == [4, 8, 12, 16, 20, 24]


def test_checkpoints_on_s3_survive_a_kill_and_resume(
    mlm_inputs, uninterrupted_mlm, tiny_dataset, tiny_eval_set, s3_bucket, tmp_path
):
    out = tmp_path / "model"
    checkpoints = s3_bucket.uri("ckpt")
    extra = [*MLM, "--set", f"checkpoint_dir={checkpoints}", "--set", "save_total_limit=2"]
    store = _store(out, checkpoints, tiny_dataset, tiny_eval_set, {"checkpoint_dir": checkpoints})
    cmd = _command("train-mlm", mlm_inputs, out, extra)
    process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: len(store.steps()) >= 2, 300, "two checkpoints on S3", process)
        assert len(store.steps()) <= 2  # keep the last K = 2
        process.send_signal(signal.SIGKILL)
        process.wait(30)
    finally:
        process.kill()
    killed_at = store.latest()
    result = _run(cmd)
    assert f"(step {killed_at})" in result.stderr
    assert json.loads((out / "training_summary.json").read_text())["global_step"] == 24
    _assert_same_weights(out, uninterrupted_mlm)
    assert s3_bucket.keys("ckpt/") == []  # cleared after success


def test_s3_outage_during_a_checkpoint_upload_fails_clearly_then_resumes(
    mlm_inputs, tiny_dataset, tiny_eval_set, s3_bucket, tmp_path
):
    server = s3_bucket.server
    out = tmp_path / "model"
    checkpoints = s3_bucket.uri("ckpt")
    extra = [*MLM, "--set", f"checkpoint_dir={checkpoints}"]
    store = _store(out, checkpoints, tiny_dataset, tiny_eval_set, {"checkpoint_dir": checkpoints})
    cmd = _command("train-mlm", mlm_inputs, out, extra)
    env = {**os.environ, "KFNLP_S3_RETRY_SECONDS": "3"}
    process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    try:
        _wait_for(lambda: store.steps(), 300, "the first checkpoint on S3", process)
        first = store.latest()
        server.kill()  # mid-run: the next checkpoint upload meets a dead server
        _, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
        server.start()
    assert process.returncode == 4, stderr[-2000:]  # StorageError
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("kfnlp: error: ") and checkpoints in last and "KFNLP_S3_RETRY_SECONDS" in last, last
    assert store.latest() == first  # the interrupted upload is not visible as a checkpoint
    assert not (out / MANIFEST).exists()
    result = _run(cmd)
    assert f"(step {first})" in result.stderr
    assert json.loads((out / "training_summary.json").read_text())["global_step"] == 24


def test_train_ner_resumes_at_an_epoch_boundary_with_length_grouped_batches(tmp_path, tmp_path_factory):
    """train-ner saves each epoch (the default) and groups batches by length: killed after an
    epoch's checkpoint, it resumes with the same batches as an uninterrupted run."""
    from kfnlp.stages.preprocess_ner import NerPreprocessConfig, preprocess_ner

    data = tmp_path_factory.mktemp("ner") / "dataset"
    preprocess_ner(str(data), NerPreprocessConfig(max_sentences=150), tokenizer=MODEL)
    inputs = {"dataset": str(data)}
    straight = tmp_path / "straight"
    _run(_command("train-ner", inputs, straight, NER))
    out = tmp_path / "model"
    cmd = _command("train-ner", inputs, out, NER)
    root = Path(f"{out}-checkpoints")
    process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: any(root.glob(f"*/step-*/{MANIFEST}")), 300, "the first epoch's checkpoint", process)
        process.send_signal(signal.SIGKILL)
        process.wait(30)
    finally:
        process.kill()
    result = _run(cmd)
    assert "resuming from" in result.stderr
    _assert_same_weights(out, straight)


def test_a_changed_config_never_resumes_another_runs_checkpoint(tiny_dataset, tiny_eval_set, tmp_path):
    base = _store(tmp_path / "m", tmp_path / "c", tiny_dataset, tiny_eval_set)
    same = _store(tmp_path / "m", tmp_path / "c", tiny_dataset, tiny_eval_set, {"save_steps": 100, "resume": False})
    other = _store(tmp_path / "m", tmp_path / "c", tiny_dataset, tiny_eval_set, {"learning_rate": 1e-3})
    elsewhere = _store(tmp_path / "m2", tmp_path / "c", tiny_dataset, tiny_eval_set)
    assert base.root == same.root  # checkpoint policy is not part of the run's identity
    assert len({base.root, other.root, elsewhere.root}) == 3


def test_store_keeps_the_newest_complete_and_ignores_incomplete(tmp_path):
    store = CheckpointStore(str(tmp_path / "run"), keep=2)
    for step in (2, 4, 6):
        saved = tmp_path / f"checkpoint-{step}"
        saved.mkdir()
        (saved / "trainer_state.json").write_text(json.dumps({"global_step": step}))
        store.commit(saved, step, "k")
        assert not saved.exists()
    assert store.steps() == [4, 6]
    partial = Path(store.uri(8))
    partial.mkdir()
    (partial / "model.safetensors").write_bytes(b"half")  # a commit killed before its manifest
    assert store.latest() == 6
    assert json.loads((store.fetch(6, tmp_path) / "trainer_state.json").read_text())["global_step"] == 6
    store.clear()
    assert store.steps() == [] and not (tmp_path / "run").exists()
