"""The catalog's ``@dsl.pipeline`` functions, for the launchers: loaded by the name a catalog
entry gives, and traced again with every task configured (its image, on a cluster its pod).

The catalog itself only names them, so that the library below the launchers never imports
the KFP wrapper layer (``kfnlp.components``, ``kfnlp.pipelines``).
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from typing import Any

from kfnlp.catalog import PipelineEntry
from kfnlp.launch.images import IMAGE_ENV


def pipeline_function(entry: PipelineEntry, config: Any = None) -> Any:
    """``entry``'s ``@dsl.pipeline`` function (importing kfp and the components); with a ``config``
    whose ``sweep`` is set or whose ``deploy`` or ``publish`` is enabled, that function traced again with the sweep
    in place of its train stage (the trials and their parallelism are part of the graph, as the config gave them)
    and a deploy or publish task after promote (its config part of the graph)."""
    original = getattr(importlib.import_module(entry.module), entry.function)
    plan = entry.sweep_plan(config) if config is not None else None
    deploying = config is not None and config.deploy.enabled
    publishing = config is not None and config.publish.enabled
    if plan is None and not deploying and not publishing:
        return original
    from kfp import dsl

    from kfnlp.config import to_json
    from kfnlp.pipelines.wiring import tracing

    func = original.pipeline_func
    deploy_config = to_json(config.deploy) if deploying else None
    publish_config = to_json(config.publish) if publishing else None

    @functools.wraps(func)
    def swept(*args):
        with tracing(plan, deploy_config, publish_config):
            return func(*args)

    return dsl.pipeline(
        name=original.component_spec.name,
        description=original.pipeline_spec.pipeline_info.description or None,
    )(swept)


def retrace(original: Any, configure: Callable[[Any], None], pipeline_root: str | None = None) -> Any:
    """The pipeline ``original`` traced again, with ``configure(task)`` called on each task
    once the pipeline function has created them all."""
    from kfp import dsl
    from kfp.dsl import pipeline_context

    func = original.pipeline_func

    @functools.wraps(func)
    def configured(*args):
        outputs = func(*args)
        for task in pipeline_context.Pipeline.get_default_pipeline().tasks.values():
            configure(task)
        return outputs

    return dsl.pipeline(
        name=original.component_spec.name,
        description=original.pipeline_spec.pipeline_info.description or None,
        pipeline_root=pipeline_root,
    )(configured)


def in_image(image: str) -> Callable[[Any], None]:
    """A ``configure`` for :func:`retrace`: the task runs in ``image`` and knows it (``$KFNLP_IMAGE``:
    register records the image in the model's lineage)."""

    def configure(task) -> None:
        task.set_container_image(image)
        task.set_env_variable(IMAGE_ENV, image)

    return configure
