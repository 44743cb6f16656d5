"""compare: does domain adaptation help the downstream task?

Puts the masked-LM perplexity before/after adaptation next to the task scores of the
model fine-tuned from the base encoder and of the one fine-tuned from the adapted
encoder (same data, same seed, same test split), with per-class deltas and a paired
bootstrap interval for the difference in the task's primary metric, so that a small
test set's noise is not read as a win. The verdict says what the numbers say, whichever
model wins.

Each task's primary metric is a function of summed per-unit counts (entity F1 from
per-sentence entity counts, accuracy from per-sentence or per-example correct/total), so
one bootstrap serves every task: resample the units, sum, apply the function.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from kfnlp.artifacts import open_evaluation, write_comparison
from kfnlp.config import check_seed, option
from kfnlp.errors import InputError
from kfnlp.stages.entry import Input, Stage

log = logging.getLogger(__name__)


@dataclass
class CompareConfig:
    bootstrap_samples: int = option(
        2000, "paired resamples of the test units (sentences or examples) for the primary-metric interval"
    )
    confidence: float = option(0.95, "level of the bootstrap interval for the primary-metric difference (0.5 to <1)")
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


def word_counts(gold: list[list[str]], predicted: list[list[str]]) -> np.ndarray:
    """Per sentence: (correctly tagged words, words); summing gives word accuracy."""
    rows = [(sum(a == b for a, b in zip(g, p, strict=True)), len(g)) for g, p in zip(gold, predicted, strict=True)]
    return np.array(rows, dtype=np.int64).reshape(-1, 2)


def example_counts(gold: list[str], predicted: list[str]) -> np.ndarray:
    """Per example: (correct, 1); summing gives accuracy."""
    return np.array([(g == p, 1) for g, p in zip(gold, predicted, strict=True)], dtype=np.int64).reshape(-1, 2)


def f1_of(counts: np.ndarray) -> np.ndarray:
    """Micro F1 of summed (correct, predicted, gold) counts (any leading axes)."""
    tp, npred, ngold = counts[..., 0], counts[..., 1], counts[..., 2]
    denominator = npred + ngold
    return np.divide(2 * tp, denominator, out=np.zeros(tp.shape, dtype=float), where=denominator > 0)


def accuracy_of(counts: np.ndarray) -> np.ndarray:
    """Accuracy of summed (correct, total) counts (any leading axes)."""
    correct, total = counts[..., 0], counts[..., 1]
    return np.divide(correct, total, out=np.zeros(correct.shape, dtype=float), where=total > 0)


@dataclass(frozen=True)
class Task:
    """What compare needs to know of one task's evaluations."""

    title: str  # "NER", in "Does domain adaptation help NER?"
    primary: str  # the evaluations' metric key the bootstrap is on
    unit: str  # what the bootstrap resamples
    counts: Callable[[list, list], np.ndarray]
    score: Callable[[np.ndarray], np.ndarray]  # summed counts -> the primary metric
    metrics: tuple[str, ...]  # the evaluations' metrics shown side by side
    per_class: str  # the evaluations' per-class table (name -> precision, recall, f1, support)
    classes: str  # what its rows are, for the report


TASKS = {
    "ner": Task(
        "NER", "f1", "sentences", entity_counts, f1_of, ("precision", "recall", "f1", "strict_f1", "accuracy"),
        "per_entity", "entity type",
    ),
    "ner-plain": Task(
        "tagging", "accuracy", "sentences", word_counts, accuracy_of, ("accuracy", "macro_f1"), "per_tag", "tag",
    ),
    "cls": Task(
        "text classification", "accuracy", "examples", example_counts, accuracy_of,
        ("accuracy", "macro_f1", "micro_f1", "weighted_f1", "macro_precision", "macro_recall"), "per_class", "class",
    ),
}  # fmt: skip


def task_of(result: dict) -> str:
    """The TASKS key of an evaluation result: its task, and for NER its tag scheme (missing = iob2)."""
    if result.get("task") == "ner" and result.get("tag_scheme", "iob2") == "plain":
        return "ner-plain"
    return result.get("task")


def paired_bootstrap(
    base: np.ndarray,
    adapted: np.ndarray,
    score: Callable[[np.ndarray], np.ndarray],
    samples: int,
    confidence: float,
    seed: int,
) -> dict:
    """The metric of both models' summed counts, their difference (adapted - base) and a
    paired bootstrap interval of it: the same resample of units for both models."""
    result = {"base": float(score(base.sum(0))), "adapted": float(score(adapted.sum(0)))}
    result["delta"] = result["adapted"] - result["base"]
    if samples == 0 or len(base) == 0:
        return result
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(base), size=(samples, len(base)))
    deltas = score(adapted[idx].sum(1)) - score(base[idx].sum(1))
    tail = (1 - confidence) / 2
    low, high = np.quantile(deltas, [tail, 1 - tail])
    return {
        **result,
        "low": float(low),
        "high": float(high),
        "confidence": confidence,
        "samples": samples,
        "p_adapted_better": float((deltas > 0).mean()),
    }


