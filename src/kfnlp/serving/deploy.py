"""deploy: a registered model version as a KServe ``InferenceService`` (``serving.kserve.io/v1beta1``) on the
Hugging Face serving runtime, with the ServiceAccount that hands KServe's storage initializer the S3 Secret.

Everything is checked here, before anything touches a cluster (:mod:`kfnlp.serving.kube` applies): the
version and alias exist, the task is one the runtime serves, the files are on S3 (or are copied there through
:mod:`kfnlp.storage`), the Secret is named, the resources parse; the manifests are built into the pinned
``kserve`` SDK's models, which refuse an unknown or mistyped field.

KServe facts this module relies on (kserve 0.21 sources):

- the Hugging Face runtime (``modelFormat: huggingface``) takes ``--model_name``, ``--task`` (fill_mask,
  token_classification, sequence_classification, text_generation, ...) and ``--disable_lower_case``; without
  that flag it loads every tokenizer with ``do_lower_case=True``, which lower-cases the input of a cased one.
  It returns label ids, not names, and does not group entities (kfnlp's client side and ``kfnlp serve`` do).
- S3 credentials (``pkg/credentials``): the storage initializer reads the Secrets listed on the predictor's
  ServiceAccount; one whose data holds ``awsSecretAccessKey`` (the key names are KServe's
  ``inferenceservice-config`` ``credentials.s3`` settings) becomes ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``
  by reference, and the endpoint, https and region come from that Secret's ``serving.kserve.io/s3-*``
  annotations (from the ServiceAccount's only with an IRSA role annotation). kfnlp renders the ServiceAccount
  with both the reference and the annotations, never the Secret: its values stay where they are.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from kfnlp.api_models import build, finder, parse_toleration
from kfnlp.config import FieldError, option
from kfnlp.errors import ConfigError, InputError, KfnlpError
from kfnlp.registry.promotion import CHAMPION
from kfnlp.storage import MANIFEST, check_input, files_uri, local_input, read_any_manifest, write_artifact

log = logging.getLogger(__name__)

GROUP, VERSION, KIND, PLURAL = "serving.kserve.io", "v1beta1", "InferenceService", "inferenceservices"
API_VERSION = f"{GROUP}/{VERSION}"
# the predictor's Service is NAME-predictor and its revisions NAME-predictor-00001: 47 keeps them within 63
MAX_NAME = 47
DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")
LABEL_KEY = re.compile(r"^(?:[a-z0-9](?:[-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?$")
SECRET_NAME = re.compile(r"^[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*$")
DURATION = re.compile(r"^([0-9]+)([smh])$")
TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")
ANNOTATION = "serving.kserve.io/"
LABEL = "kfnlp.io/"
# the registry's task tag -> the runtime's --task; architectures for versions registered without the tag
TASKS = {
    "fill-mask": "fill_mask",
    "token-classification": "token_classification",
    "text-classification": "sequence_classification",
    "text-generation": "text_generation",
}
ARCHITECTURES = {
    "ForMaskedLM": "fill-mask",
    "ForTokenClassification": "token-classification",
    "ForSequenceClassification": "text-classification",
    "ForCausalLM": "text-generation",
}
WEIGHTS = ("model.safetensors", "model.safetensors.index.json")
SKIPPED = {MANIFEST, ".kfnlp-download.json"}  # not model files: the copy gets its own manifest


@dataclass
class DeployConfig:
    """Where and how a registered model is served on KServe (``kfnlp deploy``, the pipelines' deploy step)."""

    enabled: bool = option(False, "pipelines deploy the champion after promote, only when the gate promoted it")
    namespace: str = option(
        "", "namespace of the InferenceService; default: the pod's own in a pipeline, else the kubeconfig context's"
    )
    name: str = option(
        "", "InferenceService name; default: the model name, plus the alias or vN unless deploying the champion"
    )
    service_account: str = option(
        "kfnlp-serving", "ServiceAccount the predictor runs under; kfnlp renders it naming s3_secret"
    )
    s3_secret: str = option(
        "",
        "existing Secret with the S3 credentials KServe's storage initializer reads (keys awsAccessKeyID and "
        "awsSecretAccessKey unless KServe's inferenceservice-config names others); required",
    )
    s3_endpoint: str = option(
        "", 'S3 endpoint as host[:port] (serving.kserve.io/s3-endpoint), e.g. minio-service.kubeflow:9000; "" for AWS'
    )
    s3_use_https: bool = option(True, "whether the S3 endpoint speaks https (serving.kserve.io/s3-usehttps)")
    s3_region: str = option("", 'S3 region (serving.kserve.io/s3-region); "" to leave it unset')
    storage_uri: str = option(
        "",
        "s3:// prefix the version's files are copied to when the registry keeps them off S3 (PREFIX/NAME/VERSION); "
        '"" to refuse such a version',
    )
    artifacts_destination: str = option(
        "",
        "the MLflow server's --artifacts-destination (s3://...): where versions whose source is mlflow-artifacts:/ "
        "keep their files",
    )
    runtime: str = option(
        "", 'ServingRuntime to use; "" lets KServe pick the one for modelFormat huggingface (kserve-huggingfaceserver)'
    )
    min_replicas: int = option(1, "fewest predictor replicas (0 lets an idle service scale to zero)")
    max_replicas: int = option(1, "most predictor replicas")
    cpu_request: str = option("1", 'CPU reserved per replica (e.g. 500m, 2); "" leaves it unset')
    cpu_limit: str = option("2", 'CPU per replica at most; "" for no limit')
    memory_request: str = option("2Gi", 'memory reserved per replica; "" leaves it unset')
    memory_limit: str = option("4Gi", 'memory per replica at most; "" for no limit')
    gpus: int = option(0, "GPUs per replica, of the type gpu_resource")
    gpu_resource: str = option("nvidia.com/gpu", "extended resource name of a GPU")
    node_selector: list[str] = option(default_factory=list, help="node labels the predictor must match, as KEY=VALUE")
    tolerations: list[str] = option(
        default_factory=list, help="node taints the predictor tolerates, as KEY[=VALUE][:EFFECT]"
    )
    timeout: str = option("10m", "how long an apply waits for the InferenceService to be Ready (s, m or h)")

    def __post_init__(self):
        from kubernetes.utils.quantity import parse_quantity

        for name in ("service_account", "s3_secret"):
            value = getattr(self, name)
            if value and (len(value) > 253 or not SECRET_NAME.match(value)):
                raise FieldError(
                    name, f"{value!r} is not a Kubernetes object name (lowercase letters, digits, - and .)"
                )
        for name in ("namespace", "name"):
            value = getattr(self, name)
            if value and (len(value) > (63 if name == "namespace" else MAX_NAME) or not DNS_LABEL.match(value)):
                limit = 63 if name == "namespace" else MAX_NAME
                raise FieldError(name, f"{value!r} is not a DNS label of at most {limit} characters (a-z, 0-9, -)")
        for name in ("cpu_request", "cpu_limit", "memory_request", "memory_limit"):
            value = getattr(self, name)
            try:
                if value:
                    parse_quantity(value)
            except ValueError:
                raise FieldError(name, f"{value!r} is not a Kubernetes quantity (e.g. 500m, 2, 512Mi, 4Gi)") from None
        for kind in ("cpu", "memory"):
            request, limit = getattr(self, f"{kind}_request"), getattr(self, f"{kind}_limit")
            if request and limit and parse_quantity(request) > parse_quantity(limit):
                raise FieldError(f"{kind}_request", f"{request} is more than {kind}_limit {limit}")
        if self.gpus < 0 or self.min_replicas < 0 or self.max_replicas < max(1, self.min_replicas):
            raise FieldError(
                "max_replicas", "expected gpus >= 0, min_replicas >= 0 and max_replicas >= max(1, min_replicas)"
            )
        if not DURATION.match(self.timeout):
            raise FieldError("timeout", f"expected a duration like 90s, 10m or 1h, got {self.timeout!r}")
        for name in ("storage_uri", "artifacts_destination"):
            value = getattr(self, name)
            if value and (not value.startswith("s3://") or not urlsplit(value).netloc):
                raise FieldError(name, f"expected s3://BUCKET/PREFIX, got {value!r}")
        for item in self.node_selector:
            key, eq, value = item.partition("=")
            if not eq or not LABEL_KEY.match(key) or not LABEL_VALUE.match(value):
                raise FieldError("node_selector", f"expected a node label as KEY=VALUE, got {item!r}")
        for item in self.tolerations:
            toleration = parse_toleration(item)
            if (
                not LABEL_KEY.match(toleration["key"])
                or toleration.get("effect", TAINT_EFFECTS[0]) not in TAINT_EFFECTS
            ):
                raise FieldError("tolerations", f"expected KEY[=VALUE][:EFFECT], got {item!r}")

    @property
    def timeout_s(self) -> int:
        number, unit = DURATION.match(self.timeout).groups()
        return int(number) * {"s": 1, "m": 60, "h": 3600}[unit]


class DeployError(KfnlpError):
    """The Kubernetes API refused the deployment, or the InferenceService did not become Ready in time."""

    exit_code = 8


# --- what to deploy ------------------------------------------------------------------------------------------


@dataclass
class Target:
    """One registry version, as the deployment names it."""

    model: str
    version: int
    alias: str | None  # the alias it was asked for by (None: by number)
    source: str  # the registry's artifact location of its files
    tags: dict[str, str] = field(default_factory=dict)
    registry: str = ""  # the registry's URI, without credentials

    @property
    def uri(self) -> str:
        return f"models:/{self.model}/{self.version}"


def parse_ref(spec: str) -> tuple[str, str | None, int | None]:
    """``NAME`` (its champion), ``NAME@ALIAS`` or ``NAME/VERSION`` as (name, alias, version)."""
    name, at, alias = spec.partition("@")
    if at:
        if not name or not alias:
            raise ConfigError(f"{spec!r}: expected NAME, NAME@ALIAS or NAME/VERSION")
        return name, alias, None
    head, slash, tail = spec.rpartition("/")
    if slash and tail.isdigit():
        return head, None, int(tail)
    if not spec.strip():
        raise ConfigError("no model named: expected NAME, NAME@ALIAS or NAME/VERSION")
    return spec, CHAMPION, None


def resolve(registry, spec: str) -> Target:
    """The version ``spec`` names in ``registry``; a missing model, alias or version is a ConfigError (one line)."""
    from kfnlp.errors import RegistryError

    name, alias, number = parse_ref(spec)
    ref = f"models:/{name}@{alias}" if alias else f"models:/{name}/{number}"
    try:
        version = registry.resolve(ref)
    except RegistryError as exc:
        raise ConfigError(f"cannot deploy {spec}: {exc}") from None
    return Target(name, int(version.version), alias, version.source, dict(version.tags), registry.display_uri)


def service_name(target: Target, config: DeployConfig) -> str:
    """A DNS label of at most :data:`MAX_NAME` characters, the same for every deployment of one model and alias
    (the champion: the model's own name), so applying again updates the same InferenceService."""
    if config.name:
        return config.name
    suffix = "" if target.alias == CHAMPION else f"-{target.alias}" if target.alias else f"-v{target.version}"
    stem = re.sub(r"[^a-z0-9-]+", "-", f"{target.model}{suffix}".lower()).strip("-")
    if not stem or not stem[0].isalpha():
        stem = f"m-{stem}".rstrip("-")
    if len(stem) <= MAX_NAME and DNS_LABEL.match(stem):
        return stem
    digest = hashlib.sha256(f"{target.model}{suffix}".encode()).hexdigest()[:8]
    return f"{stem[: MAX_NAME - 9].rstrip('-')}-{digest}"


def label_value(text: str) -> str:
    """``text`` as a label value (63 characters of [A-Za-z0-9-_.], alphanumeric at both ends)."""
    value = re.sub(r"[^A-Za-z0-9_.-]+", "-", text)[:63]
    return re.sub(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$", "", value)


# --- where its files are -------------------------------------------------------------------------------------


@dataclass
class Files:
    """The version's files as KServe reads them (``storage_uri``), and the two small JSON files the
    rendering looks at."""

    storage_uri: str
    config: dict[str, Any]
    tokenizer_config: dict[str, Any]
    copied: bool = False


def s3_location(target: Target, config: DeployConfig) -> str | None:
    """The ``s3://`` URI of the version's files when the registry keeps them on S3 (directly, or through an
    MLflow server whose artifacts destination is on S3), else None."""
    source = target.source.rstrip("/")
    if source.startswith("s3://"):
        return source
    if source.startswith("mlflow-artifacts:") and config.artifacts_destination:
        path = urlsplit(source).path.lstrip("/")
        return f"{config.artifacts_destination.rstrip('/')}/{path}"
    return None


def _json_file(path: str | Path, what: str) -> dict[str, Any]:
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"{what}: not a readable JSON file ({exc})") from None
    return value if isinstance(value, dict) else {}


def locate(target: Target, config: DeployConfig, registry) -> Files:
    """Where KServe finds the version's files: its S3 location, or a copy under ``config.storage_uri``.
    A version with no files on S3 and no copy asked for is one line."""
    where = s3_location(target, config)
    if where is not None:
        check_files(target, where)
        return Files(where, _remote_json(where, "config.json"), _remote_json(where, "tokenizer_config.json", {}))
    if not config.storage_uri:
        hint = (
            "set deploy.artifacts_destination to the MLflow server's s3:// --artifacts-destination, or "
            if target.source.startswith("mlflow-artifacts:")
            else ""
        )
        raise ConfigError(
            f"{target.uri}: its files are at {target.source}, not on S3, where KServe's storage initializer reads "
            f"them; {hint}give --storage-uri s3://BUCKET/PREFIX (deploy.storage_uri) to copy them there"
        )
    local = Path(registry.download(target.uri))
    missing = _missing(lambda name: (local / name).is_file())
    if missing:
        raise ConfigError(f"{target.uri}: the version has no {missing} among its files ({target.source})")
    return Files(
        f"{config.storage_uri.rstrip('/')}/{target.model}/{target.version}",
        _json_file(local / "config.json", f"{target.uri} config.json"),
        _json_file(local / "tokenizer_config.json", f"{target.uri} tokenizer_config.json")
        if (local / "tokenizer_config.json").is_file()
        else {},
        copied=True,
    )


def _missing(present) -> str | None:
    if not present("config.json"):
        return "config.json"
    if not any(present(name) for name in WEIGHTS):
        return "safetensors weights (model.safetensors)"
    return None


def check_files(target: Target, where: str) -> None:
    """The files KServe needs are on S3 at ``where`` (listed, not downloaded)."""
    from kfnlp.errors import StorageError

    def present(name: str) -> bool:
        try:
            check_input(f"{where}/{name}", lambda _: None)
            return True
        except (StorageError, InputError):
            return False

    missing = _missing(present)
    if missing:
        raise ConfigError(f"{target.uri}: no {missing} at {where}; the version has no model files on S3")


def _remote_json(where: str, name: str, default: dict | None = None) -> dict[str, Any]:
    from kfnlp.errors import StorageError

    try:
        path = local_input(f"{where}/{name}")
    except (StorageError, InputError):
        if default is not None:
            return default
        raise
    return _json_file(path, f"{where}/{name}")


def copy_files(target: Target, files: Files, registry) -> str:
    """Copy the version's files to ``files.storage_uri`` (a kfnlp artifact: complete only with its manifest) unless
    a complete copy of this very version is there; returns the URI of the plain file prefix KServe downloads."""
    dest = files.storage_uri
    origin = {"registry": target.registry, "model": target.model, "version": target.version, "source": target.source}
    try:
        manifest = read_any_manifest(dest, "model")
    except KfnlpError:
        manifest = None
    if manifest is None or manifest.get("deployed_from") != origin:
        local = Path(registry.download(target.uri))
        with write_artifact(dest, "model") as out:
            for path in sorted(local.rglob("*")):
                rel = path.relative_to(local)
                if path.is_file() and rel.as_posix() not in SKIPPED:
                    (out.path / rel).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(path, out.path / rel)
            out.info["deployed_from"] = origin
        log.info("copied %s to %s", target.uri, dest)
    return files_uri(dest)


# --- the manifests -------------------------------------------------------------------------------------------


def task_of(target: Target, files: Files) -> str:
    """The runtime's ``--task`` for the version: from its registry tag, else its architecture."""
    if target.tags.get("kfnlp.adapter_base") or files.config.get("peft_type"):
        raise ConfigError(
            f"{target.uri} is a LoRA adapter, which the Hugging Face runtime cannot load; register the merged model "
            f"(kfnlp registry export {target.model}/{target.version} --output DIR --merge) and deploy that"
        )
    task = target.tags.get("kfnlp.task")
    if not task:
        for suffix, name in ARCHITECTURES.items():
            if any(a.endswith(suffix) for a in files.config.get("architectures") or []):
                task = name
    if task not in TASKS:
        raise ConfigError(
            f"{target.uri}: task {task or 'unknown'!r} is not one the Hugging Face runtime serves for kfnlp "
            f"({', '.join(TASKS)})"
        )
    return TASKS[task]


def lower_cases(files: Files) -> bool:
    """True only when the tokenizer lower-cases by itself; otherwise the runtime must not (--disable_lower_case)."""
    return files.tokenizer_config.get("do_lower_case") is True


def _resources(config: DeployConfig) -> dict[str, dict[str, str]]:
    requests = {k: v for k, v in (("cpu", config.cpu_request), ("memory", config.memory_request)) if v}
    limits = {k: v for k, v in (("cpu", config.cpu_limit), ("memory", config.memory_limit)) if v}
    if config.gpus:
        requests[config.gpu_resource] = limits[config.gpu_resource] = str(config.gpus)
    return {key: value for key, value in (("requests", requests), ("limits", limits)) if value}


def render(
    target: Target, files: Files, config: DeployConfig, storage_uri: str, run_name: str | None = None
) -> list[dict[str, Any]]:
    """The ServiceAccount and the InferenceService for ``target``, validated by the kserve SDK's models."""
    if not config.s3_secret:
        raise ConfigError(
            "deploy.s3_secret: name the Secret with the S3 credentials KServe's storage initializer uses "
            "(--s3-secret NAME); kfnlp references it and never reads or writes its values",
            "deploy.s3_secret",
        )
    task = task_of(target, files)
    name = service_name(target, config)
    labels = {
        "app.kubernetes.io/managed-by": "kfnlp",
        f"{LABEL}model": label_value(target.model),
        f"{LABEL}model-version": str(target.version),
    }
    if target.alias:
        labels[f"{LABEL}alias"] = label_value(target.alias)
    run = run_name or target.tags.get("kfnlp.pipeline_run")
    if run:
        labels[f"{LABEL}pipeline-run"] = label_value(run)
    annotations = {f"{LABEL}model-uri": target.uri, f"{LABEL}registry": target.registry}
    if run:
        annotations[f"{LABEL}pipeline-run"] = run
    s3 = {f"{ANNOTATION}s3-usehttps": "1" if config.s3_use_https else "0"}
    if config.s3_endpoint:
        s3[f"{ANNOTATION}s3-endpoint"] = config.s3_endpoint
    if config.s3_region:
        s3[f"{ANNOTATION}s3-region"] = config.s3_region
    metadata = {"labels": {k: v for k, v in labels.items() if v}}
    if config.namespace:
        metadata["namespace"] = config.namespace
    account = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": config.service_account, **metadata, "annotations": s3},
        "secrets": [{"name": config.s3_secret}],
    }
    args = [f"--model_name={name}", f"--task={task}"]
    if not lower_cases(files):
        args.append("--disable_lower_case")
    if task != "text_generation":  # scores, as kfnlp predict gives them (kfnlp.serving.client maps the ids)
        args.append("--return_probabilities")
    model: dict[str, Any] = {
        "modelFormat": {"name": "huggingface"},
        "storageUri": storage_uri,
        "args": args,
        "resources": _resources(config),
    }
    if config.runtime:
        model["runtime"] = config.runtime
    predictor: dict[str, Any] = {
        "serviceAccountName": config.service_account,
        "minReplicas": config.min_replicas,
        "maxReplicas": config.max_replicas,
        "model": model,
    }
    if config.node_selector:
        predictor["nodeSelector"] = dict(item.split("=", 1) for item in config.node_selector)
    if config.tolerations:
        predictor["tolerations"] = [parse_toleration(t) for t in config.tolerations]
    service = {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": name, **metadata, "annotations": annotations},
        "spec": {"predictor": predictor},
    }
    validate(account, "V1ServiceAccount")
    validate(service, "V1beta1InferenceService")
    return [account, service]


