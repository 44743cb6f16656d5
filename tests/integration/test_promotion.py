"""The promotion gate on a real embedded MLflow store: which version is @champion,
the decision trail, rollback, the ``kfnlp registry`` commands, the pipeline step and
loading ``models:/NAME@champion``.

A fresh MLflow sqlite database costs several seconds of schema migrations, so each
test starts from a copy of an empty, already migrated database (:func:`fresh_store`).
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from kfnlp.errors import InputError, RegistryError
from kfnlp.registry import Registry
from kfnlp.registry.promotion import (
    CHAMPION,
    EVAL_TAG,
    PREVIOUS,
    PRIMARY_TAG,
    PromoteConfig,
    decisions,
    evaluate_gate,
    promote,
    rollback,
)
from kfnlp.registry.store import models_cache
from tests.support.cli import MODEL, run_cli

EVAL = "a" * 64  # an eval set fingerprint
OTHER_EVAL = "b" * 64
NER_LABELS = ["O", "B-X", "I-X"]


def fresh_store(home: Path, basetemp: Path) -> Path:
    """Put an empty, migrated MLflow database where ``Registry()`` looks under ``home``."""
    template = basetemp / "mlflow-template" / "mlflow.db"
    if not template.is_file():
        template.parent.mkdir(parents=True, exist_ok=True)
        Registry(f"sqlite:///{template}").client.search_registered_models()  # runs the migrations
    target = home / "registry" / "mlflow.db"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(template, target)
    return target


@pytest.fixture(autouse=True)
def _store(kfnlp_home, tmp_path_factory):
    fresh_store(kfnlp_home, tmp_path_factory.getbasetemp())


@pytest.fixture
def model_dir(tmp_path) -> Path:
    """A stand-in model directory: registration only needs files to log."""
    path = tmp_path / "model"
    path.mkdir()
    (path / "config.json").write_text("{}")
    return path


@pytest.fixture
def registry() -> Registry:
    return Registry()


def add(registry, model_dir, name="m", eval_set=EVAL, primary="f1", **metrics) -> int:
    """Register a version evaluated on ``eval_set`` with ``metrics``; its number."""
    tags = {EVAL_TAG: eval_set, PRIMARY_TAG: primary, "kfnlp.task": "ner" if primary == "f1" else "mlm"}
    return registry.register(name, model_dir, metrics=metrics, params={}, tags=tags, files={})["version"]


def aliases(registry, name="m") -> dict[str, int]:
    return {alias: int(version) for alias, version in registry.get_model(name).aliases.items()}


GATE = PromoteConfig()


# --- the gate on the store ---------------------------------------------------------


def test_first_becomes_champion_better_replaces_it_worse_and_equal_are_rejected(registry, model_dir):
    v1 = add(registry, model_dir, f1=0.80, recall=0.7)
    first = promote(registry, "m", v1, GATE)
    assert (first.outcome, first.reason) == ("promoted", "first champion of this model")
    assert (first.champion_before, first.champion_after) == (None, v1)
    assert aliases(registry) == {CHAMPION: v1}

    v2 = add(registry, model_dir, f1=0.85, recall=0.7)
    second = promote(registry, "m", v2, GATE)
    assert second.outcome == "promoted", second.reason
    assert "0.85" in second.reason and "0.8" in second.reason
    assert aliases(registry) == {CHAMPION: v2, PREVIOUS: v1}

    v3 = add(registry, model_dir, f1=0.75, recall=0.9)
    worse = promote(registry, "m", v3, GATE)
    assert worse.outcome == "rejected"
    assert "0.75" in worse.reason and "0.85" in worse.reason, worse.reason
    assert (worse.champion_before, worse.champion_after) == (v2, v2)
    assert aliases(registry) == {CHAMPION: v2, PREVIOUS: v1}, "a rejection moves no alias"

    v4 = add(registry, model_dir, f1=0.85, recall=0.7)
    equal = promote(registry, "m", v4, GATE)
    assert equal.outcome == "rejected", "equal is not better: the candidate must be strictly better"
    assert aliases(registry) == {CHAMPION: v2, PREVIOUS: v1}


def test_perplexity_lower_is_better(registry, model_dir):
    v1 = add(registry, model_dir, primary="perplexity", perplexity=20.0)
    v2 = add(registry, model_dir, primary="perplexity", perplexity=18.5)
    v3 = add(registry, model_dir, primary="perplexity", perplexity=19.0)
    assert promote(registry, "m", v1, GATE).outcome == "promoted"
    assert promote(registry, "m", v2, GATE).outcome == "promoted"
    rejected = promote(registry, "m", v3, GATE)
    assert rejected.outcome == "rejected"
    assert "19" in rejected.reason and "18.5" in rejected.reason and "lower" in rejected.reason
    assert aliases(registry) == {CHAMPION: v2, PREVIOUS: v1}


def test_margin_guards_and_eval_set_reject(registry, model_dir):
    v1 = add(registry, model_dir, f1=0.80, recall=0.70)
    promote(registry, "m", v1, GATE)

    small_gain = add(registry, model_dir, f1=0.805, recall=0.70)
    decision = promote(registry, "m", small_gain, PromoteConfig(margin=0.01))
    assert decision.outcome == "rejected"
    assert "0.805" in decision.reason and "0.8" in decision.reason and "0.01" in decision.reason

    recall_drop = add(registry, model_dir, f1=0.90, recall=0.68)
    decision = promote(registry, "m", recall_drop, PromoteConfig(guards=["recall:0.01"]))
    assert decision.outcome == "rejected"
    assert "guard recall" in decision.reason and "0.68" in decision.reason and "0.7" in decision.reason

    other_eval = add(registry, model_dir, eval_set=OTHER_EVAL, f1=0.99, recall=0.99)
    decision = promote(registry, "m", other_eval, GATE)
    assert decision.outcome == "rejected" and "another eval set" in decision.reason
    assert aliases(registry) == {CHAMPION: v1}

    # the same candidates pass once the condition they failed is relaxed
    assert promote(registry, "m", recall_drop, PromoteConfig(guards=["recall:0.05"])).outcome == "promoted"
    assert aliases(registry) == {CHAMPION: recall_drop, PREVIOUS: v1}


def test_force_promotes_a_rejected_version_and_says_so(registry, model_dir):
    v1 = add(registry, model_dir, f1=0.80)
    v2 = add(registry, model_dir, f1=0.60)
    promote(registry, "m", v1, GATE)
    forced = promote(registry, "m", v2, GATE, force=True)
    assert (forced.outcome, forced.forced) == ("promoted", True)
    assert forced.reason.startswith("forced despite: ") and "0.6" in forced.reason
    assert forced.line().endswith("[forced]")
    assert aliases(registry) == {CHAMPION: v2, PREVIOUS: v1}
    tags = registry.get_version("m", v2).tags
    assert (tags["kfnlp.decision"], tags["kfnlp.decision.forced"]) == ("promoted", "true")
    assert "forced despite" in tags["kfnlp.decision.reason"]
    assert decisions(registry, "m")[-1]["forced"] is True
    # force on a version that passes anyway is not recorded as forced
    v3 = add(registry, model_dir, f1=0.9)
    assert promote(registry, "m", v3, GATE, force=True).forced is False


def test_promoting_the_champion_again_is_unchanged(registry, model_dir):
    v1 = add(registry, model_dir, f1=0.8)
    promote(registry, "m", v1, GATE)
    again = promote(registry, "m", v1, GATE)
    assert (again.outcome, again.reason) == ("unchanged", "already the champion")
    assert aliases(registry) == {CHAMPION: v1}


def test_rollback_swaps_champion_and_previous(registry, model_dir):
    v1 = add(registry, model_dir, f1=0.8)
    v2 = add(registry, model_dir, f1=0.9)
    promote(registry, "m", v1, GATE)
    with pytest.raises(RegistryError, match="no @previous-champion"):
        rollback(registry, "m")
    promote(registry, "m", v2, GATE)
    back = rollback(registry, "m")
    assert (back.outcome, back.version, back.champion_before, back.champion_after) == ("rollback", v1, v2, v1)
    assert aliases(registry) == {CHAMPION: v1, PREVIOUS: v2}
    assert registry.get_version("m", v1).tags["kfnlp.decision"] == "rollback"
    rollback(registry, "m")  # and back again
    assert aliases(registry) == {CHAMPION: v2, PREVIOUS: v1}


def test_unknown_model_or_version(registry, model_dir):
    add(registry, model_dir, f1=0.8)
    with pytest.raises(RegistryError, match="no version 7 of model 'm'"):
        promote(registry, "m", 7, GATE)
    with pytest.raises(RegistryError, match="nope"):
        promote(registry, "nope", 1, GATE)
    with pytest.raises(RegistryError, match="no model 'nope'"):
        rollback(registry, "nope")
    with pytest.raises(RegistryError, match="no model 'nope'"):
        decisions(registry, "nope")
    assert decisions(registry, "m") == [], "failed lookups record nothing"


def test_the_decision_trail_lists_every_decision_in_order(registry, model_dir):
    f1s = [0.80, 0.85, 0.70, 0.90]
    versions = [add(registry, model_dir, f1=f1) for f1 in f1s]
    for version in versions:
        promote(registry, "m", version, GATE)
    promote(registry, "m", versions[0], GATE, force=True)
    rollback(registry, "m")

    trail = decisions(registry, "m")
    assert [d["sequence"] for d in trail] == list(range(1, 7))
    assert [(d["version"], d["outcome"]) for d in trail] == [
        (1, "promoted"),
        (2, "promoted"),
        (3, "rejected"),
        (4, "promoted"),
        (1, "promoted"),
        (4, "rollback"),
    ]
    assert [d["champion_before"] for d in trail] == [None, 1, 2, 2, 4, 1]
    assert [d["champion_after"] for d in trail] == [1, 2, 2, 4, 1, 4]
    assert [d["candidate"].get("f1") for d in trail[:5]] == [0.80, 0.85, 0.70, 0.90, 0.80]
    assert [d["champion"].get("f1") for d in trail[:5]] == [None, 0.80, 0.85, 0.85, 0.90]
    assert [d["forced"] for d in trail] == [False, False, False, False, True, False]
    assert all(d["model"] == "m" and d["by"] and d["time"].endswith("Z") for d in trail)
    assert "0.7" in trail[2]["reason"] and "0.85" in trail[2]["reason"]

    # each version carries its latest outcome
    tags = {v: registry.get_version("m", v).tags for v in versions}
    assert {v: t["kfnlp.decision"] for v, t in tags.items()} == {
        1: "promoted",
        2: "promoted",
        3: "rejected",
        4: "rollback",
    }
    assert tags[1]["kfnlp.decision.reason"].startswith("forced despite")
    assert tags[1]["kfnlp.decision.forced"] == "true"
    assert "0.7" in tags[3]["kfnlp.decision.reason"]
    assert aliases(registry) == {CHAMPION: 4, PREVIOUS: 1}


# --- evaluate_gate and PromoteConfig, no store ----------------------------------------


def _version(eval_set: str | None = EVAL, primary: str | None = "f1"):
    """A stand-in for an MLflow ModelVersion: evaluate_gate only reads ``.tags``."""
    tags = {}
    if eval_set is not None:
        tags[EVAL_TAG] = eval_set
    if primary is not None:
        tags[PRIMARY_TAG] = primary
    return SimpleNamespace(tags=tags)


# (name, candidate, champion, candidate metrics, champion metrics, gate, accept, reason fragment)
GATE_CASES = [
    ("higher f1", _version(), _version(), {"f1": 0.9}, {"f1": 0.8}, GATE, True, "higher by 0.1"),
    ("lower f1", _version(), _version(), {"f1": 0.7}, {"f1": 0.8}, GATE, False, "f1 0.7 vs champion 0.8: not higher"),
    ("equal f1", _version(), _version(), {"f1": 0.8}, {"f1": 0.8}, GATE, False, "not higher by at least 0"),
    (
        "lower perplexity",
        _version(primary="perplexity"),
        _version(primary="perplexity"),
        {"perplexity": 9.0},
        {"perplexity": 10.0},
        GATE,
        True,
        "lower by 1",
    ),
    (
        "higher perplexity",
        _version(primary="perplexity"),
        _version(primary="perplexity"),
        {"perplexity": 11.0},
        {"perplexity": 10.0},
        GATE,
        False,
        "not lower",
    ),
    (
        "lower eval_loss",
        _version(primary="eval_loss"),
        _version(primary="eval_loss"),
        {"eval_loss": 1.5},
        {"eval_loss": 2.0},
        GATE,
        True,
        "lower by 0.5",
    ),
    ("other eval set", _version(OTHER_EVAL), _version(), {"f1": 0.9}, {"f1": 0.8}, GATE, False, "another eval set"),
    ("no eval set", _version(None), _version(), {"f1": 0.9}, {"f1": 0.8}, GATE, False, "none vs"),
    ("neither has an eval set", _version(None), _version(None), {"f1": 0.9}, {"f1": 0.8}, GATE, False, "eval set"),
    (
        "other primary metric",
        _version(primary="perplexity"),
        _version(),
        {"f1": 0.9, "perplexity": 1.0},
        {"f1": 0.8, "perplexity": 2.0},
        GATE,
        False,
        "primary metric 'perplexity' differs",
    ),
    ("no primary metric", _version(primary=None), _version(), {"f1": 0.9}, {"f1": 0.8}, GATE, False, "differs"),
    ("candidate lacks it", _version(), _version(), {}, {"f1": 0.8}, GATE, False, "f1 missing"),
    ("champion lacks it", _version(), _version(), {"f1": 0.9}, {}, GATE, False, "f1 missing"),
    (
        "below the margin",
        _version(),
        _version(),
        {"f1": 0.805},
        {"f1": 0.8},
        PromoteConfig(margin=0.01),
        False,
        "not higher by at least 0.01",
    ),
    (
        "exactly the margin",  # binary-exact values: 0.75 - 0.5 == 0.25
        _version(),
        _version(),
        {"f1": 0.75},
        {"f1": 0.5},
        PromoteConfig(margin=0.25),
        True,
        "higher by 0.25",
    ),
    (
        "the margin in decimal",  # 0.9 - 0.8 is 0.0999... in binary: still meets a 0.1 margin
        _version(),
        _version(),
        {"f1": 0.9},
        {"f1": 0.8},
        PromoteConfig(margin=0.1),
        True,
        "higher by 0.1",
    ),
    (
        "guard regressed",
        _version(),
        _version(),
        {"f1": 0.9, "recall": 0.68},
        {"f1": 0.8, "recall": 0.70},
        PromoteConfig(guards=["recall:0.01"]),
        False,
        "guard recall regressed: 0.68 vs champion 0.7 (tolerance 0.01)",
    ),
    (
        "guard within tolerance",
        _version(),
        _version(),
        {"f1": 0.9, "recall": 0.695},
        {"f1": 0.8, "recall": 0.70},
        PromoteConfig(guards=["recall:0.01"]),
        True,
        "higher",
    ),
    (
        "guard with zero tolerance, equal",
        _version(),
        _version(),
        {"f1": 0.9, "recall": 0.7},
        {"f1": 0.8, "recall": 0.7},
        PromoteConfig(guards=["recall:0"]),
        True,
        "higher",
    ),
    (
        "lower-is-better guard regressed",
        _version(),
        _version(),
        {"f1": 0.9, "eval_loss": 1.3},
        {"f1": 0.8, "eval_loss": 1.0},
        PromoteConfig(guards=["eval_loss:0.1"]),
        False,
        "guard eval_loss regressed",
    ),
    (
        "guard metric missing",
        _version(),
        _version(),
        {"f1": 0.9},
        {"f1": 0.8, "recall": 0.7},
        PromoteConfig(guards=["recall:0.5"]),
        False,
        "guard metric recall missing",
    ),
    (
        "second guard fails",
        _version(),
        _version(),
        {"f1": 0.9, "recall": 0.7, "precision": 0.5},
        {"f1": 0.8, "recall": 0.7, "precision": 0.6},
        PromoteConfig(guards=["recall:0", "precision:0.05"]),
        False,
        "guard precision regressed",
    ),
]


@pytest.mark.parametrize(
    "candidate, champion, cand_metrics, champ_metrics, gate, accept, fragment",
    [case[1:] for case in GATE_CASES],
    ids=[case[0] for case in GATE_CASES],
)
def test_evaluate_gate(candidate, champion, cand_metrics, champ_metrics, gate, accept, fragment):
    """evaluate_gate is a pure function of the two versions' tags, their metrics and
    the gate: stand-in objects with a ``.tags`` dict are enough, no store involved."""
    accepted, reason = evaluate_gate(candidate, champion, cand_metrics, champ_metrics, gate)
    assert accepted is accept, reason
    assert fragment in reason


@pytest.mark.parametrize(
    "guard", ["recall", "recall:", ":0.1", " :0.1", "recall:abc", "recall:0.1:0.2", "recall:-0.01", ""]
)
def test_bad_guards_are_refused(guard):
    with pytest.raises(ValueError, match="guard"):
        PromoteConfig(guards=[guard])


def test_gate_config_validation():
    with pytest.raises(ValueError, match="margin: expected a number >= 0"):
        PromoteConfig(margin=-0.01)
    assert PromoteConfig.tolerance(" recall : 0.02") == ("recall", 0.02)
    assert PromoteConfig.tolerance("eval_loss:0") == ("eval_loss", 0.0)
    gate = PromoteConfig(margin=0.0, guards=["recall:0.02", "precision:1e-3"])
    assert (gate.enabled, gate.margin, gate.guards) == (True, 0.0, ["recall:0.02", "precision:1e-3"])


# --- kfnlp registry -----------------------------------------------------------------------


@pytest.fixture
def cli(capsys, monkeypatch):
    """``kfnlp ARGS`` in this process (the real entry point, minus interpreter start-up):
    (exit code, stdout, stderr). The CLI configures the ``kfnlp`` logger; undone after."""
    from kfnlp import cli as kfnlp_cli

    monkeypatch.setenv("TRANSFORMERS_VERBOSITY", "error")  # the CLI sets these for its process
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    logger = logging.getLogger("kfnlp")
    saved = (list(logger.handlers), logger.propagate, logger.level)

    def run(*args: str) -> tuple[int, str, str]:
        try:
            code = kfnlp_cli.main(list(args))
        finally:
            logger.handlers[:], logger.propagate, logger.level = saved[0], saved[1], saved[2]
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


def _one_error_line(err: str, fragment: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kfnlp: error: "), err
    assert fragment in lines[0], err


def _rows(table: str) -> list[list[str]]:
    """A ``_table`` printout as cells (split on runs of 2+ spaces), header first, rule dropped."""
    import re

    lines = table.strip().splitlines()
    assert set(lines[1].replace(" ", "")) == {"-"}, table
    return [re.split(r"\s{2,}", line.strip()) for line in [lines[0], *lines[2:]]]


def test_cli_promote_and_rollback(cli, registry, model_dir):
    v1 = add(registry, model_dir, f1=0.8, recall=0.7)
    v2 = add(registry, model_dir, f1=0.9, recall=0.6)
    v3 = add(registry, model_dir, f1=0.7, recall=0.7)

    assert cli("registry", "promote", "m", str(v1)) == (0, "m v1: promoted (first champion of this model)\n", "")
    code, out, _ = cli("registry", "promote", "m", str(v2), "--guard", "recall:0.05")
    assert code == 3
    assert out.startswith("m v2: rejected (guard recall regressed: 0.6 vs champion 0.7")
    code, out, _ = cli("registry", "promote", "m", str(v2), "--margin", "0.2")
    assert code == 3 and "not higher by at least 0.2" in out
    code, out, _ = cli("registry", "promote", "m", str(v2))
    assert (code, out) == (0, "m v2: promoted (f1 0.9 vs champion 0.8 (higher by 0.1))\n")
    code, out, _ = cli("registry", "promote", "m", str(v2))
    assert (code, out) == (0, "m v2: unchanged (already the champion)\n")
    code, out, _ = cli("registry", "--json", "promote", "m", str(v3))
    assert code == 3
    decision = json.loads(out)
    assert (decision["outcome"], decision["version"], decision["champion_after"]) == ("rejected", 3, 2)
    code, out, _ = cli("registry", "promote", "m", str(v3), "--force")
    assert code == 0 and out.startswith("m v3: promoted (forced despite: f1 0.7") and out.endswith("[forced]\n")
    assert aliases(registry) == {CHAMPION: 3, PREVIOUS: 2}
    assert cli("registry", "rollback", "m") == (0, "m v2: rollback (champion v3 rolled back to v2)\n", "")
    code, out, _ = cli("registry", "--json", "rollback", "m")
    assert code == 0 and json.loads(out)["champion_after"] == 3
    assert aliases(registry) == {CHAMPION: 3, PREVIOUS: 2}
    assert [d["sequence"] for d in decisions(registry, "m")] == list(range(1, 10))


def test_cli_list_show_diff(cli, registry, model_dir):
    assert cli("registry", "list")[1].startswith("no models in sqlite:///")
    v1 = add(registry, model_dir, f1=0.8, recall=0.7)
    v2 = add(registry, model_dir, f1=0.9, recall=0.75)
    add(registry, model_dir, name="other", primary="perplexity", perplexity=12.0)
    promote(registry, "m", v1, GATE)
    promote(registry, "m", v2, GATE)

    code, out, err = cli("registry", "list")
    assert (code, err) == (0, "")
    assert _rows(out) == [["model", "task", "champion", "previous"], ["m", "ner", "2", "1"], ["other", "mlm"]]
    code, out, _ = cli("registry", "--json", "list")
    listed = json.loads(out)
    assert [(m["name"], m["task"], {a: int(v) for a, v in m["aliases"].items()}) for m in listed] == [
        ("m", "ner", {CHAMPION: 2, PREVIOUS: 1}),
        ("other", "mlm", {}),
    ]

    code, out, _ = cli("registry", "list", "m")
    assert code == 0
    assert _rows(out) == [
        ["version", "aliases", "f1", "recall", "eval set", "decision"],
        ["1", PREVIOUS, "0.8", "0.7", EVAL[:12], "promoted"],
        ["2", CHAMPION, "0.9", "0.75", EVAL[:12], "promoted"],
    ]
    rows = json.loads(cli("registry", "--json", "list", "m")[1])
    assert [(r["version"], r["aliases"], r["metrics"]) for r in rows] == [
        (1, [PREVIOUS], {"f1": 0.8, "recall": 0.7}),
        (2, [CHAMPION], {"f1": 0.9, "recall": 0.75}),
    ]

    code, out, _ = cli("registry", "show", "m")  # the champion by default
    assert code == 0
    head, tags, trail = out.strip().split("\n\n")  # title + metrics, tags, decisions
    assert head.splitlines()[0] == "m version 2 @champion"
    assert _rows("\n".join(head.splitlines()[1:])) == [["metric", "value"], ["f1", "0.9"], ["recall", "0.75"]]
    assert [EVAL_TAG, EVAL] in _rows(tags) and ["kfnlp.decision", "promoted"] in _rows(tags)
    assert _rows(trail)[0] == ["#", "outcome", "reason", "forced", "by", "time"]
    assert [row[:2] for row in _rows(trail)[1:]] == [["2", "promoted"]]
    assert cli("registry", "show", "m", "1")[1].startswith("m version 1 @previous-champion\n")
    assert cli("registry", "show", "m", "@previous-champion")[1].startswith("m version 1 @previous-champion\n")
    shown = json.loads(cli("registry", "--json", "show", "m", "1")[1])
    assert (shown["version"], shown["aliases"], shown["metrics"]["f1"]) == (1, [PREVIOUS], 0.8)
    assert [d["outcome"] for d in shown["decisions"]] == ["promoted"]
    assert shown["source"].endswith("/model")

    code, out, _ = cli("registry", "diff", "m", "1", "2")
    assert code == 0
    # the first header cell is empty
    assert _rows(out) == [
        ["v1", "v2", "B - A"],
        ["f1", "0.8", "0.9", "0.1"],
        ["recall", "0.7", "0.75", "0.05"],
        ["eval set", EVAL[:12], EVAL[:12], "same"],
    ]
    both = json.loads(cli("registry", "--json", "diff", "m", "1", "@champion")[1])
    assert (both["a"]["version"], both["b"]["version"]) == (1, 2)


def test_cli_errors_are_one_line(cli, registry, model_dir):
    v1 = add(registry, model_dir, f1=0.8)
    for args, fragment, code in [
        (("registry", "show", "nope"), "no model 'nope'", 5),
        (("registry", "list", "nope"), "no model 'nope'", 5),
        (("registry", "show", "m", "9"), "no version 9 of model 'm'", 5),
        (("registry", "show", "m"), "model 'm' has no @champion", 5),
        (("registry", "diff", "m", "1", "@nope"), "model 'm' has no @nope", 5),
        (("registry", "promote", "m", "9"), "no version 9 of model 'm'", 5),
        (("registry", "rollback", "m"), "model 'm' has no @previous-champion to roll back to", 5),
        (("registry", "promote", "m", str(v1), "--guard", "recall"), "guard 'recall': expected METRIC:TOLERANCE", 2),
    ]:
        result = cli(*args)
        assert result[0] == code, (args, result)
        assert result[1] == "", args
        _one_error_line(result[2], fragment)


def test_cli_promote_exit_codes_in_a_real_process(registry, model_dir):
    """The installed command, as a user or a script runs it: exit 3 when rejected."""
    v1 = add(registry, model_dir, f1=0.8)
    v2 = add(registry, model_dir, f1=0.7)
    promote(registry, "m", v1, GATE)
    rejected = run_cli("registry", "promote", "m", str(v2))
    assert rejected.returncode == 3, rejected.stderr
    assert rejected.stdout.startswith("m v2: rejected (f1 0.7 vs champion 0.8")
    missing = run_cli("registry", "rollback", "m")
    assert missing.returncode == 5
    _one_error_line(missing.stderr, "no @previous-champion")


# --- the pipeline step ------------------------------------------------------------------


def test_promote_stage_disabled_skips_and_enabled_promotes(registry, model_dir, tmp_path):
    from kfnlp.stages.promote import promote_registered

    entry = registry.register(
        "m", model_dir, metrics={"f1": 0.8}, params={}, tags={EVAL_TAG: EVAL, PRIMARY_TAG: "f1"}, files={}
    )
    registered = tmp_path / "registered.json"
    registered.write_text(json.dumps(entry))
    skipped = promote_registered(str(registered), PromoteConfig(enabled=False))
    assert skipped == {"model": "m", "version": 1, "outcome": "skipped", "reason": "promotion disabled"}
    assert aliases(registry) == {}
    assert decisions(registry, "m") == []
    assert "kfnlp.decision" not in registry.get_version("m", 1).tags

    done = promote_registered(str(registered), PromoteConfig())
    assert (done["outcome"], done["champion_after"], done["sequence"]) == ("promoted", 1, 1)
    assert aliases(registry) == {CHAMPION: 1}

    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    with pytest.raises(InputError, match="not a register stage output"):
        promote_registered(str(bad), PromoteConfig())


# --- models:/NAME@champion -------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_ner_model(tmp_path_factory) -> Path:
    """A real (untrained) token classifier with B-/I- labels, saved as safetensors."""
    from kfnlp.modeling import load_token_classifier, load_tokenizer

    out = tmp_path_factory.mktemp("ner-model")
    load_token_classifier(MODEL, NER_LABELS).save_pretrained(out)
    load_tokenizer(MODEL).save_pretrained(out)
    return out


def test_models_uri_downloads_the_champion_into_the_cache_and_predicts(registry, tiny_ner_model, kfnlp_home, cli):
    from kfnlp.modeling import model_dir as resolve

    v1 = add(registry, tiny_ner_model, name="ner", f1=0.5)
    v2 = add(registry, tiny_ner_model, name="ner", f1=0.6)
    promote(registry, "ner", v1, GATE)
    promote(registry, "ner", v2, GATE)

    cache = models_cache(registry.uri) / "ner"
    assert cache.is_relative_to(kfnlp_home / "cache" / "models")
    location = Path(resolve("models:/ner@champion"))
    assert location == cache / str(v2)
    assert (location / "config.json").is_file() and list(location.glob("*.safetensors"))
    assert json.loads((location / "config.json").read_text())["id2label"] == {
        str(i): label for i, label in enumerate(NER_LABELS)
    }
    assert resolve("models:/ner@champion") == str(location), "the second load comes from the cache"
    assert resolve("models:/ner/1") == str(cache / "1")
    assert not list(cache.glob(".download-*")), "no staging leftovers"

    result = run_cli("predict", "ner", "--model", "models:/ner@champion", "--json", "Justin Bieber lives in New York")
    assert result.returncode == 0, result.stderr
    assert [item["text"] for item in json.loads(result.stdout)] == ["Justin Bieber lives in New York"]
    code, out, err = cli("predict", "ner", "--model", "models:/ner@champion", "Ada lives in Paris")
    assert code == 0 and out.startswith("Ada lives in Paris\n"), err

    rollback(registry, "ner")  # the alias now names another version: a fresh download
    assert resolve("models:/ner@champion") == str(cache / str(v1))
    code, out, err = cli("predict", "ner", "--model", "models:/nope@champion", "text")
    assert code == 2 and out == ""
    _one_error_line(err, "--model: registry sqlite:///")
    assert "no model 'nope'" in err
