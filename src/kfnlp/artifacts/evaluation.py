"""Evaluation artifacts (kind ``evaluation``), written by evaluate, evaluate-ner, evaluate-cls and evaluate-clm:
``metrics.json`` (the whole result), ``report.md`` (and ``report.html``) and the predictions the
scores are computed on: for NER ``predictions.conll`` (token, gold, predicted; tab separated), for
text classification ``predictions.jsonl`` (one ``{"id", "gold", "predicted", "scores"}`` per example)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from kfnlp.artifacts.opened import Opened
from kfnlp.errors import InputError
from kfnlp.storage import write_artifact

KIND = "evaluation"
METRICS_FILE = "metrics.json"
PREDICTIONS_FILE = "predictions.conll"
CLS_PREDICTIONS_FILE = "predictions.jsonl"
REPORT_MARKDOWN = "report.md"
REPORT_HTML = "report.html"


class Evaluation(Opened):
    """An evaluation artifact opened for reading."""

    def result(self) -> dict[str, Any]:
        """The evaluation's ``metrics.json``: metrics, the model, the data's fingerprint, the config."""
        return json.loads((self.path / METRICS_FILE).read_text(encoding="utf-8"))

    def predictions(self) -> tuple[list, list]:
        """Gold and predicted labels: of an NER evaluation the tags sentence by sentence, of a
        text-classification one the label of each example, in file order."""
        if self.manifest.get("task") == "cls":
            return read_cls_predictions(self.path / CLS_PREDICTIONS_FILE)
        return read_predictions(self.path / PREDICTIONS_FILE)


def open_evaluation(uri: str, task: str | None = None) -> Evaluation:
    """An evaluation artifact; with ``task``, one of that task (``mlm``, ``ner``, ``cls`` or ``clm``)."""
    evaluation = Evaluation.open(uri, KIND)
    if task is not None and evaluation.manifest.get("task") != task:
        raise InputError(f"{uri}: a {evaluation.manifest.get('task')} evaluation, expected {task}")
    return evaluation


def read_evaluation(uri: str) -> dict[str, Any]:
    """The result (``metrics.json``) of an evaluation artifact."""
    return open_evaluation(uri).result()


def write_evaluation(
    output: str,
    result: dict[str, Any],
    markdown: str,
    html: str | None = None,
    /,
    predictions: Iterable | None = None,
    **facts: Any,
) -> None:
    """Write ``result`` and its reports; ``predictions`` are (tokens, gold, predicted) per sentence,
    or with ``task="cls"`` one ``{"id", "gold", "predicted", "scores"}`` dict per example."""
    from kfnlp.data.conll import write_conll

    with write_artifact(output, kind=KIND) as out:
        if predictions is not None and facts.get("task") == "cls":
            with open(out.path / CLS_PREDICTIONS_FILE, "w", encoding="utf-8") as handle:
                for row in predictions:
                    handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        elif predictions is not None:
            write_conll(out.path / PREDICTIONS_FILE, predictions)
        (out.path / METRICS_FILE).write_text(json.dumps(result, indent=2), encoding="utf-8")
        write_reports(out.path, markdown, html)
        out.info.update(facts)


def write_reports(path: Path, markdown: str, html: str | None) -> None:
    (path / REPORT_MARKDOWN).write_text(markdown, encoding="utf-8")
    if html is not None:
        (path / REPORT_HTML).write_text(html, encoding="utf-8")


def read_predictions(path: str | Path) -> tuple[list[list[str]], list[list[str]]]:
    """Gold and predicted tags of a token/gold/predicted CoNLL file."""
    gold, predicted = [], []
    with open(path, encoding="utf-8") as handle:
        rows: list[list[str]] = []
        for line in [*handle.read().split("\n"), ""]:  # not splitlines: a token may hold U+2028
            if line.strip():
                rows.append(line.split("\t"))
            elif rows:
                gold.append([r[1] for r in rows])
                predicted.append([r[2] for r in rows])
                rows = []
    return gold, predicted


def read_cls_predictions(path: str | Path) -> tuple[list[str], list[str]]:
    """Gold and predicted label of each example of a ``predictions.jsonl``."""
    gold, predicted = [], []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            gold.append(row["gold"])
            predicted.append(row["predicted"])
    return gold, predicted
