from kfp import dsl
from kfp.dsl import Artifact, Input, Markdown, Metrics, Model, Output

from kfnlp.components import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def select_best(
    selection: str,
    models: Input[list[Model]],
    evaluations: Input[list[Artifact]],
    model: Output[Model],
    evaluation: Output[Artifact],
    sweep: Output[Artifact],
    report: Output[Markdown],
    metrics: Output[Metrics],
):
    """A sweep's best trial by its metric (``selection``: the sweep's trials, metric and direction, as
    compiled): the chosen model and its evaluation, and the trials' table, report and plot."""
    from kfnlp.config import from_json
    from kfnlp.launch.in_pod import copy_file, destination, log_metrics, source, stage_guard
    from kfnlp.stages.select_best import STAGE, select_best, summary_metrics

    with stage_guard(STAGE.name, model):
        cfg = from_json(STAGE.config, selection, STAGE.section)
        out = destination(sweep)
        trials = [source(m) for m in models], [source(e) for e in evaluations]
        table = select_best(*trials, destination(model), destination(evaluation), out, cfg)
        log_metrics(metrics, summary_metrics(table))
        copy_file(out, "report.md", report.path)
