from kfp import dsl
from kfp.dsl import HTML, Artifact, ClassificationMetrics, Dataset, Input, Markdown, Metrics, Model, Output

from kfnlp.components import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def evaluate_cls(
    config: str,
    label: str,
    dataset: Input[Dataset],
    model: Input[Model],
    results: Output[Artifact],
    metrics: Output[Metrics],
    report: Output[Markdown],
    html: Output[HTML],
    confusion: Output[ClassificationMetrics],
):
    """Accuracy, macro/micro F1 and the confusion matrix of a text classifier on a held-out split, with a report."""
    from kfnlp.config import from_json
    from kfnlp.launch.in_pod import copy_file, destination, log_confusion, log_metrics, source, stage_guard
    from kfnlp.stages.evaluate_cls import STAGE, evaluate_cls

    with stage_guard(STAGE.name, results, also=(metrics, report, html, confusion)):
        cfg = from_json(STAGE.config, config, STAGE.section)
        out = destination(results)
        result = evaluate_cls(source(model), source(dataset), out, cfg, label)
        log_metrics(metrics, result["metrics"])
        log_confusion(confusion, result["confusion"])
        copy_file(out, "report.md", report.path)
        copy_file(out, "report.html", html.path)
