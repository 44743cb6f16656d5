"""publish: the pipelines' optional step after promote. When the gate promoted this run's version, push it to the
Hugging Face Hub (``publish.enabled``; off by default, and then the task is not in the graph at all): model files,
tokenizer and model card, tagged ``vVERSION``, as ``kfnlp registry publish`` does. The token comes from
``$HF_TOKEN`` only (on a cluster: ``cluster.hf_token_secret``)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from kfnlp.config import FieldError, option
from kfnlp.registry.promotion import after_gate
from kfnlp.serving.hub import REPO_ID, publish
from kfnlp.stages.entry import DECISION, REGISTERED, TRACKING_URI, Stage

log = logging.getLogger(__name__)


@dataclass
class PublishConfig:
    """The Hub step after promote."""

    enabled: bool = option(
        False, "pipelines publish the version to the Hub after promote, only when the gate promoted it"
    )
    repo_id: str = option("", "Hub repository, NAMESPACE/NAME (required when enabled)")
    private: bool = option(True, "create the repository private (an existing repository keeps its visibility)")

    def __post_init__(self):
        if self.repo_id and not REPO_ID.match(self.repo_id):
            raise FieldError("repo_id", f"expected a Hub repository id, NAMESPACE/NAME, got {self.repo_id!r}")
        if self.enabled and not self.repo_id:
            raise FieldError("repo_id", "required when publish.enabled is true (NAMESPACE/NAME)")


def publish_registered(
    registered: str, decision: str, config: PublishConfig, tracking_uri: str | None = None
) -> dict[str, Any]:
    """The pipelines' publish step: push the version this run registered when the gate promoted it (and only then);
    publishing the same version again moves nothing but the repository's main branch."""
    from kfnlp.registry import Registry

    name, version, skipped = after_gate(registered, decision, "publish", config.enabled)
    if skipped:
        return skipped
    result = publish(Registry(tracking_uri), f"{name}/{version}", config.repo_id, private=config.private)
    log.info("publish: %s v%d at %s revision %s", name, version, result["url"], result["revision"])
    return {**result, "outcome": "published"}


STAGE = Stage(
    name="publish",
    config=PublishConfig,
    function=publish_registered,
    help="push the version to the Hugging Face Hub when promote promoted it (humans: kfnlp registry publish)",
    inputs=(REGISTERED, DECISION, TRACKING_URI),
    example="enabled=true repo_id=team/ner-wnut",
    hub=True,
    registry=True,
    cache=False,
)
