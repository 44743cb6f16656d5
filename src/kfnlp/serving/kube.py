"""Applying a deployment through the Kubernetes API (the official ``kubernetes`` client), for ``kfnlp deploy``
and the pipelines' optional deploy step (:mod:`kfnlp.stages.deploy`).

Apply is idempotent: each object is created, or merge-patched when it exists (HTTP 409), under the same name,
so running it again for the same model and alias updates one InferenceService. Before the first write it
checks that the S3 Secret exists (its key names only; no value is read into anything kfnlp prints).
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from kfnlp.errors import ConfigError
from kfnlp.serving.deploy import GROUP, PLURAL, VERSION, DeployConfig, DeployError, deploy_manifests

log = logging.getLogger(__name__)

SA_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
POLL_S = 5.0
SECRET_KEYS = ("awsAccessKeyID", "awsSecretAccessKey")  # KServe's default credentials.s3 key names


def connect() -> tuple[Any, str]:
    """The API client and its namespace: the pod's service account in a cluster, else ``$KUBECONFIG``'s context."""
    from kubernetes import client, config

    try:
        if os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config()
            return client.ApiClient(), SA_NAMESPACE.read_text(encoding="utf-8").strip()
        kubeconfig = os.environ.get("KUBECONFIG")
        config.load_kube_config(config_file=kubeconfig)
        _, context = config.list_kube_config_contexts(config_file=kubeconfig)
    except (config.ConfigException, OSError) as exc:
        raise DeployError(f"no Kubernetes API to deploy to (not in a pod, no usable kubeconfig): {exc}") from None
    return client.ApiClient(), context["context"].get("namespace") or "default"


def _message(exc) -> str:
    try:
        return json.loads(exc.body)["message"]
    except (TypeError, ValueError, KeyError, AttributeError):
        return f"HTTP {exc.status} {exc.reason}".strip()


class Cluster:
    """The three kinds of call a deployment makes: read the Secret's key names, create-or-patch, read the status."""

    def __init__(self, api_client, namespace: str):
        from kubernetes import client

        self.host = api_client.configuration.host
        self.namespace = namespace
        self.core = client.CoreV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)

    def call(self, doing: str, fn, *args, conflict_ok: bool = False, **kwargs):
        """``fn(*args)``; any failure one line naming what was being done (a 409 returns None with ``conflict_ok``)."""
        import urllib3
        from kubernetes.client.exceptions import ApiException

        try:
            return fn(*args, **kwargs)
        except urllib3.exceptions.HTTPError as exc:
            raise DeployError(f"cannot reach the Kubernetes API at {self.host}: {exc}") from None
        except ApiException as exc:
            if exc.status == 409 and conflict_ok:
                return None
            if exc.status == 403:
                raise DeployError(
                    f"{doing}: forbidden in namespace {self.namespace} ({_message(exc)}); the chart's deploy.enabled "
                    "grants the Role that allows it"
                ) from None
            raise DeployError(f"{doing}: {_message(exc)}") from None

    def check_secret(self, name: str) -> None:
        from kubernetes.client.exceptions import ApiException

        try:
            secret = self.core.read_namespaced_secret(name, self.namespace)
        except ApiException as exc:
            if exc.status == 404:
                raise ConfigError(
                    f"deploy.s3_secret: no Secret {name!r} in namespace {self.namespace}; create it with the keys "
                    f"{' and '.join(SECRET_KEYS)} (docs/serving.md#deploy)",
                    "deploy.s3_secret",
                ) from None
            if exc.status == 403:  # a Role without get on secrets: KServe will still read it
                log.warning("cannot read Secret %s to check it (forbidden); going on", name)
                return
            raise DeployError(f"reading Secret {name}: {_message(exc)}") from None
        keys = set((secret.data or {}).keys()) | set((secret.string_data or {}).keys())
        if not set(SECRET_KEYS) <= keys:
            log.warning(
                "Secret %s has no %s: KServe's default credentials settings will not find the S3 keys in it "
                "(unless its inferenceservice-config names its keys)",
                name,
                " and ".join(k for k in SECRET_KEYS if k not in keys),
            )

    def apply(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """Create ``manifest``, or merge-patch the object of that name (the same deployment applied again)."""
        name, kind = manifest["metadata"]["name"], manifest["kind"]
        body = {**manifest, "metadata": {**manifest["metadata"], "namespace": self.namespace}}
        if kind == "ServiceAccount":
            create = (self.core.create_namespaced_service_account, (self.namespace, body))
            patch = (self.core.patch_namespaced_service_account, (name, self.namespace, body))
        else:
            where = (GROUP, VERSION, self.namespace, PLURAL)
            create = (self.custom.create_namespaced_custom_object, (*where, body))
            patch = (self.custom.patch_namespaced_custom_object, (*where, name, body))
        created = self.call(f"creating {kind} {name}", create[0], *create[1], conflict_ok=True)
        if created is not None:
            log.info("created %s %s", kind, name)
            return created
        patched = self.call(f"updating {kind} {name}", patch[0], *patch[1])
        log.info("updated %s %s", kind, name)
        return patched

    def status(self, name: str) -> dict[str, Any]:
        return self.call(
            f"reading InferenceService {name}",
            self.custom.get_namespaced_custom_object,
            GROUP,
            VERSION,
            self.namespace,
            PLURAL,
            name,
        )

    def wait_ready(self, name: str, timeout_s: float, poll_s: float = POLL_S) -> dict[str, Any]:
        """Poll until the InferenceService's Ready condition is True for its latest generation; one line on timeout
        (with the last reason KServe gave)."""
        deadline = time.monotonic() + timeout_s
        why = "no status yet"
        while True:
            found = self.status(name)
            status = found.get("status") or {}
            ready = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), None)
            fresh = status.get("observedGeneration", found["metadata"].get("generation")) == found["metadata"].get(
                "generation"
            )
            if ready and ready.get("status") == "True" and fresh:
                return found
            if ready:
                why = ready.get("message") or ready.get("reason") or f"Ready={ready.get('status')}"
            if time.monotonic() >= deadline:
                raise DeployError(
                    f"InferenceService {name} in {self.namespace} not Ready after {timeout_s:g} s: {why} "
                    f"(kubectl describe inferenceservice {name} -n {self.namespace})"
                )
            time.sleep(min(poll_s, max(0.0, deadline - time.monotonic())))


