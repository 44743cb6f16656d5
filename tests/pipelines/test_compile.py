"""`kfnlp compile`: strict KFP v2 IR with the Kubernetes settings, the stage config baked in,
secret names only, and bad cluster config refused by key before anything is written."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from google.protobuf import json_format
from kfp.kubernetes import kubernetes_executor_config_pb2 as k8s_pb
from kfp.pipeline_spec import pipeline_spec_pb2

from kfnlp import catalog, stages
from kfnlp.api_models import parse_toleration
from kfnlp.catalog import pipeline_arguments
from kfnlp.errors import ConfigError
from kfnlp.launch.cluster import settings as cluster
from kfnlp.launch.cluster.compile import compile_pipeline, load_configs
from kfnlp.launch.cluster.settings import ClusterConfig, load_cluster
from kfnlp.launch.images import LOCAL_IMAGE
from tests.support.cli import run_cli

DIGEST = "sha256:" + "0123456789abcdef" * 4
IMAGE = f"registry.example.com:5000/ml/kfnlp@{DIGEST}"
PIPELINE_ROOT = "s3://ml-artifacts/kfnlp"
FULL_CONFIG = {
    "register": {"model_name": "team-model"},  # a stage section every pipeline has
    "cluster": {
        "image": IMAGE,
        "image_pull_secret": "kfnlp-pull",
        "pipeline_root": PIPELINE_ROOT,
        "s3_secret": "team-s3",
        "hf_token_secret": "team-hf",
        "registry_secret": "team-mlflow",
        "retry_backoff": "2m",
        "retry_backoff_factor": 3,
        "retry_backoff_max": "2h",
        "train": {"gpus": 2, "node_selector": ["cloud.google.com/gke-accelerator=nvidia-l4", "pool=gpu"]},
        "data": {"cpu_request": "500m", "memory_limit": "6Gi", "node_selector": ["pool=cpu"]},
    },
}
TRAIN_STAGES = ("train-mlm", "train-ner", "train-cls", "train-clm")  # the stages on the train profile
FAKE_SECRETS = {
    "AWS_ACCESS_KEY_ID": "AKIAFAKEKFNLP0000TEST",
    "AWS_SECRET_ACCESS_KEY": "fake-secret-kfnlp-9f8e7d6c5b4a",
    "HF_TOKEN": "hf_fakekfnlptoken1234567890",
    "MLFLOW_TRACKING_PASSWORD": "fake-mlflow-password-kfnlp",
}


class Compiled:
    """A compiled pipeline parsed strictly: every message type, no unknown field anywhere."""

    def __init__(self, path: Path):
        docs = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]
        assert len(docs) == 2, "expected the pipeline and its Kubernetes platform document"
        self.spec = json_format.ParseDict(docs[0], pipeline_spec_pb2.PipelineSpec(), ignore_unknown_fields=False)
        self.executors = {
            name: json_format.ParseDict(
                executor, pipeline_spec_pb2.PipelineDeploymentConfig.ExecutorSpec(), ignore_unknown_fields=False
            )
            for name, executor in docs[0]["deploymentSpec"]["executors"].items()
        }
        json_format.ParseDict(docs[1], pipeline_spec_pb2.PlatformSpec(), ignore_unknown_fields=False)
        self.k8s = {
            name: json_format.ParseDict(config, k8s_pb.KubernetesExecutorConfig(), ignore_unknown_fields=False)
            for name, config in docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"].items()
        }
        self.tasks = {task.task_info.name: task for task in self.spec.root.dag.tasks.values()}

    def executor_label(self, task: str) -> str:
        return self.spec.components[self.tasks[task].component_ref.name].executor_label

    def container(self, task: str):
        return self.executors[self.executor_label(task)].container

    def k8s_config(self, task: str) -> k8s_pb.KubernetesExecutorConfig:
        return self.k8s[self.executor_label(task)]


def default_of(parameter) -> object:
    """A compiled pipeline parameter's default, whatever its type (the JSON sections are strings, the knobs typed)."""
    return getattr(parameter.default_value, parameter.default_value.WhichOneof("kind"))


