"""train-ner, evaluate-ner and compare on a small real WNUT-16 sample with the tiny encoder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kfnlp.errors import InputError

MODEL = "builtin:splade-tiny"


@pytest.fixture(scope="module")
def ner_dataset(tmp_path_factory) -> Path:
    from kfnlp.stages.preprocess_ner import NerPreprocessConfig, preprocess_ner

    out = tmp_path_factory.mktemp("ner") / "dataset"
    preprocess_ner(str(out), NerPreprocessConfig(max_sentences=600), MODEL)
    return out


@pytest.fixture(scope="module")
def ner_model(ner_dataset, tmp_path_factory) -> Path:
    from kfnlp.stages.train_ner import TrainNerConfig, train_ner

    out = tmp_path_factory.mktemp("ner") / "model"
    config = TrainNerConfig(learning_rate=1e-3, batch_size=16, num_epochs=6, logging_steps=50, save_strategy="no")
    train_ner(str(ner_dataset), str(out), config, MODEL)
    return out


@pytest.fixture(scope="module")
def ner_evaluation(ner_model, ner_dataset, tmp_path_factory) -> Path:
    from kfnlp.stages.evaluate_ner import EvaluateNerConfig, evaluate_ner

    out = tmp_path_factory.mktemp("ner") / "evaluation"
    evaluate_ner(str(ner_model), str(ner_dataset), str(out), EvaluateNerConfig(), label="ner")
    return out


def read_three_columns(path: Path) -> tuple[list[list[str]], list[list[str]], list[list[str]]]:
    """Parse the predictions file independently of kfnlp's readers."""
    tokens, gold, pred, sentence = [], [], [], []
    for line in [*path.read_text(encoding="utf-8").split("\n"), ""]:
        if line:
            sentence.append(line.split("\t"))
        elif sentence:
            tokens.append([r[0] for r in sentence])
            gold.append([r[1] for r in sentence])
            pred.append([r[2] for r in sentence])
            sentence = []
    return tokens, gold, pred


def test_dataset_has_label_maps_splits_and_aligned_labels(ner_dataset):
    import datasets

    manifest = json.loads((ner_dataset / "kfnlp-manifest.json").read_text())
    labels = json.loads((ner_dataset / "labels.json").read_text())
    assert manifest["task"] == "ner" and manifest["splits"] == ["test", "train", "validation"]
    assert labels["labels"][0] == "O" and len(labels["labels"]) == 21  # WNUT-16: 10 types in B-/I- form
    assert labels["label2id"] == {name: i for i, name in enumerate(labels["labels"])}
    data = datasets.load_from_disk(str(ner_dataset / "data"))
    row = data["train"][0]
    assert len(row["labels"]) == len(row["input_ids"]) == len(row["word_ids"]) == row["length"]
    assert row["labels"][0] == -100 and row["labels"][-1] == -100
    assert (ner_dataset / "corpus.jsonl").read_text().count("\n") == manifest["counts"]["train"]["sentences"]


def test_model_artifact_loads_with_plain_token_classification_pipeline(ner_model):
    from transformers import pipeline

    tagger = pipeline("token-classification", model=str(ner_model), aggregation_strategy="simple")
    entities = tagger("Justin Bieber visited the Empire State Building in New York")
    assert isinstance(entities, list)
    assert all({"entity_group", "word", "start", "end", "score"} <= set(e) for e in entities)
    config = json.loads((ner_model / "config.json").read_text())
    assert config["id2label"]["0"] == "O" and len(config["id2label"]) == 21
    assert (ner_model / "model.safetensors").is_file()
    summary = json.loads((ner_model / "training_summary.json").read_text())
    assert summary["global_step"] > 0 and "f1" in summary["validation"]


