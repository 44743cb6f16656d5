"""evaluate (NER mode): word-level predictions on a held-out split, scored with seqeval
(IOB2 entity tags) or scikit-learn (plain tags such as part-of-speech).

Each word is labelled by its first sub-token's prediction, so scores count words
(as CoNLL does), not sub-tokens. Words cut off by truncation, which the model never
saw, are predicted ``O`` (plain tags: ``_``) and counted in ``words_not_seen``. The
predictions are written as a CoNLL file (token, gold, predicted) and the reported
numbers are seqeval's (iob2: entity precision/recall/F1) or scikit-learn's (plain: word
accuracy, macro F1 and per-tag scores) on exactly that file.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Literal

from kfnlp.artifacts import open_ner_dataset, write_evaluation
from kfnlp.config import option
from kfnlp.data.ner import NO_TAG, word_predictions
from kfnlp.errors import InputError
from kfnlp.metrics import seqeval_scores, tag_scores
from kfnlp.stages.entry import Input, Stage

log = logging.getLogger(__name__)

# the metrics in result["metrics"] a sweep may select on (all higher is better): IOB2 tags give entity
# precision/recall/F1 (strict_f1: strict IOB2) and word accuracy; plain tags give accuracy and macro_f1
METRICS = {name: "maximize" for name in ("f1", "precision", "recall", "strict_f1", "accuracy", "macro_f1")}


@dataclass
class EvaluateNerConfig:
    split: Literal["test", "validation", "train"] = option("test", "split of the preprocess-ner dataset to score")
    batch_size: int = option(64, "evaluation batch size (sentences, batched by length)")
    top_confusions: int = option(10, "most frequent (gold, predicted) word-label confusions listed in the report")

    def __post_init__(self):
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")


def predict_word_labels(model, data, batch_size: int) -> tuple[list[list[int | None]], float]:
    """First-sub-token label id of every word of every sentence (None where truncated),
    batched by length so that little compute goes to padding, on the device the model is on.
    Also returns seconds."""
    import numpy as np
    import torch
    from tqdm.auto import tqdm

    model.eval()
    input_ids, word_ids, tokens = data["input_ids"], data["word_ids"], data["tokens"]
    order = np.argsort([len(ids) for ids in input_ids], kind="stable")
    out: list[list[int | None]] = [[] for _ in input_ids]
    pad = model.config.pad_token_id or 0
    started = time.monotonic()
    with torch.inference_mode():
        for start in tqdm(range(0, len(order), batch_size), desc="evaluate", unit="batch", mininterval=2):
            idx = order[start : start + batch_size]
            width = max(len(input_ids[i]) for i in idx)
            ids = torch.full((len(idx), width), pad, dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            for row, i in enumerate(idx):
                ids[row, : len(input_ids[i])] = torch.tensor(input_ids[i])
                mask[row, : len(input_ids[i])] = 1
            logits = model(input_ids=ids.to(model.device), attention_mask=mask.to(model.device)).logits
            predicted = logits.argmax(-1).tolist()
            for row, i in enumerate(idx):
                out[i] = word_predictions(predicted[row][: len(input_ids[i])], word_ids[i], len(tokens[i]))
    return out, time.monotonic() - started


def confusions(gold: list[list[str]], predicted: list[list[str]], top: int) -> list[dict]:
    """Most frequent (gold, predicted) word-label disagreements."""
    counts = Counter(
        (g, p) for gs, ps in zip(gold, predicted, strict=True) for g, p in zip(gs, ps, strict=True) if g != p
    )
    return [{"gold": g, "predicted": p, "count": n} for (g, p), n in counts.most_common(top)]


def confusion_matrix(gold: list[list[str]], predicted: list[list[str]], labels: list[str]) -> dict:
    """Every word counted once by (gold, predicted) label: rows gold, columns predicted, over all ``labels``
    (and the unseen-word mark last if a word carries it), as scikit-learn's ``confusion_matrix`` lays it out."""
    counts = Counter((g, p) for gs, ps in zip(gold, predicted, strict=True) for g, p in zip(gs, ps, strict=True))
    names = list(labels) + sorted({p for (_, p) in counts if p not in labels})
    return {"labels": names, "matrix": [[counts.get((g, p), 0) for p in names] for g in names]}


