"""promote: the gate after register; the new version becomes @champion only if it
beats the current one on the same eval set (see kfnlp.registry.promotion)."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path

from kfnlp.errors import InputError
from kfnlp.registry import Registry
from kfnlp.registry.promotion import PromoteConfig, promote
from kfnlp.stages.entry import REGISTERED, TRACKING_URI, Stage

log = logging.getLogger(__name__)


def promote_registered(registered: str, config: PromoteConfig, tracking_uri: str | None = None) -> dict:
    """Run the gate for the version a register stage wrote to ``registered`` (its JSON)."""
    try:
        entry = json.loads(Path(registered).read_text(encoding="utf-8"))
        name, version = entry["name"], int(entry["version"])
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(f"{registered}: not a register stage output ({exc})") from None
    if not config.enabled:
        log.info("promote: disabled; %s v%d stays a candidate", name, version)
        return {"model": name, "version": version, "outcome": "skipped", "reason": "promotion disabled"}
    decision = promote(Registry(tracking_uri), name, version, config)
    log.info("promote: %s", decision.line())
    return asdict(decision)


STAGE = Stage(
    name="promote",
    config=PromoteConfig,
    function=promote_registered,
    help="the promotion gate for a registered version (humans: kfnlp registry promote)",
    inputs=(REGISTERED, TRACKING_URI),
    example="margin=0.01",
    registry=True,
    cache=False,
)
