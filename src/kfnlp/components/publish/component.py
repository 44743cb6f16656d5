from kfp import dsl
from kfp.dsl import Artifact, Input, Output

from kfnlp.components import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def publish(
    config: str,
    register_config: str,
    registered: Input[Artifact],
    decision: Input[Artifact],
    publication: Output[Artifact],
):
    """Push the version to the Hugging Face Hub when promote promoted it; the token comes from $HF_TOKEN only."""
    import json
    import os

    from kfnlp.config import from_json
    from kfnlp.launch.in_pod import stage_guard
    from kfnlp.stages import register
    from kfnlp.stages.publish import STAGE, publish_registered

    with stage_guard(STAGE.name, publication):
        registry = from_json(register.STAGE.config, register_config, register.STAGE.section)
        cfg = from_json(STAGE.config, config, STAGE.section)
        result = publish_registered(registered.path, decision.path, cfg, registry.tracking_uri)
        os.makedirs(os.path.dirname(publication.path), exist_ok=True)
        with open(publication.path, "w", encoding="utf-8") as handle:
            json.dump(result, handle, indent=2)
        publication.metadata.update({"outcome": result["outcome"], "url": result.get("url", "")})
