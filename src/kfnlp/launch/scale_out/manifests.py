"""The job a launcher pod creates: a Kubeflow Trainer ``TrainJob`` or a Training Operator ``PyTorchJob``.

Every manifest is checked against the API's own models before it leaves here (the ``kubeflow-trainer-api``
2.3.0 models for TrainJob, the ``kubeflow-training`` 1.9.4 models for PyTorchJob): an unknown or mistyped
field is a :class:`~kfnlp.errors.ConfigError` at compile time, not a rejection by a cluster hours later.

API facts this module relies on (read in the projects' sources):

- Trainer v2.3 (``kubeflow/trainer``): ``TrainJob.spec`` has ``runtimeRef``, ``trainer`` (image, command, env,
  numNodes, numProcPerNode, resourcesPerNode) and ``runtimePatches`` (``manager`` + ``trainingRuntimeSpec.template
  .spec.replicatedJobs[name].template.spec.template``: pod labels, nodeSelector, tolerations, volumes,
  imagePullSecrets, per-container volumeMounts; env of the ``node`` container only through ``trainer.env``).
  The torch plugin (``pkg/runtime/framework/plugins/torch/torch.go``) sets ``PET_NNODES``,
  ``PET_NPROC_PER_NODE``, ``PET_NODE_RANK`` (the Job completion index), ``PET_MASTER_ADDR``
  (``NAME-node-0-0.NAME``) and ``PET_MASTER_PORT`` and refuses them in ``trainer.env``; the trainer runs in the
  replicated job and container named ``node`` (``pkg/constants``). Pods carry the JobSet labels
  (``kubernetes-sigs/jobset`` ``api/jobset/v1alpha2/jobset_types.go``): ``jobset.sigs.k8s.io/jobset-name`` (the
  JobSet has the TrainJob's name), ``jobset.sigs.k8s.io/replicatedjob-name``, ``jobset.sigs.k8s.io/job-index``,
  and the Indexed Job's ``batch.kubernetes.io/job-completion-index``: node rank 0 is job 0, completion index 0.
  TrainJob has no TTL field in v2.3 (the runtime's JobSet may have one).
- Training Operator v1.9 (``kubeflow/training-operator`` ``pkg/controller.v1/pytorch/envvar.go``): with a
  ``Master`` replica and no elastic policy the operator sets ``PET_NPROC_PER_NODE`` (``spec.nprocPerNode``),
  ``PET_NODE_RANK`` (master 0, worker i -> i + 1), ``PET_NNODES`` and the master's address and port; the
  container must be named ``pytorch``. Pods are labelled ``training.kubeflow.org/job-name``,
  ``training.kubeflow.org/replica-type`` (lowercase: ``master``, ``worker``) and
  ``training.kubeflow.org/replica-index``: rank 0 is the master, index 0.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

from kfnlp import api_models
from kfnlp.errors import ConfigError
from kfnlp.launch.scale_out.spec import ScaleOut

SHM_VOLUME = "dshm"
PATCH_MANAGER = "kfnlp/launcher"
TRAINJOB_CONTAINER = "node"  # the runtime's replicated job and container that run the trainer
PYTORCHJOB_CONTAINER = "pytorch"  # the container name the Training Operator requires
MAX_NAME = 63  # a DNS-1035 label: the job's pods and services derive their names from it


@dataclass(frozen=True)
class Engine:
    """Where a kind of job lives in the API and how its pods are found."""

    group: str
    version: str
    kind: str
    plural: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}"


TRAINJOB = Engine("trainer.kubeflow.org", "v1alpha1", "TrainJob", "trainjobs")
PYTORCHJOB = Engine("kubeflow.org", "v1", "PyTorchJob", "pytorchjobs")
ENGINES = {"trainjob": TRAINJOB, "pytorchjob": PYTORCHJOB}

# the runtimes a TrainJob may name (runtimeRef.kind): looked up cluster-wide first, then in the namespace
RUNTIME_GROUP = "trainer.kubeflow.org"
CLUSTER_RUNTIME = ("ClusterTrainingRuntime", "clustertrainingruntimes")
NAMESPACED_RUNTIME = ("TrainingRuntime", "trainingruntimes")


def engine(spec: ScaleOut) -> Engine:
    return ENGINES[spec.engine]


def pod_selector(spec: ScaleOut, name: str) -> str:
    """The label selector of all the job's pods (every node, every restart)."""
    if spec.engine == "trainjob":
        return f"jobset.sigs.k8s.io/jobset-name={name}"
    return f"training.kubeflow.org/job-name={name}"


def rank0_selector(spec: ScaleOut, name: str) -> str:
    """The label selector of node rank 0's pod, whose log the launcher streams."""
    if spec.engine == "trainjob":
        return (
            f"jobset.sigs.k8s.io/jobset-name={name},jobset.sigs.k8s.io/replicatedjob-name={TRAINJOB_CONTAINER},"
            "jobset.sigs.k8s.io/job-index=0,batch.kubernetes.io/job-completion-index=0"
        )
    return f"training.kubeflow.org/job-name={name},training.kubeflow.org/replica-type=master"


