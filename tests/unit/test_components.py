"""Components and pipelines: thin wrappers, honest metadata, strict compiled specs, no secrets."""

from __future__ import annotations

import ast
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from google.protobuf import json_format
from kfp import compiler
from kfp.pipeline_spec import pipeline_spec_pb2

from kfnlp import catalog, stages
from kfnlp.catalog import load_config, pipeline_arguments
from kfnlp.launch.pipelines import pipeline_function

REPO = Path(__file__).resolve().parents[2]
STAGES = [stage.section for stage in stages.by_name().values()]  # component folders
MAX_BODY_STATEMENTS = 15
ARTIFACT_TYPES = {"Artifact", "Dataset", "Model", "Metrics", "ClassificationMetrics", "Markdown", "HTML"}
PARAMETER_TYPES = {"String", "Integer", "Float", "Boolean", "List", "Dict"}


def component_file(stage: str) -> Path:
    return REPO / "components" / stage / "component.py"


def metadata(stage: str) -> dict:
    return yaml.safe_load((REPO / "components" / stage / "metadata.yaml").read_text(encoding="utf-8"))


def component(stage: str):
    meta = metadata(stage)
    module, _, name = meta["component"].partition(":")
    return getattr(importlib.import_module(module), name)


def component_function(stage: str) -> ast.FunctionDef:
    """The @dsl.component-decorated function of a component module."""
    tree = ast.parse(component_file(stage).read_text(encoding="utf-8"))
    found = [
        node
        for node in tree.body
        if isinstance(node, ast.FunctionDef) and any("component" in ast.unparse(d) for d in node.decorator_list)
    ]
    assert len(found) == 1, f"{stage}: expected one @dsl.component function, found {len(found)}"
    return found[0]


