"""Hostile input to real stages through the real CLI (issue 20): model directories transformers
cannot load, eval sets with nothing to score, a disk that fills up, and stdout kept for the JSON."""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest

from kfnlp.assets import resolve_model_ref
from kfnlp.errors import ConfigError
from tests.support.cli import MODEL, run_cli

MANIFEST = "kfnlp-manifest.json"
SMALL_DISK = 256 * 1024  # bytes: room for a config, not for a dataset or a model


def _one_error_line(result, *fragments: str, started: bool = False) -> str:
    """The one ``kfnlp: error:`` line; a stage that ``started`` may have logged its progress before it."""
    assert result.returncode != 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    lines = result.stderr.strip().splitlines()
    if started:
        assert [line for line in lines if "error" in line.lower()] == lines[-1:], result.stderr
        lines = lines[-1:]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("kfnlp: error: ") and "unexpected" not in lines[0], lines[0]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


# ---- stdout is the result JSON only -------------------------------------------------------------


def test_stage_stdout_is_the_result_json_only(tmp_path):
    result = run_cli("stage", "preprocess", "--output", str(tmp_path / "ds"), "--set", "max_documents=40")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["task"] == "mlm"


def test_training_stage_stdout_is_the_result_json_only(tiny_dataset, tiny_eval_set, tmp_path):
    """The Trainer prints its log dicts on stdout; they go to stderr with the progress bars."""
    result = run_cli(
        "stage", "train-mlm", "--dataset", str(tiny_dataset), "--eval-set", str(tiny_eval_set),
        "--output", str(tmp_path / "model"), "--set", "max_steps=2", "--set", "logging_steps=1",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["task"] == "mlm"
    assert "'loss'" in result.stderr or "train_loss" in result.stderr


# ---- model directories transformers cannot load -------------------------------------------------


@pytest.fixture
def model_dirs(tmp_path) -> Path:
    """empty/, notok/ (weights, no tokenizer), unknown/ (a model_type transformers lacks),
    remote/ (the same with an auto_map: custom code) and vocabless/ (a tokenizer config, no vocabulary)."""
    source = Path(resolve_model_ref(MODEL))
    root = tmp_path / "models"
    (root / "empty").mkdir(parents=True)
    (root / "notok").mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(source / name, root / "notok" / name)
    for name, extra in (("unknown", {}), ("remote", {"auto_map": {"AutoModelForMaskedLM": "modeling_x.XForMaskedLM"}})):
        shutil.copytree(source, root / name)
        config = json.loads((source / "config.json").read_text())
        (root / name / "config.json").write_text(json.dumps({**config, "model_type": "frobnicator", **extra}))
    shutil.copytree(source, root / "vocabless")
    (root / "vocabless" / "tokenizer.json").unlink()
    return root


MODEL_CASES = [
    ("empty", "empty directory; expected a model directory"),
    ("notok", "no tokenizer files (tokenizer.json, vocab.txt, ...)"),
    ("unknown", "does not know model_type 'frobnicator' (config.json)"),
    ("remote", "kfnlp never runs a model's own code (its config.json has an auto_map)"),
]


@pytest.mark.parametrize("name, message", MODEL_CASES, ids=[c[0] for c in MODEL_CASES])
def test_predict_refuses_an_unloadable_model_directory(model_dirs, name, message):
    result = run_cli("predict", "fill-mask", "--model", str(model_dirs / name), "a [MASK] film")
    _one_error_line(result, f"--model: {model_dirs / name}: ", message)


@pytest.mark.parametrize(
    "stage, flag, extra",
    [("preprocess", "--tokenizer", []), ("train-mlm", "--base-model", ["--dataset", "d", "--eval-set", "e"])],
)
@pytest.mark.parametrize("name, message", MODEL_CASES[:2], ids=[c[0] for c in MODEL_CASES[:2]])
def test_stages_refuse_an_unloadable_model_directory(model_dirs, tmp_path, stage, flag, extra, name, message):
    out = tmp_path / "out"
    result = run_cli("stage", stage, "--output", str(out), flag, str(model_dirs / name), *extra)
    _one_error_line(result, f"{flag}: {model_dirs / name}: ", message)
    assert not out.exists()


def test_the_loaders_refuse_what_the_checks_before_a_run_let_through(model_dirs):
    """A tokenizer config without a vocabulary would load as a tokenizer of special tokens only;
    a model loaded directly (not through the CLI's checks) is refused in one line too."""
    from kfnlp.modeling import load_masked_lm, load_token_classifier, load_tokenizer

    with pytest.raises(ConfigError, match=r"it has no vocabulary beyond its special tokens|cannot load tokenizer"):
        load_tokenizer(str(model_dirs / "vocabless"))
    with pytest.raises(ConfigError, match=r"does not know model_type 'frobnicator'"):
        load_masked_lm(str(model_dirs / "unknown"))
    with pytest.raises(ConfigError, match=r"kfnlp never runs a model's own code"):
        load_token_classifier(str(model_dirs / "remote"), ["O", "B-X"])
    with pytest.raises(ConfigError, match=r"empty directory"):
        load_tokenizer(str(model_dirs / "empty"))


# ---- config values a training stage would fail on late -----------------------------------------


@pytest.mark.parametrize(
    "setting, fragment",
    [
        ("logging_steps=0", "train_mlm.logging_steps: expected an integer >= 1, got 0"),
        ("save_steps=0", "train_mlm.save_steps: expected an integer >= 1, got 0"),
        ("seed=-1", "train_mlm.seed: expected an integer from 0 to 2**32 - 1"),
        ("learning_rate=nan", "train_mlm.learning_rate: expected a finite number, got 'nan'"),
    ],
)
def test_train_mlm_refuses_bad_settings_before_training(tiny_dataset, tiny_eval_set, tmp_path, setting, fragment):
    out = tmp_path / "model"
    result = run_cli(
        "stage", "train-mlm", "--dataset", str(tiny_dataset), "--eval-set", str(tiny_eval_set),
        "--output", str(out), "--set", "max_steps=2", "--set", setting,
    )  # fmt: skip
    _one_error_line(result, fragment)
    assert not out.exists()


# ---- eval sets with nothing to score ------------------------------------------------------------


def test_mask_eval_refuses_to_mask_nothing(tiny_dataset, tmp_path):
    out = tmp_path / "eval_set"
    result = run_cli(
        "stage", "mask-eval", "--dataset", str(tiny_dataset), "--output", str(out),
        "--set", "max_chunks=2", "--set", "probability=1e-9",
    )  # fmt: skip
    _one_error_line(
        result, "mask-eval: masking 2 chunks of", "masked no token; raise probability or max_chunks", started=True
    )
    assert not out.exists()


def test_evaluate_refuses_an_eval_set_without_masked_tokens(tiny_eval_set, tmp_path):
    """An eval set written with no masked position (by an older kfnlp, or by hand)."""
    from kfnlp.artifacts import open_eval_set, write_eval_set
    from kfnlp.data.chunking import rows_dataset

    source = open_eval_set(str(tiny_eval_set))
    rows = source.data().with_format("numpy")[:4]
    labels = np.full_like(rows["labels"], -100)
    empty = tmp_path / "empty_eval_set"
    facts = {k: source.manifest[k] for k in ("task", "fingerprint", "dataset_fingerprint", "tokenizer_fingerprint")}
    write_eval_set(
        str(empty),
        rows_dataset({"input_ids": rows["input_ids"], "attention_mask": rows["attention_mask"], "labels": labels}),
        **facts,
    )
    out = tmp_path / "evaluation"
    result = run_cli("stage", "evaluate", "--model", MODEL, "--eval-set", str(empty), "--output", str(out))
    _one_error_line(result, f"{empty}: the eval set has no masked tokens to score", started=True)
    assert not out.exists()


# ---- a full disk ------------------------------------------------------------------------------


class SmallDisk:
    """A directory on a 256 KiB tmpfs (real ENOSPC); where mounting is not permitted, a directory
    under a 256 KiB file size limit for the command instead (EFBIG: the same refusal path)."""

    def __init__(self, path: Path, size: int = SMALL_DISK):
        self.path, self.size = path, size
        path.mkdir(parents=True)
        mounted = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
        )
        self.real = mounted.returncode == 0

    def run(self, *args: str, env: dict | None = None):
        def limit_file_size():  # the fallback: a write past the limit fails with EFBIG instead of a signal
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (self.size, self.size))

        return subprocess.run(
            [sys.executable, "-m", "kfnlp", *args],
            capture_output=True,
            text=True,
            env={**os.environ, **(env or {})},
            preexec_fn=None if self.real else limit_file_size,
            timeout=900,
        )

    def unmount(self) -> None:
        if self.real:
            subprocess.run(["umount", str(self.path)], check=True)


