"""The ``kfnlp`` command: --help everywhere, the pipeline catalog, fill-mask."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from kfnlp import catalog, stages
from kfnlp.catalog import load_config
from kfnlp.config import build, to_dict
from tests.support.cli import MODEL, run_cli


def _one_error_line(result, *fragments: str) -> str:
    assert result.returncode != 0, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("kfnlp: error: ")
    assert "Traceback" not in result.stderr + result.stdout
    for fragment in fragments:
        assert fragment in lines[0]
    return lines[0]


HELP = [
    ([], ["Kubeflow pipeline components", "run", "stage", "predict", "pipelines", "--debug"]),
    (["run"], ["kfp.local", "--local", "--config", "--set", "--output", "summary.json"]),
    (["stage"], list(stages.by_name())),  # every stage entry is a subcommand
    (["predict"], ["fill-mask"]),
    (["predict", "fill-mask"], ["[MASK]", "--model", "--top-k", "--json"]),
    (["pipelines"], ["--config", "List pipelines"]),
    (["deploy"], ["InferenceService", "--apply", "--s3-secret", "--storage-uri", "--profile", "-o FILE"]),
    (["registry", "publish"], ["--hub", "--private", "$HF_TOKEN"]),
    (["registry", "rollback"], ["--redeploy", "--s3-secret"]),
] + [
    (
        ["stage", name],
        [stage.help, "--config", "--set", "config keys", *(i.flag for i in stage.inputs)],
    )
    for name, stage in stages.by_name().items()
]


@pytest.mark.parametrize(("command", "expected"), HELP, ids=[" ".join(c) or "kfnlp" for c, _ in HELP])
def test_help_on_every_command(command, expected):
    result = run_cli(*command, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: kfnlp")
    assert result.stderr == ""
    for text in expected:
        assert text in result.stdout


def test_the_parser_loads_stage_modules_only_for_kfnlp_stage():
    """`kfnlp --help` and the other commands stay quick: the stage subcommands are added on first use."""
    code = (
        "import sys; from kfnlp.cli import build_parser; parser = build_parser(); parser.format_help(); "
        "loaded = lambda: sorted(m for m in sys.modules if m.startswith('kfnlp.stages.') and m != 'kfnlp.stages.entry'); "
        "print(loaded()); parser.parse_args(['stage', 'compare', '--mlm-base', 'a', '--mlm-adapted', 'b', "
        "'--task-base', 'c', '--task-adapted', 'd', '--output', 'e']); print(len(loaded()))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:2] == ["[]", str(len(stages.MODULES))]


def test_stage_help_lists_config_keys_with_types_and_defaults():
    out = run_cli("stage", "preprocess", "--help").stdout
    assert "source" in out and '"builtin:imdb"' in out
    assert "max_documents      an integer or null (default: null)" in out
    assert "--set max_documents=1000" in " ".join(out.split())  # the example uses the stage's own keys


def test_version():
    result = run_cli("--version")
    assert result.returncode == 0 and result.stdout.startswith("kfnlp ")


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        ([], "required: COMMAND"),
        (["run", "mlm-adapt"], "--local"),
        (["stage"], "required: STAGE"),
        (["stage", "nope"], "invalid choice: 'nope'"),
        (["predict", "fill-mask", "--model", MODEL], "TEXT"),
    ],
)
def test_usage_errors_exit_2(args, fragment):
    result = run_cli(*args)
    assert result.returncode == 2
    assert fragment in result.stderr
    assert "Traceback" not in result.stderr


def test_pipelines_lists_mlm_adapt():
    result = run_cli("pipelines")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[0] == "mlm-adapt"
    assert "masked-LM domain adaptation" in result.stdout


def test_pipelines_config_prints_the_effective_defaults_as_yaml():
    result = run_cli("pipelines", "--config", "mlm-adapt")
    assert result.returncode == 0, result.stderr
    data = yaml.safe_load(result.stdout)
    entry = catalog.get("mlm-adapt")
    assert data == to_dict(load_config(entry))
    assert to_dict(build(entry.config_type, data)) == data  # a usable --config file as printed
    assert data["train_mlm"]["eval_strategy"] == "no"


def test_pipelines_config_unknown_pipeline():
    _one_error_line(run_cli("pipelines", "--config", "mlm-adpat"), "unknown pipeline 'mlm-adpat'", "mlm-adapt")


def test_run_unknown_pipeline():
    _one_error_line(
        run_cli("run", "nope", "--local"),
        "unknown pipeline 'nope'; available: adapt-then-cls, adapt-then-ner, clm-adapt, cls, mlm-adapt, ner",
    )


def test_fill_mask_prints_predictions():
    result = run_cli("predict", "fill-mask", "--model", MODEL, "This is a great [MASK].")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "This is a great [MASK]."
    assert len(lines) == 6
    scores = [float(line.split()[0]) for line in lines[1:]]
    assert scores == sorted(scores, reverse=True) and all(0 < s <= 1 for s in scores)


def test_fill_mask_json():
    texts = ["This is a great [MASK].", "The acting in this movie was [MASK]."]
    result = run_cli("predict", "fill-mask", "--model", MODEL, "--json", "--top-k", "3", *texts)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert [item["text"] for item in data] == texts
    for item in data:
        assert len(item["predictions"]) == 3
        assert all(set(p) == {"token", "score"} for p in item["predictions"])


def test_fill_mask_without_mask_is_a_clear_error():
    result = run_cli("predict", "fill-mask", "--model", MODEL, "There is no mask here.")
    _one_error_line(result, "'There is no mask here.'", "expected exactly one [MASK], found 0")
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--model", "/no/such/model"], "--model: /no/such/model: no such model directory"),
        (["--model", "builtin:bert"], "--model: unknown builtin model builtin:bert"),
        (["--model", MODEL, "--top-k", "0"], "--top-k: expected an integer >= 1, got 0"),
    ],
)
def test_fill_mask_bad_arguments_fail_before_loading(args, fragment):
    _one_error_line(run_cli("predict", "fill-mask", *args, "a [MASK] film"), fragment)
