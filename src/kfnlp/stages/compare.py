"""compare: does domain adaptation help the downstream task?

Puts the masked-LM perplexity before/after adaptation next to the NER scores of the
model fine-tuned from the base encoder and of the one fine-tuned from the adapted
encoder (same data, same seed, same test split), with per-entity deltas and a
paired bootstrap interval for the F1 difference, so that a small test set's noise is
not read as a win. The verdict says what the numbers say, whichever model wins.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from kfnlp.errors import InputError
from kfnlp.stages.evaluate_ner import PREDICTIONS_FILE
from kfnlp.storage import open_artifact, write_artifact

log = logging.getLogger(__name__)


@dataclass
class CompareConfig:
    bootstrap_samples: int = 2000  # paired resamples of test sentences for the F1-difference interval
    confidence: float = 0.95
    seed: int = 42

    def __post_init__(self):
        if self.bootstrap_samples < 0:
            raise ValueError(f"bootstrap_samples must be >= 0, got {self.bootstrap_samples}")
        if not 0.5 <= self.confidence < 1.0:
            raise ValueError(f"confidence must be in [0.5, 1), got {self.confidence}")


def _load(path: str, task: str) -> tuple[Path, dict]:
    local, manifest = open_artifact(path, kind="evaluation")
    if manifest.get("task") != task:
        raise InputError(f"{path}: a {manifest.get('task')} evaluation, expected {task}")
    return local, json.loads((local / "metrics.json").read_text(encoding="utf-8"))


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


def entity_counts(gold: list[list[str]], predicted: list[list[str]]) -> np.ndarray:
    """Per sentence: (correct entities, predicted entities, gold entities), with
    seqeval's default-mode entity extraction; summing gives seqeval's micro F1."""
    from seqeval.metrics.sequence_labeling import get_entities

    rows = []
    for g, p in zip(gold, predicted, strict=True):
        true, pred = set(get_entities(g)), set(get_entities(p))
        rows.append((len(true & pred), len(pred), len(true)))
    return np.array(rows, dtype=np.int64).reshape(-1, 3)


def _f1(counts: np.ndarray) -> np.ndarray:
    tp, npred, ngold = counts[..., 0], counts[..., 1], counts[..., 2]
    denominator = npred + ngold
    return np.divide(2 * tp, denominator, out=np.zeros(tp.shape, dtype=float), where=denominator > 0)


def bootstrap_f1_delta(base: np.ndarray, adapted: np.ndarray, samples: int, confidence: float, seed: int) -> dict:
    """Paired bootstrap over sentences of F1(adapted) - F1(base)."""
    delta = float(_f1(adapted.sum(0)) - _f1(base.sum(0)))
    if samples == 0:
        return {"delta": delta}
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(base), size=(samples, len(base)))
    deltas = _f1(adapted[idx].sum(1)) - _f1(base[idx].sum(1))
    tail = (1 - confidence) / 2
    low, high = np.quantile(deltas, [tail, 1 - tail])
    return {
        "delta": delta,
        "low": float(low),
        "high": float(high),
        "confidence": confidence,
        "samples": samples,
        "p_adapted_better": float((deltas > 0).mean()),
    }


def verdict(delta: dict) -> str:
    d = delta["delta"]
    if "low" not in delta:
        return "adaptation helped" if d > 0 else "adaptation did not help"
    interval = f"{delta['confidence']:.0%} interval {delta['low']:+.4f} … {delta['high']:+.4f}"
    if delta["low"] > 0:
        return f"adaptation helped: F1 {d:+.4f} ({interval}, excludes 0)"
    if delta["high"] < 0:
        return f"adaptation hurt: F1 {d:+.4f} ({interval}, excludes 0)"
    better = "higher" if d > 0 else "lower" if d < 0 else "equal"
    return f"no clear difference: F1 {d:+.4f} is {better} for the adapted encoder, but the {interval} includes 0"


def compare(
    mlm_base: str, mlm_adapted: str, ner_base: str, ner_adapted: str, output: str, config: CompareConfig
) -> dict:
    from kfnlp.reports import comparison_html, comparison_markdown

    (_, mb), (_, ma) = _load(mlm_base, "mlm"), _load(mlm_adapted, "mlm")
    (nb_dir, nb), (na_dir, na) = _load(ner_base, "ner"), _load(ner_adapted, "ner")
    if nb["dataset_fingerprint"] != na["dataset_fingerprint"] or nb["split"] != na["split"]:
        raise InputError(f"{ner_base} and {ner_adapted} evaluate different data; compare them on the same split")
    gold_b, pred_b = read_predictions(nb_dir / PREDICTIONS_FILE)
    gold_a, pred_a = read_predictions(na_dir / PREDICTIONS_FILE)
    if gold_b != gold_a:
        raise InputError(f"{ner_base} and {ner_adapted}: the gold labels differ")
    delta = bootstrap_f1_delta(
        entity_counts(gold_b, pred_b),
        entity_counts(gold_a, pred_a),
        config.bootstrap_samples,
        config.confidence,
        config.seed,
    )
    entities = sorted(set(nb["per_entity"]) | set(na["per_entity"]))
    empty = {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    per_entity = {
        name: {
            "support": (nb["per_entity"].get(name) or na["per_entity"].get(name))["support"],
            "f1_base": nb["per_entity"].get(name, empty)["f1"],
            "f1_adapted": na["per_entity"].get(name, empty)["f1"],
        }
        for name in entities
    }
    for row in per_entity.values():
        row["delta"] = row["f1_adapted"] - row["f1_base"]
    result = {
        "perplexity": {
            "base": mb["metrics"]["perplexity"],
            "adapted": ma["metrics"]["perplexity"],
            "ratio": ma["metrics"]["perplexity"] / mb["metrics"]["perplexity"],
        },
        "ner": {
            key: {
                "base": nb["metrics"][key],
                "adapted": na["metrics"][key],
                "delta": na["metrics"][key] - nb["metrics"][key],
            }
            for key in ("precision", "recall", "f1", "strict_f1", "accuracy")
        },
        "f1_delta": delta,
        "per_entity": per_entity,
        "verdict": verdict(delta),
        "winner": "adapted" if delta["delta"] > 0 else "base" if delta["delta"] < 0 else "tie",
        "split": nb["split"],
        "sentences": nb["metrics"]["sentences"],
        "entities": nb["metrics"]["entities"],
        "models": {"base": nb["model"], "adapted": na["model"]},
        "config": asdict(config),
    }
    log.info("compare: %s", result["verdict"])
    with write_artifact(output, kind="comparison") as out:
        (out.path / "comparison.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
        (out.path / "report.md").write_text(comparison_markdown(result), encoding="utf-8")
        (out.path / "report.html").write_text(comparison_html(result), encoding="utf-8")
        out.info.update(task="comparison", verdict=result["verdict"], winner=result["winner"])
    return result
