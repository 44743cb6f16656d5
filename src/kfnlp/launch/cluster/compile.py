"""``kfnlp compile``: a pipeline as KFP v2 IR YAML for a Kubernetes cluster.

The pipeline modules stay free of cluster details (they also run under kfp.local).
Here the catalog's pipeline function is re-traced inside a wrapper pipeline that,
after the function has created its tasks, gives each task its image, resources,
GPUs, scheduling, secrets, retries and caching through the KFP and kfp-kubernetes
APIs, so the compiler itself writes the executor and platform specs. The image is
set per task (``set_container_image``) rather than through ``$KFNLP_IMAGE`` at
import time, so one process can compile for any image and nothing depends on
import order. The stage config is baked in as the parameters' defaults.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kfnlp import catalog
from kfnlp.api_models import parse_toleration
from kfnlp.assets import made_builtin
from kfnlp.catalog import PipelineEntry, pipeline_arguments
from kfnlp.config import fields_of_kind, to_dict
from kfnlp.errors import ConfigError
from kfnlp.launch.cluster.settings import (
    HF_KEYS,
    REGISTRY_OPTIONAL_KEYS,
    S3_KEYS,
    S3_OPTIONAL_KEYS,
    SECTION,
    ClusterConfig,
    duration_seconds,
    load_cluster,
    parse_label,
)
from kfnlp.launch.pipelines import in_image, pipeline_function, retrace

log = logging.getLogger(__name__)

SHM_VOLUME = "dshm"
# env vars whose values must never reach a compiled pipeline
SENSITIVE_ENV = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|ACCESS_KEY|CREDENTIAL|API_KEY|PRIVATE_KEY", re.IGNORECASE)
URL_PASSWORD = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^/\s@:]*:[^/\s@]+@")


@dataclass
class Compiled:
    path: Path
    pipeline: str
    cluster: ClusterConfig
    gpu_tasks: list[str]


def load_configs(
    entry: PipelineEntry,
    config_file: str | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    image: str = "",
) -> tuple[Any, ClusterConfig]:
    """(pipeline config, cluster config): embedded defaults <- file <- --set, as
    ``kfnlp run`` merges them, with the ``cluster`` section split off; ``image`` is the
    image when the cluster section names none."""
    return catalog.load_config_and_cluster(entry, functools.partial(load_cluster, image=image), config_file, overrides)


def require_image(cluster: ClusterConfig) -> None:
    """The pods get S3 and registry credentials: they run only an image the user chose (there is
    no default: no kfnlp image is published), preferably pinned by digest (see :func:`compile_to`)."""
    if not cluster.image:
        raise ConfigError(
            f"no image: build and push your own (docs/cluster.md#image) and set {SECTION}.image="
            "REGISTRY/kfnlp@sha256:... (--set, --config or $KFNLP_IMAGE)",
            f"{SECTION}.image",
        )


def _warn_unless_digest(cluster: ClusterConfig) -> None:
    """A tag can be moved to other content by whoever controls the repository."""
    if "@sha256:" not in cluster.image:
        log.warning(
            "kfnlp: warning: %s.image %s is a tag, which can be moved to other content; pin a digest "
            "(REGISTRY/kfnlp@sha256:...) so that every run gets the image you tested",
            SECTION,
            cluster.image,
        )


def scales_out(stage: str, cluster: ClusterConfig) -> bool:
    """True if ``stage``'s task is a launcher of a job across ``cluster.train.nodes`` nodes."""
    return stage in cluster.train_stages and cluster.train.nodes > 1


def secret_envs(cluster: ClusterConfig, entry, registry: bool = True) -> list[dict[str, Any]]:
    """The secrets a stage's pods get, by name: ``{"secret", "keys" (KEY: ENV), "optional"}`` (the registry's
    only with ``registry``: a job's nodes never talk to it)."""
    out = []
    if cluster.s3_secret:
        out.append({"secret": cluster.s3_secret, "keys": S3_KEYS, "optional": False})
        out.append({"secret": cluster.s3_secret, "keys": S3_OPTIONAL_KEYS, "optional": True})
    if cluster.hf_token_secret and entry.hub:
        out.append({"secret": cluster.hf_token_secret, "keys": HF_KEYS, "optional": False})
    if registry and cluster.registry_secret and entry.registry:
        out.append({"secret": cluster.registry_secret, "keys": REGISTRY_OPTIONAL_KEYS, "optional": True})
    return out


