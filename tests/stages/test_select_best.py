"""select-best on real artifacts: tiny real token classifiers written by the model writer with the
training config their trial's values make, evaluations by the evaluation writer, failed-trial records
as a trial task writes them. The best trial by either direction, ties, failed and all-failed sweeps,
lists out of trial order, the plot's elements, the self-contained HTML, and register's sweep lineage
on an embedded MLflow store."""

from __future__ import annotations

import json
import math
import re
import xml.etree.ElementTree as ET
from dataclasses import asdict
from pathlib import Path

import pytest

from kfnlp.artifacts import open_model, read_evaluation, write_evaluation, write_model
from kfnlp.config import from_json
from kfnlp.errors import ConfigError, InputError
from kfnlp.stages.select_best import STAGE, SelectBestConfig, select_best, summary_metrics
from kfnlp.stages.train_ner import TrainNerConfig
from kfnlp.storage import read_manifest, verify_checksums, write_artifact
from kfnlp.sweep import FAILED_TRIAL_KIND, SweepPlan, SweepTarget, Trial, merged
from tests.support.cli import MODEL, run_cli

LABELS = ["O", "B-PER", "I-PER"]
DATA = "d" * 64
SVG = "{http://www.w3.org/2000/svg}"
NER = SweepTarget("train_ner", "evaluate_ner", {"f1": "maximize", "accuracy": "maximize"}, "f1", "validation")
MLM = SweepTarget("train_mlm", "evaluate", {"perplexity": "minimize"}, "perplexity", None)


@pytest.fixture(scope="module")
def tiny():
    """A tiny random BERT token classifier on the embedded model's tokenizer (what the writer saves is real)."""
    import torch
    from transformers import BertConfig, BertForTokenClassification

    from kfnlp.modeling import load_tokenizer

    tokenizer = load_tokenizer(MODEL)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=64, num_labels=len(LABELS),
        id2label=dict(enumerate(LABELS)), label2id={label: i for i, label in enumerate(LABELS)},
    )  # fmt: skip
    return BertForTokenClassification(config), tokenizer


def selection(target: SweepTarget, values: list[dict], metric: str | None = None, direction: str | None = None):
    """The select-best config the pipeline compiles in: a real SweepPlan's selection()."""
    metric = metric or target.default_metric
    plan = SweepPlan(
        target=target,
        trials=tuple(Trial(i, v) for i, v in enumerate(values)),
        metric=metric,
        direction=direction or target.metrics[metric],
        parallelism=2,
        evaluate_json="{}",
    )
    return from_json(SelectBestConfig, plan.selection(), STAGE.section)


def trained(tiny, path: Path, values: dict) -> str:
    """A train-ner model artifact whose training config is the trial's (as the trial task merges it)."""
    model, tokenizer = tiny
    config = merged(TrainNerConfig(), json.dumps(values), "train_ner")
    summary = {"global_step": 3, "train_loss": 0.9, "train_sentences": 12, "config": asdict(config)}
    write_model(
        str(path), model, tokenizer, summary, task="ner", base_model=MODEL, labels=LABELS,
        dataset_fingerprint=DATA, tokenizer_fingerprint="t" * 64,
    )  # fmt: skip
    return str(path)


def ner_scores(path: Path, f1: float, split: str = "validation", label: str = "trial") -> str:
    metrics = {
        "f1": f1, "precision": f1, "recall": f1, "strict_f1": f1, "accuracy": 0.9,
        "sentences": 20, "words": 200, "entities": 15,
    }  # fmt: skip
    result = {
        "task": "ner", "label": label, "model": "m", "split": split, "dataset_fingerprint": DATA,
        "metrics": metrics, "per_entity": {}, "confusions": [],
    }  # fmt: skip
    write_evaluation(str(path), result, "# ner\n", task="ner", label=label, dataset_fingerprint=DATA, metrics=metrics)
    return str(path)


def mlm_scores(path: Path, perplexity: float) -> str:
    metrics = {"perplexity": perplexity, "eval_loss": math.log(perplexity) if perplexity > 0 else perplexity}
    result = {"task": "mlm", "label": "trial", "model": "m", "eval_set_fingerprint": "e" * 64, "metrics": metrics}
    write_evaluation(str(path), result, "# mlm\n", task="mlm", label="trial", eval_set_fingerprint="e" * 64)
    return str(path)


