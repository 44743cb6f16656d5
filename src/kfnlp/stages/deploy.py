"""deploy: the pipelines' optional last step. After promote, serve the model's champion on KServe when the gate
promoted this run's version (``deploy.enabled``; off by default, and then the task is not in the graph at all).
The apply is :func:`kfnlp.serving.kube.deploy`, the same as ``kfnlp deploy --apply``."""

from __future__ import annotations

import logging
from typing import Any

from kfnlp.registry.promotion import after_gate
from kfnlp.serving.deploy import DeployConfig
from kfnlp.serving.kube import deploy
from kfnlp.stages.entry import DECISION, REGISTERED, TRACKING_URI, Input, Stage

log = logging.getLogger(__name__)


def deploy_registered(
    registered: str,
    decision: str,
    config: DeployConfig,
    tracking_uri: str | None = None,
    run_name: str | None = None,
    **connection,
) -> dict[str, Any]:
    """The pipelines' deploy step: after promote, deploy the model's champion when the gate promoted this run's
    version (and only then); the same run applied again updates the same InferenceService."""
    from kfnlp.registry import Registry

    name, version, skipped = after_gate(registered, decision, "deploy", config.enabled)
    if skipped:
        return skipped
    result = deploy(Registry(tracking_uri), name, config, run_name=run_name, **connection)
    if result["version"] != version:  # promoted, then superseded by a concurrent run: deploy what is champion
        log.info("deploy: the champion is now v%d (promoted after v%d)", result["version"], version)
    log.info("deploy: %s v%d serving as %s", name, result["version"], result["name"])
    return {**result, "outcome": "deployed"}


STAGE = Stage(
    name="deploy",
    config=DeployConfig,
    function=deploy_registered,
    help="deploy the champion on KServe when promote promoted this run's version (humans: kfnlp deploy)",
    inputs=(
        REGISTERED,
        DECISION,
        TRACKING_URI,
        Input("run_name", "the pipeline run, for the InferenceService's labels"),
    ),
    example="enabled=true",
    registry=True,
    cache=False,
)