def stage_of(task) -> str:
    """The component (stage) name of a compiled task: comp-train-ner-2 -> train-ner."""
    name = task.component_ref.name.removeprefix("comp-")
    while name not in stages.by_name():
        name = name.rsplit("-", 1)[0]
    return name


def secrets_of(config: k8s_pb.KubernetesExecutorConfig) -> dict[str, dict[str, tuple[str, bool]]]:
    """secret name -> {env var: (secret key, optional)}."""
    out: dict[str, dict[str, tuple[str, bool]]] = {}
    for item in config.secret_as_env:
        name = item.secret_name_parameter.runtime_value.constant.string_value
        assert name == item.secret_name
        for pair in item.key_to_env:
            out.setdefault(name, {})[pair.env_var] = (pair.secret_key, item.optional)
    return out


@pytest.fixture(scope="module")
def config_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("config") / "cluster.yaml"
    path.write_text(yaml.safe_dump(FULL_CONFIG), encoding="utf-8")
    return path


@pytest.fixture(scope="module", params=sorted(catalog.PIPELINES))
def full(request, config_file, tmp_path_factory):
    """Each pipeline compiled through the function with FULL_CONFIG."""
    out = tmp_path_factory.mktemp("full") / f"{request.param}.yaml"
    result = compile_pipeline(request.param, out, str(config_file))
    assert result.path == out
    return request.param, Compiled(out), result


# --- what the compiled pipeline says -----------------------------------------------------------------


def test_every_executor_runs_the_configured_image_pinned_by_digest(full):
    _, compiled, _ = full
    assert compiled.executors
    for name, executor in compiled.executors.items():
        assert executor.container.image == IMAGE, name
        assert {e.name: e.value for e in executor.container.env}["KFNLP_IMAGE"] == IMAGE


def test_train_stages_get_gpus_tolerations_node_selector_and_shm(full):
    name, compiled, result = full
    train = [t for t, task in compiled.tasks.items() if stage_of(task) in TRAIN_STAGES]
    assert train, name
    assert sorted(result.gpu_tasks) == sorted(f"{t} x2" for t in train)
    for task in train:
        resources = compiled.container(task).resources
        assert resources.accelerator.resource_type == "nvidia.com/gpu"
        assert resources.accelerator.resource_count == "2"
        assert (resources.resource_cpu_request, resources.resource_cpu_limit) == ("4", "8")
        assert (resources.resource_memory_request, resources.resource_memory_limit) == ("16Gi", "32Gi")
        k8s = compiled.k8s_config(task)
        assert [(t.key, t.operator, t.effect, t.value) for t in k8s.tolerations] == [
            ("nvidia.com/gpu", "Exists", "NoSchedule", "")
        ]
        assert dict(k8s.node_selector.labels) == {"cloud.google.com/gke-accelerator": "nvidia-l4", "pool": "gpu"}
        [shm] = k8s.empty_dir_mounts
        assert (shm.mount_path, shm.medium, shm.size_limit) == ("/dev/shm", "Memory", "2Gi")


def test_data_stages_get_the_data_profile_and_no_gpu(full):
    _, compiled, _ = full
    data = [t for t, task in compiled.tasks.items() if stage_of(task) not in TRAIN_STAGES]
    assert data
    for task in data:
        resources = compiled.container(task).resources
        assert not resources.HasField("accelerator"), task
        assert (resources.resource_cpu_request, resources.resource_cpu_limit) == ("500m", "4")
        assert (resources.resource_memory_request, resources.resource_memory_limit) == ("4Gi", "6Gi")
        k8s = compiled.k8s_config(task)
        assert not k8s.tolerations and not k8s.empty_dir_mounts, task
        assert dict(k8s.node_selector.labels) == {"pool": "cpu"}


def test_retries_on_train_stages_only(full):
    _, compiled, _ = full
    for task_name, task in compiled.tasks.items():
        if stage_of(task) in TRAIN_STAGES:
            policy = task.retry_policy
            assert policy.max_retry_count == 2
            assert policy.backoff_duration.seconds == 120
            assert policy.backoff_factor == 3.0
            assert policy.backoff_max_duration.seconds == 7200
        else:
            assert not task.HasField("retry_policy"), task_name


