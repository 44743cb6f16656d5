from kfp import dsl
from kfp.dsl import Artifact, Input, Output

from kfnlp.components import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def deploy(
    config: str,
    register_config: str,
    run_name: str,
    registered: Input[Artifact],
    decision: Input[Artifact],
    deployment: Output[Artifact],
):
    """Serve the model's champion on KServe when promote promoted this run's version; the same run applied
    again updates the same InferenceService."""
    import json
    import os

    from kfnlp.config import from_json
    from kfnlp.launch.in_pod import stage_guard
    from kfnlp.stages import register
    from kfnlp.stages.deploy import STAGE, deploy_registered

    with stage_guard(STAGE.name, deployment):
        registry = from_json(register.STAGE.config, register_config, register.STAGE.section)
        cfg = from_json(STAGE.config, config, STAGE.section)
        result = deploy_registered(registered.path, decision.path, cfg, registry.tracking_uri, run_name)
        os.makedirs(os.path.dirname(deployment.path), exist_ok=True)
        with open(deployment.path, "w", encoding="utf-8") as handle:
            json.dump(result, handle, indent=2)
        deployment.metadata.update({"outcome": result["outcome"], "name": result.get("name", "")})