def top_level_imports(tree: ast.Module) -> list[tuple[str, int]]:
    """Modules imported outside any function body (also inside if/try at module level)."""
    out: list[tuple[str, int]] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                continue
            if isinstance(child, ast.Import):
                out.extend((alias.name, child.lineno) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                out.append(("." * child.level + (child.module or ""), child.lineno))
            visit(child)

    visit(tree)
    return out


def short_type(schema_type: str) -> str:
    """'system.Dataset@0.0.1' -> 'Dataset'; parameter types stay as they are."""
    return schema_type.split(".", 1)[-1].split("@", 1)[0] if schema_type.startswith("system.") else schema_type


# (a) top-level imports ------------------------------------------------------------------------


@pytest.mark.parametrize("stage", STAGES)
def test_component_module_imports_only_stdlib_kfp_and_components(stage):
    tree = ast.parse(component_file(stage).read_text(encoding="utf-8"))
    imports = top_level_imports(tree)
    assert imports, f"{stage}: no imports found"
    for module, line in imports:
        top = module.split(".")[0]
        allowed = (
            top in sys.stdlib_module_names
            or top == "kfp"
            or module == "kfnlp.components"
            or module.startswith("kfnlp.components.")
        )
        assert allowed, f"components/{stage}/component.py:{line}: top-level import of {module!r}"


# (b) thin bodies that call the stage function ---------------------------------------------------


@pytest.mark.parametrize("stage", STAGES)
def test_component_body_calls_the_stage_function_and_is_short(stage):
    fn = component_function(stage)
    entry = stages.get(stage)
    stage_module, stage_function = entry.function.__module__, entry.function.__name__
    assert stage_module == f"kfnlp.stages.{stage}"
    imported = {
        (node.module, alias.name) for node in ast.walk(fn) if isinstance(node, ast.ImportFrom) for alias in node.names
    }
    assert {(stage_module, stage_function), (stage_module, "STAGE")} <= imported, (
        f"{stage}: the body does not import {stage_function} and STAGE from {stage_module}"
    )
    calls = [node for node in ast.walk(fn) if isinstance(node, ast.Call)]
    called = {ast.unparse(node.func) for node in calls}
    # a train stage's function is called by in_pod.train_stage, here or as a multi-node job
    handed = {ast.unparse(node.args[1]) for node in calls if ast.unparse(node.func) == "train_stage"}
    assert stage_function in called | handed, f"{stage}: the body does not call {stage_function}"

    body = fn.body[1:] if ast.get_docstring(fn) else fn.body
    statements = [node for stmt in body for node in ast.walk(stmt) if isinstance(node, ast.stmt)]
    assert len(statements) <= MAX_BODY_STATEMENTS, f"{stage}: {len(statements)} statements; move logic to the stage"


@pytest.mark.parametrize("stage", STAGES)
def test_component_body_takes_names_from_the_stage_entry(stage):
    """stage_guard and from_json get the name, config class and section from STAGE, not from literals."""
    fn = component_function(stage)
    calls = {ast.unparse(node.func): node for node in ast.walk(fn) if isinstance(node, ast.Call)}
    assert ast.unparse(calls["stage_guard"].args[0]) == "STAGE.name"
    own = [call for call in ast.walk(fn) if isinstance(call, ast.Call) and ast.unparse(call.func) == "from_json"]
    assert any(
        ast.unparse(call.args[0]) == "STAGE.config" and ast.unparse(call.args[2]) == "STAGE.section" for call in own
    )
    literals = {node.value for node in ast.walk(fn) if isinstance(node, ast.Constant) and isinstance(node.value, str)}
    names = set(stages.by_name()) | {s.section for s in stages.by_name().values()}
    assert not literals & names, f"{stage}: stage names spelt in the component body: {sorted(literals & names)}"


def test_every_stage_has_a_component_folder_and_every_folder_a_stage():
    folders = sorted(p.parent.name for p in (REPO / "components").glob("*/component.py"))
    assert folders == sorted(STAGES)
    for name, entry in stages.by_name().items():
        assert component(entry.section).component_spec.name == name
        assert metadata(entry.section)["component"] == f"kfnlp.components.{entry.section}.component:{entry.section}"


# (c) metadata.yaml matches the component's real interface --------------------------------------


@pytest.mark.parametrize("stage", STAGES)
def test_metadata_matches_component_spec(stage):
    meta = metadata(stage)
    for key in ("name", "description", "component", "parameters", "inputs", "outputs", "owners", "tags"):
        assert key in meta, f"components/{stage}/metadata.yaml: missing {key}"
    spec = component(stage).component_spec
    assert spec.name == meta["name"]

    def declared(entries: list[dict]) -> dict:
        return {e["name"]: (e["type"], bool(e.get("optional", False)), e.get("default")) for e in entries}

    actual_params, actual_inputs = {}, {}
    for name, inp in (spec.inputs or {}).items():
        kind = short_type(inp.type)
        target = actual_inputs if kind in ARTIFACT_TYPES else actual_params
        target[name] = (kind, bool(inp.optional), inp.default)
    actual_outputs = {name: (short_type(out.type), False, None) for name, out in (spec.outputs or {}).items()}

    assert declared(meta["parameters"]) == actual_params
    assert declared(meta["inputs"]) == actual_inputs
    assert declared(meta["outputs"]) == actual_outputs
    for entry in meta["parameters"]:
        assert entry["type"] in PARAMETER_TYPES
    for entry in meta["inputs"] + meta["outputs"]:
        assert entry["type"] in ARTIFACT_TYPES
    for entry in meta["parameters"] + meta["inputs"] + meta["outputs"]:
        assert entry.get("description"), f"{stage}: {entry['name']} has no description"


def test_every_component_has_metadata_and_readme():
    for stage in STAGES:
        assert metadata(stage)["name"] == stages.get(stage).name
        readme = (REPO / "components" / stage / "README.md").read_text(encoding="utf-8")
        assert f"kfnlp stage {stages.get(stage).name}" in readme


# (d) pipelines compile to strict, well-formed specs --------------------------------------------

EXPECTED_TASKS = {"preprocess", "mask-eval", "train-mlm", "evaluate-base", "evaluate-adapted", "register", "promote"}


def strict_documents(path: Path) -> pipeline_spec_pb2.PipelineSpec:
    docs = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]
    assert docs, f"{path} is empty"
    spec = json_format.ParseDict(docs[0], pipeline_spec_pb2.PipelineSpec(), ignore_unknown_fields=False)
    for name, executor in docs[0]["deploymentSpec"]["executors"].items():
        parsed = json_format.ParseDict(
            executor, pipeline_spec_pb2.PipelineDeploymentConfig.ExecutorSpec(), ignore_unknown_fields=False
        )
        assert parsed.container.image, f"{name}: no image"
    for extra in docs[1:]:  # kfp-kubernetes platform config, if any
        json_format.ParseDict(extra, pipeline_spec_pb2.PlatformSpec(), ignore_unknown_fields=False)
    return spec


