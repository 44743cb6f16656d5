from typing import Optional

from kfp import dsl
from kfp.dsl import Artifact, Input, Output

from kfnlp.components import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def promote(
    config: str,
    register_config: str,
    registered: Input[Artifact],
    decision: Output[Artifact],
    margin: Optional[float] = None,
):
    """The promotion gate: make the new version @champion only if it beats the current champion. ``margin`` (None: not
    given) wins over config's."""
    import json
    import os

    from kfnlp.config import from_json
    from kfnlp.launch.in_pod import stage_guard
    from kfnlp.stages import register
    from kfnlp.stages.promote import STAGE, promote_registered

    with stage_guard(STAGE.name, decision):
        registry = from_json(register.STAGE.config, register_config, register.STAGE.section)
        result = promote_registered(
            registered.path, from_json(STAGE.config, config, STAGE.section, {"margin": margin}), registry.tracking_uri
        )
        os.makedirs(os.path.dirname(decision.path), exist_ok=True)
        with open(decision.path, "w", encoding="utf-8") as handle:
            json.dump(result, handle, indent=2)
        decision.metadata.update({"outcome": result["outcome"], "reason": result["reason"]})
