from typing import Optional

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Markdown, Metrics, Model, Output

from kfnlp.components import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def evaluate(
    config: str,
    label: str,
    eval_set: Input[Dataset],
    results: Output[Artifact],
    metrics: Output[Metrics],
    report: Output[Markdown],
    html: Output[HTML],
    model_ref: str = "",
    model: Optional[Input[Model]] = None,
):
    """Perplexity on the once-masked eval set, plus fill-mask examples, for a model
    artifact or (``model_ref``) a Hub id, path or builtin model."""
    from kfnlp.config import from_json
    from kfnlp.launch.in_pod import copy_file, destination, log_metrics, source, stage_guard
    from kfnlp.stages.evaluate import STAGE, evaluate_mlm

    with stage_guard(STAGE.name, results, also=(metrics, report, html)):
        cfg = from_json(STAGE.config, config, STAGE.section)
        out = destination(results)
        result = evaluate_mlm(source(model) if model is not None else model_ref, source(eval_set), out, cfg, label)
        log_metrics(metrics, result["metrics"])
        copy_file(out, "report.md", report.path)
        copy_file(out, "report.html", html.path)