def failed_record(path: Path, stage: str, error: str, values: dict | None) -> str:
    """What a trial task writes where its output goes when the stage fails (launch.in_pod)."""
    with write_artifact(str(path), FAILED_TRIAL_KIND) as out:
        out.info.update(stage=stage, error=error, type="KfnlpError", values=values)
    return str(path)


def outputs(tmp_path: Path) -> dict[str, str]:
    return {
        "output": str(tmp_path / "best" / "model"),
        "evaluation_output": str(tmp_path / "best" / "evaluation"),
        "sweep_output": str(tmp_path / "best" / "sweep"),
    }


def sha256s(path: str) -> dict[str, str]:
    return {f["path"]: f["sha256"] for f in read_manifest(path)["files"]}


def svg_of(sweep: str) -> ET.Element:
    return ET.fromstring((Path(sweep) / "sweep.svg").read_text(encoding="utf-8"))


def group(svg: ET.Element, gid: str) -> ET.Element | None:
    return next((g for g in svg.iter(f"{SVG}g") if g.get("id") == gid), None)


def points(svg: ET.Element, gid: str) -> int:
    """How many markers a plotted line draws (matplotlib writes one <use> per point)."""
    found = group(svg, gid)
    assert found is not None, f"no {gid} in the plot"
    return len(list(found.iter(f"{SVG}use")))


LRS = [{"learning_rate": 1e-4}, {"learning_rate": 3e-4}, {"learning_rate": 1e-3}]


def test_the_highest_f1_wins_and_its_model_and_evaluation_are_copied(tiny, tmp_path):
    models = [trained(tiny, tmp_path / f"model-{i}", v) for i, v in enumerate(LRS)]
    evaluations = [ner_scores(tmp_path / f"eval-{i}", f1) for i, f1 in enumerate([0.41, 0.72, 0.55])]
    out = outputs(tmp_path)
    table = select_best(models, evaluations, **out, config=selection(NER, LRS))

    assert table["selected"] == 1 and table["ties"] == [1]
    assert (table["metric"], table["direction"], table["stage"]) == ("f1", "maximize", "train_ner")
    assert table["scored_on"] == "the validation split" and table["keys"] == ["learning_rate"]
    assert [t["metric"] for t in table["trials"]] == [0.41, 0.72, 0.55]
    assert [t["selected"] for t in table["trials"]] == [False, True, False]
    assert table["trials"][1]["label"] == "learning_rate=0.0003"
    assert {t["status"] for t in table["trials"]} == {"succeeded"}
    # the chosen model: the trial's own files, verified, its facts plus the table
    assert sha256s(out["output"]) == sha256s(models[1])
    verify_checksums(out["output"])
    chosen = open_model(out["output"])
    assert chosen.training["config"]["learning_rate"] == 3e-4
    assert chosen.manifest["labels"] == LABELS and chosen.manifest["dataset_fingerprint"] == DATA
    assert chosen.manifest["sweep"] == table
    from transformers import AutoModelForTokenClassification

    assert AutoModelForTokenClassification.from_pretrained(out["output"]).config.num_labels == len(LABELS)
    # the chosen evaluation, kind evaluation, with the trial's index
    assert read_evaluation(out["evaluation_output"]) == read_evaluation(evaluations[1])
    assert read_manifest(out["evaluation_output"], "evaluation")["sweep_trial"] == 1
    # the sweep artifact
    sweep = read_manifest(out["sweep_output"], "sweep")
    assert (sweep["selected"], sweep["trials"], sweep["failed_trials"], sweep["metric"]) == (1, 3, 0, "f1")
    assert json.loads((Path(out["sweep_output"]) / "sweep.json").read_text()) == table
    report = (Path(out["sweep_output"]) / "report.md").read_text()
    assert "trial 1 (learning_rate=0.0003) was chosen" in report and "![f1 against each swept key](sweep.svg)" in report
    assert "| 1 | 0.0003 | 0.72 | succeeded | chosen |" in report
    assert summary_metrics(table) == {"f1": 0.72, "trials": 3, "failed_trials": 0}


