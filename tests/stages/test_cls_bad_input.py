"""Bad classification input: one clear line naming the file (and line and field), a non-zero exit,
no traceback and no output that looks complete. A few cases go through the real CLI (``kfnlp stage
preprocess-cls``); the rest call the stage function, whose error is the line the CLI prints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kfnlp.errors import InputError
from kfnlp.stages.preprocess_cls import PreprocessClsConfig, preprocess_cls
from tests.support.cli import run_cli

MODEL = "builtin:splade-tiny"
MANIFEST = "kfnlp-manifest.json"


def _csv(tmp_path: Path, rows: list[str], header: str = "text,label", name: str = "data.csv") -> Path:
    path = tmp_path / name
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


def _balanced(n: int = 20) -> list[str]:
    return [f"text number {i},{'pos' if i % 2 else 'neg'}" for i in range(n)]


def _nothing_complete(out: Path) -> None:
    if out.exists():
        assert not list(out.rglob(MANIFEST))


def _cli_error(tmp_path: Path, *overrides: str) -> str:
    out = tmp_path / "out"
    result = run_cli("stage", "preprocess-cls", "--output", str(out), *(x for o in overrides for x in ("--set", o)))
    assert result.returncode != 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("kfnlp: error: "), lines[0]
    _nothing_complete(out)
    return lines[0]


def _error(tmp_path: Path, **config) -> str:
    out = tmp_path / "out"
    with pytest.raises(InputError) as caught:
        preprocess_cls(str(out), PreprocessClsConfig(**config), MODEL)
    message = str(caught.value)
    assert "\n" not in message
    _nothing_complete(out)
    return message


# ---- through the CLI ------------------------------------------------------------------


def test_missing_label_column(tmp_path):
    path = _csv(tmp_path, ["a fine film,5"], header="text,stars")
    line = _cli_error(tmp_path, f"source={path}")
    assert line == (
        f"kfnlp: error: {path}:1: no label column 'label'; available columns: 'text', 'stars' "
        "(set preprocess_cls.label_column)"
    )


def test_label_outside_the_configured_set(tmp_path):
    rows = _balanced()
    rows[7] = "text number 7,meh"
    path = _csv(tmp_path, rows)
    line = _cli_error(tmp_path, f"source={path}", 'labels=["neg","pos"]')
    assert line == f"kfnlp: error: {path}:9: label 'meh' is not in the label set ['neg', 'pos']"


def test_empty_class_in_a_stratified_split(tmp_path):
    path = _csv(tmp_path, [*_balanced(), "the only odd one,odd"])
    line = _cli_error(tmp_path, f"source={path}")
    assert line.startswith(f"kfnlp: error: {path}: class 'odd' has 1 training example(s), too few for a stratified")


# ---- through the stage function ----------------------------------------------------------


def test_text_that_is_not_text(tmp_path):
    path = tmp_path / "data.jsonl"
    records = [{"text": f"text {i}", "label": i % 2} for i in range(10)] + [{"text": 3.5, "label": 1}]
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    assert _error(tmp_path, source=str(path)) == f"{path}:11: text column 'text' is not text: float 3.5"


def test_empty_text(tmp_path):
    path = _csv(tmp_path, [*_balanced(), '"   ",pos'])
    assert _error(tmp_path, source=str(path)) == f"{path}:22: text column 'text' is empty"


def test_missing_text_pair_column_in_a_validation_file(tmp_path):
    train = _csv(tmp_path, [f"{row},b" for row in _balanced()], header="text,label,hypothesis")
    validation = _csv(tmp_path, ["x,pos"], name="validation.csv")
    message = _error(tmp_path, source=str(train), validation_source=str(validation), text_pair_column="hypothesis")
    assert message.startswith(f"{validation}:1: no text pair column 'hypothesis'; available columns: 'text', 'label'")


def test_configured_label_without_training_examples(tmp_path):
    path = _csv(tmp_path, _balanced())
    message = _error(tmp_path, source=str(path), labels=["neg", "pos", "unused"])
    assert message == f"{path}: class 'unused' has no training examples (labels: ['neg', 'pos', 'unused'])"


def test_unreadable_file(tmp_path):
    path = tmp_path / "data.csv"
    path.write_bytes(b"text,label\ngood,pos\n\xff\xfe,neg\n")
    assert _error(tmp_path, source=str(path)).startswith(f"{path}:3: not valid UTF-8")


def test_missing_source(tmp_path):
    assert _error(tmp_path, source=str(tmp_path / "nope.csv")) == f"{tmp_path / 'nope.csv'}: no such file or directory"


def test_a_single_class(tmp_path):
    path = _csv(tmp_path, [f"text {i},pos" for i in range(10)])
    assert _error(tmp_path, source=str(path)) == (
        f"{path}: the labels found: ['pos']: a classifier needs at least two labels"
    )
