"""train-cls, evaluate-cls and predict text-classification on a small real IMDB sample with the tiny encoder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kfnlp.errors import InputError

MODEL = "builtin:splade-tiny"
LABELS = ["neg", "pos"]
EXAMPLES = 48  # per split


@pytest.fixture(scope="module")
def cls_dataset(tmp_path_factory) -> Path:
    """A preprocess-cls dataset of builtin:imdb: 48 reviews per split (half of each class), and 48 Rotten
    Tomatoes sentences as the cross_domain split."""
    from kfnlp.stages.preprocess_cls import PreprocessClsConfig, preprocess_cls

    out = tmp_path_factory.mktemp("cls") / "dataset"
    preprocess_cls(str(out), PreprocessClsConfig(max_examples=EXAMPLES, max_length=64), MODEL)
    return out


def quick_config(**overrides):
    from kfnlp.stages.train_cls import TrainClsConfig

    settings = dict(learning_rate=1e-3, batch_size=8, num_epochs=2, logging_steps=4, save_strategy="no")
    return TrainClsConfig(**{**settings, **overrides})


@pytest.fixture(scope="module")
def cls_model(cls_dataset, tmp_path_factory) -> Path:
    from kfnlp.stages.train_cls import train_cls

    out = tmp_path_factory.mktemp("cls") / "model"
    train_cls(str(cls_dataset), str(out), quick_config(), MODEL)
    return out


@pytest.fixture(scope="module")
def cls_evaluation(cls_model, cls_dataset, tmp_path_factory) -> Path:
    from kfnlp.stages.evaluate_cls import EvaluateClsConfig, evaluate_cls

    out = tmp_path_factory.mktemp("cls") / "evaluation"
    evaluate_cls(str(cls_model), str(cls_dataset), str(out), EvaluateClsConfig(top_confused=5), label="cls")
    return out


def read_predictions(path: Path) -> list[dict]:
    """predictions.jsonl, read independently of kfnlp's readers."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_model_artifact_loads_with_plain_text_classification_pipeline(cls_model):
    from transformers import pipeline

    classifier = pipeline("text-classification", model=str(cls_model))
    [top] = classifier("A wonderful film, I loved every minute.")
    assert top["label"] in LABELS and 0 <= top["score"] <= 1
    config = json.loads((cls_model / "config.json").read_text())
    assert config["id2label"] == {"0": "neg", "1": "pos"} and config["label2id"] == {"neg": 0, "pos": 1}
    assert (cls_model / "model.safetensors").is_file() and (cls_model / "labels.json").is_file()
    manifest = json.loads((cls_model / "kfnlp-manifest.json").read_text())
    assert manifest["task"] == "cls" and manifest["labels"] == LABELS and manifest["base_model"] == MODEL
    summary = json.loads((cls_model / "training_summary.json").read_text())
    assert summary["global_step"] == 12 and summary["train_examples"] == 48
    assert {"accuracy", "macro_f1"} <= set(summary["validation"])


def test_evaluate_equals_scikit_learn_on_its_own_predictions_file(cls_evaluation, cls_dataset):
    from sklearn.metrics import (
        accuracy_score,
        confusion_matrix,
        f1_score,
        precision_recall_fscore_support,
        precision_score,
        recall_score,
    )

    from kfnlp.artifacts import open_evaluation

    result = json.loads((cls_evaluation / "metrics.json").read_text())
    rows = read_predictions(cls_evaluation / "predictions.jsonl")
    gold, pred = [r["gold"] for r in rows], [r["predicted"] for r in rows]
    assert [r["id"] for r in rows] == [f"test-{i:06d}" for i in range(EXAMPLES)], "dataset order"
    assert all(set(r["scores"]) == set(LABELS) and abs(sum(r["scores"].values()) - 1) < 1e-4 for r in rows)
    assert all(r["predicted"] == max(r["scores"], key=r["scores"].get) for r in rows)
    m = result["metrics"]
    assert result["task"] == "cls" and result["labels"] == LABELS and m["examples"] == EXAMPLES
    assert m["accuracy"] == pytest.approx(accuracy_score(gold, pred), abs=1e-12)
    for average in ("macro", "micro", "weighted"):
        assert m[f"{average}_f1"] == pytest.approx(f1_score(gold, pred, average=average, zero_division=0), abs=1e-12)
    assert m["macro_precision"] == pytest.approx(precision_score(gold, pred, average="macro", zero_division=0))
    assert m["macro_recall"] == pytest.approx(recall_score(gold, pred, average="macro", zero_division=0))
    p, r, f, s = precision_recall_fscore_support(gold, pred, labels=LABELS, zero_division=0)
    for i, name in enumerate(LABELS):
        assert result["per_class"][name] == pytest.approx(
            {"precision": p[i], "recall": r[i], "f1": f[i], "support": s[i]}
        )
    assert result["confusion"] == {"labels": LABELS, "matrix": confusion_matrix(gold, pred, labels=LABELS).tolist()}
    wrong = [r for r in rows if r["gold"] != r["predicted"]]
    assert len(result["most_confused"]) == min(5, len(wrong))
    scores = [e["score"] for e in result["most_confused"]]
    assert scores == sorted(scores, reverse=True) and all(e["gold"] != e["predicted"] for e in result["most_confused"])
    assert open_evaluation(str(cls_evaluation), "cls").predictions() == (gold, pred)
    report = (cls_evaluation / "report.md").read_text()
    assert "Confusion matrix" in report and "Per class" in report
    assert "<table>" in (cls_evaluation / "report.html").read_text()


