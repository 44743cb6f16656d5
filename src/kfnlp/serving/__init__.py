"""Serving kfnlp models: ``kfnlp serve``, a local HTTP server on KServe's own Python model server
(v1 and Open Inference protocols) with request batching and limits (:mod:`kfnlp.serving.server`), the
runner of each task (:mod:`kfnlp.serving.tasks`) and the batcher (:mod:`kfnlp.serving.batching`)."""

from __future__ import annotations

from kfnlp.serving.server import ServeConfig, serve
from kfnlp.serving.tasks import TASKS, load_runner, task_of

__all__ = ["TASKS", "ServeConfig", "load_runner", "serve", "task_of"]
