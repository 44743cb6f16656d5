"""``kfnlp deploy``: a registered model as a KServe InferenceService (:mod:`kfnlp.serving.deploy`), written as
YAML or applied through the Kubernetes API (:mod:`kfnlp.serving.kube`)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

SECTION = "deploy"
PROFILE_KEYS = ("cpu_request", "cpu_limit", "memory_request", "memory_limit", "gpus", "node_selector", "tolerations")

DESCRIPTION = """\
Render a KServe InferenceService (serving.kserve.io/v1beta1, the Hugging Face runtime) for a registered
model version, with the ServiceAccount that names the S3 Secret, and write it (-o FILE, default stdout)
or apply it (--apply: create or update, then wait until Ready). NAME deploys the champion
(NAME@ALIAS, NAME/VERSION: another version). Everything is checked before the first call to the
cluster. Settings: the deploy: section of --config, --set deploy.KEY=VALUE, the flags below; resources
from the cluster: section's profile with --profile. See docs/serving.md#deploy."""


def add_parser(sub, add_config_flags) -> None:
    p = sub.add_parser("deploy", help="deploy a registered model on KServe", description=DESCRIPTION)
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("name", metavar="NAME[@ALIAS|/VERSION]")
    add_deploy_flags(p, add_config_flags)


def add_deploy_flags(p: argparse.ArgumentParser, add_config_flags, redeploy: bool = False) -> None:
    """The flags ``kfnlp deploy`` and ``kfnlp registry rollback --redeploy`` (which always applies and has its own
    --tracking-uri and --json) share."""
    add_config_flags(p, "deploy.s3_endpoint=minio-service.kubeflow:9000")
    p.add_argument("-o", "--output", metavar="FILE", help="also write the YAML to FILE")
    if not redeploy:
        p.add_argument(
            "--apply", action="store_true", help="apply through the Kubernetes API ($KUBECONFIG or in-cluster)"
        )
    p.add_argument("--no-wait", action="store_true", help="when applying: do not wait until the service is Ready")
    p.add_argument("--namespace", metavar="NS", help="namespace (deploy.namespace)")
    p.add_argument("--s3-secret", metavar="NAME", help="Secret with the S3 credentials (deploy.s3_secret)")
    p.add_argument("--storage-uri", metavar="S3_PREFIX", help="copy off-S3 versions here (deploy.storage_uri)")
    p.add_argument(
        "--profile",
        choices=("data", "train"),
        help="take CPU, memory, GPUs, node selector and tolerations from this profile of the cluster: section",
    )
    if not redeploy:
        p.add_argument("--tracking-uri", metavar="URI", help="registry URI (default: $MLFLOW_TRACKING_URI or embedded)")
        p.add_argument("--json", action="store_true", help="print the result as JSON")


def deploy_config(args: argparse.Namespace):
    """defaults <- the --profile of cluster: <- deploy: of --config <- --set <- flags."""
    from kfnlp.config import apply_overrides, blame_file, build, read_yaml
    from kfnlp.errors import ConfigError
    from kfnlp.serving.deploy import DeployConfig

    data: dict[str, Any] = read_yaml(args.config) if args.config else {}
    data = apply_overrides(data, args.overrides)
    section: dict[str, Any] = {}
    if args.profile:
        from kfnlp.launch.cluster.settings import load_cluster

        cluster = load_cluster(data.get("cluster"))
        profile = getattr(cluster, args.profile)
        section.update({key: getattr(profile, key) for key in PROFILE_KEYS}, gpu_resource=cluster.gpu_resource)
    own = data.get(SECTION) or {}
    if not isinstance(own, dict):
        raise ConfigError(f"{SECTION}: expected a mapping of keys", SECTION)
    section.update(own)
    for flag, key in (("namespace", "namespace"), ("s3_secret", "s3_secret"), ("storage_uri", "storage_uri")):
        if getattr(args, flag):
            section[key] = getattr(args, flag)
    try:
        return build(DeployConfig, section, SECTION)
    except ConfigError as exc:
        raise blame_file(exc, args.config, SECTION) if args.config else exc from None


def deploy_spec(args: argparse.Namespace, spec: str, registry) -> int:
    from kfnlp.serving.deploy import deploy_manifests, to_yaml

    config = deploy_config(args)
    target, manifests = deploy_manifests(registry, spec, config)
    name = manifests[-1]["metadata"]["name"]
    if args.output:
        Path(args.output).write_text(to_yaml(manifests), encoding="utf-8")
        if not args.json:
            print(f"{target.uri}: wrote InferenceService {name} to {args.output}")
    elif not args.apply:
        sys.stdout.write(to_yaml(manifests))
    if not args.apply:
        return 0
    from kfnlp.serving.kube import apply, endpoint

    service = apply(manifests, config, wait=not args.no_wait)
    result = {
        "model": target.model,
        "version": target.version,
        "name": name,
        "namespace": service["metadata"].get("namespace"),
        "storage_uri": manifests[-1]["spec"]["predictor"]["model"]["storageUri"],
        "url": endpoint(service),
        "ready": not args.no_wait,
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        state = "Ready" if result["ready"] else "applied"
        where = f" at {result['url']}" if result["url"] else ""
        print(f"{target.uri}: InferenceService {name} in {result['namespace']} {state}{where}")
    return 0


def run(args: argparse.Namespace) -> int:
    from kfnlp.registry import Registry

    return deploy_spec(args, args.name, Registry(args.tracking_uri, read_only=True))