def test_evaluate_equals_seqeval_on_its_own_predictions_file(ner_evaluation):
    from seqeval.metrics import accuracy_score, f1_score, precision_score, recall_score
    from seqeval.scheme import IOB2

    result = json.loads((ner_evaluation / "metrics.json").read_text())
    _, gold, pred = read_three_columns(ner_evaluation / "predictions.conll")
    m = result["metrics"]
    assert result["tag_scheme"] == "iob2"
    assert m["sentences"] == len(gold) and m["words"] == sum(map(len, gold))
    assert m["entities"] > 0
    assert sum(row["support"] for row in result["per_entity"].values()) == m["entities"]
    assert m["f1"] == pytest.approx(f1_score(gold, pred), abs=1e-12)
    assert m["precision"] == pytest.approx(precision_score(gold, pred), abs=1e-12)
    assert m["recall"] == pytest.approx(recall_score(gold, pred), abs=1e-12)
    assert m["accuracy"] == pytest.approx(accuracy_score(gold, pred), abs=1e-12)
    assert m["strict_f1"] == pytest.approx(f1_score(gold, pred, mode="strict", scheme=IOB2), abs=1e-12)
    assert sum(row["support"] for row in result["per_entity"].values()) == m["entities"] > 0
    report = (ner_evaluation / "report.md").read_text()
    assert "Per entity type" in report and "strict IOB2" in report
    assert "<table>" in (ner_evaluation / "report.html").read_text()


def test_word_label_confusion_matrix_equals_scikit_learn(ner_evaluation, ner_dataset):
    """Every word once, gold rows and predicted columns over all labels, as sklearn counts them from the predictions file."""
    from sklearn.metrics import confusion_matrix

    result = json.loads((ner_evaluation / "metrics.json").read_text())
    _, gold, pred = read_three_columns(ner_evaluation / "predictions.conll")
    labels = json.loads((ner_dataset / "labels.json").read_text())["labels"]
    words_gold, words_pred = [t for s in gold for t in s], [t for s in pred for t in s]
    confusion = result["confusion"]
    assert confusion["labels"] == labels  # iob2: a word the model never saw is predicted O, one of the labels
    assert confusion["matrix"] == confusion_matrix(words_gold, words_pred, labels=labels).tolist()
    assert sum(map(sum, confusion["matrix"])) == result["metrics"]["words"]
    for c in result["confusions"]:  # the report's most frequent confusions are cells of the matrix
        assert confusion["matrix"][labels.index(c["gold"])][labels.index(c["predicted"])] == c["count"]


def test_evaluation_page_plots_per_entity_f1_and_the_confusion_matrix(ner_evaluation):
    from kfnlp.reports import occurring
    from tests.support.html_page import check_self_contained, read_page

    result = json.loads((ner_evaluation / "metrics.json").read_text())
    page = read_page((ner_evaluation / "report.html").read_text(encoding="utf-8"))
    check_self_contained(page)
    assert page.plots == ["Entity F1 per type: ner", "Word labels: ner"]
    assert page.figures_with_plot == 2 and page.tags["svg"] == 2
    assert page.elements("scores-0") == len(result["per_entity"])  # one bar per entity type
    assert page.elements("matrix") == 1
    assert page.headings[:1] == ["NER evaluation: ner"]
    assert {"Per entity type", "Confusion matrix (word labels)"} <= set(page.headings)
    shown, _ = occurring(result["confusion"])
    assert "O" in shown and set(shown) <= set(result["confusion"]["labels"])
    report = (ner_evaluation / "report.md").read_text()  # the Markdown holds the same numbers without plots
    assert "## Confusion matrix (word labels; rows gold, columns predicted)" in report
    header = next(line for line in report.splitlines() if line.startswith("| gold \\ predicted |"))
    assert header.split("|")[2:-1] == [f" {name} " for name in shown]


def test_train_ner_from_a_train_mlm_artifact_keeps_its_encoder(tiny_dataset, tiny_eval_set, tmp_path):
    """A masked-LM artifact gives its encoder weights and gets a fresh head of the dataset's labels."""
    import torch

    from kfnlp.modeling import load_masked_lm, load_token_classifier
    from kfnlp.stages.train_mlm import TrainMlmConfig, train_mlm

    mlm = tmp_path / "mlm"
    train_mlm(
        str(tiny_dataset),
        str(tiny_eval_set),
        str(mlm),
        TrainMlmConfig(max_steps=2, batch_size=4, learning_rate=1e-3),
        MODEL,
    )
    labels = ["O", "B-X", "I-X"]
    classifier = load_token_classifier(str(mlm), labels)
    source = load_masked_lm(str(mlm))
    assert classifier.config.id2label == {0: "O", 1: "B-X", 2: "I-X"}
    assert classifier.classifier.out_features == 3
    for name, weight in source.bert.state_dict().items():
        if name in classifier.bert.state_dict():
            assert torch.equal(weight, classifier.bert.state_dict()[name]), name