def test_the_lowest_perplexity_wins_and_the_plot_has_a_panel_per_key(tiny, tmp_path):
    values = [{"learning_rate": lr, "num_epochs": n} for lr in (1e-4, 1e-3) for n in (1, 2)]
    models = [trained(tiny, tmp_path / f"model-{i}", v) for i, v in enumerate(values)]
    evaluations = [mlm_scores(tmp_path / f"eval-{i}", p) for i, p in enumerate([80.0, 61.5, 75.0, 90.0])]
    out = outputs(tmp_path)
    table = select_best(models, evaluations, **out, config=selection(MLM, values))

    assert (table["selected"], table["direction"], table["keys"]) == (1, "minimize", ["learning_rate", "num_epochs"])
    assert table["scored_on"] == "the fixed eval set eeeeeeeeeeee"
    assert open_model(out["output"]).training["config"]["num_epochs"] == 2
    svg = svg_of(out["sweep_output"])
    for key in ("learning_rate", "num_epochs"):  # one panel per key: every trial, and the chosen one marked
        assert points(svg, f"trials-{key}") == 4
        assert points(svg, f"chosen-{key}") == 1
    assert group(svg, "failed-trials") is None
    axes = [g for g in svg.iter(f"{SVG}g") if re.fullmatch(r"axes_\d+", g.get("id", ""))]
    assert len(axes) == 2


def test_a_tie_goes_to_the_lowest_trial_index_and_the_table_says_so(tiny, tmp_path):
    models = [trained(tiny, tmp_path / f"model-{i}", v) for i, v in enumerate(LRS)]
    evaluations = [ner_scores(tmp_path / f"eval-{i}", f1) for i, f1 in enumerate([0.5, 0.7, 0.7])]
    out = outputs(tmp_path)
    table = select_best(models, evaluations, **out, config=selection(NER, LRS))
    assert (table["selected"], table["ties"]) == (1, [1, 2])
    assert sha256s(out["output"]) == sha256s(models[1])
    report = (Path(out["sweep_output"]) / "report.md").read_text()
    assert "Trials 1, 2 tied; the lowest index was kept." in report
    assert "| 2 | 0.001 | 0.7 | succeeded | tie |" in report


def test_failed_trials_are_reported_and_not_plotted(tiny, tmp_path):
    values = [*LRS, {"learning_rate": 3e-3}]
    models = [
        failed_record(tmp_path / "model-0", "train-ner", "the trial diverged: train loss nan", values[0]),
        trained(tiny, tmp_path / "model-1", values[1]),
        trained(tiny, tmp_path / "model-2", values[2]),
        trained(tiny, tmp_path / "model-3", values[3]),
    ]
    evaluations = [
        failed_record(tmp_path / "eval-0", "evaluate-ner", "tmp/model-0: expected a model artifact", None),
        failed_record(tmp_path / "eval-1", "evaluate-ner", "out of memory <script>&", None),
        ner_scores(tmp_path / "eval-2", float("nan")),
        ner_scores(tmp_path / "eval-3", 0.3),
    ]
    out = outputs(tmp_path)
    table = select_best(models, evaluations, **out, config=selection(NER, values))

    assert [t["status"] for t in table["trials"]] == ["failed", "failed", "failed", "succeeded"]
    assert table["selected"] == 3
    errors = [t["error"] for t in table["trials"]]
    assert errors[0] == "train-ner: the trial diverged: train loss nan"  # the model's record, not the evaluation's
    assert errors[1] == "evaluate-ner: out of memory <script>&"
    assert errors[2] == "f1 is NaN, not a finite number" and errors[3] is None
    assert summary_metrics(table) == {"f1": 0.3, "trials": 4, "failed_trials": 3}
    assert read_manifest(out["sweep_output"])["failed_trials"] == 3
    svg = svg_of(out["sweep_output"])
    assert points(svg, "trials-learning_rate") == 1  # only the succeeded trial is plotted
    assert group(svg, "failed-trials") is not None  # the failed ones are listed under the panel
    report = (Path(out["sweep_output"]) / "report.md").read_text()
    assert "| 0 | 0.0001 |  | failed: train-ner: the trial diverged: train loss nan |  |" in report
    assert "3 failed (not plotted)" in report
    # the HTML report: self-contained, text escaped, the plot inline
    html = (Path(out["sweep_output"]) / "report.html").read_text()
    assert "out of memory &lt;script&gt;&amp;" in html and "<script>" not in html
    assert html.count("<svg") == 1 and "<?xml" not in html and "DOCTYPE svg" not in html
    assert not re.search(r"(src|href)\s*=\s*['\"]?(https?:)?//", html), "the report loads nothing from elsewhere"
    assert not re.search(r"url\((?!#)|@import", html)  # only clip paths of its own (url(#id))
    namespaces = set(re.findall(r"https?://[^\s\"'<>]+", html))
    assert namespaces <= {"http://www.w3.org/2000/svg", "http://www.w3.org/1999/xlink"}, namespaces