@pytest.fixture(scope="module", params=sorted(catalog.PIPELINES))
def compiled(request, tmp_path_factory):
    entry = catalog.PIPELINES[request.param]
    path = tmp_path_factory.mktemp("compiled") / f"{entry.name}.yaml"
    compiler.Compiler().compile(pipeline_function(entry), str(path))
    return entry, path


def test_pipeline_compiles_and_parses_strictly(compiled):
    entry, path = compiled
    spec = strict_documents(path)
    assert spec.pipeline_info.name == entry.name
    assert spec.root.dag.tasks, "no tasks"
    executors = json.loads(json_format.MessageToJson(spec))["deploymentSpec"]["executors"]
    components = {task.component_ref.name for task in spec.root.dag.tasks.values()}
    assert components <= set(spec.components)
    assert {spec.components[c].executor_label for c in components} <= set(executors)


def test_mlm_adapt_tasks_and_edges(compiled):
    entry, path = compiled
    if entry.name != "mlm-adapt":
        pytest.skip("mlm-adapt only")
    tasks = strict_documents(path).root.dag.tasks
    by_name = {task.task_info.name: (key, task) for key, task in tasks.items()}
    assert set(by_name) == EXPECTED_TASKS
    key = {name: by_name[name][0] for name in by_name}

    def after(name: str) -> set[str]:
        return set(by_name[name][1].dependent_tasks)

    def producer(name: str, artifact: str) -> tuple[str, str]:
        ref = by_name[name][1].inputs.artifacts[artifact].task_output_artifact
        return ref.producer_task, ref.output_artifact_key

    assert after("preprocess") == set()
    assert after("mask-eval") == {key["preprocess"]}
    assert {key["mask-eval"], key["preprocess"]} <= after("train-mlm")
    assert key["train-mlm"] not in after("evaluate-base")  # the base model is scored without waiting
    assert key["train-mlm"] in after("evaluate-adapted")
    assert {key["evaluate-adapted"], key["evaluate-base"], key["train-mlm"]} <= after("register")
    # the wiring behind the edges
    assert producer("train-mlm", "dataset") == (key["preprocess"], "dataset")
    assert producer("train-mlm", "eval_set") == (key["mask-eval"], "eval_set")
    assert producer("evaluate-adapted", "model") == (key["train-mlm"], "model")
    assert "model" not in by_name["evaluate-base"][1].inputs.artifacts
    assert producer("register", "model") == (key["train-mlm"], "model")
    assert producer("register", "evaluation") == (key["evaluate-adapted"], "results")
    assert producer("register", "baseline") == (key["evaluate-base"], "results")


class Dag:
    """The tasks of a compiled pipeline by display name: their keys, upstream tasks and
    where each artifact input comes from."""

    def __init__(self, path: Path):
        tasks = strict_documents(path).root.dag.tasks
        self.tasks = {task.task_info.name: task for task in tasks.values()}
        self.key = {task.task_info.name: key for key, task in tasks.items()}

    def after(self, name: str) -> set[str]:
        return set(self.tasks[name].dependent_tasks)

    def producer(self, name: str, artifact: str) -> tuple[str, str]:
        ref = self.tasks[name].inputs.artifacts[artifact].task_output_artifact
        return ref.producer_task, ref.output_artifact_key

    def parameter(self, name: str, parameter: str) -> str:
        return self.tasks[name].inputs.parameters[parameter].runtime_value.constant.string_value


NER_TASKS = {"preprocess-ner", "train-ner", "evaluate-ner", "register", "promote"}
ADAPT_THEN_NER_TASKS = {
    "preprocess-ner",
    "preprocess",
    "mask-eval",
    "evaluate-base",
    "train-mlm",
    "evaluate-adapted",
    "train-ner-base",
    "train-ner-adapted",
    "evaluate-ner-base",
    "evaluate-ner-adapted",
    "compare",
    "register",
    "promote",
}


