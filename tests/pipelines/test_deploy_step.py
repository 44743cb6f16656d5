"""The optional deploy and publish steps in the compiled graph: absent by default, and when enabled one task each
after promote in every pipeline, reading register's and promote's outputs, its config compiled in; on a cluster the
deploy task gets the registry's and S3's secrets by name, the publish task the Hub token's too, and neither is ever
served from the cache. Parsed strictly by kfp's protobufs."""

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
PUBLISH = ["publish.enabled=true", "publish.repo_id=team/models"]


def tasks_by_component(spec) -> dict[str, tuple[str, object]]:
    return {task.component_ref.name: (name, task) for name, task in spec.root.dag.tasks.items()}


@pytest.mark.parametrize("name", sorted(catalog.PIPELINES))
def test_no_deploy_task_unless_enabled(name, tmp_path):
    entry = catalog.get(name)
    path = tmp_path / "plain.yaml"
    compiler.Compiler().compile(pipeline_function(entry, load_config(entry)), str(path))
    assert not {"comp-deploy", "comp-publish"} & set(tasks_by_component(strict_documents(path)))


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


@pytest.mark.parametrize("name", sorted(catalog.PIPELINES))
def test_the_publish_task_follows_promote_with_its_config_compiled_in(name, tmp_path):
    entry = catalog.get(name)
    config = load_config(entry, None, [*DEPLOY, *PUBLISH])
    path = tmp_path / "publish.yaml"
    compiler.Compiler().compile(pipeline_function(entry, config), str(path))
    tasks = tasks_by_component(strict_documents(path))
    _, publish = tasks["comp-publish"]
    artifacts = publish.inputs.artifacts
    assert artifacts["registered"].task_output_artifact.producer_task == tasks["comp-register"][0]
    assert artifacts["decision"].task_output_artifact.producer_task == tasks["comp-promote"][0]
    compiled = json.loads(publish.inputs.parameters["config"].runtime_value.constant.string_value)
    assert compiled == to_dict(config.publish) and compiled["repo_id"] == "team/models"
    assert "comp-deploy" in tasks  # both steps, side by side after the gate


def test_publish_enabled_without_a_repository_is_refused_at_load():
    from kfnlp.errors import ConfigError

    with pytest.raises(ConfigError, match=r"publish\.repo_id: required when publish\.enabled is true"):
        load_config(catalog.get("ner"), None, ["publish.enabled=true"])
    with pytest.raises(ConfigError, match=r"publish\.repo_id: expected a Hub repository id"):
        load_config(catalog.get("ner"), None, ["publish.repo_id=not a repo"])


def test_on_a_cluster_the_publish_task_gets_the_hub_token(tmp_path):
    out = tmp_path / "ner.yaml"
    overrides = [
        *PUBLISH,
        "cluster.s3_secret=team-s3",
        "cluster.registry_secret=team-mlflow",
        "cluster.hf_token_secret=team-hf",
    ]
    compile_pipeline("ner", out, None, overrides, image=IMAGE)
    compiled = Compiled(out)
    secrets = secrets_of(compiled.k8s_config("publish"))
    assert set(secrets) == {"team-s3", "team-mlflow", "team-hf"}
    assert secrets["team-hf"]["HF_TOKEN"] == ("HF_TOKEN", False)
    assert not compiled.tasks["publish"].caching_options.enable_cache
