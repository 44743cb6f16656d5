"""What a launcher pod needs to create its job, as plain data that ``kfnlp compile`` writes into the train task.

``kfnlp compile`` builds a :class:`ScaleOut` from the ``cluster:`` settings and puts its JSON in the task's
``$KFNLP_SCALE_OUT``; inside the pod :func:`from_env` reads it back. It names secrets, never their values:
each node gets the values from the Secret itself (``secretKeyRef``).
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Any, Literal

from kfnlp.errors import ConfigError

ENV = "KFNLP_SCALE_OUT"
ENGINES = ("trainjob", "pytorchjob")
CLEANUPS = ("on-success", "always", "never")

Engine = Literal["trainjob", "pytorchjob"]
Cleanup = Literal["on-success", "always", "never"]


@dataclass(frozen=True)
class ScaleOut:
    """One train stage's job: how many nodes, what each node gets, and what happens around it.

    ``tolerations`` are spelled as the Kubernetes API spells them (``key``, ``operator``, ``value``,
    ``effect``); ``secrets`` are ``{"secret": NAME, "keys": {KEY: ENV}, "optional": bool}``; ``""`` and
    ``0`` mean "not set" (no limit, no pull secret, no /dev/shm volume, no TTL).
    """

    nodes: int
    gpus_per_node: int
    engine: Engine
    runtime: str
    image: str
    image_pull_secret: str = ""
    gpu_resource: str = "nvidia.com/gpu"
    cpu_request: str = ""
    cpu_limit: str = ""
    memory_request: str = ""
    memory_limit: str = ""
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: list[dict[str, str]] = field(default_factory=list)
    shm_size: str = ""
    secrets: list[dict[str, Any]] = field(default_factory=list)
    start_timeout_s: int = 1200
    cleanup: Cleanup = "on-success"
    ttl_after_finished_s: int = 0

    def __post_init__(self):
        if self.engine not in ENGINES:
            raise ConfigError(f"{ENV}: unknown engine {self.engine!r}; engines: {', '.join(ENGINES)}", ENV)
        if self.cleanup not in CLEANUPS:
            raise ConfigError(f"{ENV}: unknown cleanup {self.cleanup!r}; one of {', '.join(CLEANUPS)}", ENV)
        if self.nodes < 2 or self.gpus_per_node < 1:
            raise ConfigError(
                f"{ENV}: a job spans at least 2 nodes with at least 1 GPU each, got {self.nodes} x {self.gpus_per_node}",
                ENV,
            )

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> ScaleOut:
        """The spec ``to_json`` wrote; anything else (not JSON, unknown or missing keys) is one ConfigError."""
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"{ENV}: not JSON ({exc})", ENV) from None
        if not isinstance(data, dict):
            raise ConfigError(f"{ENV}: expected a JSON object, got {type(data).__name__}", ENV)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{ENV}: unknown keys {', '.join(unknown)} (compiled by another kfnlp version?)", ENV)
        try:
            return cls(**data)
        except TypeError as exc:
            raise ConfigError(f"{ENV}: {exc}", ENV) from None


def from_env() -> ScaleOut | None:
    """The spec of this pod's train task, or None when the stage runs on this node alone."""
    text = os.environ.get(ENV)
    return ScaleOut.from_json(text) if text else None
