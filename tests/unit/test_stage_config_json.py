"""``kfnlp stage NAME --config-json JSON``: the stage's config as its component receives it (what each node of
a multi-node job runs), with --set on top; exclusive with --config; bad JSON is one line."""

from __future__ import annotations

import json

import pytest

from kfnlp.cli import build_parser, main
from kfnlp.cli.stage import _config
from kfnlp.config import to_json
from kfnlp.stages import train_mlm


def config_of(*argv: str):
    args = build_parser().parse_args(
        ["stage", "train-mlm", "--dataset", "d", "--eval-set", "e", "--output", "o", *argv]
    )
    return _config(train_mlm.STAGE, args.config, args.config_json, args.overrides)


def test_config_json_is_the_config_the_component_received_and_set_applies_on_top():
    sent = train_mlm.TrainMlmConfig(max_steps=7, learning_rate=0.001, checkpoint_dir="s3://b/run/model-checkpoints")
    assert config_of("--config-json", to_json(sent)) == sent
    changed = config_of("--config-json", to_json(sent), "--set", "max_steps=9", "--set", "train_mlm.seed=3")
    assert (changed.max_steps, changed.seed, changed.learning_rate) == (9, 3, 0.001)
    assert config_of("--config-json", "{}") == train_mlm.TrainMlmConfig()


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--config-json", "{max_steps: 3"], "--config-json: not valid JSON"),
        (["--config-json", "[1, 2]"], "--config-json: expected a JSON object of train-mlm's keys, got list"),
        (["--config-json", json.dumps({"max_step": 3})], "max_step"),
        (["--config-json", json.dumps({"max_steps": "many"})], "max_steps"),
        (["--config-json", "{}", "--config", "x.yaml"], "--config and --config-json: give one of them"),
    ],
)
def test_bad_config_json_is_one_line_and_exit_2(argv, says, capsys):
    code = main(["stage", "train-mlm", "--dataset", "d", "--eval-set", "e", "--output", "o", *argv])
    err = capsys.readouterr().err.strip()
    assert code == 2 and says in err and err.count("\n") == 0, err