def test_evaluation_page_plots_per_class_f1_and_the_confusion_matrix(cls_evaluation):
    from tests.support.html_page import check_self_contained, read_page

    result = json.loads((cls_evaluation / "metrics.json").read_text())
    page = read_page((cls_evaluation / "report.html").read_text(encoding="utf-8"))
    check_self_contained(page)
    assert page.plots == ["F1 per class: cls", "Classes: cls"] and page.figures_with_plot == 2
    assert page.elements("scores-0") == len(LABELS)  # one bar per class
    assert page.elements("matrix") == 1
    assert page.headings[0] == "Text-classification evaluation: cls"
    assert {"Per class", "Confusion matrix (rows gold, columns predicted)"} <= set(page.headings)
    assert result["confusion"]["labels"] == LABELS


def test_reports_escape_example_text():
    from kfnlp.reports import cls_evaluation_html, cls_evaluation_markdown

    metrics = dict.fromkeys(("accuracy", "macro_f1", "micro_f1", "weighted_f1", "macro_precision", "macro_recall"), 0.5)
    result = {
        "label": "x",
        "model": "m",
        "split": "test",
        "labels": LABELS,
        "metrics": {**metrics, "examples": 2},
        "per_class": {n: {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 1} for n in LABELS},
        "confusion": {"labels": LABELS, "matrix": [[1, 0], [1, 0]]},
        "most_confused": [
            {"id": "test-1", "text": "<script>x</script> a|b\nnext", "gold": "pos", "predicted": "neg", "score": 0.9}
        ],
    }
    html = cls_evaluation_html(result)
    markdown = cls_evaluation_markdown(result)
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "<script>" not in markdown and "a\\|b next" in markdown


def test_evaluate_cross_domain_split_and_refusals(cls_model, cls_dataset, tmp_path):
    from kfnlp.modeling import load_sequence_classifier, load_tokenizer
    from kfnlp.stages.evaluate_cls import EvaluateClsConfig, evaluate_cls

    result = evaluate_cls(str(cls_model), str(cls_dataset), str(tmp_path / "rt"), EvaluateClsConfig("cross_domain"))
    assert result["split"] == "cross_domain" and result["metrics"]["examples"] == EXAMPLES

    other = tmp_path / "other"
    load_sequence_classifier(MODEL, ["a", "b", "c"]).save_pretrained(other)
    load_tokenizer(MODEL).save_pretrained(other)
    with pytest.raises(InputError, match="labels"):
        evaluate_cls(str(other), str(cls_dataset), str(tmp_path / "eval"), EvaluateClsConfig())
    assert not (tmp_path / "eval").exists()


def test_a_masked_lm_artifact_gives_its_encoder_and_gets_a_fresh_head(tmp_path):
    """A train-mlm model artifact (here: the builtin masked LM with one encoder weight changed, written by the
    model writer) keeps its encoder weights and gets a new head with the dataset's labels."""
    import torch

    from kfnlp.artifacts import write_model
    from kfnlp.modeling import load_masked_lm, load_sequence_classifier, load_tokenizer

    source = load_masked_lm(MODEL)
    with torch.no_grad():
        source.bert.embeddings.word_embeddings.weight[5] += 1.0
    mlm = tmp_path / "mlm"
    write_model(str(mlm), source, load_tokenizer(MODEL), {}, task="mlm", base_model=MODEL, dataset_fingerprint="d")
    classifier = load_sequence_classifier(str(mlm), LABELS)
    assert classifier.config.id2label == {0: "neg", 1: "pos"} and classifier.classifier.out_features == 2
    encoder = classifier.bert.state_dict()
    shared = [name for name in source.bert.state_dict() if name in encoder]
    assert len(shared) > 10 and "embeddings.word_embeddings.weight" in shared
    for name in shared:
        assert torch.equal(source.bert.state_dict()[name], encoder[name]), name


