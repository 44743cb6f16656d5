"""compare on evaluation artifacts written by the real writer: the primary metric per task
(cls accuracy, plain-tag word accuracy) equals scikit-learn's, the bootstrap and verdict
name it, and evaluations that do not belong together are refused."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from kfnlp.artifacts import write_evaluation
from kfnlp.errors import InputError
from kfnlp.stages.compare import CompareConfig, compare

LABELS = ["neg", "pos", "neutral"]


def mlm_evaluation(path: Path, perplexity: float) -> str:
    write_evaluation(str(path), {"metrics": {"perplexity": perplexity}}, "# mlm\n", task="mlm")
    return str(path)


def cls_evaluation(path: Path, gold: list[str], predicted: list[str], fingerprint: str = "data-1") -> str:
    from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

    p, r, f, s = precision_recall_fscore_support(gold, predicted, labels=LABELS, zero_division=0)
    result = {
        "task": "cls",
        "label": path.name,
        "model": f"model-{path.name}",
        "split": "test",
        "dataset_fingerprint": fingerprint,
        "labels": LABELS,
        "metrics": {
            "accuracy": accuracy_score(gold, predicted),
            "macro_f1": f1_score(gold, predicted, average="macro", zero_division=0),
            "micro_f1": f1_score(gold, predicted, average="micro", zero_division=0),
            "weighted_f1": f1_score(gold, predicted, average="weighted", zero_division=0),
            "macro_precision": float(p.mean()),
            "macro_recall": float(r.mean()),
            "examples": len(gold),
        },
        "per_class": {
            name: {"precision": p[i], "recall": r[i], "f1": f[i], "support": int(s[i])} for i, name in enumerate(LABELS)
        },
    }
    rows = [
        {"id": f"test-{i:06d}", "gold": g, "predicted": q, "scores": {}}
        for i, (g, q) in enumerate(zip(gold, predicted, strict=True))
    ]
    write_evaluation(str(path), result, "# cls\n", predictions=rows, task="cls")
    return str(path)


def noisy(gold: list[str], error_rate: float, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [rng.choice([x for x in LABELS if x != g]) if rng.random() < error_rate else g for g in gold]


@pytest.fixture(scope="module")
def gold() -> list[str]:
    rng = random.Random(0)
    return [rng.choice(LABELS) for _ in range(400)]


def test_cls_compare_bootstraps_accuracy_and_says_who_won(gold, tmp_path):
    from sklearn.metrics import accuracy_score

    base_pred, adapted_pred = noisy(gold, 0.4, 1), noisy(gold, 0.1, 2)
    base = cls_evaluation(tmp_path / "base", gold, base_pred)
    adapted = cls_evaluation(tmp_path / "adapted", gold, adapted_pred)
    out = tmp_path / "comparison"
    result = compare(
        mlm_evaluation(tmp_path / "mb", 50.0),
        mlm_evaluation(tmp_path / "ma", 20.0),
        base,
        adapted,
        str(out),
        CompareConfig(bootstrap_samples=300),
    )
    primary = result["primary"]
    assert result["task"] == "cls" and primary["name"] == "accuracy"
    assert primary["base"] == pytest.approx(accuracy_score(gold, base_pred), abs=1e-12)
    assert primary["adapted"] == pytest.approx(accuracy_score(gold, adapted_pred), abs=1e-12)
    assert primary["low"] <= primary["delta"] <= primary["high"] and primary["low"] > 0
    assert primary["samples"] == 300 and primary["p_adapted_better"] == 1.0
    assert result["verdict"].startswith("adaptation helped: accuracy +") and result["winner"] == "adapted"
    assert result["metrics"]["macro_f1"]["delta"] > 0 and set(result["per_class"]) == set(LABELS)
    assert result["data"] == {"examples": 400} and result["perplexity"]["ratio"] == pytest.approx(0.4)
    written = json.loads((out / "comparison.json").read_text())
    assert written["verdict"] == result["verdict"]
    report = (out / "report.md").read_text()
    assert "Does domain adaptation help text classification?" in report and "Per class (F1)" in report
    assert "400 test examples" in report


def test_compare_page_plots_and_metrics_for_the_kfp_ui(gold, tmp_path):
    """The page plots perplexity and per-class F1 with the interval; the scalars are the comparison's numbers."""
    from kfnlp.stages.compare import summary_metrics
    from tests.support.html_page import check_self_contained, read_page

    base = cls_evaluation(tmp_path / "base", gold, noisy(gold, 0.3, 1))
    adapted = cls_evaluation(tmp_path / "adapted", gold, noisy(gold, 0.2, 2))
    mb, ma = mlm_evaluation(tmp_path / "mb", 50.0), mlm_evaluation(tmp_path / "ma", 20.0)
    out = tmp_path / "comparison"
    result = compare(mb, ma, base, adapted, str(out), CompareConfig(bootstrap_samples=200))
    html = (out / "report.html").read_text(encoding="utf-8")
    page = read_page(html)
    check_self_contained(page)
    assert page.plots == ["Masked-LM perplexity", "F1 per class: base and adapted encoder"]
    assert page.figures_with_plot == 2 and page.elements("perplexity") == 2  # base and adapted
    assert page.elements("scores-0") == page.elements("scores-1") == len(LABELS)  # each encoder's bars
    assert page.elements("interval") == 1 and "Per class (F1)" in page.headings
    p = result["primary"]
    assert f"[{p['low']:+.4f}, {p['high']:+.4f}]" in html  # the interval's text is in the page as well

    metrics = summary_metrics(result)
    assert metrics["perplexity_base"] == 50.0 and metrics["perplexity_adapted"] == 20.0
    assert metrics["perplexity_ratio"] == pytest.approx(0.4)
    assert metrics["accuracy_delta"] == pytest.approx(p["delta"]) and metrics["primary_delta"] == p["delta"]
    assert (metrics["primary_low"], metrics["primary_high"]) == (p["low"], p["high"])
    assert metrics["p_adapted_better"] == p["p_adapted_better"]
    assert {f"{name}_{k}" for name in result["metrics"] for k in ("base", "adapted", "delta")} <= set(metrics)
    assert all(isinstance(v, float) for v in metrics.values())

    without = compare(mb, ma, base, adapted, str(tmp_path / "no-bootstrap"), CompareConfig(bootstrap_samples=0))
    assert "primary_low" not in summary_metrics(without) and "p_adapted_better" not in summary_metrics(without)
    assert read_page((tmp_path / "no-bootstrap" / "report.html").read_text()).elements("interval") == 0


