"""Metrics with one definition each."""

from __future__ import annotations

import math


def perplexity(total_loss: float, n_tokens: int) -> float:
    """exp of the mean cross-entropy over every scored token of the eval set: the masked tokens of a
    masked LM, every predicted position (all but each chunk's first) of a causal LM.

    Token-weighted (sum over all tokens / token count), so the result does not depend
    on the batch size; for a single batch it equals exp of the stock model's loss.
    """
    if n_tokens <= 0:
        raise ValueError("perplexity needs at least one scored token")
    mean = total_loss / n_tokens
    return math.exp(mean) if mean < 700 else math.inf


def seqeval_scores(gold: list[list[str]], predicted: list[list[str]], strict: bool = False) -> dict:
    """Entity-level precision/recall/F1 (micro over entities) and token accuracy, overall
    and per entity type, exactly as ``seqeval.metrics`` computes them.

    ``strict`` is seqeval's strict IOB2 mode: an entity counts only if its B-/I- tags
    are well formed; the default mode reads tags as conlleval does.
    """
    from seqeval.metrics import accuracy_score, classification_report, f1_score, precision_score, recall_score
    from seqeval.scheme import IOB2

    options = {"mode": "strict", "scheme": IOB2} if strict else {}
    report = classification_report(gold, predicted, output_dict=True, zero_division=0, **options)
    per_entity = {
        name: {
            "precision": float(row["precision"]),
            "recall": float(row["recall"]),
            "f1": float(row["f1-score"]),
            "support": int(row["support"]),
        }
        for name, row in report.items()
        if not name.endswith(" avg")
    }
    return {
        "precision": float(precision_score(gold, predicted, zero_division=0, **options)),
        "recall": float(recall_score(gold, predicted, zero_division=0, **options)),
        "f1": float(f1_score(gold, predicted, zero_division=0, **options)),
        "accuracy": float(accuracy_score(gold, predicted)),
        "entities": sum(row["support"] for row in per_entity.values()),
        "per_entity": per_entity,
    }


def tag_scores(gold: list[str], predicted: list[str]) -> dict:
    """Accuracy, macro F1 and per-tag precision/recall/F1 of plain tags (one per word or sub-token,
    flattened), exactly as ``sklearn.metrics`` computes them: the tags are those of gold and predicted."""
    from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support
    from sklearn.utils.multiclass import unique_labels

    tags = unique_labels(gold, predicted)
    precision, recall, f1, support = precision_recall_fscore_support(gold, predicted, labels=tags, zero_division=0)
    return {
        "accuracy": float(accuracy_score(gold, predicted)),
        "macro_f1": float(f1_score(gold, predicted, average="macro", zero_division=0)),
        "per_tag": {
            str(tag): {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(n)}
            for tag, p, r, f, n in zip(tags, precision, recall, f1, support, strict=True)
        },
    }