def test_every_trial_failed_is_one_clear_error_and_writes_nothing(tiny, tmp_path):
    models = [failed_record(tmp_path / f"model-{i}", "train-ner", f"boom {i}", v) for i, v in enumerate(LRS)]
    evaluations = [failed_record(tmp_path / f"eval-{i}", "evaluate-ner", "no model", None) for i in range(3)]
    out = outputs(tmp_path)
    with pytest.raises(InputError) as info:
        select_best(models, evaluations, **out, config=selection(NER, LRS))
    assert str(info.value) == (
        "every trial of the sweep failed: trial 0 (learning_rate=0.0001): train-ner: boom 0; "
        "trial 1 (learning_rate=0.0003): train-ner: boom 1; trial 2 (learning_rate=0.001): train-ner: boom 2"
    )
    assert not any(Path(p).exists() for p in out.values())


def test_lists_out_of_trial_order_are_refused(tiny, tmp_path):
    models = [trained(tiny, tmp_path / f"model-{i}", v) for i, v in enumerate(LRS)]
    evaluations = [ner_scores(tmp_path / f"eval-{i}", f1) for i, f1 in enumerate([0.4, 0.5, 0.6])]
    out = outputs(tmp_path)
    with pytest.raises(InputError) as info:
        select_best(models[::-1], evaluations, **out, config=selection(NER, LRS))
    message = str(info.value)
    assert message.startswith(f"trial 0 (learning_rate=0.0001): {models[2]} was made with learning_rate=0.001 ")
    assert "not in the order of the selection's trials" in message and "\n" not in message
    # a failure record carries its trial's values: checked the same way
    records = [failed_record(tmp_path / f"failed-{i}", "train-ner", "x", v) for i, v in enumerate(LRS)]
    with pytest.raises(InputError, match=r"^trial 0 \(learning_rate=0.0001\): .*failed-1 was made with"):
        select_best([records[1], records[0], records[2]], evaluations, **out, config=selection(NER, LRS))
    with pytest.raises(InputError, match=r"the selection has 3 trials but there are 2 models and 3 evaluations"):
        select_best(models[:2], evaluations, **out, config=selection(NER, LRS))
    assert not any(Path(p).exists() for p in out.values())


def test_a_metric_the_evaluations_lack_is_refused_naming_the_trial(tiny, tmp_path):
    models = [trained(tiny, tmp_path / f"model-{i}", v) for i, v in enumerate(LRS)]
    evaluations = [mlm_scores(tmp_path / f"eval-{i}", 50.0) for i in range(3)]
    with pytest.raises(InputError) as info:
        select_best(models, evaluations, **outputs(tmp_path), config=selection(NER, LRS))
    assert str(info.value) == (
        f"trial 0 (learning_rate=0.0001): the evaluation {evaluations[0]} has no metric 'f1'; "
        "it has eval_loss, perplexity"
    )


def test_a_malformed_selection_is_refused_naming_the_key(tmp_path):
    bad = {"stage": "train_ner", "metric": "f1", "keys": ["learning_rate"]}
    cases = {
        "select_best.trials[0]: expected": [{"index": 0}],
        "select_best.trials[1]: trial index 0 is given twice": [
            {"index": 0, "values": {"learning_rate": 1}},
            {"index": 0, "values": {"learning_rate": 2}},
        ],
        "select_best.trials[0]: its keys ['seed'] are not the swept keys ['learning_rate']": [
            {"index": 0, "values": {"seed": 1}}
        ],
    }
    for message, trials in cases.items():
        with pytest.raises(ConfigError, match=re.escape(message)):
            from_json(SelectBestConfig, json.dumps({**bad, "trials": trials}), STAGE.section)
    with pytest.raises(ConfigError, match=r"select_best\.direction: expected one of"):
        from_json(SelectBestConfig, json.dumps({**bad, "direction": "up"}), STAGE.section)
    with pytest.raises(ConfigError, match=r"^select_best\.trials: the selection has no trials$"):
        select_best([], [], **outputs(tmp_path), config=SelectBestConfig(metric="f1"))
    unnamed = SelectBestConfig(keys=["learning_rate"], trials=[{"index": 0, "values": {"learning_rate": 1e-4}}])
    with pytest.raises(ConfigError, match=r"^select_best\.metric: name the metric"):
        select_best(["m"], ["e"], **outputs(tmp_path), config=unnamed)


