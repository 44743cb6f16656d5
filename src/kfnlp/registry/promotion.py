"""The promotion gate: which registered version is ``@champion``.

A candidate replaces the champion only when it was evaluated on the same eval set
(fingerprint), its primary metric is better by at least ``margin`` (perplexity lower,
F1 higher) and no guard metric regresses beyond its tolerance. The first version of a
model becomes champion. Every decision is recorded twice: on the version (its latest
outcome) and in the model's decision trail (``kfnlp.decision.NNNN.ID`` tags, in order).

Every decision runs under an exclusive lock per registry and model that holds across hosts
(:mod:`kfnlp.registry.lock`); trail entries also carry a unique id in their tag name, so no
decision can overwrite another.
"""

from __future__ import annotations

import getpass
import json
import logging
import math
import re
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

from kfnlp.config import FieldError, option, shown
from kfnlp.errors import InputError, RegistryError
from kfnlp.registry.lock import model_lock

log = logging.getLogger(__name__)

CHAMPION = "champion"
PREVIOUS = "previous-champion"
LOWER_IS_BETTER = {"perplexity", "eval_loss"}
TRAIL_PREFIX = "kfnlp.decision."
TRAIL_KEY = re.compile(r"kfnlp\.decision\.(\d+)(\.[0-9a-f]+)?")  # kfnlp.decision.SEQUENCE.ID (no ID before ids)
EVAL_TAG = "kfnlp.eval_set_fingerprint"
PRIMARY_TAG = "kfnlp.primary_metric"


@dataclass
class PromoteConfig:
    enabled: bool = option(True, "pipelines run the gate right after register")
    margin: float = option(0.0, "the primary metric must beat the champion's by at least this much (absolute)")
    guards: list[str] = option(
        default_factory=list, help="METRIC:TOLERANCE, e.g. recall:0.02: may be worse by that much"
    )

    def __post_init__(self):
        # a FieldError: one line naming the key (promote.margin) or, from `kfnlp registry promote`, the flag
        if not (math.isfinite(self.margin) and self.margin >= 0):
            raise FieldError("margin", f"expected a number >= 0, got {self.margin}")
        for guard in self.guards:
            self.tolerance(guard)

    @staticmethod
    def tolerance(guard: str) -> tuple[str, float]:
        metric, sep, value = guard.partition(":")
        try:
            if not sep or not metric.strip():
                raise ValueError
            tolerance = float(value)
        except ValueError:
            raise FieldError("guards", f"guard {shown(guard)}: expected METRIC:TOLERANCE, e.g. recall:0.02") from None
        if not (math.isfinite(tolerance) and tolerance >= 0):
            raise FieldError("guards", f"guard {shown(guard)}: the tolerance must be a number >= 0")
        return metric.strip(), tolerance


def better(metric: str, candidate: float, reference: float) -> float:
    """How much better ``candidate`` is than ``reference`` (positive = better)."""
    return reference - candidate if metric in LOWER_IS_BETTER else candidate - reference


@dataclass
class Decision:
    model: str
    version: int
    outcome: str  # promoted, rejected, rollback
    reason: str
    champion_before: int | None
    champion_after: int | None
    primary_metric: str | None = None
    candidate: dict[str, float] = field(default_factory=dict)
    champion: dict[str, float] = field(default_factory=dict)
    forced: bool = False
    by: str = ""
    time: str = ""
    sequence: int = 0
    id: str = ""

    def line(self) -> str:
        head = f"{self.model} v{self.version}: {self.outcome}"
        return f"{head} ({self.reason})" + (" [forced]" if self.forced else "")


