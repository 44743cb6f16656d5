from kfp import dsl
from kfp.dsl import HTML, Artifact, Input, Markdown, Output

from kfnlp.components import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def compare(
    config: str,
    mlm_base: Input[Artifact],
    mlm_adapted: Input[Artifact],
    ner_base: Input[Artifact],
    ner_adapted: Input[Artifact],
    comparison: Output[Artifact],
    report: Output[Markdown],
    html: Output[HTML],
):
    """Base versus adapted encoder: perplexity before/after and NER F1 (overall, per entity, bootstrap interval)."""
    import shutil

    from kfnlp.config import from_json
    from kfnlp.kfp_runtime import stage_guard
    from kfnlp.stages.compare import CompareConfig, compare

    with stage_guard("compare", comparison):
        cfg = from_json(CompareConfig, config, "compare")
        compare(mlm_base.path, mlm_adapted.path, ner_base.path, ner_adapted.path, comparison.path, cfg)
        shutil.copyfile(f"{comparison.path}/report.md", report.path)
        shutil.copyfile(f"{comparison.path}/report.html", html.path)