def test_caching_per_stage(full):
    _, compiled, _ = full
    defaults = ClusterConfig(image=IMAGE)
    seen = set()
    for task_name, task in compiled.tasks.items():
        stage = stage_of(task)
        seen.add(stage)
        assert task.caching_options.enable_cache == (stage in defaults.cache_stages), task_name
    for stage in {*TRAIN_STAGES, "register", "promote"} & seen:
        assert stage not in defaults.cache_stages
    assert "preprocess" in defaults.cache_stages and "preprocess-ner" in defaults.cache_stages


def test_secrets_by_name_on_the_stages_that_need_them(full):
    _, compiled, _ = full
    for task_name, task in compiled.tasks.items():
        stage, k8s = stage_of(task), compiled.k8s_config(task_name)
        secrets = secrets_of(k8s)
        assert secrets["team-s3"] == {
            "AWS_ACCESS_KEY_ID": ("AWS_ACCESS_KEY_ID", False),
            "AWS_SECRET_ACCESS_KEY": ("AWS_SECRET_ACCESS_KEY", False),
            "AWS_ENDPOINT_URL_S3": ("AWS_ENDPOINT_URL_S3", True),
            "AWS_DEFAULT_REGION": ("AWS_DEFAULT_REGION", True),
        }, task_name
        if stages.get(stage).hub:
            assert secrets["team-hf"] == {"HF_TOKEN": ("HF_TOKEN", False)}, task_name
        else:
            assert "team-hf" not in secrets, task_name
        if stages.get(stage).registry:
            assert set(secrets["team-mlflow"]) == set(cluster.REGISTRY_OPTIONAL_KEYS)
            assert all(optional for _, optional in secrets["team-mlflow"].values())
        else:
            assert "team-mlflow" not in secrets, task_name
        assert [s.secret_name for s in k8s.image_pull_secret] == ["kfnlp-pull"]


def test_pipeline_root_and_baked_stage_config(full, config_file):
    name, compiled, _ = full
    assert compiled.spec.default_pipeline_root == PIPELINE_ROOT
    config, _ = load_configs(catalog.get(name), str(config_file))
    arguments = pipeline_arguments(config)
    params = compiled.spec.root.input_definitions.parameters
    assert set(params) == set(arguments)
    for key, value in arguments.items():
        assert default_of(params[key]) == value, key
    assert '"model_name": "team-model"' in params["register_config"].default_value.string_value
    assert "cluster" not in " ".join(params)  # cluster settings are not pipeline parameters


def test_every_task_is_a_known_stage(full):
    _, compiled, _ = full
    assert {stage_of(task) for task in compiled.tasks.values()} <= set(stages.by_name())


# --- the CLI, the defaults, tag-pinned images ------------------------------------------------------


@pytest.mark.parametrize("name", sorted(catalog.PIPELINES))
def test_cli_compiles_with_the_defaults(name, tmp_path):
    out = tmp_path / f"{name}.yaml"
    result = run_cli("compile", name, "-o", str(out), env={"KFNLP_IMAGE": "ghcr.io/kfnlp/kfnlp:9.9.9-cuda"})
    assert result.returncode == 0, result.stderr
    assert f"compiled {name} to {out}" in result.stdout
    assert "registry_secret" in result.stderr  # the pod-local registry warning
    compiled = Compiled(out)
    defaults = ClusterConfig(image="ghcr.io/kfnlp/kfnlp:9.9.9-cuda")
    assert compiled.spec.default_pipeline_root == defaults.pipeline_root == "minio://mlpipeline/v2/artifacts"
    assert {e.container.image for e in compiled.executors.values()} == {"ghcr.io/kfnlp/kfnlp:9.9.9-cuda"}
    entry = catalog.get(name)
    config, _ = load_configs(entry)
    params = compiled.spec.root.input_definitions.parameters
    for key, value in pipeline_arguments(config).items():
        assert default_of(params[key]) == value, key  # not the bare "{}" of the function
    for task_name, task in compiled.tasks.items():
        k8s, training = compiled.k8s_config(task_name), stage_of(task) in defaults.train_stages
        assert set(secrets_of(k8s)) == {"kfnlp-s3"}
        assert not k8s.node_selector.labels
        if training:
            assert compiled.container(task_name).resources.accelerator.resource_count == "1"
            assert [(t.key, t.operator, t.effect) for t in k8s.tolerations] == [
                ("nvidia.com/gpu", "Exists", "NoSchedule")
            ]
            assert task.retry_policy.max_retry_count == 2
        else:
            assert not k8s.tolerations