def container_name(spec: ScaleOut) -> str:
    """The container that runs the trainer in each node's pod (for its log)."""
    return TRAINJOB_CONTAINER if spec.engine == "trainjob" else PYTORCHJOB_CONTAINER


def node_index(spec: ScaleOut, pod: dict[str, Any]) -> int | None:
    """Which node (0 = rank 0) a pod of the job is, from its labels; None if they do not say."""
    labels = (pod.get("metadata") or {}).get("labels") or {}
    try:
        if spec.engine == "trainjob":
            return int(labels["batch.kubernetes.io/job-completion-index"])
        index = int(labels["training.kubeflow.org/replica-index"])
        return index if labels.get("training.kubeflow.org/replica-type") == "master" else index + 1
    except (KeyError, ValueError):
        return None


def job_name(stage: str, output_uri: str) -> str:
    """``kfnlp-STAGE-HASH``: a DNS-1035 label of at most 63 characters, the same for every launcher pod of
    one task (the output URI holds the run and the task), so a retried launcher finds the job it started."""
    digest = hashlib.sha256(output_uri.encode("utf-8")).hexdigest()[:10]
    stem = re.sub(r"[^a-z0-9-]+", "-", stage.lower()).strip("-") or "stage"
    return f"kfnlp-{stem}"[: MAX_NAME - len(digest) - 1].rstrip("-") + f"-{digest}"


def node_command(stage: str, inputs: dict[str, str], output: str, config_json: str) -> list[str]:
    """What every node runs: torchrun with no --nnodes/--node-rank/--master-addr, which it takes from the
    ``PET_*`` variables the engine sets on each node."""
    command = ["torchrun", "-m", "kfnlp", "stage", stage]
    for name, uri in inputs.items():
        command += [f"--{name.replace('_', '-')}", uri]
    return command + ["--output", output, "--config-json", config_json]


def build(
    spec: ScaleOut,
    name: str,
    command: list[str],
    labels: dict[str, str],
    owners: list[dict[str, Any]],
    *,
    runtime_kind: str = CLUSTER_RUNTIME[0],
) -> dict[str, Any]:
    """The job's manifest for ``CustomObjectsApi.create_namespaced_custom_object``, validated by the API's
    models; ``runtime_kind``: ClusterTrainingRuntime or TrainingRuntime (TrainJob only)."""
    metadata: dict[str, Any] = {"name": name, "labels": dict(labels)}
    if owners:
        metadata["ownerReferences"] = [dict(o) for o in owners]
    if spec.engine == "trainjob":
        manifest = _trainjob(spec, metadata, command, labels, runtime_kind)
        validate_trainjob(manifest)
    else:
        manifest = _pytorchjob(spec, metadata, command, labels)
        validate_pytorchjob(manifest)
    return manifest


def _resources(spec: ScaleOut) -> dict[str, dict[str, str]]:
    requests = {k: v for k, v in (("cpu", spec.cpu_request), ("memory", spec.memory_request)) if v}
    limits = {k: v for k, v in (("cpu", spec.cpu_limit), ("memory", spec.memory_limit)) if v}
    limits[spec.gpu_resource] = str(spec.gpus_per_node)
    return {"requests": requests, "limits": limits} if requests else {"limits": limits}


def _secret_env(spec: ScaleOut) -> list[dict[str, Any]]:
    """Each secret key as an env var read from the Secret by name on the node: no value leaves the Secret."""
    env = []
    for secret in spec.secrets:
        for key, var in secret["keys"].items():
            ref: dict[str, Any] = {"name": secret["secret"], "key": key}
            if secret.get("optional"):
                ref["optional"] = True
            env.append({"name": var, "valueFrom": {"secretKeyRef": ref}})
    return env