def test_evaluate_refuses_a_model_with_other_labels(ner_dataset, tmp_path):
    from kfnlp.stages.evaluate_ner import EvaluateNerConfig, evaluate_ner

    other = tmp_path / "other"
    from kfnlp.modeling import load_token_classifier, load_tokenizer

    load_token_classifier(MODEL, ["O", "B-X", "I-X"]).save_pretrained(other)
    load_tokenizer(MODEL).save_pretrained(other)
    with pytest.raises(InputError, match="labels"):
        evaluate_ner(str(other), str(ner_dataset), str(tmp_path / "eval"), EvaluateNerConfig())
    assert not (tmp_path / "eval").exists()


def test_compare_counts_give_seqeval_f1_and_an_honest_verdict(ner_evaluation):
    from seqeval.metrics import f1_score

    from kfnlp.stages.compare import entity_counts, f1_of, paired_bootstrap, verdict

    _, gold, pred = read_three_columns(ner_evaluation / "predictions.conll")
    counts = entity_counts(gold, pred)
    assert float(f1_of(counts.sum(0))) == pytest.approx(f1_score(gold, pred), abs=1e-12)
    perfect = entity_counts(gold, gold)
    better = {"name": "f1", **paired_bootstrap(counts, perfect, f1_of, 500, 0.95, 0)}
    assert better["delta"] > 0 and better["low"] > 0 and verdict(better).startswith("adaptation helped: f1")
    worse = {"name": "f1", **paired_bootstrap(perfect, counts, f1_of, 500, 0.95, 0)}
    assert verdict(worse).startswith("adaptation hurt")
    same = {"name": "f1", **paired_bootstrap(counts, counts, f1_of, 500, 0.95, 0)}
    assert same["delta"] == 0 and verdict(same).startswith("no clear difference")


def test_predict_ner_cli_prints_entities(ner_model):
    from tests.support.cli import run_cli

    result = run_cli("predict", "ner", "--model", str(ner_model), "--json", "Justin Bieber lives in New York")
    assert result.returncode == 0, result.stderr
    [item] = json.loads(result.stdout)
    assert item["text"] == "Justin Bieber lives in New York" and isinstance(item["entities"], list)
    wrong = run_cli("predict", "ner", "--model", MODEL, "some text")
    assert wrong.returncode != 0 and "not an NER model" in wrong.stderr


def test_hub_style_dataset_uses_its_splits_and_classlabel_names(tmp_path):
    """`hf:` goes through datasets.load_dataset; a local Parquet directory stands in for a Hub repo."""
    import datasets

    from kfnlp.stages.preprocess_ner import NerPreprocessConfig, preprocess_ner

    names = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    features = datasets.Features(
        {
            "tokens": datasets.Sequence(datasets.Value("string")),
            "ner_tags": datasets.Sequence(datasets.ClassLabel(names=names)),
        }
    )
    rows = {"tokens": [["Alice", "lives", "in", "Paris"]] * 6, "ner_tags": [[1, 0, 0, 3]] * 6}
    repo = tmp_path / "repo" / "data"
    repo.mkdir(parents=True)
    for split in ("train", "validation", "test"):
        datasets.Dataset.from_dict(rows, features=features).to_parquet(str(repo / f"{split}-00000-of-00001.parquet"))
    manifest = preprocess_ner(
        str(tmp_path / "out"), NerPreprocessConfig(source=f"hf:{repo.parent}", dedupe=False), MODEL
    )
    assert manifest["labels"] == names  # ClassLabel order kept, not re-derived
    assert manifest["splits"] == ["test", "train", "validation"]
    assert {manifest["counts"][s]["sentences"] for s in manifest["splits"]} == {6}
