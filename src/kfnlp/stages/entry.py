"""What the rest of kfnlp knows about a stage, declared once at the end of its module (``STAGE = Stage(...)``).

From these entries come the ``kfnlp stage`` subcommands, the data-parallel worker's stage
lookup, the cluster settings per stage and the component checks; the component folder
(``kfnlp/components/SECTION``) and the pipeline config section share the stage's section name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from kfnlp.config import Kind


@dataclass(frozen=True)
class Input:
    """One input of ``kfnlp stage NAME``: the flag ``--NAME`` and the stage function's keyword ``name``."""

    name: str
    help: str
    required: bool = False
    default: str | None = None
    # "model": checked like a config model reference before the stage starts; "model" and "artifact":
    # an input the stage reads, which its --output must not replace
    kind: Kind | Literal["artifact"] | None = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


# what the steps after register (promote, deploy, publish) read: the run's version and the gate's outcome
REGISTERED = Input("registered", "the JSON a register stage wrote (name and version)", required=True)
DECISION = Input("decision", "the JSON a promote stage wrote (its outcome)", required=True)
TRACKING_URI = Input("tracking_uri", "registry URI (default: $MLFLOW_TRACKING_URI or the embedded store)")


@dataclass(frozen=True)
class Stage:
    """One stage: its name (component, CLI subcommand, log prefix), config class and function."""

    name: str
    config: type
    function: Callable[..., dict[str, Any]]
    help: str
    inputs: tuple[Input, ...]
    example: str  # a --set KEY=VALUE example for `kfnlp stage NAME --help`
    trains: bool = False  # a training stage: may re-launch under torchrun; the cluster's train profile by default
    hub: bool = False  # loads models or tokenizers by reference (on a cluster it gets the HF token)
    registry: bool = False  # talks to the model registry (on a cluster it gets the registry secret)
    cache: bool = True  # KFP may serve it from its cache by default

    @property
    def section(self) -> str:
        """Its config section, module and component folder name (``train_mlm`` for train-mlm)."""
        return self.name.replace("-", "_")
