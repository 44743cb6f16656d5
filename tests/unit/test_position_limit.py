"""Sequence lengths over the model's position limit (config.json ``max_position_embeddings``,
less the RoBERTa family's padding offset) fail before any work, in one line naming the key, the
value, the limit and the model, rather than as a raw tensor error in train-mlm minutes later."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from kfnlp import catalog
from kfnlp.catalog import load_config
from kfnlp.config import sequence_length_fields
from kfnlp.errors import ConfigError
from kfnlp.modeling import check_position_limit, position_limit
from kfnlp.refs import preflight
from kfnlp.stages.preprocess import PreprocessConfig, preprocess
from kfnlp.stages.preprocess_ner import NerPreprocessConfig, preprocess_ner
from tests.support.cli import MODEL, run_cli


def _model_dir(tmp_path: Path, **config) -> Path:
    """A directory preflight accepts as a model: config.json and a tokenizer file (no weights: never read)."""
    path = tmp_path / "model"
    path.mkdir()
    (path / "config.json").write_text(json.dumps(config))
    (path / "tokenizer.json").write_text("{}")
    return path


@pytest.mark.parametrize(
    ("config", "limit"),
    [
        ({"model_type": "bert", "max_position_embeddings": 512, "pad_token_id": 0}, 512),
        ({"model_type": "roberta", "max_position_embeddings": 514, "pad_token_id": 1}, 512),
        ({"model_type": "xlm-roberta", "max_position_embeddings": 514, "pad_token_id": 1}, 512),
        ({"model_type": "camembert", "max_position_embeddings": 130, "pad_token_id": 0}, 129),
        ({"model_type": "gpt2", "n_positions": 1024}, 1024),
        ({"model_type": "deberta-v2", "max_position_embeddings": 512, "position_biased_input": False}, None),
        ({"model_type": "t5"}, None),
    ],
)
def test_position_limit_reads_config_json(tmp_path, config, limit):
    assert position_limit(str(_model_dir(tmp_path, **config))) == limit


def test_position_limit_is_unknown_without_a_config_or_for_remote_refs(tmp_path):
    assert position_limit(MODEL) == 512
    (tmp_path / "tokenizer.json").write_text("{}")  # a tokenizer directory: no config.json
    assert position_limit(str(tmp_path)) is None
    assert position_limit("models:/kfnlp-mlm/1") is None
    assert position_limit("s3://bucket/model") is None
    check_position_limit(str(tmp_path), [("chunk_size", 100_000)])  # unknown limit: nothing to refuse


def test_length_fields_are_declared_not_listed():
    config = load_config(catalog.get("adapt-then-ner"))
    keys = [key for key, _ in sequence_length_fields(config)]
    assert keys == ["preprocess_ner.max_length", "preprocess.chunk_size"]
    assert [key for key, _ in sequence_length_fields(load_config(catalog.get("mlm-adapt")))] == [
        "preprocess.chunk_size"
    ]


def test_preflight_names_key_value_limit_and_model_with_the_roberta_offset(tmp_path):
    model = _model_dir(tmp_path, model_type="roberta", max_position_embeddings=514, pad_token_id=1)
    entry = catalog.get("mlm-adapt")
    preflight(load_config(entry, overrides=[f"model={model}", "preprocess.chunk_size=512"]))
    with pytest.raises(ConfigError) as info:
        preflight(load_config(entry, overrides=[f"model={model}", "preprocess.chunk_size=513"]))
    message = str(info.value)
    assert message.startswith("preprocess.chunk_size: 513 tokens is more than the model's position limit of 512")
    assert str(model) in message and "\n" not in message
    assert info.value.key == "preprocess.chunk_size"
    ner = catalog.get("adapt-then-ner")
    with pytest.raises(ConfigError, match=r"^preprocess_ner\.max_length: 600 tokens .* limit of 512 \(builtin:"):
        preflight(load_config(ner, overrides=["preprocess_ner.max_length=600"]))


def _refused(result, output: Path, key: str, value: int, started: float) -> None:
    assert result.returncode != 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"kfnlp: error: {key}: {value} tokens is more than the model's position limit")
    assert f"limit of 512 ({MODEL}" in lines[0]
    assert not output.exists()
    assert time.monotonic() - started < 60  # the preflight: no stage ran


def test_kfnlp_run_refuses_a_chunk_size_over_the_limit_before_any_stage(tmp_path):
    output = tmp_path / "run"
    started = time.monotonic()
    result = run_cli("run", "mlm-adapt", "--local", "--set", "preprocess.chunk_size=1024", "--output", str(output))
    _refused(result, output, "preprocess.chunk_size", 1024, started)


def test_kfnlp_stage_refuses_its_own_length_key_over_the_limit(tmp_path):
    output = tmp_path / "dataset"
    started = time.monotonic()
    result = run_cli("stage", "preprocess", "--output", str(output), "--set", "chunk_size=1024")
    _refused(result, output, "chunk_size", 1024, started)


def test_the_stages_check_it_themselves(tmp_path):
    with pytest.raises(ConfigError, match=r"^preprocess\.chunk_size: 513 tokens .* limit of 512"):
        preprocess(str(tmp_path / "ds"), PreprocessConfig(chunk_size=513), MODEL)
    with pytest.raises(ConfigError, match=r"^preprocess_ner\.max_length: 1000 tokens .* limit of 512"):
        preprocess_ner(str(tmp_path / "ner"), NerPreprocessConfig(max_length=1000), MODEL)
    assert list(tmp_path.iterdir()) == []