def test_cli_set_overrides_the_cluster_and_stage_config(tmp_path):
    out = tmp_path / "ner.yaml"
    result = run_cli(
        "compile",
        "ner",
        "-o",
        str(out),
        "--set",
        "cluster.image=quay.io/team/kfnlp:1.2.3",
        "--set",
        "cluster.train.gpus=4",
        "--set",
        "cluster.gpu_resource=amd.com/gpu",
        "--set",
        "cluster.train.tolerations=[amd.com/gpu=present:NoSchedule]",
        "--set",
        "cluster.train.node_selector=pool=mi300",
        "--set",
        "cluster.s3_secret=",
        "--set",
        "cluster.pipeline_root=",
        "--set",
        "train_ner.num_epochs=9",
    )
    assert result.returncode == 0, result.stderr
    compiled = Compiled(out)
    assert {e.container.image for e in compiled.executors.values()} == {"quay.io/team/kfnlp:1.2.3"}
    assert not compiled.spec.default_pipeline_root
    accelerator = compiled.container("train-ner").resources.accelerator
    assert (accelerator.resource_type, accelerator.resource_count) == ("amd.com/gpu", "4")
    k8s = compiled.k8s_config("train-ner")
    assert [(t.key, t.operator, t.value, t.effect) for t in k8s.tolerations] == [
        ("amd.com/gpu", "Equal", "present", "NoSchedule")
    ]
    assert dict(k8s.node_selector.labels) == {"pool": "mi300"}
    assert all(not cfg.secret_as_env for cfg in compiled.k8s.values())
    params = compiled.spec.root.input_definitions.parameters
    assert '"num_epochs": 9' in params["train_ner_config"].default_value.string_value


def test_cli_and_function_give_the_same_pipeline(tmp_path, config_file):
    by_cli, by_function = tmp_path / "cli.yaml", tmp_path / "function.yaml"
    assert run_cli("compile", "mlm-adapt", "-o", str(by_cli), "--config", str(config_file)).returncode == 0
    compile_pipeline("mlm-adapt", by_function, str(config_file))
    first, second = Compiled(by_cli), Compiled(by_function)
    assert first.k8s == second.k8s
    assert first.executors == second.executors
    assert first.spec.root == second.spec.root


# --- secrets never reach the YAML --------------------------------------------------------------------


def test_no_secret_value_from_the_environment_reaches_the_yaml(tmp_path, config_file):
    for name in sorted(catalog.PIPELINES):
        out = tmp_path / f"{name}.yaml"
        result = run_cli("compile", name, "-o", str(out), "--config", str(config_file), env=FAKE_SECRETS)
        assert result.returncode == 0, result.stderr
        text = out.read_text(encoding="utf-8")
        for var, value in FAKE_SECRETS.items():
            assert value not in text, f"{name}: the value of ${var} leaked"
            assert value not in result.stdout + result.stderr
        assert "team-s3" in text and "team-hf" in text  # the names are there, the values are not


def test_a_config_value_holding_an_env_secret_is_refused_and_nothing_written(tmp_path):
    out = tmp_path / "ner.yaml"
    result = run_cli(
        "compile",
        "ner",
        "-o",
        str(out),
        "--set",
        f"cluster.image={IMAGE}",
        "--set",
        f"register.model_name={FAKE_SECRETS['HF_TOKEN']}",
        env=FAKE_SECRETS,
    )
    line = one_error_line(result, "$HF_TOKEN", "not written")
    assert FAKE_SECRETS["HF_TOKEN"] not in line
    assert list(tmp_path.iterdir()) == []


