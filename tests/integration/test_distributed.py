"""Data-parallel training: two real torchrun workers on CPU (gloo) train train-mlm."""

from __future__ import annotations

import dataclasses
import math
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kfnlp.errors import ConfigError
from kfnlp.stages.train_mlm import TrainMlmConfig, train_mlm
from kfnlp.stages.train_ner import TrainNerConfig
from kfnlp.storage import read_manifest
from kfnlp.training import distributed
from tests.support.processes import kill_tree

MODEL = "builtin:splade-tiny"
CHUNKS = 200  # of the tiny dataset's training chunks
BATCH = 8  # per process


def config(tmp_path: Path, **overrides) -> TrainMlmConfig:
    values = dict(
        learning_rate=5e-4,
        batch_size=BATCH,
        num_epochs=1,
        max_train_chunks=CHUNKS,
        eval_strategy="no",
        logging_steps=5,
        save_steps=1000,
        checkpoint_dir=str(tmp_path / "checkpoints"),
        num_processes=2,
    )
    return TrainMlmConfig(**{**values, **overrides})


def weights(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


@pytest.fixture(scope="module")
def two_process_run(tiny_dataset, tiny_eval_set, tmp_path_factory) -> tuple[Path, dict]:
    tmp = tmp_path_factory.mktemp("ddp")
    out = tmp / "model"
    manifest = train_mlm(str(tiny_dataset), str(tiny_eval_set), str(out), config(tmp), MODEL)
    return out, manifest


def test_two_processes_train_with_global_batch_and_rank_zero_writes(two_process_run):
    from transformers import AutoModelForMaskedLM

    out, manifest = two_process_run
    training = manifest["training"]
    assert training["world_size"] == 2 and training["global_batch_size"] == 2 * BATCH
    # each step consumes one batch per process: one epoch is ceil(samples / (batch x 2)) steps
    assert training["global_step"] == math.ceil(CHUNKS / (BATCH * 2)) == 13
    assert training["train_chunks"] == CHUNKS and math.isfinite(training["train_loss"])
    assert read_manifest(out, kind="model")["training"]["world_size"] == 2  # the stored manifest, not just the return
    # rank 0's log rows, one per logging step (losses already averaged over the workers): one curve
    assert [row["step"] for row in training["history"]] == [5, 10]
    assert [p.name for p in out.parent.iterdir() if p.name.startswith(".")] == []  # one writer, no leftovers
    model = AutoModelForMaskedLM.from_pretrained(str(out))
    assert model.config.model_type


def test_same_seed_two_process_runs_give_identical_weights(two_process_run, tiny_dataset, tiny_eval_set, tmp_path):
    """The second run also checkpoints every 4 steps (both workers' RNG states, committed by rank 0):
    saving changes nothing in the result."""
    first, manifest = two_process_run
    cfg = config(tmp_path, save_steps=4)
    second = train_mlm(str(tiny_dataset), str(tiny_eval_set), str(tmp_path / "again"), cfg, MODEL)
    # steps 4, 8 and 12 of 13; not the Trainer's save at the end, which the final model makes redundant
    assert second["training"]["checkpoints_saved"] == 3
    assert not list((tmp_path / "checkpoints").glob("*/step-*"))  # cleared once the model was stored
    assert second["training"]["train_loss"] == manifest["training"]["train_loss"]
    assert second["training"]["history"] == manifest["training"]["history"]  # the same curve
    a, b = weights(first), weights(tmp_path / "again")
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)