def entity_results(gold: list[list[str]], predicted: list[list[str]]) -> dict:
    """IOB2 tags: seqeval's entity scores (conlleval's reading and strict IOB2) and per entity type."""
    scores = {"default": seqeval_scores(gold, predicted), "strict": seqeval_scores(gold, predicted, strict=True)}
    return {
        "metrics": {
            **{k: scores["default"][k] for k in ("precision", "recall", "f1", "accuracy")},
            "strict_f1": scores["strict"]["f1"],
            "entities": scores["default"]["entities"],
        },
        "per_entity": scores["default"]["per_entity"],
        "strict": scores["strict"],
    }


def tag_results(gold: list[list[str]], predicted: list[list[str]]) -> dict:
    """Plain tags: scikit-learn's word accuracy, macro F1 and per-tag scores on the words of all sentences."""
    scores = tag_scores([t for s in gold for t in s], [t for s in predicted for t in s])
    return {"metrics": {k: scores[k] for k in ("accuracy", "macro_f1")}, "per_tag": scores["per_tag"]}


def evaluate_ner(model: str, dataset: str, output: str, config: EvaluateNerConfig, label: str = "model") -> dict:
    from kfnlp.modeling import inference_device, load_token_classifier, load_tokenizer
    from kfnlp.reports import ner_evaluation_html, ner_evaluation_markdown

    source = open_ner_dataset(dataset)
    if config.split not in source.manifest["splits"]:
        raise InputError(f"{dataset}: no {config.split} split (has {', '.join(source.manifest['splits'])})")
    labels = source.labels()
    scheme = source.manifest.get("tag_scheme", "iob2")
    source.check_vocabulary(load_tokenizer(model))
    net = load_token_classifier(model).to(inference_device())
    model_labels = [net.config.id2label[i] for i in range(net.config.num_labels)]
    if model_labels != labels:
        raise InputError(f"{model}: its labels {model_labels} differ from the dataset's {labels}")
    data = source.splits()[config.split]
    word_ids, seconds = predict_word_labels(net, data, config.batch_size)
    gold = [[labels[t] for t in tags] for tags in data["ner_tags"]]
    unseen = sum(p is None for sentence in word_ids for p in sentence)
    missing = "O" if scheme == "iob2" else NO_TAG
    predicted = [[labels[p] if p is not None else missing for p in sentence] for sentence in word_ids]
    counted = {
        "sentences": len(gold),
        "words": sum(len(s) for s in gold),
        "words_not_seen": unseen,
        "eval_seconds": round(seconds, 3),
    }
    result = {
        "task": "ner",
        "tag_scheme": scheme,
        "label": label,
        "model": model,
        "split": config.split,
        "dataset_fingerprint": source.fingerprint,
        **(entity_results(gold, predicted) if scheme == "iob2" else tag_results(gold, predicted)),
        "confusions": confusions(gold, predicted, config.top_confusions),
        "confusion": confusion_matrix(gold, predicted, labels),
        "config": asdict(config),
    }
    metrics = result["metrics"]
    metrics.update(counted)
    if scheme == "iob2":
        log.info(
            "evaluate %s: F1 %.4f on %d sentences (%d entities)", label, metrics["f1"], len(gold), metrics["entities"]
        )
    else:
        log.info("evaluate %s: word accuracy %.4f on %d words", label, metrics["accuracy"], metrics["words"])
    write_evaluation(
        output,
        result,
        ner_evaluation_markdown(result),
        ner_evaluation_html(result),
        predictions=zip(data["tokens"], gold, predicted, strict=True),
        task="ner",
        tag_scheme=scheme,
        dataset_fingerprint=source.fingerprint,
        metrics=metrics,
        label=label,
    )
    return result


STAGE = Stage(
    name="evaluate-ner",
    config=EvaluateNerConfig,
    function=evaluate_ner,
    help="NER mode of evaluate: word-level seqeval scores (plain tags: accuracy, per-tag F1), predictions, report",
    inputs=(
        Input(
            "model",
            "NER model (train-ner artifact or a token-classification model directory)",
            required=True,
            kind="model",
        ),
        Input("dataset", "NER dataset artifact from preprocess-ner", required=True, kind="artifact"),
        Input("output", "evaluation directory to write", required=True),
        Input("label", "name for this model in reports", default="model"),
    ),
    example="split=validation",
)
