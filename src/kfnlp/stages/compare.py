"""compare: does domain adaptation help the downstream task?

Puts the masked-LM perplexity before/after adaptation next to the NER scores of the
model fine-tuned from the base encoder and of the one fine-tuned from the adapted
encoder (same data, same seed, same test split), with per-entity deltas and a
paired bootstrap interval for the F1 difference, so that a small test set's noise is
not read as a win. The verdict says what the numbers say, whichever model wins.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import numpy as np

from kfnlp.artifacts import open_evaluation, write_comparison
from kfnlp.config import check_seed, option
from kfnlp.errors import InputError
from kfnlp.stages.entry import Input, Stage

log = logging.getLogger(__name__)


@dataclass
class CompareConfig:
    bootstrap_samples: int = option(2000, "paired resamples of test sentences for the F1-difference interval")
    confidence: float = option(0.95, "level of the bootstrap interval for the F1 difference (0.5 to below 1)")
    seed: int = option(42, "seed for the bootstrap resamples")

    def __post_init__(self):
        if self.bootstrap_samples < 0:
            raise ValueError(f"bootstrap_samples must be >= 0, got {self.bootstrap_samples}")
        if not 0.5 <= self.confidence < 1.0:
            raise ValueError(f"confidence must be in [0.5, 1), got {self.confidence}")
        check_seed(self.seed)


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

    mb, ma = open_evaluation(mlm_base, "mlm").result(), open_evaluation(mlm_adapted, "mlm").result()
    ner_b, ner_a = open_evaluation(ner_base, "ner"), open_evaluation(ner_adapted, "ner")
    nb, na = ner_b.result(), ner_a.result()
    if nb["dataset_fingerprint"] != na["dataset_fingerprint"] or nb["split"] != na["split"]:
        raise InputError(f"{ner_base} and {ner_adapted} evaluate different data; compare them on the same split")
    gold_b, pred_b = ner_b.predictions()
    gold_a, pred_a = ner_a.predictions()
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
    write_comparison(
        output,
        result,
        comparison_markdown(result),
        comparison_html(result),
        task="comparison",
        verdict=result["verdict"],
        winner=result["winner"],
    )
    return result


STAGE = Stage(
    name="compare",
    config=CompareConfig,
    function=compare,
    help="base versus adapted encoder: perplexity and NER F1 side by side",
    inputs=(
        Input("mlm_base", "masked-LM evaluation of the base model", required=True, kind="artifact"),
        Input("mlm_adapted", "masked-LM evaluation of the adapted model", required=True, kind="artifact"),
        Input(
            "ner_base", "NER evaluation of the model fine-tuned from the base encoder", required=True, kind="artifact"
        ),
        Input(
            "ner_adapted",
            "NER evaluation of the model fine-tuned from the adapted encoder",
            required=True,
            kind="artifact",
        ),
        Input("output", "comparison directory to write", required=True),
    ),
    example="bootstrap_samples=1000",
)
