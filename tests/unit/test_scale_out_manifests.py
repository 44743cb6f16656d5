"""The jobs a launcher creates: TrainJob and PyTorchJob manifests checked by the APIs' own models (Kubeflow
Trainer 2.3.0, Training Operator 1.9.4), stable DNS-label names, a torchrun command that leaves the node layout
to the engine, and secrets by name only."""

from __future__ import annotations

import copy
import dataclasses
import json
import re

import pytest
from kubeflow.training.models import KubeflowOrgV1PyTorchJob
from kubeflow_trainer_api.models import TrainerV1alpha1TrainJob

from kfnlp.errors import ConfigError
from kfnlp.launch.scale_out import manifests
from kfnlp.launch.scale_out.spec import ENV, ScaleOut, from_env

DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
OUTPUT = "s3://mlpipeline/v2/artifacts/mlm-adapt/0b6e4c1e-run/train-mlm/a1b2c3/model"
SECRET_VALUE = "fake-secret-kfnlp-9f8e7d6c5b4a"
SPEC = ScaleOut(
    nodes=4,
    gpus_per_node=8,
    engine="trainjob",
    runtime="torch-distributed",
    image="registry.example.com/kfnlp@sha256:" + "0" * 64,
    image_pull_secret="kfnlp-pull",
    cpu_request="16",
    cpu_limit="32",
    memory_request="64Gi",
    memory_limit="128Gi",
    node_selector={"pool": "h100"},
    tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    shm_size="16Gi",
    secrets=[
        {"secret": "team-s3", "keys": {"AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID"}, "optional": False},
        {"secret": "team-s3", "keys": {"AWS_ENDPOINT_URL_S3": "AWS_ENDPOINT_URL_S3"}, "optional": True},
        {"secret": "team-hf", "keys": {"HF_TOKEN": "HF_TOKEN"}, "optional": False},
    ],
    ttl_after_finished_s=3600,
)
OWNER = {"apiVersion": "v1", "kind": "Pod", "name": "launcher-pod", "uid": "0f0e-uid", "blockOwnerDeletion": True}
COMMAND = manifests.node_command(
    "train-mlm", {"dataset": "s3://b/ds", "base_model": "s3://b/base"}, "s3://b/model-job", '{"max_steps": 10}'
)


def build(engine: str, **changes) -> dict:
    spec = dataclasses.replace(SPEC, engine=engine, **changes)
    return manifests.build(
        spec, manifests.job_name("train-mlm", OUTPUT), COMMAND, {"kfnlp-stage": "train-mlm"}, [OWNER]
    )


def node_pod(manifest: dict) -> tuple[dict, dict]:
    """(pod template, trainer container or container patch) of either kind."""
    if manifest["kind"] == "TrainJob":
        patch = manifest["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]
        pod = patch["replicatedJobs"][0]["template"]["spec"]["template"]
        return pod, pod["spec"]["containers"][0]
    pod = manifest["spec"]["pytorchReplicaSpecs"]["Master"]["template"]
    return pod, pod["spec"]["containers"][0]


def test_trainjob_is_what_the_trainer_api_models_read():
    manifest = build("trainjob")
    parsed = TrainerV1alpha1TrainJob.from_dict(manifest)
    assert parsed.to_dict() == manifest  # nothing dropped, nothing coerced
    assert (manifest["apiVersion"], manifest["kind"]) == ("trainer.kubeflow.org/v1alpha1", "TrainJob")
    trainer = parsed.spec.trainer
    assert (trainer.num_nodes, trainer.num_proc_per_node, trainer.image) == (4, 8, SPEC.image)
    assert trainer.command == COMMAND
    resources = manifest["spec"]["trainer"]["resourcesPerNode"]
    assert resources == {
        "requests": {"cpu": "16", "memory": "64Gi"},
        "limits": {"cpu": "32", "memory": "128Gi", "nvidia.com/gpu": "8"},
    }
    assert manifest["spec"]["runtimeRef"] == {
        "apiGroup": "trainer.kubeflow.org",
        "kind": "ClusterTrainingRuntime",
        "name": "torch-distributed",
    }
    pod, container = node_pod(manifest)
    assert manifest["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0][
        "name"
    ] == ("node")
    assert container == {"name": "node", "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}]}
    assert pod["metadata"]["labels"] == {"kfnlp-stage": "train-mlm"}
    assert pod["spec"]["nodeSelector"] == {"pool": "h100"}
    assert pod["spec"]["tolerations"] == SPEC.tolerations
    assert pod["spec"]["imagePullSecrets"] == [{"name": "kfnlp-pull"}]
    assert pod["spec"]["volumes"] == [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "16Gi"}}]
    assert manifest["metadata"]["ownerReferences"] == [OWNER]
    # the torch plugin sets these and refuses them in trainer.env
    assert not {e["name"] for e in manifest["spec"]["trainer"]["env"]} & {
        "PET_NNODES",
        "PET_NPROC_PER_NODE",
        "PET_NODE_RANK",
        "PET_MASTER_ADDR",
        "PET_MASTER_PORT",
    }


