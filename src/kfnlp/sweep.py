"""Sweeps: a pipeline's ``sweep:`` block turned into the trials its train stage runs.

A sweep tries values of the train stage's own keys (a grid, or a seeded sample of it), scores every
trial with the pipeline's evaluate stage on the validation split (or the evaluate stage's fixed eval
set), and keeps the best by one metric. This module only plans: which trials, in which order, scored
how. It is checked when the config is loaded, so a bad sweep is refused before anything runs; the
compiled pipeline fans the trials out and the select-best stage picks the winner.

Grid order: the swept keys sorted by name, each key's values in the order given, the last key varying
fastest (as ``itertools.product``), so the same sweep written in any key order gives the same trials.
A value given twice for one key is refused (it would run the same trial twice). Each value is checked
against the train config when the config is loaded, alone and in every trial that runs it (a value that
the train config refuses beside the defaults may pass beside another key's value: num_epochs 0 with
max_steps 5).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import random
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from kfnlp.config import bounded, build, check_at_least, check_seed, field_value, option, shown, to_dict
from kfnlp.errors import ConfigError

TRIAL_ENV = "KFNLP_SWEEP_TRIAL"  # set ("1") on the trial tasks: a failing trial records its failure, exits 0
FAILED_TRIAL_KIND = "failed-trial"  # artifact kind of that record (manifest facts: stage, error, type, values)
DIRECTIONS = ("maximize", "minimize")


@dataclass
class SweepConfig:
    """Train with several values of the train stage's keys, score each model on the validation split (ner,
    cls) or the evaluate stage's fixed eval set (masked and causal LM), and keep the best; only that one goes
    on (test split, register). Empty grid: no sweep."""

    grid: dict[str, list] = option(
        default_factory=dict,
        help="train-stage key -> values to try, e.g. {learning_rate: [1.0e-4, 3.0e-4], num_epochs: [2, 3]} "
        "(--set sweep.grid.learning_rate=[1e-4,3e-4]); trials in grid order: keys sorted, the last varying "
        "fastest; empty: no sweep",
    )
    method: Literal["grid", "random"] = option(
        "grid", "grid: every combination; random: `trials` distinct combinations drawn with `seed`"
    )
    trials: int | None = option(None, "random: how many distinct combinations to draw; grid: leave null")
    seed: int = option(0, "seed of the random draw (the trials' own training seed is the train stage's `seed`)")
    parallelism: int = option(2, "trials trained at once")
    metric: str | None = option(
        None,
        "metric that selects the best trial (null: the pipeline's primary metric: f1, accuracy or perplexity)",
    )
    direction: Literal["auto", "maximize", "minimize"] = option(
        "auto", "whether a higher or lower metric wins; auto: the metric's own (perplexity lower, the others higher)"
    )
    max_trials: int = option(16, "refuse a sweep of more trials than this")

    def __post_init__(self):
        check_at_least(self.trials, 1, "trials")
        check_at_least(self.parallelism, 1, "parallelism")
        check_at_least(self.max_trials, 1, "max_trials")
        check_seed(self.seed)

    @property
    def enabled(self) -> bool:
        return bool(self.grid)


@dataclass(frozen=True)
class SweepTarget:
    """What a pipeline sweeps, declared in its catalog entry."""

    train: str  # the swept train section, e.g. "train_ner"
    evaluate: str  # the section of the evaluate stage that scores each trial, e.g. "evaluate_ner"
    metrics: Mapping[str, str] = field(hash=False)  # metric -> "maximize" | "minimize", as that stage writes them
    default_metric: str
    split: str | None  # the split trials are scored on; None: the evaluate stage's fixed eval set as configured

    def __post_init__(self):
        if self.default_metric not in self.metrics or not set(self.metrics.values()) <= set(DIRECTIONS):
            raise ValueError(f"{self.train}: bad sweep target {self}")


@dataclass(frozen=True)
class Trial:
    index: int
    values: dict[str, Any] = field(hash=False)  # swept key -> value, as the train config coerced it

    @property
    def label(self) -> str:
        """``learning_rate=0.001, num_epochs=2``: the trial for people."""
        return ", ".join(f"{key}={value_text(value)}" for key, value in self.values.items())


@dataclass(frozen=True)
class SweepPlan:
    target: SweepTarget
    trials: tuple[Trial, ...]
    metric: str
    direction: str  # "maximize" | "minimize"
    parallelism: int
    evaluate_json: str  # the trial-scoring evaluate config: the evaluate section, its split set to target.split

    def items(self) -> list[str]:
        """Each trial's values as JSON, in trial order: the ParallelFor items, the train components' ``trial``."""
        return [json.dumps(trial.values, sort_keys=True) for trial in self.trials]

    def selection(self) -> str:
        """What the select-best stage needs to pair the collected trials and pick one, as JSON."""
        return json.dumps(
            {
                "stage": self.target.train,
                "metric": self.metric,
                "direction": self.direction,
                "keys": sorted(self.trials[0].values),
                "trials": [{"index": t.index, "values": t.values} for t in self.trials],
            },
            sort_keys=True,
        )


def plan(config: Any, target: SweepTarget | None) -> SweepPlan | None:
    """The trials of ``config``'s sweep (a pipeline config with ``.sweep`` and its sections), or None
    when it has none. Raises a one-line ConfigError naming the ``sweep.*`` key at fault."""
    sweep: SweepConfig = config.sweep
    if not sweep.enabled:
        return None
    if target is None:
        raise ConfigError("sweep.grid: this pipeline has no train stage to sweep; remove the sweep block", "sweep.grid")
    train = getattr(config, target.train)
    values, refused = {}, {}
    for key in sorted(sweep.grid, key=str):
        values[key], refused[key] = _values(train, target.train, key, sweep.grid[key])
    combinations = _combinations(sweep, values)
    metric = sweep.metric if sweep.metric is not None else target.default_metric
    if metric not in target.metrics:
        raise ConfigError(
            f"sweep.metric: {metric!r} is not a metric the {target.evaluate} stage writes; "
            f"one of {', '.join(target.metrics)}",
            "sweep.metric",
        )
    trials = [
        Trial(index, dict(zip(values, combination, strict=True))) for index, combination in enumerate(combinations)
    ]
    for trial in trials:  # the train config takes every trial whole (checks across keys)
        try:
            build(type(train), {**to_dict(train), **trial.values}, target.train)
        except ConfigError as exc:
            message = _problem(exc, target.train)
            for key, value in trial.values.items():  # a value refused on its own for the same reason: name it
                i = values[key].index(value)
                if refused[key].get(i) == message:
                    raise ConfigError(f"sweep.grid.{key}[{i}]: {message}", f"sweep.grid.{key}[{i}]") from None
            raise ConfigError(f"sweep.grid: trial {trial.index} ({trial.label}): {message}", "sweep.grid") from None
    scoring = to_dict(getattr(config, target.evaluate))
    if target.split is not None:
        scoring["split"] = target.split
    return SweepPlan(
        target=target,
        trials=tuple(trials),
        metric=metric,
        direction=target.metrics[metric] if sweep.direction == "auto" else sweep.direction,
        parallelism=sweep.parallelism,
        evaluate_json=json.dumps(scoring, sort_keys=True),
    )


def merged(config: Any, trial: str, section: str) -> Any:
    """Train config ``config`` with one trial's values applied (``trial``: the JSON of
    :attr:`Trial.values`, a ParallelFor item); ``""``: ``config`` unchanged."""
    if not trial:
        return config
    try:
        values = json.loads(trial)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{section}: the sweep trial is not valid JSON ({exc}): {shown(trial)}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{section}: the sweep trial is not a mapping of keys to values: {shown(trial)}")
    return build(type(config), {**to_dict(config), **values}, section)


def _values(train: Any, section: str, key: str, given: Any) -> tuple[list[Any], dict[int, str]]:
    """One swept key's values, each as the train config coerces it, and the problem of those the train
    config refuses on their own (position -> problem), which may pass beside another key's value (num_epochs
    0 with max_steps 1); a value of the wrong type, or out of the field's own range, is refused here."""
    where = f"sweep.grid.{key}"
    known = [f.name for f in dataclasses.fields(train) if f.init]
    if key not in known:
        raise ConfigError(
            f"{where}: {section} has no key {bounded(str(key))!r}; its keys: {', '.join(sorted(known))}", where
        )
    if not isinstance(given, (list, tuple)):
        raise ConfigError(f"{where}: expected a list of values to try, got {shown(given)}", where)
    if not given:
        raise ConfigError(f"{where}: the list is empty; give at least one value to try", where)
    out: list[Any] = []
    seen: dict[str, int] = {}  # a value's JSON -> its position
    refused: dict[int, str] = {}
    for i, value in enumerate(given):
        coerced = field_value(type(train), key, value, f"{where}[{i}]")
        coerced = to_dict(coerced) if dataclasses.is_dataclass(coerced) else coerced
        try:
            build(type(train), {**to_dict(train), key: coerced}, section)
        except ConfigError as exc:
            if exc.key == f"{section}.{key}":  # the field's own check (FieldError)
                raise ConfigError(f"{where}[{i}]: {_problem(exc, section)}", f"{where}[{i}]") from None
            refused[i] = _problem(exc, section)
        first = seen.setdefault(json.dumps(coerced, sort_keys=True), i)
        if first != i:
            raise ConfigError(
                f"{where}[{i}]: {value_text(coerced)} is given twice (also item {first}); give each value once",
                f"{where}[{i}]",
            )
        out.append(coerced)
    return out, refused