def test_two_processes_match_one_process_with_double_batch(two_process_run, tiny_dataset, tiny_eval_set, tmp_path):
    """Same samples per step, same seed; not bit-identical: each worker draws its own masks
    (seed + rank) and DDP averages two per-worker mean losses instead of one mean over all
    masked tokens. Measured: mean train loss 6.860 (2 x 8) vs 6.872 (1 x 16) over 13 steps, 0.2%
    apart (first logged loss, step 5: 7.354 vs 7.357); the tolerance leaves a 10x margin."""
    _, manifest = two_process_run
    single = train_mlm(
        str(tiny_dataset),
        str(tiny_eval_set),
        str(tmp_path / "single"),
        config(tmp_path, batch_size=2 * BATCH, num_processes=1),
        MODEL,
    )
    two, one = manifest["training"], single["training"]
    assert one["world_size"] == 1 and one["global_step"] == two["global_step"]
    assert two["train_loss"] == pytest.approx(one["train_loss"], rel=0.02)


def test_train_ner_two_processes_match_one_process_with_double_batch(tmp_path):
    """NER has no random masking, so the comparison is tighter; it also guards against the
    Trainer's average_tokens_across_devices, which doubled the gradients (and the logged loss)
    of BertForTokenClassification on two processes. Measured: 1.391 (2 x 8) vs 1.377 (1 x 16),
    1% apart (each worker's mean loss vs one mean over the batch; dropout draws differ)."""
    from kfnlp.stages.preprocess_ner import NerPreprocessConfig, preprocess_ner
    from kfnlp.stages.train_ner import train_ner

    dataset = tmp_path / "ner-dataset"
    preprocess_ner(str(dataset), NerPreprocessConfig(max_sentences=600), MODEL)
    runs = {}
    for processes in (2, 1):
        ner_config = TrainNerConfig(
            learning_rate=1e-3,
            batch_size=2 * BATCH // processes,
            num_epochs=1,
            max_train_sentences=200,
            group_by_length=False,  # its length groups depend on the batch size
            eval_strategy="no",
            save_strategy="no",
            num_processes=processes,
        )
        out = tmp_path / f"ner-{processes}"
        runs[processes] = train_ner(str(dataset), str(out), ner_config, MODEL)["training"]
    assert runs[2]["world_size"] == 2 and runs[2]["global_step"] == runs[1]["global_step"] == math.ceil(200 / 16)
    assert (tmp_path / "ner-2" / "labels.json").is_file()
    assert runs[2]["train_loss"] == pytest.approx(runs[1]["train_loss"], rel=0.05)


def test_train_cls_two_processes_match_one_process_with_double_batch(tmp_path):
    """train-cls goes through the same data-parallel launch: two workers of 8 take the steps one
    process of 16 takes, rank 0 writes the classifier, and the losses agree (each worker's mean
    over its half of the batch; dropout draws differ)."""
    from kfnlp.stages.preprocess_cls import PreprocessClsConfig, preprocess_cls
    from kfnlp.stages.train_cls import TrainClsConfig, train_cls

    dataset = tmp_path / "cls-dataset"
    preprocess_cls(str(dataset), PreprocessClsConfig(max_examples=160, max_length=64), MODEL)
    runs = {}
    for processes in (2, 1):
        cls_config = TrainClsConfig(
            learning_rate=1e-3,
            batch_size=2 * BATCH // processes,
            num_epochs=1,
            group_by_length=False,  # its length groups depend on the batch size
            eval_strategy="no",
            save_strategy="no",
            num_processes=processes,
        )
        runs[processes] = train_cls(str(dataset), str(tmp_path / f"cls-{processes}"), cls_config, MODEL)["training"]
    train_examples = read_manifest(dataset)["counts"]["train"]["examples"]
    assert runs[2]["world_size"] == 2
    assert runs[2]["global_step"] == runs[1]["global_step"] == math.ceil(train_examples / 16)
    assert (tmp_path / "cls-2" / "labels.json").is_file()
    assert runs[2]["train_loss"] == pytest.approx(runs[1]["train_loss"], rel=0.05)


