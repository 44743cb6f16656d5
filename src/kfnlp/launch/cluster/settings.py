"""Cluster settings for ``kfnlp compile``: the ``cluster:`` section of a kfnlp config.

They live apart from the pipeline's stage config because they describe where the
pipeline runs (image, pods, secrets), not what it computes: the compiled stage
parameters stay the same on every cluster, and pipeline configs stay valid for
``kfnlp run --local``. Validation happens here, once, so a bad value is reported
by its key before anything is compiled. The table in docs/cluster.md is generated
from these classes (``python -m kfnlp.docs``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

from kfnlp.api_models import parse_toleration
from kfnlp.config import build, deep_merge, option, to_dict
from kfnlp.errors import ConfigError

SECTION = "cluster"


def stage_names(**flags: bool) -> list[str]:
    """The stages (component names) whose :class:`~kfnlp.stages.entry.Stage` entry has ``flags``
    (e.g. ``hub=True``), in pipeline order. Which secrets a stage gets follows from what it
    touches: all stages move artifacts under the pipeline root, some load models or
    tokenizers by reference (the Hub), and some talk to the model registry."""
    from kfnlp import stages

    return [s.name for s in stages.by_name().values() if all(getattr(s, k) == v for k, v in flags.items())]


# secret key -> env var; required keys must exist in the secret, optional ones may not
S3_KEYS = {"AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY"}
S3_OPTIONAL_KEYS = {"AWS_ENDPOINT_URL_S3": "AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_REGION": "AWS_DEFAULT_REGION"}
HF_KEYS = {"HF_TOKEN": "HF_TOKEN"}
REGISTRY_OPTIONAL_KEYS = {
    k: k
    for k in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")
}

PIPELINE_ROOT_SCHEMES = ("s3", "minio", "gs")
SHARED_ROOT_SCHEMES = ("s3", "minio")  # what the nodes of a scale-out job read and write (pods share no volume)
TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")

# distribution/reference grammar; a tag or a sha256 digest is required (no implicit :latest)
_DOMAIN = r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::[0-9]+)?"
_PATH = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
IMAGE_REF = re.compile(
    rf"^(?:{_DOMAIN}/)?{_PATH}(?:/{_PATH})*(?P<tag>:[\w][\w.-]{{0,127}})?(?P<digest>@sha256:[0-9a-f]{{64}})?$"
)
CPU = re.compile(r"^(?:[0-9]*\.)?[0-9]+m?$")  # what kfp's set_cpu_* accept
MEMORY = re.compile(r"^[0-9]+(?:E|Ei|P|Pi|T|Ti|G|Gi|M|Mi|K|Ki)?$")  # what kfp's set_memory_* accept
DURATION = re.compile(r"^[0-9]+[smhd]$")
SECRET_NAME = re.compile(r"^[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*$")
LABEL_KEY = re.compile(r"^(?:[a-z0-9](?:[-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?$")
LABEL_VALUE = re.compile(r"^(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")
DURATION_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}
UNITS = {"": 1, "m": 1e-3, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18}
UNITS.update({k + "i": 1024 ** "KMGTPE".index(k[0]) * 1024 for k in "KMGTPE"})


@dataclass
class StageProfile:
    """Pod settings for one kind of stage."""

    cpu_request: str = option("1", 'CPU cores reserved for the pod (e.g. 500m, 2); "" leaves it unset')
    cpu_limit: str = option("4", 'CPU cores the pod may use at most; "" for no limit')
    memory_request: str = option("4Gi", 'memory reserved for the pod (e.g. 512Mi, 8Gi); "" leaves it unset')
    memory_limit: str = option("8Gi", 'memory the pod may use at most (includes /dev/shm); "" for no limit')
    gpus: int = option(0, "GPUs per pod, of the type cluster.gpu_resource; 0 for none")
    node_selector: list[str] = option(default_factory=list, help="node labels the pod must match, as KEY=VALUE")
    tolerations: list[str] = option(default_factory=list, help="node taints the pod tolerates, as KEY[=VALUE][:EFFECT]")
    shm_size: str = option(
        "",
        'size of a memory-backed emptyDir at /dev/shm (DataLoader workers need it); "" for none',
    )
    retries: int = option(0, "times KFP reruns a failed task (with the cluster.retry_backoff* delays)")
    nodes: int = option(
        1,
        "pods (nodes) a train stage spans, each with `gpus` GPUs and processes (train profile only); above 1 "
        "the task becomes a CPU launcher that runs the stage as a TrainJob or PyTorchJob (needs an s3:// or "
        "minio:// pipeline_root and cluster.s3_secret)",
    )
    engine: Literal["trainjob", "pytorchjob"] = option(
        "trainjob",
        "with nodes > 1: Kubeflow Trainer v2.3's TrainJob (trainer.kubeflow.org/v1alpha1) or the Training "
        "Operator v1.9's PyTorchJob (kubeflow.org/v1)",
    )
    runtime: str = option(
        "torch-distributed", "with engine trainjob: the ClusterTrainingRuntime (or TrainingRuntime) to run on"
    )
    start_timeout: str = option(
        "20m", "with nodes > 1: how long the job may wait for all its nodes to run before it is deleted and fails"
    )
    cleanup: Literal["on-success", "always", "never"] = option(
        "on-success",
        "with nodes > 1: which ended jobs the launcher deletes (on-success keeps a failed one for kubectl describe)",
    )
    ttl_after_finished: str = option(
        "1d",
        "with engine pytorchjob: the operator deletes an ended job this long after (runPolicy."
        'ttlSecondsAfterFinished); "" for never',
    )


def _train_profile() -> StageProfile:
    return StageProfile(
        cpu_request="4",
        cpu_limit="8",
        memory_request="16Gi",
        memory_limit="32Gi",
        gpus=1,
        tolerations=["nvidia.com/gpu:NoSchedule"],
        shm_size="2Gi",
        retries=2,
    )


@dataclass
class ClusterConfig:
    """Where and how the compiled pipeline runs on Kubernetes."""

    image: str = option(
        "",
        help="runtime image of every stage, your own build (docs/cluster.md#image): REGISTRY/REPO@sha256:DIGEST, "
        "or REGISTRY/REPO:TAG (a warning: a tag can move); default $KFNLP_IMAGE; required to compile",
    )
    image_pull_secret: str = option("", 'docker-registry secret for a private registry; "" for none')
    pipeline_root: str = option(
        "minio://mlpipeline/v2/artifacts",
        'where KFP stores artifacts (s3://, minio:// or gs://BUCKET/PATH); "" for the KFP deployment\'s default',
    )
    s3_secret: str = option(
        "kfnlp-s3",
        "secret whose AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (optional: AWS_ENDPOINT_URL_S3, "
        'AWS_DEFAULT_REGION) become env vars of every stage; "" for none',
    )
    hf_token_secret: str = option("", "secret whose HF_TOKEN becomes env HF_TOKEN of stages that load from the Hub")
    registry_secret: str = option(
        "",
        "secret with MLFLOW_TRACKING_URI/_USERNAME/_PASSWORD/_TOKEN (each optional) for register and "
        'promote; "" for none',
    )
    gpu_resource: str = option("nvidia.com/gpu", "extended resource name of a GPU")
    train_stages: list[str] = option(
        default_factory=lambda: stage_names(trains=True),
        help="stages that use the train profile; all others use the data profile",
    )
    cache_stages: list[str] = option(
        default_factory=lambda: stage_names(cache=True),
        help="stages KFP may serve from its cache (the cache key includes the image); training, register and "
        "promote always run",
    )
    retry_backoff: str = option("60s", "wait before the first retry (s, m, h or d)")
    retry_backoff_factor: float = option(2.0, "each further retry waits this many times longer")
    retry_backoff_max: str = option("1h", "retries stop this long after the first failure")
    data: StageProfile = field(default_factory=StageProfile)
    train: StageProfile = field(default_factory=_train_profile)

    def __post_init__(self):
        if self.image:  # required only to compile (compile.require_image)
            check_image(self.image, f"{SECTION}.image")
        check_pipeline_root(self.pipeline_root, f"{SECTION}.pipeline_root")
        for name in ("image_pull_secret", "s3_secret", "hf_token_secret", "registry_secret"):
            check_secret_name(getattr(self, name), f"{SECTION}.{name}")
        if not self.gpu_resource.strip():
            raise ConfigError(f"{SECTION}.gpu_resource: must not be empty", f"{SECTION}.gpu_resource")
        known = stage_names()
        for name in ("train_stages", "cache_stages"):
            for stage in getattr(self, name):
                if stage not in known:
                    raise ConfigError(
                        f"{SECTION}.{name}: unknown stage {stage!r}; stages: {', '.join(known)}",
                        f"{SECTION}.{name}",
                    )
        for name in ("retry_backoff", "retry_backoff_max"):
            if not DURATION.match(getattr(self, name)):
                raise ConfigError(
                    f"{SECTION}.{name}: expected a duration like 30s, 5m or 1h, got {getattr(self, name)!r}",
                    f"{SECTION}.{name}",
                )
        if self.retry_backoff_factor < 1:
            raise ConfigError(
                f"{SECTION}.retry_backoff_factor: expected a number >= 1, got {self.retry_backoff_factor}",
                f"{SECTION}.retry_backoff_factor",
            )
        check_profile(self.data, f"{SECTION}.data")
        check_profile(self.train, f"{SECTION}.train")
        check_scale_out(self)

    def profile(self, stage: str) -> StageProfile:
        return self.train if stage in self.train_stages else self.data


def check_image(image: str, key: str) -> None:
    match = IMAGE_REF.match(image)
    if not match:
        raise ConfigError(
            f"{key}: {image!r} is not an image reference like REGISTRY/REPOSITORY:TAG or REGISTRY/REPOSITORY@sha256:DIGEST",
            key,
        )
    if not match.group("tag") and not match.group("digest"):
        raise ConfigError(f"{key}: {image!r} has no tag or digest; pin one (:TAG or @sha256:DIGEST)", key)


def check_pipeline_root(root: str, key: str) -> None:
    if not root:
        return
    parts = urlsplit(root)
    if parts.scheme not in PIPELINE_ROOT_SCHEMES or not parts.netloc:
        schemes = ", ".join(f"{s}://BUCKET/PATH" for s in PIPELINE_ROOT_SCHEMES)
        raise ConfigError(f"{key}: expected {schemes} (or empty), got {root!r}", key)


def check_secret_name(name: str, key: str) -> None:
    if name and (len(name) > 253 or not SECRET_NAME.match(name)):
        raise ConfigError(f"{key}: {name!r} is not a Kubernetes secret name (lowercase letters, digits, - and .)", key)


def quantity(text: str) -> float:
    """A Kubernetes CPU or memory quantity as a number (for request <= limit)."""
    number, unit = re.match(r"^([0-9.]+)(.*)$", text).groups()
    return float(number) * UNITS[unit]


def parse_label(text: str) -> tuple[str, str]:
    key, _, value = text.partition("=")
    return key, value


def check_profile(p: StageProfile, where: str) -> None:
    for name, pattern, example in (
        ("cpu_request", CPU, "500m or 2"),
        ("cpu_limit", CPU, "500m or 2"),
        ("memory_request", MEMORY, "512Mi or 8Gi"),
        ("memory_limit", MEMORY, "512Mi or 8Gi"),
        ("shm_size", MEMORY, "1Gi"),
    ):
        value = getattr(p, name)
        if value and not pattern.match(value):
            raise ConfigError(f"{where}.{name}: expected a quantity like {example}, got {value!r}", f"{where}.{name}")
    for kind in ("cpu", "memory"):
        request, limit = getattr(p, f"{kind}_request"), getattr(p, f"{kind}_limit")
        if request and limit and quantity(request) > quantity(limit):
            key = f"{where}.{kind}_request"
            raise ConfigError(f"{key}: {request} is more than {kind}_limit {limit}", key)
    for name in ("gpus", "retries"):
        if getattr(p, name) < 0:
            key = f"{where}.{name}"
            raise ConfigError(f"{key}: expected an integer >= 0, got {getattr(p, name)}", key)
    if p.nodes < 1:
        raise ConfigError(f"{where}.nodes: expected an integer >= 1, got {p.nodes}", f"{where}.nodes")
    for name in ("start_timeout", "ttl_after_finished"):
        value = getattr(p, name)
        if (value or name == "start_timeout") and not DURATION.match(value):
            key = f"{where}.{name}"
            raise ConfigError(f"{key}: expected a duration like 30s, 20m, 1h or 1d, got {value!r}", key)
    if not SECRET_NAME.match(p.runtime) or len(p.runtime) > 253:
        key = f"{where}.runtime"
        raise ConfigError(
            f"{key}: {p.runtime!r} is not a Kubernetes object name (lowercase letters, digits, - and .)", key
        )
    for i, item in enumerate(p.node_selector):
        key, value = parse_label(item)
        if "=" not in item or not LABEL_KEY.match(key) or not LABEL_VALUE.match(value):
            raise ConfigError(
                f"{where}.node_selector[{i}]: expected a node label as KEY=VALUE, got {item!r}",
                f"{where}.node_selector",
            )
    for i, item in enumerate(p.tolerations):
        t = parse_toleration(item)
        bad_effect = "effect" in t and t["effect"] not in TAINT_EFFECTS
        if not LABEL_KEY.match(t["key"]) or not LABEL_VALUE.match(t.get("value", "")) or bad_effect:
            raise ConfigError(
                f"{where}.tolerations[{i}]: expected KEY[=VALUE][:EFFECT] with EFFECT one of "
                f"{', '.join(TAINT_EFFECTS)}, got {item!r}",
                f"{where}.tolerations",
            )


def duration_seconds(text: str) -> int:
    """A checked duration (``30s``, ``5m``, ``1h``, ``2d``) in seconds."""
    return int(text[:-1]) * DURATION_S[text[-1]]


def check_scale_out(cluster: ClusterConfig) -> None:
    """Only training spans nodes, with GPUs, and its nodes need a shared store for inputs and outputs."""
    if cluster.data.nodes > 1:
        key = f"{SECTION}.data.nodes"
        raise ConfigError(f"{key}: only the train profile spans nodes; got {cluster.data.nodes}", key)
    if cluster.train.nodes == 1:
        return
    where = f"{SECTION}.train"
    if cluster.train.gpus == 0:
        raise ConfigError(
            f"{where}.gpus: nodes {cluster.train.nodes} needs at least 1 GPU per node, got 0", f"{where}.gpus"
        )
    not_training = [s for s in cluster.train_stages if s not in stage_names(trains=True)]
    if not_training:
        key = f"{SECTION}.train_stages"
        raise ConfigError(
            f"{key}: {not_training[0]} cannot span nodes ({where}.nodes {cluster.train.nodes}); only "
            f"{', '.join(stage_names(trains=True))} can",
            key,
        )
    if urlsplit(cluster.pipeline_root).scheme not in SHARED_ROOT_SCHEMES:
        key = f"{SECTION}.pipeline_root"
        raise ConfigError(
            f"{key}: {where}.nodes {cluster.train.nodes} needs an s3:// or minio:// pipeline root, which every "
            f"node reads and writes (pods share no volume), got {cluster.pipeline_root or 'the deployment default'!r}",
            key,
        )
    if not cluster.s3_secret:
        key = f"{SECTION}.s3_secret"
        raise ConfigError(
            f"{key}: {where}.nodes {cluster.train.nodes} needs the S3 secret that gives every node the pipeline root",
            key,
        )


def load_cluster(data: Any = None, image: str = "") -> ClusterConfig:
    """The ``cluster:`` mapping over the defaults, validated; ``image`` when it names none (the
    CLI passes ``$KFNLP_IMAGE``). A profile section is merged key by key over that profile's own
    defaults (``train: {gpus: 2}`` keeps the train tolerations), which a plain dataclass build
    would replace with StageProfile's."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{SECTION}: expected a mapping of keys, got {data!r}", SECTION)
    data = {"image": image, **data}
    for name, factory in (("data", StageProfile), ("train", _train_profile)):
        if isinstance(data.get(name), dict):
            data[name] = deep_merge(to_dict(factory()), data[name])
    return build(ClusterConfig, data, SECTION)
