"""`kfnlp compile` with cluster.train.nodes > 1: each train task becomes a CPU launcher carrying its job's spec
in $KFNLP_SCALE_OUT (parsed strictly by kfp's protobufs and by ScaleOut), bad scale-out settings are one line
through the real CLI, and nodes 1 compiles exactly as before."""

from __future__ import annotations

import copy

import pytest
import yaml

from kfnlp import stages
from kfnlp.launch.cluster.compile import compile_pipeline
from kfnlp.launch.scale_out import manifests
from kfnlp.launch.scale_out.spec import ENV, ScaleOut
from tests.pipelines.test_compile import FAKE_SECRETS, TRAIN_STAGES, Compiled, one_error_line, secrets_of, stage_of
from tests.support.cli import run_cli

IMAGE = "registry.example.com/kfnlp@sha256:" + "0123456789abcdef" * 4
CONFIG = {
    "cluster": {
        "image": IMAGE,
        "image_pull_secret": "kfnlp-pull",
        "pipeline_root": "s3://ml-artifacts/kfnlp",
        "s3_secret": "team-s3",
        "hf_token_secret": "team-hf",
        "registry_secret": "team-mlflow",
        "train": {"nodes": 2, "gpus": 4, "node_selector": ["pool=h100"], "start_timeout": "15m"},
        "data": {"cpu_request": "500m", "memory_limit": "6Gi", "node_selector": ["pool=cpu"]},
    },
}


def compile_with(tmp_path, pipeline: str, config: dict, name: str = "out") -> tuple[Compiled, object]:
    path = tmp_path / f"{name}.yaml"
    config_file = tmp_path / f"{name}-config.yaml"
    config_file.write_text(yaml.safe_dump(config), encoding="utf-8")
    result = compile_pipeline(pipeline, path, str(config_file))
    return Compiled(path), result