def _alias_version(client, name: str, alias: str) -> int | None:
    from mlflow.exceptions import MlflowException

    try:
        return int(client.get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def _metrics(client, version) -> dict[str, float]:
    return dict(client.get_run(version.run_id).data.metrics) if version.run_id else {}


def evaluate_gate(
    candidate, champion, cand_metrics: dict, champ_metrics: dict, gate: PromoteConfig
) -> tuple[bool, str]:
    """(accept, reason) for a candidate against the champion; pure, for tests."""
    cand_eval, champ_eval = candidate.tags.get(EVAL_TAG), champion.tags.get(EVAL_TAG)
    if not cand_eval or cand_eval != champ_eval:
        return False, (
            f"evaluated on another eval set ({(cand_eval or 'none')[:12]} vs the champion's {(champ_eval or 'none')[:12]}); "
            "only like-for-like scores are compared"
        )
    metric = candidate.tags.get(PRIMARY_TAG)
    if not metric or metric != champion.tags.get(PRIMARY_TAG):
        return False, f"primary metric {metric!r} differs from the champion's {champion.tags.get(PRIMARY_TAG)!r}"
    if metric not in cand_metrics or metric not in champ_metrics:
        return False, f"{metric} missing on the candidate or the champion"
    gain = better(metric, cand_metrics[metric], champ_metrics[metric])
    direction = "lower" if metric in LOWER_IS_BETTER else "higher"
    if gain <= 0 or gain < gate.margin - 1e-9:  # 1e-9: 0.9 - 0.8 is 0.0999... in binary
        return False, (
            f"{metric} {cand_metrics[metric]:.6g} vs champion {champ_metrics[metric]:.6g}: "
            f"not {direction} by at least {gate.margin:g}"
        )
    for guard in gate.guards:
        name, tolerance = PromoteConfig.tolerance(guard)
        if name not in cand_metrics or name not in champ_metrics:
            return False, f"guard metric {name} missing on the candidate or the champion"
        if better(name, cand_metrics[name], champ_metrics[name]) < -tolerance:
            return False, (
                f"guard {name} regressed: {cand_metrics[name]:.6g} vs champion {champ_metrics[name]:.6g} "
                f"(tolerance {tolerance:g})"
            )
    return (
        True,
        f"{metric} {cand_metrics[metric]:.6g} vs champion {champ_metrics[metric]:.6g} ({direction} by {abs(gain):.4g})",
    )


def _record(registry, decision: Decision) -> Decision:
    """Append to the model's decision trail and tag the version with its latest outcome."""
    client = registry.client
    model = client.get_registered_model(decision.model)
    numbers = [int(match.group(1)) for k in model.tags if (match := TRAIL_KEY.fullmatch(k))]
    decision.sequence = max(numbers, default=0) + 1
    decision.id = uuid.uuid4().hex[:12]
    decision.time = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    payload = json.dumps(asdict(decision), sort_keys=True)
    client.set_registered_model_tag(decision.model, f"{TRAIL_PREFIX}{decision.sequence:04d}.{decision.id}", payload)
    client.set_model_version_tag(decision.model, str(decision.version), "kfnlp.decision", decision.outcome)
    client.set_model_version_tag(decision.model, str(decision.version), "kfnlp.decision.reason", decision.reason)
    client.set_model_version_tag(
        decision.model, str(decision.version), "kfnlp.decision.forced", str(decision.forced).lower()
    )
    return decision


def _actor() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no user name in some containers
        return "unknown"


def promote(registry, name: str, version: int, gate: PromoteConfig, force: bool = False) -> Decision:
    """Run the gate for ``name`` version ``version``; move the aliases if it passes."""
    from mlflow.exceptions import MlflowException

    try:
        with model_lock(registry, name) as still_held:
            candidate = registry.get_version(name, version)
            champion_version = _alias_version(registry.client, name, CHAMPION)
            cand_metrics = _metrics(registry.client, candidate)
            metric = candidate.tags.get(PRIMARY_TAG)
            decision = Decision(name, version, "rejected", "", champion_version, champion_version, metric, by=_actor())
            decision.candidate = cand_metrics
            if champion_version == version:
                decision.outcome, decision.reason = "unchanged", "already the champion"
                return _record(registry, decision)
            if champion_version is None:
                accept, reason = True, "first champion of this model"
            else:
                champion = registry.get_version(name, champion_version)
                decision.champion = _metrics(registry.client, champion)
                accept, reason = evaluate_gate(candidate, champion, cand_metrics, decision.champion, gate)
            if not accept and force:
                accept, reason, decision.forced = True, f"forced despite: {reason}", True
            decision.reason = reason
            if accept:
                still_held()
                if champion_version is not None:
                    registry.client.set_registered_model_alias(name, PREVIOUS, str(champion_version))
                registry.client.set_registered_model_alias(name, CHAMPION, str(version))
                decision.outcome, decision.champion_after = "promoted", version
            return _record(registry, decision)
    except MlflowException as exc:
        raise RegistryError(f"registry {registry.display_uri}: {exc.message}") from None


def rollback(registry, name: str) -> Decision:
    """Make ``@previous-champion`` the champion again (and the current one the previous)."""
    from mlflow.exceptions import MlflowException

    try:
        with model_lock(registry, name) as still_held:
            champion = _alias_version(registry.client, name, CHAMPION)
            previous = _alias_version(registry.client, name, PREVIOUS)
            if previous is None:
                raise RegistryError(f"model {name!r} has no @{PREVIOUS} to roll back to")
            still_held()
            registry.client.set_registered_model_alias(name, CHAMPION, str(previous))
            if champion is not None:
                registry.client.set_registered_model_alias(name, PREVIOUS, str(champion))
            decision = Decision(
                name,
                previous,
                "rollback",
                f"champion v{champion} rolled back to v{previous}",
                champion,
                previous,
                by=_actor(),
            )
            return _record(registry, decision)
    except MlflowException as exc:
        raise RegistryError(f"registry {registry.display_uri}: {exc.message}") from None


def decisions(registry, name: str) -> list[dict]:
    """The model's decision trail, oldest first."""
    model = registry.get_model(name)
    trail = [json.loads(v) for k, v in model.tags.items() if TRAIL_KEY.fullmatch(k)]
    return sorted(trail, key=lambda d: (d["sequence"], d["time"], d.get("id", "")))


def after_gate(registered: str | Path, decision: str | Path, step: str, enabled: bool) -> tuple[str, int, dict | None]:
    """What a step after the gate (deploy, publish) acts on, from a register stage's output and the promote stage's
    decision on it: (model name, version, the ``skipped`` record to return when the step is off or the gate did not
    promote the version; None when the step goes ahead)."""
    try:
        entry = json.loads(Path(registered).read_text(encoding="utf-8"))
        name, version = entry["name"], int(entry["version"])
        outcome = json.loads(Path(decision).read_text(encoding="utf-8")).get("outcome")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise InputError(f"{registered} / {decision}: not a register and a promote stage output ({exc})") from None
    skipped = {"model": name, "version": version, "outcome": "skipped"}
    if not enabled:
        return name, version, {**skipped, "reason": f"{step} disabled"}
    if outcome != "promoted":
        log.info("%s: %s v%d was not promoted (%s); nothing done", step, name, version, outcome)
        return name, version, {**skipped, "reason": f"promotion {outcome}"}
    return name, version, None
