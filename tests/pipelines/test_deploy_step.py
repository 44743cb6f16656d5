"""The optional deploy step in the compiled graph: absent by default, and with deploy.enabled one deploy task after
promote in every pipeline, reading register's and promote's outputs, its config compiled in; on a cluster it gets
the registry's and S3's secrets by name and is never served from the cache. Parsed strictly by kfp's protobufs."""

from __future__ import annotations

import json

import pytest
from kfp import compiler

from kfnlp import catalog
from kfnlp.catalog import load_config
from kfnlp.config import to_dict
from kfnlp.launch.cluster.compile import compile_pipeline
from kfnlp.launch.pipelines import pipeline_function
from tests.pipelines.test_compile import IMAGE, Compiled, secrets_of
from tests.unit.test_components import strict_documents

DEPLOY = ["deploy.enabled=true", "deploy.s3_secret=kserve-s3", "deploy.namespace=models"]


def tasks_by_component(spec) -> dict[str, tuple[str, object]]:
    return {task.component_ref.name: (name, task) for name, task in spec.root.dag.tasks.items()}


@pytest.mark.parametrize("name", sorted(catalog.PIPELINES))
def test_no_deploy_task_unless_enabled(name, tmp_path):
    entry = catalog.get(name)
    path = tmp_path / "plain.yaml"
    compiler.Compiler().compile(pipeline_function(entry, load_config(entry)), str(path))
    assert "comp-deploy" not in tasks_by_component(strict_documents(path))


@pytest.mark.parametrize("name", sorted(catalog.PIPELINES))
def test_the_deploy_task_follows_promote_with_its_config_compiled_in(name, tmp_path):
    entry = catalog.get(name)
    config = load_config(entry, None, DEPLOY)
    path = tmp_path / "deploy.yaml"
    compiler.Compiler().compile(pipeline_function(entry, config), str(path))
    spec = strict_documents(path)
    tasks = tasks_by_component(spec)
    deploy_name, deploy = tasks["comp-deploy"]
    register_name, promote_name = tasks["comp-register"][0], tasks["comp-promote"][0]
    assert deploy.task_info.name == "deploy"
    artifacts = deploy.inputs.artifacts
    assert artifacts["registered"].task_output_artifact.producer_task == register_name
    assert artifacts["decision"].task_output_artifact.producer_task == promote_name
    assert artifacts["decision"].task_output_artifact.output_artifact_key == "decision"
    compiled = json.loads(deploy.inputs.parameters["config"].runtime_value.constant.string_value)
    assert compiled == to_dict(config.deploy) and compiled["namespace"] == "models"
    assert deploy.inputs.parameters["register_config"].component_input_parameter == "register_config"
    assert "deploy_config" not in spec.root.input_definitions.parameters  # part of the graph, not a parameter


@pytest.mark.parametrize("name", ["ner", "adapt-then-cls"])
def test_on_a_cluster_the_deploy_task_gets_the_registry_and_s3_secrets(name, tmp_path):
    out = tmp_path / f"{name}.yaml"
    overrides = [*DEPLOY, "cluster.s3_secret=team-s3", "cluster.registry_secret=team-mlflow"]
    compile_pipeline(name, out, None, overrides, image=IMAGE)
    compiled = Compiled(out)
    assert "deploy" in compiled.tasks
    secrets = secrets_of(compiled.k8s_config("deploy"))
    assert set(secrets) == {"team-s3", "team-mlflow"}
    assert not compiled.tasks["deploy"].caching_options.enable_cache
    assert compiled.container("deploy").resources.accelerator.resource_count in ("", "0")