def test_balanced_class_weights_change_the_loss(cls_dataset, tmp_path):
    """On an odd-sized downsample of two classes one class has more examples: balanced weights change the loss."""
    import datasets

    from kfnlp.stages.train_cls import balanced_weights, train_cls

    assert balanced_weights([0, 0, 0, 1], 2) == [4 / 6, 2.0]
    assert balanced_weights([0, 1], 3) == [2 / 3, 2 / 3, 1.0]
    train = datasets.load_from_disk(str(cls_dataset / "data"))["train"]
    assert sorted(set(train["labels"])) == [0, 1]
    losses = {}
    for weights in ("none", "balanced"):
        config = quick_config(max_train_examples=7, max_steps=2, eval_strategy="no", class_weights=weights, seed=3)
        manifest = train_cls(str(cls_dataset), str(tmp_path / weights), config, MODEL)
        losses[weights] = manifest["training"]["train_loss"]
        if weights == "balanced":
            assert manifest["training"]["class_weights"] != [1.0, 1.0]
    assert losses["none"] != pytest.approx(losses["balanced"], rel=1e-6)


def test_train_cls_resumes_from_its_checkpoint(cls_dataset, tmp_path):
    """The shared training base: a second run of the same job resumes the first one's checkpoint."""
    from kfnlp.stages.train_cls import train_cls

    config = quick_config(
        max_train_examples=16,
        max_steps=2,
        eval_strategy="no",
        save_strategy="steps",
        save_steps=1,
        keep_checkpoints=True,
    )
    first = train_cls(str(cls_dataset), str(tmp_path / "model"), config, MODEL)
    assert first["training"]["global_step"] == 2 and first["training"]["resumed_from_step"] is None
    second = train_cls(str(cls_dataset), str(tmp_path / "model"), config, MODEL)
    assert second["training"]["resumed_from_step"] >= 1 and second["training"]["global_step"] == 2


def test_train_and_evaluate_refuse_a_dataset_of_another_task(tiny_dataset, cls_model, tmp_path):
    from kfnlp.stages.evaluate_cls import EvaluateClsConfig, evaluate_cls
    from kfnlp.stages.train_cls import train_cls

    with pytest.raises(InputError, match="not a text-classification one"):
        train_cls(str(tiny_dataset), str(tmp_path / "model"), quick_config(), MODEL)
    with pytest.raises(InputError, match="not a text-classification one"):
        evaluate_cls(str(cls_model), str(tiny_dataset), str(tmp_path / "eval"), EvaluateClsConfig())
    assert not (tmp_path / "model").exists() and not (tmp_path / "eval").exists()


def test_predict_text_classification_cli(cls_model, capsys):
    from kfnlp import cli
    from tests.support.cli import run_cli

    texts = ["A wonderful film.", "Dull and far too long."]
    result = run_cli("predict", "text-classification", "--model", str(cls_model), "--top-k", "2", "--json", *texts)
    assert result.returncode == 0, result.stderr
    items = json.loads(result.stdout)
    assert [item["text"] for item in items] == texts
    for item in items:
        assert [p["label"] for p in item["labels"]] in (LABELS, LABELS[::-1])
        assert sum(p["score"] for p in item["labels"]) == pytest.approx(1, abs=1e-4)
    capsys.readouterr()
    assert cli.main(["predict", "text-classification", "--model", str(cls_model), "--top-k", "1", texts[0]]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == texts[0] and len(lines) == 2 and lines[1].split()[1] in LABELS
    assert cli.main(["predict", "text-classification", "--model", str(cls_model), "--top-k", "0", "x"]) != 0
    assert "--top-k" in capsys.readouterr().err
    assert cli.main(["predict", "text-classification", "--model", MODEL, "x"]) != 0
    assert "not a text-classification model (its architecture is BertForMaskedLM)" in capsys.readouterr().err