def test_a_namespaced_runtime_is_referenced_by_its_kind():
    spec = dataclasses.replace(SPEC)
    manifest = manifests.build(spec, "kfnlp-x-0", COMMAND, {}, [], runtime_kind="TrainingRuntime")
    assert manifest["spec"]["runtimeRef"]["kind"] == "TrainingRuntime"
    assert "ownerReferences" not in manifest["metadata"]


def test_pytorchjob_is_what_the_training_operator_models_read():
    manifest = build("pytorchjob")
    assert (manifest["apiVersion"], manifest["kind"]) == ("kubeflow.org/v1", "PyTorchJob")
    spec = manifest["spec"]
    assert spec["nprocPerNode"] == "8"
    assert {k: v["replicas"] for k, v in spec["pytorchReplicaSpecs"].items()} == {"Master": 1, "Worker": 3}
    assert {v["restartPolicy"] for v in spec["pytorchReplicaSpecs"].values()} == {"Never"}
    assert spec["runPolicy"] == {"backoffLimit": 0, "ttlSecondsAfterFinished": 3600}
    pod, container = node_pod(manifest)
    assert container["name"] == "pytorch" and container["image"] == SPEC.image and container["command"] == COMMAND
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "8"
    assert container["volumeMounts"] == [{"name": "dshm", "mountPath": "/dev/shm"}]
    assert pod["spec"]["volumes"][0]["emptyDir"] == {"medium": "Memory", "sizeLimit": "16Gi"}
    # the kubeflow-training client's own deserializer reads it too (it ignores unknown keys: the strict
    # check is manifests.validate_pytorchjob, below)
    from kubeflow.training import ApiClient

    job = ApiClient()._ApiClient__deserialize(manifest, KubeflowOrgV1PyTorchJob)
    assert job.spec.pytorch_replica_specs["Worker"].replicas == 3


def test_no_ttl_means_no_ttl_field():
    assert "ttlSecondsAfterFinished" not in build("pytorchjob", ttl_after_finished_s=0)["spec"]["runPolicy"]


@pytest.mark.parametrize("engine", ["trainjob", "pytorchjob"])
def test_secrets_reach_the_nodes_by_name_only(engine, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_VALUE)
    manifest = build(engine)
    env = manifest["spec"]["trainer"]["env"] if engine == "trainjob" else node_pod(manifest)[1]["env"]
    assert env == [
        {"name": "AWS_ACCESS_KEY_ID", "valueFrom": {"secretKeyRef": {"name": "team-s3", "key": "AWS_ACCESS_KEY_ID"}}},
        {
            "name": "AWS_ENDPOINT_URL_S3",
            "valueFrom": {"secretKeyRef": {"name": "team-s3", "key": "AWS_ENDPOINT_URL_S3", "optional": True}},
        },
        {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "team-hf", "key": "HF_TOKEN"}}},
    ]
    assert all("value" not in e for e in env)
    assert SECRET_VALUE not in json.dumps(manifest) and SECRET_VALUE not in SPEC.to_json()


# --- the validation really refuses ------------------------------------------------------------------------


def test_a_mistyped_trainjob_field_is_refused():
    manifest = build("trainjob")
    manifests.validate_trainjob(manifest)
    misspelled = copy.deepcopy(manifest)
    misspelled["spec"]["trainer"]["numNode"] = misspelled["spec"]["trainer"].pop("numNodes")
    with pytest.raises(ConfigError, match=r"unknown or mistyped field \.spec\.trainer\.numNode$"):
        manifests.validate_trainjob(misspelled)
    old_name = copy.deepcopy(manifest)  # the pre-2.3 spelling of pod settings
    old_name["spec"]["podSpecOverrides"] = [{"targetJobs": [{"name": "node"}]}]
    with pytest.raises(ConfigError, match=r"\.spec\.podSpecOverrides"):
        manifests.validate_trainjob(old_name)
    wrong_type = copy.deepcopy(manifest)
    wrong_type["spec"]["trainer"]["numProcPerNode"] = "8"
    with pytest.raises(ConfigError, match="numProcPerNode: Input should be a valid integer"):
        manifests.validate_trainjob(wrong_type)
    deep = copy.deepcopy(manifest)
    node_pod(deep)[0]["spec"]["tolerations"][0]["efect"] = "NoSchedule"
    with pytest.raises(ConfigError, match=r"tolerations\[0\]\.efect"):
        manifests.validate_trainjob(deep)