def test_a_url_with_a_password_is_refused(tmp_path):
    out = tmp_path / "ner.yaml"
    uri = "https://kfnlp:hunter2-secret@mlflow.example.com"
    result = run_cli(
        "compile", "ner", "-o", str(out), "--set", f"cluster.image={IMAGE}", "--set", f"register.tracking_uri={uri}"
    )
    line = one_error_line(result, "register.tracking_uri", "password")
    assert "hunter2" not in line
    assert list(tmp_path.iterdir()) == []


# --- bad config: one line naming the key, no file ----------------------------------------------------


def one_error_line(result, *fragments: str) -> str:
    assert result.returncode != 0, result.stdout
    lines = [line for line in result.stderr.strip().splitlines() if "warning" not in line]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("kfnlp: error: ")
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


CLI_ERRORS = [
    ("cluster.gpu=1", "unknown config key cluster.gpu"),
    ("cluster.train.gpus=-1", "cluster.train.gpus"),
    ("cluster.image=Registry.example.com/KFNLP:1", "cluster.image"),
    ("cluster.image=registry.example.com/kfnlp", "cluster.image"),
    ("cluster.pipeline_root=file:///tmp/artifacts", "cluster.pipeline_root"),
    ("cluster.pipeline_root=/tmp/artifacts", "cluster.pipeline_root"),
]


@pytest.mark.parametrize(("override", "key"), CLI_ERRORS)
def test_cli_bad_cluster_config_fails_by_key_and_writes_nothing(override, key, tmp_path):
    out = tmp_path / "ner.yaml"
    out.write_text("previous", encoding="utf-8")
    result = run_cli("compile", "ner", "-o", str(out), "--set", override)
    one_error_line(result, key)
    assert result.returncode == 2
    assert out.read_text(encoding="utf-8") == "previous"  # the old file is left alone
    assert [p.name for p in tmp_path.iterdir()] == ["ner.yaml"]  # and no temporary file


