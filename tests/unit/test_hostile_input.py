"""Hostile config and command-line input (issue 20): each is refused in one readable line that names
the key (file and line) and what was expected, never the CLI's "unexpected ...: this is a bug" path,
and huge values are echoed cut short."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from kfnlp import stages
from kfnlp.catalog import PIPELINES, load_config, load_section
from kfnlp.cli import build_parser, main
from kfnlp.config import SEED_MAX, read_yaml
from kfnlp.errors import ConfigError, KfnlpError, disk_full
from kfnlp.registry.promotion import PromoteConfig

MLM = PIPELINES["mlm-adapt"]


def _write(tmp_path: Path, text: str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _one_line_error(capsys, code: int) -> str:
    """The CLI's one error line (what `kfnlp` prints on stderr), after exit code ``code``."""
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code != 0, err
    assert len(lines) == 1, err
    assert lines[0].startswith("kfnlp: error: ") and "unexpected" not in lines[0], lines[0]
    return lines[0]


# ---- non-finite numbers -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "yaml_text, line, key",
    [
        ("train_mlm:\n  max_steps: 5\n  learning_rate: .nan\n", 3, "train_mlm.learning_rate"),
        ("train_mlm:\n  learning_rate: .inf\n", 2, "train_mlm.learning_rate"),
        ("train_mlm:\n  weight_decay: .nan\n", 2, "train_mlm.weight_decay"),
        ("train_mlm:\n  num_epochs: -.inf\n", 2, "train_mlm.num_epochs"),
        ("preprocess:\n  test_size: .nan\n", 2, "preprocess.test_size"),
        ("promote:\n  margin: .inf\n", 2, "promote.margin"),
    ],
)
def test_non_finite_numbers_in_a_config_file_are_refused(tmp_path, yaml_text, line, key):
    path = _write(tmp_path, yaml_text)
    with pytest.raises(ConfigError) as info:
        load_config(MLM, str(path))
    assert str(info.value).startswith(f"{path}:{line}: {key}: expected a finite number, got "), info.value


@pytest.mark.parametrize("value", ["nan", "inf", "-Infinity", ".nan", "1e400"])
def test_non_finite_numbers_from_set_are_refused(value):
    with pytest.raises(ConfigError, match=r"^train_mlm\.learning_rate: expected a finite number"):
        load_config(MLM, None, [f"train_mlm.learning_rate={value}"])


# ---- seeds and step counts ----------------------------------------------------------------------

SEEDED = ["preprocess", "mask_eval", "train_mlm", "preprocess_ner", "train_ner", "compare"]


@pytest.mark.parametrize("section", SEEDED)
@pytest.mark.parametrize("seed", [-1, SEED_MAX + 1, 2**64 + 1])
def test_out_of_range_seeds_are_refused_naming_the_key(section, seed):
    stage = stages.get(section)
    with pytest.raises(ConfigError) as info:
        load_section(stage.config, section, None, [f"seed={seed}"])
    assert str(info.value) == f"{section}.seed: expected an integer from 0 to 2**32 - 1 ({SEED_MAX}), got {seed}"


def test_the_largest_seed_is_accepted():
    assert load_section(stages.get("train_mlm").config, "train_mlm", None, [f"seed={SEED_MAX}"]).seed == SEED_MAX


@pytest.mark.parametrize("key", ["logging_steps", "save_steps", "eval_steps"])
def test_zero_step_intervals_are_refused_at_their_line(tmp_path, key):
    path = _write(tmp_path, f"train_mlm:\n  max_steps: 5\n  {key}: 0\n")
    with pytest.raises(ConfigError) as info:
        load_config(MLM, str(path))
    assert str(info.value) == f"{path}:3: train_mlm.{key}: expected an integer >= 1, got 0"


def test_a_mask_eval_of_zero_chunks_is_refused():
    with pytest.raises(ConfigError, match=r"^mask_eval\.max_chunks: expected an integer >= 1, got 0$"):
        load_config(MLM, None, ["mask_eval.max_chunks=0"])