@pytest.fixture(scope="module", params=["adapt-then-ner", "mlm-adapt", "adapt-then-cls", "clm-adapt"])
def scaled(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("scaled")
    return request.param, *compile_with(tmp, request.param, CONFIG)


def env_of(compiled: Compiled, task: str) -> dict[str, str]:
    return {e.name: e.value for e in compiled.container(task).env}


def test_train_tasks_are_cpu_launchers_carrying_the_job_spec(scaled):
    name, compiled, result = scaled
    train = [t for t, task in compiled.tasks.items() if stage_of(task) in TRAIN_STAGES]
    assert train, name
    assert sorted(result.gpu_tasks) == sorted(f"{t} 2 nodes x4" for t in train)
    for task in train:
        resources = compiled.container(task).resources
        assert not resources.HasField("accelerator"), task
        assert (resources.resource_cpu_request, resources.resource_memory_limit) == ("500m", "6Gi")
        k8s = compiled.k8s_config(task)
        assert not k8s.tolerations and not k8s.empty_dir_mounts, task
        assert dict(k8s.node_selector.labels) == {"pool": "cpu"}
        assert compiled.tasks[task].retry_policy.max_retry_count == 2  # the train profile's
        spec = ScaleOut.from_json(env_of(compiled, task)[ENV])
        assert (spec.nodes, spec.gpus_per_node, spec.engine, spec.runtime) == (2, 4, "trainjob", "torch-distributed")
        assert (spec.image, spec.image_pull_secret, spec.start_timeout_s) == (IMAGE, "kfnlp-pull", 900)
        assert (spec.cpu_request, spec.cpu_limit, spec.memory_request, spec.memory_limit) == ("4", "8", "16Gi", "32Gi")
        assert spec.node_selector == {"pool": "h100"}
        assert spec.tolerations == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
        assert spec.shm_size == "2Gi"
        # the nodes get the secrets by name: S3 always, the Hub token for hub stages, the registry never
        assert [(s["secret"], sorted(s["keys"]), s["optional"]) for s in spec.secrets] == [
            ("team-s3", ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"], False),
            ("team-s3", ["AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL_S3"], True),
            ("team-hf", ["HF_TOKEN"], False),
        ]
        # the launcher itself keeps today's secrets (it reads and writes the pipeline root)
        secrets = secrets_of(k8s)
        assert set(secrets) == {"team-s3", "team-hf"}
        # what the launcher will create from it passes the Trainer API's models
        manifests.build(spec, manifests.job_name(stage_of(compiled.tasks[task]), "s3://x/y"), ["torchrun"], {}, [])


def test_other_tasks_compile_as_with_one_node(scaled, tmp_path):
    name, compiled, _ = scaled
    one = copy.deepcopy(CONFIG)
    one["cluster"]["train"]["nodes"] = 1
    single, _ = compile_with(tmp_path, name, one, "single")
    for task_name, task in compiled.tasks.items():
        if stage_of(task) in TRAIN_STAGES:
            assert ENV not in {e.name for e in single.container(task_name).env}
            assert single.container(task_name).resources.accelerator.resource_count == "4"
            continue
        assert compiled.container(task_name) == single.container(task_name), task_name
        assert compiled.k8s_config(task_name) == single.k8s_config(task_name), task_name


def test_pytorchjob_engine_compiles(tmp_path):
    config = copy.deepcopy(CONFIG)
    config["cluster"]["train"].update(engine="pytorchjob", ttl_after_finished="2h")
    compiled, _ = compile_with(tmp_path, "mlm-adapt", config)
    [task] = [t for t, task in compiled.tasks.items() if stage_of(task) == "train-mlm"]
    spec = ScaleOut.from_json(env_of(compiled, task)[ENV])
    assert (spec.engine, spec.ttl_after_finished_s) == ("pytorchjob", 7200)


def test_no_secret_value_reaches_the_scaled_yaml(tmp_path, monkeypatch):
    for key, value in FAKE_SECRETS.items():
        monkeypatch.setenv(key, value)
    compile_with(tmp_path, "adapt-then-ner", CONFIG)
    text = (tmp_path / "out.yaml").read_text(encoding="utf-8")
    assert ENV in text
    for value in FAKE_SECRETS.values():
        assert value not in text


def test_one_node_is_byte_identical_to_not_saying_nodes(tmp_path):
    base = ["--set", f"cluster.image={IMAGE}", "--set", "cluster.pipeline_root=s3://b/p"]
    default, explicit = tmp_path / "default.yaml", tmp_path / "explicit.yaml"
    for out, extra in (
        (default, []),
        (explicit, ["--set", "cluster.train.nodes=1", "--set", "cluster.train.engine=pytorchjob"]),
    ):
        result = run_cli("compile", "adapt-then-ner", "-o", str(out), *base, *extra)
        assert result.returncode == 0, result.stderr
    assert default.read_bytes() == explicit.read_bytes()
    assert ENV.encode() not in default.read_bytes()


BAD = [
    (["cluster.data.nodes=2"], "cluster.data.nodes"),
    (["cluster.train.nodes=0"], "cluster.train.nodes"),
    (["cluster.train.engine=mpijob"], "cluster.train.engine"),
    (["cluster.train.nodes=2", "cluster.train.gpus=0"], "cluster.train.gpus"),
    (["cluster.train.nodes=2", "cluster.pipeline_root=gs://bucket/p"], "cluster.pipeline_root"),
    (["cluster.train.nodes=2", "cluster.pipeline_root="], "cluster.pipeline_root"),
    (["cluster.train.nodes=2", "cluster.s3_secret="], "cluster.s3_secret"),
    (["cluster.train.nodes=2", "cluster.train_stages=[train-mlm,evaluate]"], "cluster.train_stages"),
    (["cluster.train.runtime=Torch_Distributed"], "cluster.train.runtime"),
    (["cluster.train.start_timeout=soon"], "cluster.train.start_timeout"),
    (["cluster.train.ttl_after_finished=1w"], "cluster.train.ttl_after_finished"),
    (["cluster.train.cleanup=sometimes"], "cluster.train.cleanup"),
]


@pytest.mark.parametrize(("overrides", "key"), BAD, ids=[" ".join(o) for o, _ in BAD])
def test_bad_scale_out_settings_fail_compile_in_one_line(overrides, key, tmp_path):
    out = tmp_path / "mlm.yaml"
    args = [word for kv in overrides for word in ("--set", kv)]
    result = run_cli("compile", "mlm-adapt", "-o", str(out), "--set", f"cluster.image={IMAGE}", *args)
    one_error_line(result, key)
    assert result.returncode == 2
    assert not out.exists()


def test_the_scale_out_stages_are_the_training_stages():
    assert {s.name for s in stages.by_name().values() if s.trains} == set(TRAIN_STAGES)