def test_a_mistyped_pytorchjob_field_is_refused():
    manifest = build("pytorchjob")
    manifests.validate_pytorchjob(manifest)
    misspelled = copy.deepcopy(manifest)
    misspelled["spec"]["nProcPerNode"] = misspelled["spec"].pop("nprocPerNode")
    with pytest.raises(ConfigError, match=r"\.spec\.nProcPerNode: unknown field of KubeflowOrgV1PyTorchJobSpec"):
        manifests.validate_pytorchjob(misspelled)
    wrong_type = copy.deepcopy(manifest)
    wrong_type["spec"]["pytorchReplicaSpecs"]["Worker"]["replicas"] = "3"
    with pytest.raises(ConfigError, match=r"Worker\.replicas: expected int"):
        manifests.validate_pytorchjob(wrong_type)
    deep = copy.deepcopy(manifest)
    node_pod(deep)[1]["volumeMounts"][0]["mountpath"] = node_pod(deep)[1]["volumeMounts"][0].pop("mountPath")
    with pytest.raises(ConfigError, match=r"volumeMounts\[0\]\.mountpath: unknown field of V1VolumeMount"):
        manifests.validate_pytorchjob(deep)
    nameless = copy.deepcopy(manifest)
    del node_pod(nameless)[1]["name"]
    with pytest.raises(ConfigError, match=r"containers\[0\]: Invalid value for `name`, must not be `None`"):
        manifests.validate_pytorchjob(nameless)


# --- names, commands, pods --------------------------------------------------------------------------------


def test_job_name_is_a_stable_dns_label():
    name = manifests.job_name("train-mlm", OUTPUT)
    assert name == manifests.job_name("train-mlm", OUTPUT)  # a retried launcher finds its job
    assert name != manifests.job_name("train-mlm", OUTPUT.replace("a1b2c3", "a1b2c4"))
    assert re.fullmatch(r"kfnlp-train-mlm-[0-9a-f]{10}", name)
    long = manifests.job_name("Train_" + "x" * 100, OUTPUT)
    for candidate in (name, long, manifests.job_name("-", "")):
        assert len(candidate) <= 63 and DNS_1035.match(candidate), candidate


def test_node_command_leaves_the_node_layout_to_the_engine():
    assert COMMAND[:5] == ["torchrun", "-m", "kfnlp", "stage", "train-mlm"]
    assert COMMAND[5:] == [
        "--dataset",
        "s3://b/ds",
        "--base-model",
        "s3://b/base",
        "--output",
        "s3://b/model-job",
        "--config-json",
        '{"max_steps": 10}',
    ]
    flags = {word.split("=")[0].replace("_", "-") for word in COMMAND if word.startswith("--")}
    assert not flags & {"--nnodes", "--node-rank", "--master-addr", "--master-port", "--nproc-per-node"}


def test_pods_and_rank_zero_are_found_by_the_engines_labels():
    trainjob, pytorchjob = SPEC, dataclasses.replace(SPEC, engine="pytorchjob")
    assert manifests.pod_selector(trainjob, "j") == "jobset.sigs.k8s.io/jobset-name=j"
    assert manifests.pod_selector(pytorchjob, "j") == "training.kubeflow.org/job-name=j"
    assert "batch.kubernetes.io/job-completion-index=0" in manifests.rank0_selector(trainjob, "j")
    assert "training.kubeflow.org/replica-type=master" in manifests.rank0_selector(pytorchjob, "j")
    assert (
        manifests.node_index(trainjob, {"metadata": {"labels": {"batch.kubernetes.io/job-completion-index": "2"}}}) == 2
    )
    worker = {"training.kubeflow.org/replica-type": "worker", "training.kubeflow.org/replica-index": "0"}
    assert manifests.node_index(pytorchjob, {"metadata": {"labels": worker}}) == 1
    assert manifests.node_index(pytorchjob, {"metadata": {}}) is None
    assert (manifests.container_name(trainjob), manifests.container_name(pytorchjob)) == ("node", "pytorch")
    assert (manifests.engine(trainjob).plural, manifests.engine(pytorchjob).plural) == ("trainjobs", "pytorchjobs")


# --- the spec travels as JSON ----------------------------------------------------------------------------


def test_spec_round_trips_through_the_env(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    assert from_env() is None
    monkeypatch.setenv(ENV, SPEC.to_json())
    assert from_env() == SPEC
    with pytest.raises(ConfigError, match="unknown keys colour"):
        ScaleOut.from_json(json.dumps({**json.loads(SPEC.to_json()), "colour": "red"}))
    with pytest.raises(ConfigError, match="not JSON"):
        ScaleOut.from_json("{")
    with pytest.raises(ConfigError, match="unknown engine 'mpijob'"):
        dataclasses.replace(SPEC, engine="mpijob")
    with pytest.raises(ConfigError, match="at least 2 nodes with at least 1 GPU"):
        dataclasses.replace(SPEC, gpus_per_node=0)