@pytest.fixture
def small_disk(tmp_path):
    disk = SmallDisk(tmp_path / f"small-{uuid.uuid4().hex[:6]}")
    try:
        yield disk
    finally:
        disk.unmount()


@pytest.fixture
def registry_disk(tmp_path):
    """2 MiB: room for the registry's database, not for a model."""
    disk = SmallDisk(tmp_path / f"registry-{uuid.uuid4().hex[:6]}", 2 * 1024 * 1024)
    try:
        yield disk
    finally:
        disk.unmount()


def _leftovers(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_a_full_disk_during_preprocess(small_disk):
    out = small_disk.path / "dataset"
    result = small_disk.run("stage", "preprocess", "--output", str(out), "--set", "max_documents=300")
    _one_error_line(result, f"{out}: no space left on the device writing this dataset artifact", started=True)
    assert result.returncode == 4
    assert _leftovers(small_disk.path) == []


def test_a_full_disk_during_the_model_write(tiny_dataset, tiny_eval_set, small_disk, tmp_path):
    out = small_disk.path / "model"
    result = small_disk.run(
        "stage", "train-mlm", "--dataset", str(tiny_dataset), "--eval-set", str(tiny_eval_set),
        "--output", str(out), "--set", "max_steps=1", "--set", f"checkpoint_dir={tmp_path / 'ckpt'}",
    )  # fmt: skip
    _one_error_line(result, f"{out}: no space left on the device writing this model artifact", started=True)
    assert _leftovers(small_disk.path) == []


def test_a_full_disk_during_a_checkpoint(tiny_dataset, tiny_eval_set, small_disk, tmp_path):
    ckpt = small_disk.path / "ckpt"
    out = tmp_path / "model"
    result = small_disk.run(
        "stage", "train-mlm", "--dataset", str(tiny_dataset), "--eval-set", str(tiny_eval_set),
        "--output", str(out), "--set", "max_steps=2", "--set", "save_steps=1", "--set", f"checkpoint_dir={ckpt}",
    )  # fmt: skip
    _one_error_line(result, f"{ckpt}/", "no space left on the device saving a checkpoint of train-mlm", started=True)
    assert _leftovers(small_disk.path) == []
    assert not out.exists()


def test_a_full_disk_during_the_registry_write(tiny_eval_set, registry_disk, tmp_path):
    """The registry's files live under the kfnlp home; a model does not fit there."""
    from kfnlp.artifacts.model import write_model
    from kfnlp.modeling import load_masked_lm, load_tokenizer

    model = tmp_path / "model"
    write_model(str(model), load_masked_lm(MODEL), load_tokenizer(MODEL), {}, base_model=MODEL, dataset_fingerprint="x")
    evaluation = tmp_path / "evaluation"
    done = run_cli("stage", "evaluate", "--model", MODEL, "--eval-set", str(tiny_eval_set), "--output", str(evaluation))
    assert done.returncode == 0, done.stderr
    home = registry_disk.path / "home"
    result = registry_disk.run(
        "stage", "register", "--model", str(model), "--evaluation", str(evaluation), env={"KFNLP_HOME": str(home)}
    )
    _one_error_line(result, "no space left on the device registering kfnlp-mlm; no version was added", started=True)
    assert not [f for f in _leftovers(home) if "/artifacts/" in f], _leftovers(home)
