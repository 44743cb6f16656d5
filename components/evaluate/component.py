from typing import Optional

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Markdown, Metrics, Model, Output

from kfnlp.components import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def evaluate(
    config: str,
    label: str,
    eval_set: Input[Dataset],
    results: Output[Artifact],
    metrics: Output[Metrics],
    report: Output[Markdown],
    model_ref: str = "",
    model: Optional[Input[Model]] = None,
):
    """Perplexity on the once-masked eval set, plus fill-mask examples, for a model
    artifact or (``model_ref``) a Hub id, path or builtin model."""
    import shutil

    from kfnlp.config import from_json
    from kfnlp.kfp_runtime import log_metrics, stage_guard
    from kfnlp.stages.evaluate import EvaluateConfig, evaluate_mlm

    with stage_guard("evaluate", results):
        source = model.path if model is not None else model_ref
        result = evaluate_mlm(source, eval_set.path, results.path, from_json(EvaluateConfig, config, "evaluate"), label)
        log_metrics(metrics, result["metrics"])
        shutil.copyfile(f"{results.path}/report.md", report.path)
