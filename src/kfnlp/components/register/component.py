from typing import Optional

from kfp import dsl
from kfp.dsl import Artifact, Input, Model, Output

from kfnlp.components import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def register(
    config: str,
    run_name: str,
    model: Input[Model],
    evaluation: Input[Artifact],
    registered: Output[Artifact],
    baseline: Optional[Input[Artifact]] = None,
    model_name: Optional[str] = None,
):
    """Record the model as a new registry version with metrics, lineage and a model card. ``model_name`` (None: not
    given) wins over config's."""
    import json
    import os

    from kfnlp.config import from_json
    from kfnlp.launch.in_pod import source, stage_guard
    from kfnlp.stages.register import STAGE, register

    with stage_guard(STAGE.name, registered):
        result = register(
            source(model),
            source(evaluation),
            from_json(STAGE.config, config, STAGE.section, {"model_name": model_name}),
            source(baseline) if baseline is not None else None,
            run_name,
        )
        result["source"] = model.uri
        os.makedirs(os.path.dirname(registered.path), exist_ok=True)
        with open(registered.path, "w", encoding="utf-8") as handle:
            json.dump(result, handle, indent=2)
        registered.metadata.update({"name": result["name"], "version": result["version"], "uri": result["uri"]})