def test_ner_tasks_and_edges(compiled):
    entry, path = compiled
    if entry.name != "ner":
        pytest.skip("ner only")
    dag = Dag(path)
    assert set(dag.tasks) == NER_TASKS
    key = dag.key
    assert dag.after("preprocess-ner") == set()
    assert dag.producer("train-ner", "dataset") == (key["preprocess-ner"], "dataset")
    assert "base_model" not in dag.tasks["train-ner"].inputs.artifacts  # the encoder comes by reference
    assert dag.producer("evaluate-ner", "dataset") == (key["preprocess-ner"], "dataset")
    assert dag.producer("evaluate-ner", "model") == (key["train-ner"], "model")
    assert dag.producer("register", "model") == (key["train-ner"], "model")
    assert dag.producer("register", "evaluation") == (key["evaluate-ner"], "results")
    assert "baseline" not in dag.tasks["register"].inputs.artifacts
    assert dag.after("register") == {key["train-ner"], key["evaluate-ner"]}


def test_adapt_then_ner_tasks_and_edges(compiled):
    entry, path = compiled
    if entry.name != "adapt-then-ner":
        pytest.skip("adapt-then-ner only")
    dag = Dag(path)
    assert set(dag.tasks) == ADAPT_THEN_NER_TASKS
    key, producer, after = dag.key, dag.producer, dag.after
    ner_dataset = (key["preprocess-ner"], "dataset")

    assert after("preprocess-ner") == set()
    # the masked-LM corpus is the NER training text (source ner:train)
    assert producer("preprocess", "corpus") == ner_dataset
    assert producer("mask-eval", "dataset") == (key["preprocess"], "dataset")
    assert producer("train-mlm", "dataset") == (key["preprocess"], "dataset")
    assert producer("train-mlm", "eval_set") == (key["mask-eval"], "eval_set")
    assert producer("evaluate-base", "eval_set") == (key["mask-eval"], "eval_set")
    assert "model" not in dag.tasks["evaluate-base"].inputs.artifacts
    assert producer("evaluate-adapted", "model") == (key["train-mlm"], "model")
    # both NER models train on the same dataset; only the adapted one waits for train-mlm
    assert producer("train-ner-base", "dataset") == ner_dataset
    assert producer("train-ner-adapted", "dataset") == ner_dataset
    assert "base_model" not in dag.tasks["train-ner-base"].inputs.artifacts
    assert producer("train-ner-adapted", "base_model") == (key["train-mlm"], "model")
    assert key["train-mlm"] not in after("train-ner-base")
    assert key["train-mlm"] in after("train-ner-adapted")
    # each evaluation scores its own model on the same dataset
    for side in ("base", "adapted"):
        assert producer(f"evaluate-ner-{side}", "model") == (key[f"train-ner-{side}"], "model")
        assert producer(f"evaluate-ner-{side}", "dataset") == ner_dataset
    assert dag.parameter("evaluate-ner-base", "label") != dag.parameter("evaluate-ner-adapted", "label")
    # compare reads the four evaluations
    assert producer("compare", "mlm_base") == (key["evaluate-base"], "results")
    assert producer("compare", "mlm_adapted") == (key["evaluate-adapted"], "results")
    assert producer("compare", "task_base") == (key["evaluate-ner-base"], "results")
    assert producer("compare", "task_adapted") == (key["evaluate-ner-adapted"], "results")
    # register records the NER model fine-tuned from the adapted encoder, against the base one
    assert producer("register", "model") == (key["train-ner-adapted"], "model")
    assert producer("register", "evaluation") == (key["evaluate-ner-adapted"], "results")
    assert producer("register", "baseline") == (key["evaluate-ner-base"], "results")


def test_cls_tasks_and_edges(compiled):
    entry, path = compiled
    if entry.name != "cls":
        pytest.skip("cls only")
    dag = Dag(path)
    assert set(dag.tasks) == {"preprocess-cls", "train-cls", "evaluate-cls", "register", "promote"}
    key = dag.key
    assert dag.producer("train-cls", "dataset") == (key["preprocess-cls"], "dataset")
    assert "base_model" not in dag.tasks["train-cls"].inputs.artifacts  # the encoder comes by reference
    assert dag.producer("evaluate-cls", "model") == (key["train-cls"], "model")
    assert dag.producer("register", "evaluation") == (key["evaluate-cls"], "results")
    assert "baseline" not in dag.tasks["register"].inputs.artifacts


