"""Plain tags (``tag_scheme: plain``): part-of-speech tagging through preprocess-ner, train-ner,
evaluate-ner and ``kfnlp predict ner`` on a small generated corpus, scored by word accuracy and
per-tag F1 equal to scikit-learn's on the predictions file."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest

from kfnlp.errors import InputError
from tests.support.cli import run_cli

MODEL = "builtin:splade-tiny"
WORDS = {
    "DT": ["the", "a", "every"],
    "JJ": ["small", "unbelievable", "green", "noisy"],
    "NN": ["cat", "dog", "teacher", "hippopotamus", "garden"],
    "VBD": ["saw", "chased", "liked", "photographed"],
    "IN": ["in", "near", "behind"],
    "PRP": ["she", "he", "they"],
    "RB": ["quickly", "never"],
}
PATTERNS = [
    ["DT", "NN", "VBD", "DT", "JJ", "NN"],
    ["PRP", "RB", "VBD", "DT", "NN", "IN", "DT", "NN"],
    ["DT", "JJ", "NN", "VBD", "IN", "DT", "NN"],
    ["PRP", "VBD", "DT", "NN"],
]


def _pos_conll(n: int = 120, seed: int = 0) -> str:
    rng = random.Random(seed)
    lines = []
    for i in range(n):
        for tag in PATTERNS[i % len(PATTERNS)]:
            lines.append(f"{rng.choice(WORDS[tag])}\t{tag}\n")
        lines.append("\n")
    return "".join(lines)


@pytest.fixture(scope="module")
def pos_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("pos") / "pos.conll"
    path.write_text(_pos_conll(), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def dataset(pos_file) -> Path:
    from kfnlp.stages.preprocess_ner import NerPreprocessConfig, preprocess_ner

    out = pos_file.parent / "dataset"
    preprocess_ner(str(out), NerPreprocessConfig(source=str(pos_file), tag_scheme="plain", max_length=32), MODEL)
    return out


@pytest.fixture(scope="module")
def model(dataset) -> Path:
    from kfnlp.stages.train_ner import TrainNerConfig, train_ner

    out = dataset.parent / "model"
    config = TrainNerConfig(learning_rate=2e-3, batch_size=16, num_epochs=3, logging_steps=50, save_strategy="no")
    train_ner(str(dataset), str(out), config, MODEL)
    return out


@pytest.fixture(scope="module")
def evaluation(model, dataset) -> Path:
    from kfnlp.stages.evaluate_ner import EvaluateNerConfig, evaluate_ner

    out = dataset.parent / "evaluation"
    evaluate_ner(str(model), str(dataset), str(out), EvaluateNerConfig(), label="pos")
    return out


def _predictions(path: Path) -> tuple[list[list[str]], list[list[str]], list[list[str]]]:
    """The predictions file, parsed independently of kfnlp's readers."""
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


def test_dataset_records_the_scheme_and_labels_continuations_with_the_word_tag(dataset):
    import datasets

    manifest = json.loads((dataset / "kfnlp-manifest.json").read_text())
    labels = json.loads((dataset / "labels.json").read_text())["labels"]
    assert manifest["tag_scheme"] == "plain" and manifest["config"]["tag_scheme"] == "plain"
    assert labels == sorted(WORDS)
    assert "entities" not in manifest["counts"]["train"]
    assert set(manifest["counts"]["train"]["tag_counts"]) <= set(WORDS)
    split = False
    for row in datasets.load_from_disk(str(dataset / "data"))["train"]:
        for position, word in enumerate(row["word_ids"]):
            if word >= 0 and position > 0 and row["word_ids"][position - 1] == word:  # a continuation
                assert row["labels"][position] == row["ner_tags"][word]
                split = True
    assert split  # "hippopotamus" and friends are more than one sub-token


def test_model_records_the_scheme_and_plain_validation_scores(model):
    manifest = json.loads((model / "kfnlp-manifest.json").read_text())
    assert manifest["tag_scheme"] == "plain"
    assert json.loads((model / "config.json").read_text())["tag_scheme"] == "plain"
    validation = json.loads((model / "training_summary.json").read_text())["validation"]
    assert {"accuracy", "macro_f1"} <= set(validation) and "f1" not in validation


def test_evaluation_equals_scikit_learn_on_its_predictions_file(evaluation):
    from sklearn.metrics import accuracy_score, classification_report, f1_score

    result = json.loads((evaluation / "metrics.json").read_text())
    _, gold, pred = _predictions(evaluation / "predictions.conll")
    flat_gold = [t for s in gold for t in s]
    flat_pred = [t for s in pred for t in s]
    m = result["metrics"]
    assert result["tag_scheme"] == "plain" and "per_entity" not in result and "f1" not in m
    assert m["words"] == len(flat_gold) and m["sentences"] == len(gold)
    assert m["accuracy"] == pytest.approx(accuracy_score(flat_gold, flat_pred), abs=1e-12)
    assert m["macro_f1"] == pytest.approx(f1_score(flat_gold, flat_pred, average="macro", zero_division=0), abs=1e-12)
    report = classification_report(flat_gold, flat_pred, output_dict=True, zero_division=0)
    assert set(result["per_tag"]) == set(report) - {"accuracy", "macro avg", "weighted avg"}
    for tag, row in result["per_tag"].items():
        assert row["precision"] == pytest.approx(report[tag]["precision"], abs=1e-12)
        assert row["recall"] == pytest.approx(report[tag]["recall"], abs=1e-12)
        assert row["f1"] == pytest.approx(report[tag]["f1-score"], abs=1e-12)
        assert row["support"] == report[tag]["support"]
    assert m["accuracy"] > 0.5  # the tags are learnable: each word has one
    manifest = json.loads((evaluation / "kfnlp-manifest.json").read_text())
    assert manifest["tag_scheme"] == "plain"
    markdown = (evaluation / "report.md").read_text()
    assert "## Per tag" in markdown and "word accuracy" in markdown and "entities" not in markdown
    assert "Per tag</h2>" in (evaluation / "report.html").read_text()


def test_predict_gives_each_word_the_tag_the_evaluation_gave_it(model, evaluation):
    tokens, _, predicted = _predictions(evaluation / "predictions.conll")
    texts = [" ".join(words) for words in tokens[:3]]
    result = run_cli("predict", "ner", "--model", str(model), "--json", *texts)
    assert result.returncode == 0, result.stderr
    items = json.loads(result.stdout)
    for item, words, tags in zip(items, tokens[:3], predicted[:3], strict=True):
        assert [w["word"] for w in item["words"]] == words
        assert [w["tag"] for w in item["words"]] == tags
        assert all(item["text"][w["start"] : w["end"]] == w["word"] for w in item["words"])


def test_pos_tags_under_iob2_name_the_plain_scheme(pos_file, tmp_path):
    from kfnlp.stages.preprocess_ner import NerPreprocessConfig, preprocess_ner

    pattern = rf"{re.escape(str(pos_file))}:(\d+): tag '(\w+)' is not IOB2 .*tag_scheme: plain"
    with pytest.raises(InputError, match=pattern) as err:
        preprocess_ner(str(tmp_path / "out"), NerPreprocessConfig(source=str(pos_file)), MODEL)
    line, tag = re.search(pattern, str(err.value)).groups()
    assert pos_file.read_text().split("\n")[int(line) - 1].endswith("\t" + tag)  # names the very line
    assert not (tmp_path / "out").exists()
