from kfp import dsl
from kfp.dsl import HTML, Artifact, Input, Markdown, Metrics, Output

from kfnlp.components import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def compare(
    config: str,
    mlm_base: Input[Artifact],
    mlm_adapted: Input[Artifact],
    task_base: Input[Artifact],
    task_adapted: Input[Artifact],
    comparison: Output[Artifact],
    report: Output[Markdown],
    html: Output[HTML],
    metrics: Output[Metrics],
):
    """Base versus adapted encoder: perplexity before/after and the task's scores (overall, per class, and a
    bootstrap interval for the primary metric: entity F1 for NER, accuracy for tagging and classification)."""
    from kfnlp.config import from_json
    from kfnlp.launch.in_pod import copy_file, destination, log_metrics, source, stage_guard
    from kfnlp.stages.compare import STAGE, compare, summary_metrics

    with stage_guard(STAGE.name, comparison):
        cfg = from_json(STAGE.config, config, STAGE.section)
        out = destination(comparison)
        result = compare(source(mlm_base), source(mlm_adapted), source(task_base), source(task_adapted), out, cfg)
        copy_file(out, "report.md", report.path)
        copy_file(out, "report.html", html.path)
        log_metrics(metrics, summary_metrics(result))
