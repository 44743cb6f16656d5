"""Bad input through the real CLI: one clear ``kfnlp: error:`` line naming the
file/line/key and what was expected, a non-zero exit, no traceback (unless
--debug), and no output left that looks complete."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.support.cli import run_cli

MANIFEST = "kfnlp-manifest.json"


def _broken_at_57() -> bytes:
    good = "".join(json.dumps({"text": f"review number {i} " * 20}) + "\n" for i in range(56))
    return good.encode() + b'{"text": "this line is cut off\n' + b'{"text": "after"}\n'


FILES = {
    "empty.csv": b"",
    "nocol.csv": b"review,label\na fine film,1\n",
    "nocol.jsonl": b'{"review": "a fine film"}\n',
    "latin1.csv": "text\nfine\ncaf\u00e9 cr\u00e8me\n".encode("latin-1"),
    "broken.jsonl": _broken_at_57(),
    "bad.yaml": b"preprocess:\n  max_documents: 100\n  chunk_size: [64\n",
    "badkey.yaml": b"preprocess:\n  max_documents: 100\n  chunk_sise: 64\n",
    "badtype.yaml": b"preprocess:\n  max_documents: lots\n",
    "sheet.xlsx": b"PK\x03\x04",
}


@pytest.fixture
def bad(tmp_path) -> Path:
    """A directory of bad inputs (paths in the cases are relative to it)."""
    data = tmp_path / "in"
    data.mkdir()
    (data / "emptydir").mkdir()
    for name, content in FILES.items():
        (data / name).write_bytes(content)
    return data


def _args(args: tuple[str, ...], data: Path) -> list[str]:
    return [a.format(d=data) for a in args]


def _check_one_error_line(result, fragments, data: Path) -> str:
    assert result.returncode != 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert line.startswith("kfnlp: error: ")
    for fragment in fragments:
        assert fragment.format(d=data) in line, line
    return line


def _no_complete_output(path: Path) -> None:
    if path.exists():
        assert not list(path.rglob(MANIFEST)), list(path.rglob(MANIFEST))


# ---- kfnlp stage preprocess -------------------------------------------------------

# id, arguments after `kfnlp stage preprocess --output OUT` ({d}: the input dir), message fragments
STAGE_CASES = [
    ("missing-file", ("--set", "source={d}/nope.csv"), ["{d}/nope.csv: no such file or directory"]),
    ("empty-file", ("--set", "source={d}/empty.csv"), ["{d}/empty.csv: file is empty"]),
    ("empty-directory", ("--set", "source={d}/emptydir"), ["{d}/emptydir: directory holds no"]),
    ("glob-no-match", ("--set", "source={d}/*.parquet"), ["{d}/*.parquet: the pattern matches no files"]),
    ("unsupported-file", ("--set", "source={d}/sheet.xlsx"), ["{d}/sheet.xlsx: unsupported file type .xlsx"]),
    ("empty-source", ("--set", "source="), ["empty source"]),
    (
        "missing-csv-column",
        ("--set", "source={d}/nocol.csv"),
        ["{d}/nocol.csv: no text column 'text'", "available columns: 'review', 'label'"],
    ),
    (
        "missing-jsonl-column",
        ("--set", "source={d}/nocol.jsonl", "--set", "text_column=body"),
        ["{d}/nocol.jsonl: no text column 'body'", "'review'"],
    ),
    ("non-utf8", ("--set", "source={d}/latin1.csv"), ["{d}/latin1.csv:3: not valid UTF-8", "expected UTF-8"]),
    (
        "broken-jsonl-line",
        ("--set", "source={d}/broken.jsonl"),
        ["{d}/broken.jsonl:57: broken JSON line", "expected one JSON object per line"],
    ),
    ("unknown-key", ("--set", "chunk_sise=64"), ["unknown config key preprocess.chunk_sise", "chunk_size"]),
    ("unknown-key-with-section", ("--set", "preprocess.chunk_sise=64"), ["unknown config key preprocess.chunk_sise"]),
    ("wrong-type", ("--set", "max_documents=lots"), ["max_documents: expected an integer or null, got 'lots'"]),
    ("wrong-type-float", ("--set", "test_size=tenth"), ["test_size: expected a number, got 'tenth'"]),
    ("out-of-range", ("--set", "test_size=2"), ["preprocess: test_size must be between 0 and 1"]),
    ("set-without-equals", ("--set", "max_documents"), ["--set 'max_documents': expected KEY=VALUE"]),
    ("bad-yaml", ("--config", "{d}/bad.yaml"), ["{d}/bad.yaml:4: invalid YAML"]),
    (
        "yaml-unknown-key",
        ("--config", "{d}/badkey.yaml"),
        ["{d}/badkey.yaml:3: unknown config key preprocess.chunk_sise"],
    ),
    (
        "yaml-wrong-type",
        ("--config", "{d}/badtype.yaml"),
        ["{d}/badtype.yaml:2: preprocess.max_documents: expected an integer or null, got 'lots'"],
    ),
    ("missing-config", ("--config", "{d}/nope.yaml"), ["{d}/nope.yaml: config file not found"]),
    ("unknown-builtin-tokenizer", ("--tokenizer", "builtin:bert"), ["--tokenizer: unknown builtin model builtin:bert"]),
    ("missing-tokenizer-dir", ("--tokenizer", "{d}/no-model"), ["--tokenizer: {d}/no-model: no such model directory"]),
    ("unknown-builtin-corpus", ("--set", "source=builtin:wiki"), ["unknown builtin dataset builtin:wiki"]),
]


@pytest.mark.parametrize(("args", "fragments"), [c[1:] for c in STAGE_CASES], ids=[c[0] for c in STAGE_CASES])
def test_stage_preprocess_bad_input(bad, tmp_path, args, fragments):
    out = tmp_path / "out" / "dataset"
    result = run_cli("stage", "preprocess", "--output", str(out), "--set", "max_documents=50", *_args(args, bad))
    _check_one_error_line(result, fragments, bad)
    assert result.stdout == ""
    assert not out.exists()
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.parametrize(
    ("args", "exception"),
    [
        (("--set", "source={d}/broken.jsonl"), "kfnlp.errors.InputError: {d}/broken.jsonl:57"),
        (("--set", "chunk_sise=64"), "kfnlp.errors.ConfigError: unknown config key preprocess.chunk_sise"),
    ],
)
def test_debug_shows_the_traceback(bad, tmp_path, args, exception):
    out = tmp_path / "dataset"
    result = run_cli("--debug", "stage", "preprocess", "--output", str(out), *_args(args, bad))
    assert result.returncode != 0
    assert "Traceback (most recent call last)" in result.stderr
    assert exception.format(d=bad) in result.stderr
    assert not out.exists()


def test_failed_stage_keeps_the_previous_complete_output(bad, tmp_path, tiny_dataset):
    out = tmp_path / "dataset"
    shutil.copytree(tiny_dataset, out)
    before = (out / MANIFEST).read_bytes()
    result = run_cli("stage", "preprocess", "--output", str(out), "--set", f"source={bad}/broken.jsonl")
    _check_one_error_line(result, ["broken.jsonl:57:"], bad)
    assert (out / MANIFEST).read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temp dirs left


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (("mask-eval", "--dataset", "{d}/no-dataset", "--output", "{d}/x"), ["{d}/no-dataset: no such artifact"]),
        (
            ("mask-eval", "--dataset", "{d}/emptydir", "--output", "{d}/x"),
            ["{d}/emptydir: incomplete or not a kfnlp artifact"],
        ),
        (
            ("mask-eval", "--dataset", "{d}/emptydir", "--output", "{d}/x", "--set", "strategy=span"),
            ["mask_eval.strategy: expected one of 'token', 'whole_word', got 'span'"],
        ),
        (
            (
                "train-mlm",
                "--dataset",
                "{d}/emptydir",
                "--eval-set",
                "{d}/emptydir",
                "--output",
                "{d}/x",
                "--base-model",
                "{d}/no-model",
            ),
            ["--base-model: {d}/no-model: no such model directory"],
        ),
        (
            (
                "train-mlm",
                "--dataset",
                "{d}/emptydir",
                "--eval-set",
                "{d}/emptydir",
                "--output",
                "{d}/x",
                "--set",
                "learning_rate=fast",
            ),
            ["train_mlm.learning_rate: expected a number, got 'fast'"],
        ),
        (
            ("evaluate", "--model", "{d}/no-model", "--eval-set", "{d}/emptydir", "--output", "{d}/x"),
            ["--model: {d}/no-model: no such model directory"],
        ),
        (
            (
                "evaluate",
                "--model",
                "builtin:splade-tiny",
                "--eval-set",
                "{d}/emptydir",
                "--output",
                "{d}/x",
                "--set",
                "top_k=0",
            ),
            ["evaluate: top_k must be >= 1, got 0"],
        ),
    ],
    ids=[
        "mask-eval-missing-dataset",
        "mask-eval-incomplete-dataset",
        "mask-eval-bad-literal",
        "train-mlm-missing-base-model",
        "train-mlm-wrong-type",
        "evaluate-missing-model",
        "evaluate-range",
    ],
)
def test_other_stages_bad_input(bad, args, fragments):
    result = run_cli("stage", *_args(args, bad))
    _check_one_error_line(result, fragments, bad)
    assert not (bad / "x").exists()


# ---- kfnlp run mlm-adapt --local ----------------------------------------------------

TINY = ("--set", "preprocess.max_documents=300", "--set", "train_mlm.max_steps=5", "--set", "mask_eval.max_chunks=32")

# caught by the preflight, before kfp.local starts any stage
RUN_PREFLIGHT_CASES = [
    (
        "missing-source",
        ("--set", "preprocess.source={d}/nope.jsonl"),
        ["preprocess.source: {d}/nope.jsonl: no such file or directory"],
    ),
    (
        "empty-source-file",
        ("--set", "preprocess.source={d}/empty.csv"),
        ["preprocess.source: {d}/empty.csv: file is empty"],
    ),
    (
        "unknown-key",
        ("--set", "train_mlm.learnin_rate=1e-4"),
        ["unknown config key train_mlm.learnin_rate", "known keys in train_mlm:", "learning_rate"],
    ),
    ("wrong-type", ("--set", "train_mlm.max_steps=ten"), ["train_mlm.max_steps: expected an integer, got 'ten'"]),
    ("bad-literal", ("--set", "train_mlm.eval_strategy=sometimes"), ["train_mlm.eval_strategy: expected one of"]),
    ("bad-yaml", ("--config", "{d}/bad.yaml"), ["{d}/bad.yaml:4: invalid YAML"]),
    (
        "yaml-unknown-key",
        ("--config", "{d}/badkey.yaml"),
        ["{d}/badkey.yaml:3: unknown config key preprocess.chunk_sise"],
    ),
    ("unknown-builtin-model", ("--set", "model=builtin:bert"), ["model: unknown builtin model builtin:bert"]),
    ("missing-model-dir", ("--set", "model={d}/no-model"), ["model: {d}/no-model: no such model directory"]),
    (
        "uncached-hub-model",
        ("--set", "model=nobody/not-a-cached-model"),
        ["model: 'nobody/not-a-cached-model': no such directory", "HF_HUB_OFFLINE"],
    ),
]


@pytest.mark.parametrize(
    ("args", "fragments"), [c[1:] for c in RUN_PREFLIGHT_CASES], ids=[c[0] for c in RUN_PREFLIGHT_CASES]
)
def test_run_preflight_fails_before_any_stage(bad, tmp_path, args, fragments):
    out = tmp_path / "run"
    result = run_cli(
        "run",
        "mlm-adapt",
        "--local",
        "--output",
        str(out),
        *TINY,
        *_args(args, bad),
        env={"HF_HUB_OFFLINE": "1"},
        timeout=120,
    )
    _check_one_error_line(result, fragments, bad)
    assert "Executing task" not in result.stdout
    assert not out.exists()  # nothing written at all, let alone a summary


def test_run_stage_error_names_stage_file_and_line(bad, tmp_path):
    """A broken line only the preprocess stage can find, inside a kfp.local subprocess."""
    out = tmp_path / "run"
    result = run_cli(
        "run",
        "mlm-adapt",
        "--local",
        "--output",
        str(out),
        *TINY,
        "--set",
        f"preprocess.source={bad}/broken.jsonl",
        timeout=300,
    )
    line = _check_one_error_line(
        result, ["pipeline mlm-adapt failed", "preprocess: {d}/broken.jsonl:57: broken JSON line"], bad
    )
    assert line.count("kfnlp: error:") == 1
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "failed"
    stages = {s["name"]: s for s in summary["stages"]}
    assert stages["preprocess"]["status"] == "failed"
    assert "broken.jsonl:57:" in stages["preprocess"]["error"]
    assert all(s["status"] == "not run" for name, s in stages.items() if name != "preprocess")
    assert "model" not in summary["artifacts"] and "perplexity_after" not in summary["metrics"]
    _no_complete_output(out / "artifacts")
    assert "failed" in (out / "report.md").read_text().lower()


def test_run_stage_error_with_debug_shows_a_traceback(bad, tmp_path):
    out = tmp_path / "run"
    result = run_cli(
        "--debug",
        "run",
        "mlm-adapt",
        "--local",
        "--output",
        str(out),
        *TINY,
        "--set",
        f"preprocess.source={bad}/nocol.csv",
        timeout=300,
    )
    assert result.returncode != 0
    assert "Traceback (most recent call last)" in result.stderr
    assert "PipelineError: pipeline mlm-adapt failed: preprocess:" in result.stderr
    assert f"{bad}/nocol.csv: no text column 'text'" in result.stderr
    assert json.loads((out / "summary.json").read_text())["status"] == "failed"
    _no_complete_output(out / "artifacts")