def _combinations(sweep: SweepConfig, values: dict[str, list[Any]]) -> list[tuple[Any, ...]]:
    """The grid's combinations (method grid) or ``trials`` distinct ones drawn with ``seed``, in grid order."""
    sizes = [len(v) for v in values.values()]
    total = math.prod(sizes)
    shape = " x ".join(map(str, sizes))
    if sweep.method == "grid":
        if sweep.trials is not None:
            raise ConfigError(
                f"sweep.trials: only for method random (the grid runs all {total} combinations); "
                "remove it or set sweep.method: random",
                "sweep.trials",
            )
        if total > sweep.max_trials:
            raise ConfigError(
                f"sweep.grid: {shape} = {total} trials, more than sweep.max_trials ({sweep.max_trials}); "
                "give fewer values, use method random with trials, or raise max_trials",
                "sweep.grid",
            )
        return list(itertools.product(*values.values()))
    if sweep.trials is None:
        raise ConfigError("sweep.trials: method random needs how many combinations to draw", "sweep.trials")
    if sweep.trials > sweep.max_trials:
        raise ConfigError(
            f"sweep.trials: {sweep.trials} trials, more than sweep.max_trials ({sweep.max_trials})", "sweep.trials"
        )
    if total > sys.maxsize:  # what random.sample can index
        raise ConfigError(
            f"sweep.grid: {shape} combinations are too many to draw from; give fewer values", "sweep.grid"
        )
    if sweep.trials > total:
        raise ConfigError(
            f"sweep.trials: {sweep.trials} distinct combinations asked, the grid has {total} ({shape}); "
            "draw fewer or use method grid",
            "sweep.trials",
        )
    drawn = sorted(random.Random(sweep.seed).sample(range(total), sweep.trials))
    return [_combination(values, position) for position in drawn]


def _combination(values: dict[str, list[Any]], position: int) -> tuple[Any, ...]:
    """The combination at ``position`` in grid order (the last key varying fastest)."""
    out = []
    for options in reversed(list(values.values())):
        position, i = divmod(position, len(options))
        out.append(options[i])
    return tuple(reversed(out))


def _problem(exc: ConfigError, section: str) -> str:
    """``exc``'s message without the train section's key in front (the sweep key replaces it)."""
    message = str(exc)
    for prefix in (f"{exc.key}: " if exc.key else None, f"{section}: "):
        if prefix and message.startswith(prefix):
            return message[len(prefix) :]
    return message


def value_text(value: Any) -> str:
    """A swept value for people and tables: a string as it is, anything else as JSON (null, 0.001, true)."""
    return value if isinstance(value, str) else json.dumps(value)