def test_adapt_then_cls_tasks_and_edges(compiled):
    """The adapt-then-ner shape with the classification stages: both classifiers on one dataset,
    only the adapted one waits for train-mlm, compare reads the four evaluations."""
    entry, path = compiled
    if entry.name != "adapt-then-cls":
        pytest.skip("adapt-then-cls only")
    dag = Dag(path)
    assert set(dag.tasks) == {name.replace("-ner", "-cls") for name in ADAPT_THEN_NER_TASKS}
    key, producer, after = dag.key, dag.producer, dag.after
    cls_dataset = (key["preprocess-cls"], "dataset")
    assert producer("preprocess", "corpus") == cls_dataset  # the masked-LM corpus is the training text
    for side in ("base", "adapted"):
        assert producer(f"train-cls-{side}", "dataset") == cls_dataset
        assert producer(f"evaluate-cls-{side}", "model") == (key[f"train-cls-{side}"], "model")
        assert producer(f"evaluate-cls-{side}", "dataset") == cls_dataset
    assert producer("train-cls-adapted", "base_model") == (key["train-mlm"], "model")
    assert key["train-mlm"] not in after("train-cls-base")
    assert producer("compare", "mlm_base") == (key["evaluate-base"], "results")
    assert producer("compare", "mlm_adapted") == (key["evaluate-adapted"], "results")
    assert producer("compare", "task_base") == (key["evaluate-cls-base"], "results")
    assert producer("compare", "task_adapted") == (key["evaluate-cls-adapted"], "results")
    assert producer("register", "model") == (key["train-cls-adapted"], "model")
    assert producer("register", "evaluation") == (key["evaluate-cls-adapted"], "results")
    assert producer("register", "baseline") == (key["evaluate-cls-base"], "results")


def test_pipeline_compiles_with_the_embedded_defaults(tmp_path):
    """`kfnlp run` passes the merged config as parameters; those compile and parse too."""
    for entry in catalog.PIPELINES.values():
        arguments = pipeline_arguments(load_config(entry))
        path = tmp_path / f"{entry.name}.yaml"
        compiler.Compiler().compile(pipeline_function(entry), str(path), pipeline_parameters=arguments)
        spec = strict_documents(path)
        params = spec.root.input_definitions.parameters
        assert set(arguments) == set(params)
        for name, value in arguments.items():
            default = params[name].default_value
            assert getattr(default, default.WhichOneof("kind")) == value, name


# (e) no secrets in compiled output ---------------------------------------------------------------

FAKE_SECRETS = {
    "AWS_ACCESS_KEY_ID": "AKIAFAKEKFNLP0000TEST",
    "AWS_SECRET_ACCESS_KEY": "fake-secret-kfnlp-9f8e7d6c5b4a",
    "HF_TOKEN": "hf_fakekfnlptoken1234567890",
    "MLFLOW_TRACKING_PASSWORD": "fake-mlflow-password-kfnlp",
}

COMPILE_ALL = """
import sys
from kfp import compiler
from kfnlp import catalog
from kfnlp.launch.pipelines import pipeline_function
for entry in catalog.PIPELINES.values():
    compiler.Compiler().compile(pipeline_function(entry), f"{sys.argv[1]}/{entry.name}.yaml")
"""


def test_compiled_yaml_contains_no_secrets_from_the_environment(tmp_path):
    # a fresh interpreter, so that nothing read from the environment at import time escapes either
    env = {**os.environ, **FAKE_SECRETS}
    result = subprocess.run(
        [sys.executable, "-c", COMPILE_ALL, str(tmp_path)], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    outputs = sorted(tmp_path.glob("*.yaml"))
    assert len(outputs) == len(catalog.PIPELINES)
    for path in outputs:
        text = path.read_text(encoding="utf-8")
        for name, value in FAKE_SECRETS.items():
            assert value not in text, f"{path.name}: the value of ${name} leaked into the compiled pipeline"
            assert name not in text, f"{path.name}: mentions {name}"


def test_every_pipeline_ends_with_the_promotion_gate(compiled):
    """promote reads register's output, so it always runs after register, with the same registry config."""
    entry, path = compiled
    spec = strict_documents(path)
    tasks = spec.root.dag.tasks
    by_name = {task.task_info.name: (key, task) for key, task in tasks.items()}
    key, promote_task = by_name["promote"]
    ref = promote_task.inputs.artifacts["registered"].task_output_artifact
    assert (ref.producer_task, ref.output_artifact_key) == (by_name["register"][0], "registered")
    params = promote_task.inputs.parameters
    assert params["register_config"].component_input_parameter == "register_config"
    assert params["config"].component_input_parameter == "promote_config"