def test_kfnlp_stage_select_best_takes_the_selection_as_config_json(tiny, tmp_path):
    models = [trained(tiny, tmp_path / f"model-{i}", v) for i, v in enumerate(LRS[:2])]
    evaluations = [ner_scores(tmp_path / f"eval-{i}", f1) for i, f1 in enumerate([0.6, 0.2])]
    plan = SweepPlan(NER, tuple(Trial(i, v) for i, v in enumerate(LRS[:2])), "f1", "maximize", 1, "{}")
    out = outputs(tmp_path)
    result = run_cli(
        "stage", "select-best", "--models", ",".join(models), "--evaluations", json.dumps(evaluations),
        "--output", out["output"], "--evaluation-output", out["evaluation_output"],
        "--sweep-output", out["sweep_output"], "--config-json", plan.selection(),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["selected"] == 0
    assert open_model(out["output"]).training["config"]["learning_rate"] == 1e-4


# ---- register: the sweep as lineage -------------------------------------------------------------


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory) -> str:
    """One embedded store for the module (its schema migrations take seconds)."""
    from kfnlp.registry import Registry

    uri = f"sqlite:///{tmp_path_factory.mktemp('sweep-registry') / 'mlflow.db'}"
    Registry(uri).client.search_registered_models()
    return uri


def test_register_tags_the_chosen_model_with_its_sweep_and_stores_the_table(tiny, tmp_path, tracking_uri):
    from kfnlp.registry import Registry
    from kfnlp.stages.register import RegisterConfig, register

    models = [trained(tiny, tmp_path / f"model-{i}", v) for i, v in enumerate(LRS)]
    evaluations = [
        failed_record(tmp_path / "eval-0", "evaluate-ner", "killed", None),
        ner_scores(tmp_path / "eval-1", 0.61),
        ner_scores(tmp_path / "eval-2", 0.58),
    ]
    out = outputs(tmp_path)
    table = select_best(models, evaluations, **out, config=selection(NER, LRS))
    test_split = ner_scores(tmp_path / "test-eval", 0.57, split="test", label="ner")
    config = RegisterConfig(model_name="swept-ner", tracking_uri=tracking_uri)
    entry = register(out["output"], test_split, config)

    assert entry["tags"]["kfnlp.sweep.metric"] == "f1"
    assert entry["tags"]["kfnlp.sweep.trials"] == 3
    assert entry["tags"]["kfnlp.sweep.selected"] == "trial 1: learning_rate=0.0003"
    registry = Registry(tracking_uri)
    version = registry.get_version("swept-ner", entry["version"])
    assert version.tags["kfnlp.sweep.trials"] == "3"
    assert version.tags["kfnlp.sweep.selected"] == "trial 1: learning_rate=0.0003"
    assert entry["metrics"]["f1"] == 0.57  # the registered scores are the test split's, not the selection's
    stored = registry.client.download_artifacts(entry["run_id"], "sweep/sweep.json", str(tmp_path / "dl"))
    assert json.loads(Path(stored).read_text()) == table
    card = (registry.download(entry["uri"]) / "README.md").read_text()
    assert "## Sweep" in card and "by f1 (higher is better) on the validation split" in card
    assert "trial 1 (learning_rate=0.0003)" in card and "(1 failed)" in card
    assert "| 0 | 0.0001 |  | failed: evaluate-ner: killed |" in card
    assert "| 1 | 0.0003 | 0.61 | chosen |" in card
    # a model no sweep chose gets none of it
    plain = register(models[2], test_split, config)
    assert not [tag for tag in plain["tags"] if tag.startswith("kfnlp.sweep.")]
    assert "## Sweep" not in (registry.download(plain["uri"]) / "README.md").read_text()