def apply(
    manifests: list[dict[str, Any]],
    config: DeployConfig,
    *,
    api_client=None,
    namespace: str | None = None,
    wait: bool = True,
    poll_s: float = POLL_S,
) -> dict[str, Any]:
    """Apply the rendered ServiceAccount and InferenceService; with ``wait``, until Ready or ``config.timeout``.
    Returns the InferenceService as the API last showed it."""
    if api_client is None:
        api_client, found = connect()
        namespace = namespace or config.namespace or found
    cluster = Cluster(api_client, namespace or config.namespace or "default")
    cluster.check_secret(config.s3_secret)
    applied = [cluster.apply(m) for m in manifests]
    service = applied[-1]
    if wait:
        service = cluster.wait_ready(service["metadata"]["name"], config.timeout_s, poll_s)
    return service


def endpoint(service: dict[str, Any]) -> str | None:
    return (service.get("status") or {}).get("url")


def deploy(
    registry, spec: str, config: DeployConfig, *, run_name: str | None = None, wait: bool = True, **connection
) -> dict[str, Any]:
    """Render and apply ``spec`` (``NAME``, ``NAME@ALIAS``, ``NAME/VERSION``): everything is checked first."""
    target, manifests = deploy_manifests(registry, spec, config, run_name)
    service = apply(manifests, config, wait=wait, **connection)
    return {
        "model": target.model,
        "version": target.version,
        "alias": target.alias,
        "name": service["metadata"]["name"],
        "namespace": service["metadata"].get("namespace"),
        "storage_uri": manifests[-1]["spec"]["predictor"]["model"]["storageUri"],
        "url": endpoint(service),
        "ready": wait,
    }