def _pod_settings(spec: ScaleOut) -> dict[str, Any]:
    """Scheduling, pull secret and the /dev/shm volume: the pod-level settings both engines share."""
    pod: dict[str, Any] = {}
    if spec.node_selector:
        pod["nodeSelector"] = dict(spec.node_selector)
    if spec.tolerations:
        pod["tolerations"] = [dict(t) for t in spec.tolerations]
    if spec.image_pull_secret:
        pod["imagePullSecrets"] = [{"name": spec.image_pull_secret}]
    if spec.shm_size:
        pod["volumes"] = [{"name": SHM_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": spec.shm_size}}]
    return pod


def _shm_mounts(spec: ScaleOut) -> list[dict[str, str]]:
    return [{"name": SHM_VOLUME, "mountPath": "/dev/shm"}] if spec.shm_size else []


def _trainjob(
    spec: ScaleOut, metadata: dict, command: list[str], labels: dict[str, str], runtime_kind: str
) -> dict[str, Any]:
    trainer: dict[str, Any] = {
        "image": spec.image,
        "command": list(command),
        "numNodes": spec.nodes,
        "numProcPerNode": spec.gpus_per_node,
        "resourcesPerNode": _resources(spec),
    }
    if spec.secrets:
        trainer["env"] = _secret_env(spec)
    pod_spec = _pod_settings(spec)
    if spec.shm_size:
        pod_spec["containers"] = [{"name": TRAINJOB_CONTAINER, "volumeMounts": _shm_mounts(spec)}]
    pod: dict[str, Any] = {"metadata": {"labels": dict(labels)}}
    if pod_spec:
        pod["spec"] = pod_spec
    node = {"name": TRAINJOB_CONTAINER, "template": {"spec": {"template": pod}}}
    return {
        "apiVersion": TRAINJOB.api_version,
        "kind": TRAINJOB.kind,
        "metadata": metadata,
        "spec": {
            "runtimeRef": {"apiGroup": RUNTIME_GROUP, "kind": runtime_kind, "name": spec.runtime},
            "trainer": trainer,
            "runtimePatches": [
                {
                    "manager": PATCH_MANAGER,
                    "trainingRuntimeSpec": {"template": {"spec": {"replicatedJobs": [node]}}},
                }
            ],
        },
    }


def _pytorchjob(spec: ScaleOut, metadata: dict, command: list[str], labels: dict[str, str]) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": PYTORCHJOB_CONTAINER,
        "image": spec.image,
        "command": list(command),
        "resources": _resources(spec),
    }
    if spec.secrets:
        container["env"] = _secret_env(spec)
    if spec.shm_size:
        container["volumeMounts"] = _shm_mounts(spec)
    template = {"metadata": {"labels": dict(labels)}, "spec": {"containers": [container], **_pod_settings(spec)}}
    # Never: a failed node fails the job, and the launcher's retry resumes every node from the S3 checkpoints
    replicas = {
        "Master": {"replicas": 1, "restartPolicy": "Never", "template": template},
        "Worker": {"replicas": spec.nodes - 1, "restartPolicy": "Never", "template": template},
    }
    run_policy: dict[str, Any] = {"backoffLimit": 0}
    if spec.ttl_after_finished_s:
        run_policy["ttlSecondsAfterFinished"] = spec.ttl_after_finished_s
    return {
        "apiVersion": PYTORCHJOB.api_version,
        "kind": PYTORCHJOB.kind,
        "metadata": metadata,
        "spec": {"nprocPerNode": str(spec.gpus_per_node), "pytorchReplicaSpecs": replicas, "runPolicy": run_policy},
    }


# --- validation by the APIs' own models -------------------------------------------------------------------


def validate_trainjob(manifest: dict[str, Any]) -> None:
    """Parse ``manifest`` with the Trainer API's (pydantic, strict-typed) models and refuse any field they
    drop or change: their ``from_dict`` ignores unknown keys, so a round trip is what finds them."""
    from kubeflow_trainer_api.models import TrainerV1alpha1TrainJob
    from pydantic import ValidationError

    try:
        parsed = TrainerV1alpha1TrainJob.from_dict(manifest).to_dict()
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"])
        raise ConfigError(
            f"TrainJob manifest refused by the Trainer API models: {exc.title} {where}: {error['msg']}, "
            f"got {error.get('input')!r}"
        ) from None
    except (ValueError, TypeError, AttributeError) as exc:  # a list or mapping where the model wants the other
        raise ConfigError(f"TrainJob manifest refused by the Trainer API models: {exc}") from None
    where = _difference(manifest, parsed, "")
    if where is not None:
        raise ConfigError(f"TrainJob manifest refused by the Trainer API models: unknown or mistyped field {where}")


def _difference(sent: Any, parsed: Any, path: str) -> str | None:
    """The first path where ``sent`` and what the models made of it differ."""
    if isinstance(sent, dict):
        if not isinstance(parsed, dict):
            return path or "."
        for key, value in sent.items():
            if key not in parsed:
                return f"{path}.{key}"
            found = _difference(value, parsed[key], f"{path}.{key}")
            if found:
                return found
        return None
    if isinstance(sent, list):
        if not isinstance(parsed, list) or len(parsed) != len(sent):
            return path
        for i, (a, b) in enumerate(zip(sent, parsed, strict=True)):
            found = _difference(a, b, f"{path}[{i}]")
            if found:
                return found
        return None
    return None if type(sent) is type(parsed) and sent == parsed else path


def validate_pytorchjob(manifest: dict[str, Any]) -> None:
    """Build ``manifest`` into the ``kubeflow-training`` models (nested Kubernetes models from the
    ``kubernetes`` client), key by key: unknown keys, wrong types and missing required fields are refused."""
    try:
        api_models.build(manifest, "KubeflowOrgV1PyTorchJob", _model_class)
    except ValueError as exc:
        raise ConfigError(f"PyTorchJob manifest refused by the Training Operator models: {exc}") from None


def _model_class(name: str):
    import kubernetes.client.models as k8s_models
    from kubeflow.training import models as training_models

    return api_models.finder(training_models, k8s_models)(name)
