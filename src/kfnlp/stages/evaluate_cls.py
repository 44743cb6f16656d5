"""evaluate-cls: a text classifier's predictions on a held-out split, scored with scikit-learn.

Every example is predicted (softmax over the model's labels), the predictions are written
as ``predictions.jsonl`` (id, gold, predicted, scores) in dataset order, and the reported
numbers are scikit-learn's on exactly those predictions.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from typing import Any, Literal

from kfnlp.artifacts import open_cls_dataset, write_evaluation
from kfnlp.config import option
from kfnlp.errors import InputError
from kfnlp.stages.entry import Input, Stage

log = logging.getLogger(__name__)

EXCERPT = 300  # characters of an example's text shown among the most confused
# the metrics in result["metrics"] a sweep may select on (all higher is better)
METRICS = {
    name: "maximize" for name in ("accuracy", "macro_f1", "micro_f1", "weighted_f1", "macro_precision", "macro_recall")
}


@dataclass
class EvaluateClsConfig:
    split: Literal["test", "validation", "train", "cross_domain"] = option(
        "test", "split of the preprocess-cls dataset to score (cross_domain: builtin:imdb's Rotten Tomatoes reviews)"
    )
    batch_size: int = option(64, "evaluation batch size (examples, batched by length)")
    top_confused: int = option(10, "wrong predictions listed in the report, the most confident first")

    def __post_init__(self):
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.top_confused < 0:
            raise ValueError(f"top_confused must be >= 0, got {self.top_confused}")


def predict_probabilities(model, data, batch_size: int):
    """Softmax class probabilities of every example, in dataset order, as an (examples, labels)
    array; batched by length so that little compute goes to padding, on the model's device.
    Also returns seconds."""
    import numpy as np
    import torch
    from tqdm.auto import tqdm

    model.eval()
    input_ids = data["input_ids"]
    token_types = data["token_type_ids"] if "token_type_ids" in data.column_names else None
    order = np.argsort([len(ids) for ids in input_ids], kind="stable")
    out = np.zeros((len(input_ids), model.config.num_labels), dtype=np.float32)
    pad = model.config.pad_token_id or 0
    started = time.monotonic()
    with torch.inference_mode():
        for start in tqdm(range(0, len(order), batch_size), desc="evaluate", unit="batch", mininterval=2):
            idx = order[start : start + batch_size]
            width = max(len(input_ids[i]) for i in idx)
            ids = torch.full((len(idx), width), pad, dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            types = torch.zeros((len(idx), width), dtype=torch.long)
            for row, i in enumerate(idx):
                ids[row, : len(input_ids[i])] = torch.tensor(input_ids[i])
                mask[row, : len(input_ids[i])] = 1
                if token_types is not None:
                    types[row, : len(input_ids[i])] = torch.tensor(token_types[i])
            inputs = {"input_ids": ids, "attention_mask": mask}
            if token_types is not None:
                inputs["token_type_ids"] = types
            logits = model(**{k: v.to(model.device) for k, v in inputs.items()}).logits
            out[idx] = torch.softmax(logits.float(), dim=-1).cpu().numpy()
    return out, time.monotonic() - started


def cls_scores(gold: list[str], predicted: list[str], labels: list[str]) -> dict[str, Any]:
    """scikit-learn's scores: averages over the classes present in gold or predicted (its default);
    per-class scores and the confusion matrix (rows gold, columns predicted) over every label."""
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

    metrics: dict[str, Any] = {"accuracy": float(accuracy_score(gold, predicted))}
    for average in ("macro", "micro", "weighted"):
        metrics[f"{average}_f1"] = float(f1_score(gold, predicted, average=average, zero_division=0))
    precision, recall, _, _ = precision_recall_fscore_support(gold, predicted, average="macro", zero_division=0)
    metrics.update(macro_precision=float(precision), macro_recall=float(recall))
    p, r, f, support = precision_recall_fscore_support(gold, predicted, labels=labels, zero_division=0)
    per_class = {
        name: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(support[i])}
        for i, name in enumerate(labels)
    }
    matrix = confusion_matrix(gold, predicted, labels=labels).tolist()
    return {"metrics": metrics, "per_class": per_class, "confusion": {"labels": labels, "matrix": matrix}}


def most_confused(rows: list[dict], texts: list[str], top: int) -> list[dict]:
    """Wrong predictions, the most confident first (ties in dataset order)."""
    wrong = [(i, row) for i, row in enumerate(rows) if row["gold"] != row["predicted"]]
    wrong.sort(key=lambda item: -item[1]["scores"][item[1]["predicted"]])
    return [
        {
            "id": row["id"],
            "text": texts[i][:EXCERPT],
            "gold": row["gold"],
            "predicted": row["predicted"],
            "score": row["scores"][row["predicted"]],
        }
        for i, row in wrong[:top]
    ]


def evaluate_cls(model: str, dataset: str, output: str, config: EvaluateClsConfig, label: str = "model") -> dict:
    """Score ``model`` on the ``config.split`` split of the preprocess-cls ``dataset``; write the
    evaluation artifact (metrics, predictions.jsonl, reports) to ``output``; return its result."""
    from kfnlp.modeling import inference_device, load_sequence_classifier, load_tokenizer
    from kfnlp.reports import cls_evaluation_html, cls_evaluation_markdown

    source = open_cls_dataset(dataset)
    if config.split not in source.manifest["splits"]:
        raise InputError(f"{dataset}: no {config.split} split (has {', '.join(source.manifest['splits'])})")
    labels = source.labels()
    source.check_vocabulary(load_tokenizer(model))
    net = load_sequence_classifier(model).to(inference_device())
    model_labels = [net.config.id2label[i] for i in range(net.config.num_labels)]
    if model_labels != labels:
        raise InputError(f"{model}: its labels {model_labels} differ from the dataset's {labels}")
    data = source.splits()[config.split]
    if len(data) == 0:
        raise InputError(f"{dataset}: the {config.split} split has no examples")
    probabilities, seconds = predict_probabilities(net, data, config.batch_size)
    gold = [labels[i] for i in data["labels"]]
    rows = [
        {
            "id": example_id,
            "gold": gold_label,
            "predicted": labels[int(p.argmax())],
            "scores": {name: round(float(s), 6) for name, s in zip(labels, p, strict=True)},
        }
        for example_id, gold_label, p in zip(data["id"], gold, probabilities, strict=True)
    ]
    scores = cls_scores(gold, [row["predicted"] for row in rows], labels)
    metrics = {**scores["metrics"], "examples": len(rows), "eval_seconds": round(seconds, 3)}
    result = {
        "task": "cls",
        "label": label,
        "model": model,
        "split": config.split,
        "dataset_fingerprint": source.fingerprint,
        "labels": labels,
        "metrics": metrics,
        "per_class": scores["per_class"],
        "confusion": scores["confusion"],
        "most_confused": most_confused(rows, data["text"], config.top_confused),
        "config": asdict(config),
    }
    log.info(
        "evaluate %s: accuracy %.4f, macro F1 %.4f on %d examples",
        label,
        metrics["accuracy"],
        metrics["macro_f1"],
        len(rows),
    )
    write_evaluation(
        output,
        result,
        cls_evaluation_markdown(result),
        cls_evaluation_html(result),
        predictions=rows,
        task="cls",
        dataset_fingerprint=source.fingerprint,
        metrics=metrics,
        label=label,
    )
    return result


STAGE = Stage(
    name="evaluate-cls",
    config=EvaluateClsConfig,
    function=evaluate_cls,
    help="score a text classifier: accuracy, macro/micro F1, confusion matrix, predictions and report",
    inputs=(
        Input(
            "model",
            "text classifier (train-cls artifact or a sequence-classification model directory)",
            required=True,
            kind="model",
        ),
        Input("dataset", "text-classification dataset artifact from preprocess-cls", required=True, kind="artifact"),
        Input("output", "evaluation directory to write", required=True),
        Input("label", "name for this model in reports", default="model"),
    ),
    example="split=validation",
)
