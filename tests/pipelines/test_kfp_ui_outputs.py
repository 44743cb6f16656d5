"""What the KFP UI gets from the evaluate and compare stages: scalar Metrics, an HTML page with the plots,
a Markdown report complete on its own, and (NER, classification) a ClassificationMetrics confusion matrix
the UI draws itself; checked in the compiled IR of every pipeline and in a kfp.local run of evaluate-cls."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2

from kfnlp import catalog, stages
from kfnlp.launch.cluster.compile import compile_pipeline

MODEL = "builtin:splade-tiny"
IMAGE = "registry.example.com/ml/kfnlp@sha256:" + "0123456789abcdef" * 4
UI_OUTPUTS = {"system.Metrics", "system.HTML", "system.Markdown"}
CONFUSION = "system.ClassificationMetrics"
WITH_CONFUSION = {"evaluate-ner", "evaluate-cls"}
FIRST_OUTPUT = {"compare": "comparison"}  # the evaluate stages' first output is "results" (a sweep collects it)


def stage_of(component: str) -> str | None:
    """The stage of a compiled component name (comp-evaluate-ner-2 -> evaluate-ner), or None."""
    name = component.removeprefix("comp-")
    while name and name not in stages.by_name():
        name = name.rpartition("-")[0]
    return name or None


@pytest.mark.parametrize("name", sorted(catalog.PIPELINES))
def test_every_evaluate_and_compare_component_gives_the_kfp_ui_its_outputs(name, tmp_path):
    out = tmp_path / f"{name}.yaml"
    compile_pipeline(name, out, image=IMAGE)
    document = next(d for d in yaml.safe_load_all(out.read_text(encoding="utf-8")) if d is not None)
    spec = json_format.ParseDict(document, pipeline_spec_pb2.PipelineSpec(), ignore_unknown_fields=False)
    seen = set()
    for component_name, component in spec.components.items():
        stage = stage_of(component_name)
        if stage is None or not (stage.startswith("evaluate") or stage == "compare"):
            continue
        outputs = component.output_definitions.artifacts
        types = [artifact.artifact_type.schema_title for artifact in outputs.values()]
        expected = UI_OUTPUTS | ({CONFUSION} if stage in WITH_CONFUSION else set())
        assert sorted(t for t in types if t in UI_OUTPUTS | {CONFUSION}) == sorted(expected), (component_name, types)
        assert outputs[FIRST_OUTPUT.get(stage, "results")].artifact_type.schema_title == "system.Artifact"
        seen.add(stage)
    assert any(stage.startswith("evaluate") for stage in seen), f"{name}: no evaluate component"
    if name.startswith("adapt-then"):
        assert "compare" in seen


@pytest.fixture(scope="module")
def cls_inputs(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny preprocess-cls dataset and a classifier trained on it for a few steps."""
    from kfnlp.stages.preprocess_cls import PreprocessClsConfig, preprocess_cls
    from kfnlp.stages.train_cls import TrainClsConfig, train_cls

    root = tmp_path_factory.mktemp("cls")
    preprocess_cls(str(root / "dataset"), PreprocessClsConfig(max_examples=24, max_length=48), MODEL)
    config = TrainClsConfig(learning_rate=1e-3, batch_size=8, num_epochs=1, logging_steps=2, save_strategy="no")
    train_cls(str(root / "dataset"), str(root / "model"), config, MODEL)
    return root / "dataset", root / "model"


@pytest.mark.filterwarnings("ignore:You may be attemping to run a task:RuntimeWarning")
def test_a_kfp_local_run_of_evaluate_cls_logs_the_confusion_matrix_and_the_ui_files(cls_inputs, tmp_path):
    """kfp.local writes each output's metadata to executor_output.json, as KFP's launcher records it for the UI."""
    from kfp import dsl, local

    from kfnlp.components.evaluate_cls.component import evaluate_cls

    dataset, model = cls_inputs

    @dsl.pipeline(name="evaluate-cls-alone")
    def alone():
        data = dsl.importer(artifact_uri=str(dataset), artifact_class=dsl.Dataset)
        net = dsl.importer(artifact_uri=str(model), artifact_class=dsl.Model)
        evaluate_cls(config="{}", label="cls", dataset=data.output, model=net.output)

    root = tmp_path / "root"
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root), raise_on_error=True)
    alone()
    [task_dir] = [p.parent for p in root.glob("*/evaluate-cls/executor_output.json")]
    executor_output = json.loads((task_dir / "executor_output.json").read_text(encoding="utf-8"))
    artifacts = {name: entry["artifacts"][0] for name, entry in executor_output["artifacts"].items()}
    assert {"results", "metrics", "report", "html", "confusion"} <= set(artifacts)

    result = json.loads((Path(artifacts["results"]["uri"]) / "metrics.json").read_text(encoding="utf-8"))
    labels, matrix = result["confusion"]["labels"], result["confusion"]["matrix"]
    logged = artifacts["confusion"]["metadata"]["confusionMatrix"]
    assert [spec["displayName"] for spec in logged["annotationSpecs"]] == labels == ["neg", "pos"]
    assert [row["row"] for row in logged["rows"]] == matrix and sum(map(sum, matrix)) == 24
    assert json.loads(Path(artifacts["confusion"]["uri"]).read_text(encoding="utf-8")) == result["confusion"]

    assert artifacts["metrics"]["metadata"]["accuracy"] == pytest.approx(result["metrics"]["accuracy"])
    html = Path(artifacts["html"]["uri"]).read_text(encoding="utf-8")
    assert html == (Path(artifacts["results"]["uri"]) / "report.html").read_text(encoding="utf-8")
    assert html.count("<svg") == 2 and "<script" not in html
    markdown = Path(artifacts["report"]["uri"]).read_text(encoding="utf-8")
    assert "## Confusion matrix (rows gold, columns predicted)" in markdown and "<svg" not in markdown