def scale_out_spec(cluster: ClusterConfig, entry) -> Any:
    """What the launcher of ``entry``'s stage needs, checked now by building its job once with placeholder
    URIs through the API's models, so a bad setting fails ``kfnlp compile`` rather than the run."""
    from kfnlp.launch.scale_out import manifests
    from kfnlp.launch.scale_out.spec import ScaleOut

    p = cluster.train
    spec = ScaleOut(
        nodes=p.nodes,
        gpus_per_node=p.gpus,
        engine=p.engine,
        runtime=p.runtime,
        image=cluster.image,
        image_pull_secret=cluster.image_pull_secret,
        gpu_resource=cluster.gpu_resource,
        cpu_request=p.cpu_request,
        cpu_limit=p.cpu_limit,
        memory_request=p.memory_request,
        memory_limit=p.memory_limit,
        node_selector=dict(parse_label(label) for label in p.node_selector),
        tolerations=[parse_toleration(t) for t in p.tolerations],
        shm_size=p.shm_size,
        secrets=secret_envs(cluster, entry, registry=False),
        start_timeout_s=duration_seconds(p.start_timeout),
        cleanup=p.cleanup,
        ttl_after_finished_s=duration_seconds(p.ttl_after_finished) if p.ttl_after_finished else 0,
    )
    placeholder = "s3://kfnlp-compile-check/placeholder"
    inputs = {i.name: placeholder for i in entry.inputs}
    command = manifests.node_command(entry.name, inputs, placeholder, "{}")
    manifests.build(spec, manifests.job_name(entry.name, placeholder), command, {"kfnlp-stage": entry.name}, [])
    return spec


def configure_task(task, cluster: ClusterConfig) -> int:
    """Apply the cluster settings to one task; return its GPU count (per node, for a launcher)."""
    from kfp import kubernetes

    from kfnlp import stages

    stage = task.component_spec.name
    if stage not in stages.by_name():
        raise ConfigError(f"stage {stage!r} has no cluster settings: no kfnlp.stages module declares it")
    entry = stages.get(stage)
    launcher = scales_out(stage, cluster)
    # a launcher is a CPU pod like the data stages'; the train profile's pods are the job's nodes
    p = cluster.data if launcher else cluster.profile(stage)
    in_image(cluster.image)(task)
    for setting in ("cpu_request", "cpu_limit", "memory_request", "memory_limit"):
        if getattr(p, setting):
            getattr(task, f"set_{setting}")(getattr(p, setting))
    if p.gpus:
        task.set_accelerator_type(cluster.gpu_resource).set_accelerator_limit(p.gpus)
    for label in p.node_selector:
        kubernetes.add_node_selector(task, *parse_label(label))
    for toleration in p.tolerations:
        kubernetes.add_toleration(task, **parse_toleration(toleration))
    if p.shm_size:
        kubernetes.empty_dir_mount(task, SHM_VOLUME, "/dev/shm", medium="Memory", size_limit=p.shm_size)
    retries = cluster.train.retries if launcher else p.retries
    if retries:
        task.set_retry(retries, cluster.retry_backoff, cluster.retry_backoff_factor, cluster.retry_backoff_max)
    task.set_caching_options(enable_caching=stage in cluster.cache_stages)
    if cluster.image_pull_secret:
        kubernetes.set_image_pull_secrets(task, [cluster.image_pull_secret])
    for secret in secret_envs(cluster, entry):
        kubernetes.use_secret_as_env(task, secret["secret"], secret["keys"], optional=secret["optional"])
    if launcher:
        from kfnlp.launch.scale_out.spec import ENV

        task.set_env_variable(ENV, scale_out_spec(cluster, entry).to_json())
        return cluster.train.gpus
    return p.gpus