def test_a_bad_key_in_the_config_file_names_the_file_and_line(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("train_ner:\n  num_epochs: 2\ncluster:\n  train:\n    gpus: -3\n", encoding="utf-8")
    out = tmp_path / "out" / "ner.yaml"
    out.parent.mkdir()
    result = run_cli("compile", "ner", "-o", str(out), "--config", str(config))
    one_error_line(result, f"{config}:5:", "cluster.train.gpus")
    assert list(out.parent.iterdir()) == []


def test_output_must_be_yaml_in_an_existing_directory(tmp_path):
    one_error_line(run_cli("compile", "ner", "-o", str(tmp_path / "ner.json")), ".yaml")
    one_error_line(run_cli("compile", "ner", "-o", str(tmp_path / "missing" / "ner.yaml")), "does not exist")
    one_error_line(run_cli("compile", "nope", "-o", str(tmp_path / "x.yaml")), "unknown pipeline")
    assert list(tmp_path.iterdir()) == []


BAD_VALUES = [
    ({"gpus": -1}, "cluster.gpus"),  # not a top-level key
    ({"image": "kfnlp"}, "cluster.image"),
    ({"image": "kfnlp:"}, "cluster.image"),
    ({"image": "kfnlp@sha256:1234"}, "cluster.image"),
    ({"image": "-kfnlp/x:1"}, "cluster.image"),
    ({"pipeline_root": "http://bucket/x"}, "cluster.pipeline_root"),
    ({"pipeline_root": "s3://"}, "cluster.pipeline_root"),
    ({"s3_secret": "Team_S3"}, "cluster.s3_secret"),
    ({"hf_token_secret": "hf token"}, "cluster.hf_token_secret"),
    ({"gpu_resource": " "}, "cluster.gpu_resource"),
    ({"train_stages": ["train"]}, "cluster.train_stages"),
    ({"cache_stages": ["preprocess", "fit"]}, "cluster.cache_stages"),
    ({"retry_backoff": "soon"}, "cluster.retry_backoff"),
    ({"retry_backoff_factor": 0.5}, "cluster.retry_backoff_factor"),
    ({"train": {"gpus": -2}}, "cluster.train.gpus"),
    ({"train": {"retries": -1}}, "cluster.train.retries"),
    ({"train": {"gpus": "two"}}, "cluster.train.gpus"),
    ({"data": {"cpu_request": "1 core"}}, "cluster.data.cpu_request"),
    ({"data": {"memory_limit": "8GB"}}, "cluster.data.memory_limit"),
    ({"train": {"memory_request": "64Gi"}}, "cluster.train.memory_request"),  # more than the 32Gi limit
    ({"data": {"cpu_request": "8"}}, "cluster.data.cpu_request"),  # more than the limit 4
    ({"train": {"shm_size": "lots"}}, "cluster.train.shm_size"),
    ({"train": {"node_selector": ["pool"]}}, "cluster.train.node_selector"),
    ({"train": {"tolerations": ["nvidia.com/gpu:NoScheduled"]}}, "cluster.train.tolerations"),
    ({"train": {"tolerations": [""]}}, "cluster.train.tolerations"),
    ({"train": {"speed": 1}}, "cluster.train.speed"),
    ("gpu", "cluster"),
]


@pytest.mark.parametrize(("data", "key"), BAD_VALUES)
def test_bad_cluster_values_name_their_key(data, key):
    with pytest.raises(ConfigError) as info:
        load_cluster(data)
    assert info.value.key == key
    assert key in str(info.value)


def test_a_partial_profile_keeps_that_profiles_defaults():
    config = load_cluster({"train": {"gpus": 2}, "data": {"shm_size": "1Gi"}})
    assert config.train.gpus == 2
    assert config.train.tolerations == ["nvidia.com/gpu:NoSchedule"]
    assert (config.train.shm_size, config.train.retries, config.train.memory_limit) == ("2Gi", 2, "32Gi")
    assert (config.data.shm_size, config.data.gpus, config.data.tolerations) == ("1Gi", 0, [])


@pytest.mark.parametrize(
    "image",
    [
        "ghcr.io/kfnlp/kfnlp:0.1.0",
        "kfnlp:latest",
        "localhost:5000/kfnlp:dev",
        f"ghcr.io/kfnlp/kfnlp@{DIGEST}",
        f"ghcr.io/kfnlp/kfnlp:0.1.0-cuda@{DIGEST}",
        "registry.example.com/a/b/c__d-e.f:1.0_rc1",
    ],
)
def test_good_images(image):
    assert load_cluster({"image": image}).image == image


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("nvidia.com/gpu:NoSchedule", {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}),
        ("gpu=true:NoExecute", {"key": "gpu", "operator": "Equal", "value": "true", "effect": "NoExecute"}),
        ("dedicated=ml", {"key": "dedicated", "operator": "Equal", "value": "ml"}),
        ("spot", {"key": "spot", "operator": "Exists"}),
    ],
)
def test_toleration_syntax(text, expected):
    assert parse_toleration(text) == expected


# --- docs/cluster.md ---------------------------------------------------------------------------------


CLUSTER_DOC = Path(__file__).resolve().parents[2] / "docs" / "cluster.md"


def test_the_key_table_in_docs_is_current():
    from kfnlp import docs

    assert docs.update(CLUSTER_DOC, docs.render_cluster_reference, check=True), (
        "docs/cluster.md is stale: python -m kfnlp.docs"
    )


def test_the_docs_list_every_key():
    from kfnlp import docs

    text = CLUSTER_DOC.read_text(encoding="utf-8")
    keys = [row[0] for row in docs.cluster_reference_rows()]
    for f in dataclasses.fields(ClusterConfig):
        if f.name in ("data", "train"):
            for p in dataclasses.fields(cluster.StageProfile):
                assert f"| `cluster.{f.name}.{p.name}` |" in text
        else:
            assert f"| `cluster.{f.name}` |" in text
    leaves = len(dataclasses.fields(ClusterConfig)) - 2 + 2 * len(dataclasses.fields(cluster.StageProfile))
    assert len(keys) == len(set(keys)) == leaves


def test_the_documented_default_image_is_the_components_default():
    env = {k: v for k, v in os.environ.items() if k != "KFNLP_IMAGE"}
    result = subprocess.run(
        [sys.executable, "-c", "from kfnlp.components import IMAGE; print(IMAGE)"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.stdout.strip() == LOCAL_IMAGE