def test_plain_tag_compare_bootstraps_word_accuracy(tmp_path):
    """A plain tag scheme (POS) is scored by word accuracy over the flattened words."""
    from sklearn.metrics import accuracy_score

    rng = random.Random(3)
    tags = ["NOUN", "VERB", "DET", "ADJ"]
    gold = [[rng.choice(tags) for _ in range(rng.randint(1, 12))] for _ in range(120)]
    predicted = [[t if rng.random() < 0.8 else rng.choice(tags) for t in sentence] for sentence in gold]
    evaluations = []
    for name, pred in (("base", predicted), ("adapted", gold)):
        result = {
            "task": "ner",
            "tag_scheme": "plain",
            "model": name,
            "split": "test",
            "dataset_fingerprint": "pos",
            "metrics": {"accuracy": accuracy_score(sum(gold, []), sum(pred, [])), "macro_f1": 0.5},
            "per_tag": {t: {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1} for t in tags},
        }
        sentences = [(["w"] * len(g), g, p) for g, p in zip(gold, pred, strict=True)]
        write_evaluation(str(tmp_path / name), result, "# ner\n", predictions=sentences, task="ner")
        evaluations.append(str(tmp_path / name))
    result = compare(
        mlm_evaluation(tmp_path / "mb", 5.0),
        mlm_evaluation(tmp_path / "ma", 5.0),
        *evaluations,
        str(tmp_path / "out"),
        CompareConfig(bootstrap_samples=0),
    )
    assert result["primary"]["name"] == "accuracy" and result["tag_scheme"] == "plain"
    assert result["primary"]["base"] == pytest.approx(accuracy_score(sum(gold, []), sum(predicted, [])), abs=1e-12)
    assert result["primary"]["adapted"] == 1.0 and "low" not in result["primary"]
    assert result["verdict"].startswith("adaptation helped: accuracy")
    assert "Per tag (F1)" in (tmp_path / "out" / "report.md").read_text()


def test_compare_refuses_evaluations_that_do_not_belong_together(gold, tmp_path):
    mb, ma = mlm_evaluation(tmp_path / "mb", 5.0), mlm_evaluation(tmp_path / "ma", 4.0)
    base = cls_evaluation(tmp_path / "base", gold, gold)
    other_data = cls_evaluation(tmp_path / "other", gold, gold, fingerprint="data-2")
    with pytest.raises(InputError, match="different data"):
        compare(mb, ma, base, other_data, str(tmp_path / "out"), CompareConfig())
    with pytest.raises(InputError, match="compare takes ner or cls"):
        compare(mb, ma, mb, ma, str(tmp_path / "out"), CompareConfig())
    assert not (tmp_path / "out").exists()