def verdict(primary: dict) -> str:
    """What ``primary`` (a paired_bootstrap result with its ``name``) says, whichever model wins."""
    d, name = primary["delta"], primary["name"]
    if "low" not in primary:
        return f"adaptation helped: {name} {d:+.4f}" if d > 0 else f"adaptation did not help: {name} {d:+.4f}"
    interval = f"{primary['confidence']:.0%} interval {primary['low']:+.4f} … {primary['high']:+.4f}"
    if primary["low"] > 0:
        return f"adaptation helped: {name} {d:+.4f} ({interval}, excludes 0)"
    if primary["high"] < 0:
        return f"adaptation hurt: {name} {d:+.4f} ({interval}, excludes 0)"
    better = "higher" if d > 0 else "lower" if d < 0 else "equal"
    return f"no clear difference: {name} {d:+.4f} is {better} for the adapted encoder, but the {interval} includes 0"


def _per_class(base: dict, adapted: dict) -> dict:
    empty = {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    rows = {}
    for name in sorted(set(base) | set(adapted)):
        b, a = base.get(name, empty), adapted.get(name, empty)
        rows[name] = {
            "support": max(b["support"], a["support"]),
            "f1_base": b["f1"],
            "f1_adapted": a["f1"],
            "delta": a["f1"] - b["f1"],
        }
    return rows


def _data_counts(key: str, gold: list) -> dict:
    if key == "cls":
        return {"examples": len(gold)}
    counts = {"sentences": len(gold), "words": sum(len(g) for g in gold)}
    if key == "ner":
        counts["entities"] = int(entity_counts(gold, gold)[:, 2].sum())
    return counts


def compare(
    mlm_base: str, mlm_adapted: str, task_base: str, task_adapted: str, output: str, config: CompareConfig
) -> dict:
    from kfnlp.reports import comparison_html, comparison_markdown

    mb, ma = open_evaluation(mlm_base, "mlm").result(), open_evaluation(mlm_adapted, "mlm").result()
    eval_b, eval_a = open_evaluation(task_base), open_evaluation(task_adapted)
    tb, ta = eval_b.result(), eval_a.result()
    key = task_of(tb)
    if key not in TASKS:
        raise InputError(
            f"{task_base}: a {eval_b.manifest.get('task')} evaluation; compare takes ner or cls evaluations"
        )
    if task_of(ta) != key:
        raise InputError(f"{task_base} is a {key} evaluation but {task_adapted} is a {task_of(ta)} one")
    if tb["dataset_fingerprint"] != ta["dataset_fingerprint"] or tb["split"] != ta["split"]:
        raise InputError(f"{task_base} and {task_adapted} evaluate different data; compare them on the same split")
    gold_b, pred_b = eval_b.predictions()
    gold_a, pred_a = eval_a.predictions()
    if gold_b != gold_a:
        raise InputError(f"{task_base} and {task_adapted}: the gold labels differ")
    task = TASKS[key]
    primary = {
        "name": task.primary,
        **paired_bootstrap(
            task.counts(gold_b, pred_b),
            task.counts(gold_a, pred_a),
            task.score,
            config.bootstrap_samples,
            config.confidence,
            config.seed,
        ),
    }
    result = {
        "task": tb["task"],
        "title": task.title,
        "perplexity": {
            "base": mb["metrics"]["perplexity"],
            "adapted": ma["metrics"]["perplexity"],
            "ratio": ma["metrics"]["perplexity"] / mb["metrics"]["perplexity"],
        },
        "primary": primary,
        "metrics": {
            name: {
                "base": tb["metrics"][name],
                "adapted": ta["metrics"][name],
                "delta": ta["metrics"][name] - tb["metrics"][name],
            }
            for name in task.metrics
        },
        "per_class": _per_class(tb[task.per_class], ta[task.per_class]),
        "classes": task.classes,
        "verdict": verdict(primary),
        "winner": "adapted" if primary["delta"] > 0 else "base" if primary["delta"] < 0 else "tie",
        "split": tb["split"],
        "unit": task.unit,
        "data": _data_counts(key, gold_b),
        "models": {"base": tb["model"], "adapted": ta["model"]},
        "config": asdict(config),
    }
    if tb["task"] == "ner":
        result["tag_scheme"] = tb.get("tag_scheme", "iob2")
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


def summary_metrics(result: dict) -> dict[str, float]:
    """A comparison's numbers as flat scalars (the KFP UI's run comparison): perplexity base/adapted/ratio,
    each task metric's base/adapted/delta, and the primary metric's difference with its bootstrap interval."""
    out = {f"perplexity_{k}": v for k, v in result["perplexity"].items()}
    for name, row in result["metrics"].items():
        out.update({f"{name}_{k}": row[k] for k in ("base", "adapted", "delta")})
    primary = result["primary"]
    out.update({f"primary_{k}": primary[k] for k in ("delta", "low", "high") if k in primary})
    if "p_adapted_better" in primary:
        out["p_adapted_better"] = primary["p_adapted_better"]
    return out


STAGE = Stage(
    name="compare",
    config=CompareConfig,
    function=compare,
    help="base versus adapted encoder: perplexity and the task's primary metric side by side",
    inputs=(
        Input("mlm_base", "masked-LM evaluation of the base model", required=True, kind="artifact"),
        Input("mlm_adapted", "masked-LM evaluation of the adapted model", required=True, kind="artifact"),
        Input(
            "task_base",
            "task evaluation (evaluate-ner or evaluate-cls) of the model fine-tuned from the base encoder",
            required=True,
            kind="artifact",
        ),
        Input(
            "task_adapted",
            "task evaluation of the model fine-tuned from the adapted encoder (same task, dataset and split)",
            required=True,
            kind="artifact",
        ),
        Input("output", "comparison directory to write", required=True),
    ),
    example="bootstrap_samples=1000",
)