def cluster_pipeline(
    entry: PipelineEntry, cluster: ClusterConfig, gpu_tasks: list[str] | None = None, config: Any = None
) -> Any:
    """``entry``'s pipeline (swept as ``config`` says), traced again with every task configured for ``cluster``."""

    def configure(task) -> None:
        gpus = configure_task(task, cluster)
        if gpus and gpu_tasks is not None:
            nodes = f"{cluster.train.nodes} nodes " if scales_out(task.component_spec.name, cluster) else ""
            gpu_tasks.append(f"{task._task_spec.display_name or task.name} {nodes}x{gpus}")

    return retrace(pipeline_function(entry, config), configure, cluster.pipeline_root or None)


def check_no_credentials(config: Any, prefix: str = "") -> None:
    """A password in a URL (user:pass@host) would be baked into the YAML: refuse it."""
    for key, value in (to_dict(config) if dataclasses.is_dataclass(config) else config).items():
        if isinstance(value, dict):
            check_no_credentials(value, f"{prefix}{key}.")
        elif any(
            isinstance(v, str) and URL_PASSWORD.search(v) for v in (value if isinstance(value, list) else [value])
        ):
            raise ConfigError(
                f"{prefix}{key}: the URL holds a password, which would be written into the compiled pipeline; "
                f"give credentials through a Kubernetes secret ({SECTION}.registry_secret, {SECTION}.s3_secret)",
                f"{prefix}{key}",
            )


def check_no_env_secrets(text: str) -> None:
    """Belt and braces: no value of a credential-like env var may appear in the YAML."""
    for name, value in os.environ.items():
        if SENSITIVE_ENV.search(name) and len(value) >= 8 and value in text:
            raise ConfigError(
                f"the compiled pipeline would contain the value of ${name}; not written. Remove it from the "
                f"config and give it to the pods through a Kubernetes secret ({SECTION}.*_secret)"
            )


def compile_pipeline(
    name: str,
    output: str | os.PathLike,
    config_file: str | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    image: str = "",
) -> Compiled:
    """Compile pipeline ``name`` to ``output`` (written whole or not at all); ``image``: the
    runtime image unless the config's ``cluster.image`` names one."""
    entry = catalog.get(name)
    config, cluster = load_configs(entry, config_file, overrides, image)
    output = Path(output)
    if output.suffix not in (".yaml", ".yml"):
        raise ConfigError(f"--output {output}: expected a .yaml file (KFP reads pipeline YAML)")
    if not output.parent.is_dir():
        raise ConfigError(f"--output {output}: directory {output.parent} does not exist")
    return compile_to(entry, config, cluster, output)


def compile_to(entry: PipelineEntry, config, cluster: ClusterConfig, output: Path) -> Compiled:
    """The one place pipelines are compiled for a cluster (compile, submit and upload)."""
    from kfp import compiler

    require_image(cluster)
    _warn_unless_digest(cluster)
    check_no_credentials(config)
    if "register" in {f.name for f in dataclasses.fields(config)} and not (
        cluster.registry_secret or config.register.tracking_uri
    ):
        log.warning(
            "kfnlp: warning: no %s.registry_secret and no register.tracking_uri: register and promote will use "
            "an MLflow store inside their pod, which is lost when the pod ends",
            SECTION,
        )
    for key, value, _ in fields_of_kind(config, "model"):
        if made_builtin(value):
            log.warning(
                "kfnlp: warning: %s is %s, which is made on the machine that runs it, not shipped: in a pod each "
                "stage would find it missing; set it to a Hub id, an s3:// model artifact or a models:/ reference",
                key,
                value,
            )
    gpu_tasks: list[str] = []
    pipeline = cluster_pipeline(entry, cluster, gpu_tasks, config)
    # a new private file next to the destination (no name anyone can guess or pre-create), renamed over it
    fd, name = tempfile.mkstemp(prefix=f".{output.stem}.", suffix=f".tmp{output.suffix}", dir=output.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        compiler.Compiler().compile(pipeline, str(tmp), pipeline_parameters=pipeline_arguments(config))
        check_no_env_secrets(tmp.read_text(encoding="utf-8"))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # the mode a plainly written file gets
        os.replace(tmp, output)
    finally:
        tmp.unlink(missing_ok=True)
    return Compiled(output, entry.name, cluster, gpu_tasks)