# ---- YAML: duplicate keys, billion laughs --------------------------------------------------------


def test_a_duplicate_key_is_refused_naming_file_line_and_key(tmp_path):
    path = _write(tmp_path, "train_mlm:\n  max_steps: 5\n  learning_rate: 0.001\n  max_steps: 7\n")
    with pytest.raises(ConfigError) as info:
        load_config(MLM, str(path))
    assert str(info.value) == f"{path}:4: invalid YAML: duplicate key 'max_steps' (first at line 2); give each key once"


def test_a_duplicate_section_is_refused(tmp_path):
    path = _write(tmp_path, "preprocess:\n  chunk_size: 64\ntrain_mlm:\n  max_steps: 5\npreprocess:\n  seed: 1\n")
    with pytest.raises(ConfigError, match=r":5: invalid YAML: duplicate key 'preprocess' \(first at line 1\)"):
        read_yaml(path)


def test_yaml_merge_keys_may_be_overridden(tmp_path):
    """``<<`` merges then an explicit key is YAML's override idiom, not a duplicate."""
    path = _write(tmp_path, "base: &b {max_steps: 5}\ntrain_mlm:\n  <<: *b\n  max_steps: 7\n")
    assert read_yaml(path)["train_mlm"] == {"max_steps": 7}


BILLION_LAUGHS = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi", strict=True)
)


@pytest.mark.parametrize("where", ["top", "value"])
def test_a_billion_laughs_config_is_refused_quickly(tmp_path, where):
    text = BILLION_LAUGHS + ("evaluate:\n  prompts: *i\n" if where == "value" else "")
    path = _write(tmp_path, text)
    started = time.monotonic()
    with pytest.raises(ConfigError) as info:
        load_config(MLM, str(path))
    assert time.monotonic() - started < 2
    assert str(info.value).startswith(f"{path}: invalid YAML: the document expands to "), info.value
    assert "more than the 100,000 a config may hold" in str(info.value)


def test_a_billion_laughs_set_value_is_refused_quickly():
    flow = "[" + ", ".join(["&a [lol, lol, lol, lol, lol, lol, lol, lol, lol]"] + ["*a"] * 8) + "]"
    for _ in range(8):  # each level: a new anchor repeated 9 times
        flow = f"[&x {flow}" + ", *x" * 8 + "]"
    started = time.monotonic()
    with pytest.raises(ConfigError, match=r"^evaluate\.prompts: expected a list like \[a, b\]"):
        load_config(MLM, None, [f"evaluate.prompts={flow}"])
    assert time.monotonic() - started < 2


def test_an_alias_to_its_own_anchor_is_refused(tmp_path):
    path = _write(tmp_path, "a: &x\n  - *x\n")
    with pytest.raises(ConfigError, match=r"invalid YAML: an alias refers to its own anchor"):
        read_yaml(path)


def test_a_few_aliases_still_work(tmp_path):
    path = _write(tmp_path, 'x: &p ["a [MASK] b"]\nevaluate:\n  prompts: *p\n')
    assert read_yaml(path)["evaluate"]["prompts"] == ["a [MASK] b"]


# ---- huge values are echoed cut short ------------------------------------------------------------


def test_a_50_mb_config_value_is_echoed_cut_short(tmp_path):
    path = _write(tmp_path, "train_mlm:\n  max_steps: " + "x" * 50_000_000 + "\n")
    with pytest.raises(ConfigError) as info:
        load_config(MLM, str(path))
    message = str(info.value)
    assert message.startswith(f"{path}:2: train_mlm.max_steps: expected an integer, got 'xxx")
    assert message.endswith("... (50000002 characters)") and len(message) < 400, message[:500]


