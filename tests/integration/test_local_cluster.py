"""scripts/local-cluster.sh and the files it applies. No cluster can run here: the script is
linted and its offline paths run; every manifest of ours it applies is validated (the KFP
manifests it fetches are KFP's, and are not)."""

from __future__ import annotations

import os
import re
import subprocess

import pytest
import yaml

from kfnlp.launch.cluster.compile import compile_pipeline
from tests.support.k8s_tools import CHART, NAMESPACE, REPO, cluster_yaml, find, helm, shellcheck_bin, template, validate

SCRIPT = REPO / "scripts" / "local-cluster.sh"
FILES = REPO / "scripts" / "local-cluster"
DOC = REPO / "docs" / "local-cluster.md"


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(SCRIPT), *args], capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=60
    )


def test_script_is_shellcheck_clean():
    result = subprocess.run([shellcheck_bin(), "--severity=style", str(SCRIPT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout
    assert SCRIPT.read_text().startswith("#!/usr/bin/env bash\n") and "set -euo pipefail" in SCRIPT.read_text()
    assert os.access(SCRIPT, os.X_OK)


def test_usage_and_bad_commands():
    assert run("--help").returncode == 0 and "up|down|status" in run("--help").stdout
    result = run("sideways")
    assert result.returncode == 2 and "usage:" in result.stderr
    result = run("up", env={"PROVIDER": "k3d"})
    assert result.returncode == 1 and "PROVIDER must be kind or minikube" in result.stderr


@pytest.mark.parametrize("provider", ["kind", "minikube"])
def test_missing_tools_stop_it_before_anything_happens(provider, tmp_path):
    # a PATH with bash only: every tool is missing, and the script names them all
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "dirname"):
        (bin_dir / tool).symlink_to(subprocess.run(["which", tool], capture_output=True, text=True).stdout.strip())
    result = run("up", env={"PATH": str(bin_dir), "PROVIDER": provider})
    assert result.returncode == 1
    assert f"missing: kubectl helm curl base64 {provider}" in result.stderr


def test_kfp_version_is_pinned_and_documented():
    text = SCRIPT.read_text()
    (version,) = re.findall(r'^KFP_VERSION="\$\{KFP_VERSION:-([0-9]+\.[0-9]+\.[0-9]+)\}"', text, re.M)
    assert "cluster-scoped-resources?ref=$KFP_VERSION" in text and "env/platform-agnostic?ref=$KFP_VERSION" in text
    assert f"`{version}`" in DOC.read_text()
    # the same release line as the SDK that compiles the pipelines
    import kfp

    assert version.rsplit(".", 1)[0] == kfp.__version__.rsplit(".", 1)[0]


def test_every_file_the_script_applies_exists():
    text = SCRIPT.read_text()
    for name in re.findall(r'"\$FILES/([^"]+)"', text):
        assert (FILES / name).is_file(), name
    assert sorted(p.name for p in FILES.iterdir()) == ["kind-config.yaml", "values.yaml"]


def test_kind_config():
    config = yaml.safe_load((FILES / "kind-config.yaml").read_text())
    assert config["kind"] == "Cluster" and config["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    assert config["name"] == "kfnlp"
    assert [n["role"] for n in config["nodes"]] == ["control-plane"]
    assert set(config) == {"kind", "apiVersion", "name", "nodes"}


@pytest.fixture(scope="module")
def local_docs(tmp_path_factory):
    return template(tmp_path_factory.mktemp("local"), files=(FILES / "values.yaml",))


def test_local_values_lint_and_validate(local_docs):
    result = helm("lint", "--strict", str(CHART), "--namespace", NAMESPACE, "--values", str(FILES / "values.yaml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert validate(local_docs) == []


def test_local_values_reuse_kfp_object_store(local_docs):
    # no chart-rendered credentials: the script makes kfnlp-s3 from KFP's own secret, and
    # kfnlp-mlflow (MLflow's login) with a password of its own
    assert find(local_docs, "Secret") == []
    args = find(local_docs, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--artifacts-destination=s3://mlpipeline/mlflow" in args
    (job,) = find(local_docs, "Job")
    env = {e["name"]: e["value"] for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["KFP_HOST"] == "http://ml-pipeline.kubeflow:8888"
    script = SCRIPT.read_text()
    assert "secret generic kfnlp-s3 --from-file" in script and "mlpipeline-minio-artifact" in script


def test_local_cluster_yaml_compiles_without_gpus(local_docs, tmp_path):
    config = tmp_path / "cluster.yaml"
    config.write_text(cluster_yaml(local_docs), encoding="utf-8")
    out = compile_pipeline("mlm-adapt", tmp_path / "mlm-adapt.yaml", str(config))
    assert out.gpu_tasks == [] and out.cluster.train.tolerations == []
    assert out.cluster.image == "ghcr.io/kfnlp/kfnlp:0.1.0"  # what the script builds and loads
    assert 'IMAGE="ghcr.io/kfnlp/kfnlp:0.1.0"' in SCRIPT.read_text()


def test_doc_says_what_was_verified_and_what_was_not():
    text = DOC.read_text()
    assert "## What was verified here" in text and "## What was not verified" in text
    assert "scripts/local-cluster.sh up" in text and "scripts/local-cluster.sh down" in text


# A stand-in kubectl: logs its arguments, answers the two reads of KFP's object-store Secret,
# lists what `create secret --from-file=DIR` would read, and fails on the step named in STUB_FAIL.
STUB_KUBECTL = r"""#!/bin/sh
echo "$*" >>"$STUB_LOG"
if [ -n "$STUB_FAIL" ]; then
    case "$*" in *"$STUB_FAIL"*) echo "stub kubectl: $STUB_FAIL failed" >&2; exit 1 ;; esac
fi
case "$*" in
    *"get secret kfnlp-mlflow"*) exit 1 ;;
    *accesskey*) printf %s AKIASTUBACCESSKEY | base64 ;;
    *secretkey*) printf %s stub-secret-value | base64 ;;
    *"create secret generic"*)
        for arg in "$@"; do
            case "$arg" in --from-file=*) echo "files: $(ls "${arg#--from-file=}" | tr '\n' ' ')" >>"$STUB_LOG" ;; esac
        done
        echo "kind: Secret" ;;
    *apply*) cat >/dev/null ;;
esac
"""


CREDENTIAL_STEPS = [
    ("create_s3_secret", None),
    ("create_s3_secret", "accesskey"),
    ("create_s3_secret", "secretkey"),
    ("create_s3_secret", "create secret"),
    ("create_s3_secret", "apply"),
    ("create_registry_secret", None),
    ("create_registry_secret", "create secret"),
    ("create_registry_secret", "apply"),
]
FILES_OF = {
    "create_s3_secret": "AWS_ACCESS_KEY_ID AWS_DEFAULT_REGION AWS_ENDPOINT_URL_S3 AWS_SECRET_ACCESS_KEY",
    "create_registry_secret": "MLFLOW_FLASK_SERVER_SECRET_KEY MLFLOW_TRACKING_PASSWORD MLFLOW_TRACKING_URI "
    "MLFLOW_TRACKING_USERNAME",
}


@pytest.mark.parametrize("function,fail", CREDENTIAL_STEPS)
def test_credentials_never_outlive_the_function_that_writes_them(function, fail, tmp_path):
    # the script's own function, sourced, with kubectl stubbed on PATH: whichever step fails,
    # the credentials written for `kubectl create secret --from-file` are gone afterwards
    stub_bin, scratch, log = tmp_path / "bin", tmp_path / "tmp", tmp_path / "kubectl.log"
    stub_bin.mkdir()
    scratch.mkdir()
    (stub_bin / "kubectl").write_text(STUB_KUBECTL)
    (stub_bin / "kubectl").chmod(0o755)
    env = {
        **os.environ,
        "PATH": f"{stub_bin}:{os.environ['PATH']}",
        "TMPDIR": str(scratch),
        "STUB_LOG": str(log),
        "STUB_FAIL": fail or "",
    }
    result = subprocess.run(
        ["bash", "-c", f'source "{SCRIPT}" && {function}'], capture_output=True, text=True, env=env, timeout=60
    )
    calls = log.read_text().splitlines()
    assert list(scratch.iterdir()) == [], f"left on disk after {fail or 'success'}: {list(scratch.rglob('*'))}"
    if fail:
        assert result.returncode != 0 and f"stub kubectl: {fail} failed" in result.stderr
    else:
        assert result.returncode == 0, result.stderr
        assert f"files: {FILES_OF[function]} " in calls
        assert "--context kind-kfnlp apply -f -" in calls
    # the credentials travel through files and a pipe, never through argv
    assert not any("AKIASTUBACCESSKEY" in c or "stub-secret-value" in c for c in calls)