def test_train_clm_two_processes_match_one_process_with_double_batch(tmp_path):
    """train-clm goes through the same data-parallel launch. Full chunks and a GPT-2 without dropout: each
    worker's mean over its half of the predicted tokens, averaged by DDP, is the mean over the whole batch,
    so the losses agree tightly and the weights too (AdamW steps from the same gradients, summed in
    another order)."""
    from kfnlp.data.bpe import train_bpe
    from kfnlp.stages.preprocess import PreprocessConfig, preprocess
    from kfnlp.stages.train_clm import train_clm
    from tests.stages.test_train_clm import CHUNK, quick, sentences, tiny_gpt2

    lines = sentences(300)
    (tmp_path / "corpus.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    base = tiny_gpt2(tmp_path / "base", train_bpe(lines, vocab_size=300, min_frequency=1, model_max_length=64))
    dataset = tmp_path / "clm-dataset"
    preprocess(str(dataset), PreprocessConfig(source=str(tmp_path / "corpus.txt"), chunk_size=CHUNK), str(base))
    runs = {}
    for processes in (2, 1):
        clm_config = quick(learning_rate=1e-3, batch_size=2 * BATCH // processes, max_steps=4, num_processes=processes)
        runs[processes] = train_clm(str(dataset), str(tmp_path / f"clm-{processes}"), clm_config, str(base))["training"]
    assert runs[2]["world_size"] == 2 and runs[2]["global_step"] == runs[1]["global_step"] == 4
    assert runs[2]["train_loss"] == pytest.approx(runs[1]["train_loss"], rel=1e-4)
    two, one = weights(tmp_path / "clm-2"), weights(tmp_path / "clm-1")
    assert all(((two[k] - one[k]).abs().max() < 1e-5) for k in one)


def test_failing_worker_raises_its_error_and_writes_nothing(tiny_dataset, tiny_eval_set, tmp_path):
    out = tmp_path / "model"
    # the worker's ConfigError comes back as a ConfigError (same CLI exit code), naming the rank;
    # both ranks fail alike, and whichever torchrun sees first is the one reported
    first_failure = r"^train-mlm \(data-parallel worker rank [01]\): cannot load tokenizer .*no-such-model"
    with pytest.raises(ConfigError, match=first_failure):
        train_mlm(str(tiny_dataset), str(tiny_eval_set), str(out), config(tmp_path), str(tmp_path / "no-such-model"))
    assert list(tmp_path.iterdir()) == []  # no artifact, no temporary directory


def test_inside_a_launch_the_stage_never_relaunches(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert distributed.should_launch(2) and not distributed.should_launch(1)
    monkeypatch.setenv("WORLD_SIZE", "4")  # a torchrun worker (also under PyTorchJob/TrainJob): train as that worker
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert not distributed.should_launch(2) and not distributed.should_launch(1)
    monkeypatch.delenv("LOCAL_RANK")  # WORLD_SIZE from a PyTorchJob pod, but no torchrun: would train alone
    with pytest.raises(ConfigError, match="not started by torchrun"):
        distributed.should_launch(1)


def test_num_processes_zero_means_one_per_gpu(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    assert distributed.resolve_num_processes(0) == 1
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert distributed.resolve_num_processes(0) == 4 and distributed.resolve_num_processes(2) == 2
    with pytest.raises(ValueError, match="num_processes"):
        TrainNerConfig(num_processes=-1)


def _doc_yaml(heading: str) -> list:
    """The YAML blocks of one ``## `` section of docs/cluster.md."""
    import yaml

    text = (Path(__file__).resolve().parents[2] / "docs" / "cluster.md").read_text(encoding="utf-8")
    section = text.split(f"\n{heading}\n", 1)[1].split("\n## ", 1)[0]
    return [yaml.safe_load(block) for block in re.findall(r"```yaml\n(.*?)```", section, re.S)]


def test_documented_one_node_config_is_valid():
    from kfnlp.config import build

    (config,) = _doc_yaml("## Several GPUs on one node")
    assert build(TrainNerConfig, config["train_ner"]).num_processes == 0


def test_documented_trainjob_is_what_the_launcher_builds_from_the_documented_config():
    """docs/cluster.md "Several nodes": its config loads, and its TrainJob is exactly the manifest
    kfnlp.launch.scale_out builds from it (with the example's URIs, stage config and owner), whose
    command the kfnlp CLI accepts."""
    import json

    from kfnlp import stages
    from kfnlp.cli import build_parser
    from kfnlp.config import build
    from kfnlp.launch.cluster.compile import scale_out_spec
    from kfnlp.launch.cluster.settings import load_cluster
    from kfnlp.launch.scale_out.manifests import build as build_job
    from kfnlp.launch.scale_out.manifests import job_name, node_command

    config, trainjob = _doc_yaml("## Several nodes")
    spec = scale_out_spec(load_cluster(config["cluster"]), stages.get("train-ner"))
    command = trainjob["spec"]["trainer"]["command"]
    args = build_parser().parse_args(command[3:])
    assert command[:3] == ["torchrun", "-m", "kfnlp"] and args.stage == "train-ner"
    assert command == node_command(
        "train-ner", {"dataset": args.dataset, "base_model": args.base_model}, args.output, args.config_json
    )
    stage_config = json.loads(args.config_json)
    assert build(TrainNerConfig, stage_config).batch_size == config["train_ner"]["batch_size"]
    assert stage_config["checkpoint_dir"] == args.output.removesuffix("-job") + "-checkpoints"
    meta = trainjob["metadata"]
    assert meta["name"] == job_name("train-ner", args.output)
    assert trainjob == build_job(spec, meta["name"], command, meta["labels"], meta["ownerReferences"])


def _cli(out: Path, tmp: Path, dataset, eval_set, **overrides) -> list[str]:
    """``kfnlp stage train-mlm`` with the two-process config of ``config()``."""
    cmd = [sys.executable, "-m", "kfnlp", "stage", "train-mlm", "--dataset", str(dataset), "--eval-set"]
    cmd += [str(eval_set), "--output", str(out), "--base-model", MODEL]
    for key, value in dataclasses.asdict(config(tmp, **overrides)).items():
        if value is not None:
            cmd += ["--set", f"{key}={value}"]
    return cmd


def _wait_for_checkpoint(root: Path, process: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not list(root.glob("*/step-*/kfnlp-manifest.json")):
        assert process.poll() is None, f"the run ended (exit {process.returncode}) before its first checkpoint"
        assert time.monotonic() < deadline, "no checkpoint in time"
        time.sleep(0.1)


@pytest.mark.parametrize("how", ["sigkill-pod", "sigterm-main-process"])
def test_two_process_run_stopped_then_resumed_matches_an_uninterrupted_one(
    how, two_process_run, tiny_dataset, tiny_eval_set, tmp_path
):
    """Preemption of a data-parallel pod. sigkill-pod: every process of the run killed at once
    (what the kubelet does at the end of the grace period). sigterm-main-process: SIGTERM to the
    stage's main process only (what Kubernetes sends first); it is passed on to torchrun and the
    workers, which agree on a step, save it and stop (exit 143). Started again, the run resumes
    and ends with the same weights as one that was never stopped."""
    first, _ = two_process_run
    out = tmp_path / "model"
    cmd = _cli(out, tmp_path, tiny_dataset, tiny_eval_set, save_steps=3)
    process = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        _wait_for_checkpoint(tmp_path / "checkpoints", process)
        if how == "sigkill-pod":
            kill_tree(process.pid)
            process.wait(30)
        else:
            process.send_signal(signal.SIGTERM)
            _, stderr = process.communicate(timeout=120)
            assert process.returncode == 143, stderr[-2000:]
            assert "stopped by SIGTERM" in stderr
    finally:
        if process.poll() is None:  # a failed assertion above: leave nothing running
            kill_tree(process.pid)
    assert not (out / "kfnlp-manifest.json").exists()
    resumed = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from" in resumed.stderr
    a, b = weights(first), weights(out)
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