@pytest.mark.parametrize(
    "item",
    ["train_mlm.max_steps=" + "9x" * 50_000, "train_mlm." + "k" * 100_000 + "=1", "y" * 100_000],
    ids=["value", "key", "no-equals"],
)
def test_a_100_kb_set_is_echoed_cut_short(capsys, item):
    code = main(["run", "mlm-adapt", "--local", "--set", item])
    line = _one_line_error(capsys, code)
    assert "characters)" in line and len(line) < 1000, line[:1100]


def test_the_cli_error_line_is_bounded(capsys, monkeypatch):
    from kfnlp.cli import COMMANDS

    def huge(args):
        raise KfnlpError("x" * 1_000_000)

    monkeypatch.setitem(COMMANDS, "pipelines", huge)
    line = _one_line_error(capsys, main(["pipelines"]))
    assert line.endswith("... (1000000 characters)") and len(line) < 2100


# ---- promote --margin / --guard ------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, message",
    [
        (["--margin", "-1"], "kfnlp: error: margin: expected a number >= 0, got -1.0"),
        (["--guard", "recall"], "kfnlp: error: guards: guard 'recall': expected METRIC:TOLERANCE, e.g. recall:0.02"),
    ],
)
def test_promote_refuses_a_bad_margin_or_guard_in_one_line(capsys, args, message):
    code = main(["registry", "promote", "some-model", "1", *args])
    assert _one_line_error(capsys, code) == message
    assert code == ConfigError.exit_code


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"margin": float("nan")}, "margin: expected a number >= 0, got nan"),
        ({"guards": ["recall:x"]}, "guards: guard 'recall:x': expected METRIC:TOLERANCE, e.g. recall:0.02"),
        ({"guards": ["recall:inf"]}, "guards: guard 'recall:inf': the tolerance must be a number >= 0"),
    ],
)
def test_a_bad_gate_is_a_config_error_even_built_directly(kwargs, message):
    with pytest.raises(ConfigError) as info:
        PromoteConfig(**kwargs)
    assert str(info.value) == message


# ---- model references ----------------------------------------------------------------------------


def test_an_empty_model_directory_is_refused_before_any_stage(tmp_path):
    from kfnlp.refs import check_model_ref

    with pytest.raises(ConfigError) as info:
        check_model_ref(str(tmp_path), "model")
    assert (
        str(info.value)
        == f"model: {tmp_path}: empty directory; expected a model directory (config.json, weights, tokenizer)"
    )


# ---- --debug after the command -------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "mlm-adapt", "--local", "--debug"],
        ["stage", "preprocess", "--output", "out", "--debug"],
        ["pipelines", "--debug"],
        ["registry", "list", "--debug"],
        ["registry", "--debug", "list"],
        ["predict", "ner", "--model", "m", "--debug", "text"],
        ["compile", "mlm-adapt", "-o", "out.yaml", "--debug"],
        ["images", "build", "--debug"],
    ],
)
def test_debug_is_accepted_after_the_command(argv):
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # the failure this test is about
        pytest.fail(f"kfnlp {' '.join(argv)}: refused (exit {exc.code})")
    assert args.debug is True


@pytest.mark.parametrize(
    "argv, debug",
    [
        (["--debug", "stage", "preprocess", "--output", "out"], True),
        (["stage", "preprocess", "--output", "out"], False),
        (["--debug", "registry", "list"], True),
    ],
)
def test_debug_before_the_command_still_works(argv, debug):
    assert build_parser().parse_args(argv).debug is debug


# ---- a full disk ------------------------------------------------------------------------------


def test_disk_full_is_recognised_through_wrapping_exceptions():
    import errno

    assert disk_full(OSError(errno.ENOSPC, "No space left on device"))
    assert disk_full(RuntimeError("Error while serializing: I/O error: No space left on device (os error 28)"))
    try:
        try:
            raise OSError(errno.EDQUOT, "quota")
        except OSError as inner:
            raise RuntimeError("file write failed") from inner
    except RuntimeError as outer:
        assert disk_full(outer)
    assert not disk_full(OSError(errno.EACCES, "Permission denied"))
    assert not disk_full(ValueError(json.dumps({"x": 1})))