def deploy_manifests(
    registry, spec: str, config: DeployConfig, run_name: str | None = None
) -> tuple[Target, list[dict[str, Any]]]:
    """Resolve ``spec``, find (or copy) its files and render: everything a deployment checks before the first
    call to a cluster. The copy to ``storage_uri`` is the one write, and it is complete or absent."""
    target = resolve(registry, spec)
    files = locate(target, config, registry)
    task_of(target, files)  # refuse before copying anything
    if not config.s3_secret:
        render(target, files, config, files.storage_uri, run_name)  # raises the one line
    storage_uri = copy_files(target, files, registry) if files.copied else files.storage_uri
    return target, render(target, files, config, storage_uri, run_name)


# --- validation by the SDK's models --------------------------------------------------------------------------


def _model_class(name: str):
    import kubernetes.client.models as k8s_models

    from kfnlp.serving.server import kserve_modules

    kserve_modules()  # importing kserve parses sys.argv (a pipeline pod's executor flags, kfnlp's own): not here
    import kserve.models as kserve_models

    return finder(kserve_models, k8s_models)(name)


def validate(manifest: dict[str, Any], model: str) -> Any:
    """Build ``manifest`` into the pinned kserve SDK's (and the kubernetes client's) models key by key: an unknown
    key, a wrong type or a missing required field is a ConfigError naming the path."""
    try:
        return build(manifest, model, _model_class)
    except ValueError as exc:
        raise ConfigError(f"{manifest.get('kind', model)} manifest refused by the kserve SDK models: {exc}") from None


def to_yaml(manifests: list[dict[str, Any]]) -> str:
    import yaml

    return "---\n".join(yaml.safe_dump(m, sort_keys=False) for m in manifests)
