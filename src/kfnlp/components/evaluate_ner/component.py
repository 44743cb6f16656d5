from kfp import dsl
from kfp.dsl import HTML, Artifact, ClassificationMetrics, Dataset, Input, Markdown, Metrics, Model, Output

from kfnlp.components import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def evaluate_ner(
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
    """Word-level seqeval precision/recall/F1 of an NER model on a held-out split, with predictions and a report."""
    from kfnlp.config import from_json
    from kfnlp.launch.in_pod import copy_file, destination, log_confusion, log_metrics, source, stage_guard
    from kfnlp.stages.evaluate_ner import STAGE, evaluate_ner

    with stage_guard(STAGE.name, results, also=(metrics, report, html, confusion)):
        cfg = from_json(STAGE.config, config, STAGE.section)
        out = destination(results)
        result = evaluate_ner(source(model), source(dataset), out, cfg, label)
        log_metrics(metrics, result["metrics"])
        log_confusion(confusion, result["confusion"])
        copy_file(out, "report.md", report.path)
        copy_file(out, "report.html", html.path)
