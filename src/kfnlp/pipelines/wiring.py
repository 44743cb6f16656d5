"""Wiring that every pipeline ends with."""

from kfp import dsl

from kfnlp.components.promote.component import promote
from kfnlp.components.register.component import register


def register_and_promote(register_config, promote_config, model, evaluation, baseline=None):
    """register the model with its evaluation (and the baseline's, if any), then run the
    promotion gate on the new version with the same registry config."""
    inputs = {"model": model, "evaluation": evaluation}
    if baseline is not None:
        inputs["baseline"] = baseline
    registered = register(
        config=register_config, run_name=dsl.PIPELINE_JOB_NAME_PLACEHOLDER, **inputs
    ).set_display_name("register")
    promote(
        config=promote_config, register_config=register_config, registered=registered.outputs["registered"]
    ).set_display_name("promote")
