"""helm, kubernetes-validate, checkov and shellcheck for the chart and local-cluster tests.

`make test` installs them (helm into .venv/bin, checkov into its own venv, shellcheck from
apt). A missing tool fails the test that needs it, never skips it: CI must not pass
without the checks.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.loopback import TOOLS_CACHE

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "kfnlp"
K8S_VERSION = "1.30.0"  # the oldest Kubernetes the manifests are validated against
NAMESPACE = "kubeflow"
RELEASE = "kfnlp"


def _missing(tool: str, how: str) -> None:
    pytest.fail(f"{tool} is not installed: {how} (make test installs it)", pytrace=False)


def helm_bin() -> str:
    path = Path(os.environ.get("HELM") or Path(sys.executable).parent / "helm")
    if not path.is_file():
        _missing(f"helm ({path})", "python tools/install_helm.py --dest .venv/bin")
    return str(path)


def checkov_bin() -> str:
    venv = Path(os.environ.get("CHECKOV_VENV") or TOOLS_CACHE / "venv-checkov")
    path = venv / "bin" / "checkov"
    if not path.is_file():
        _missing(f"checkov ({path})", "make checkov")
    return str(path)


def shellcheck_bin() -> str:
    path = shutil.which("shellcheck")
    if not path:
        _missing("shellcheck", "apt-get install -y shellcheck")
    return path


def helm(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([helm_bin(), *args], capture_output=True, text=True, timeout=120)


def value_args(values: dict[str, Any] | None, tmp: Path, files: tuple[Path, ...] = ()) -> list[str]:
    args = [a for f in files for a in ("--values", str(f))]
    if values:
        path = tmp / f"values-{len(list(tmp.glob('values-*.yaml')))}.yaml"
        path.write_text(yaml.safe_dump(values), encoding="utf-8")
        args += ["--values", str(path)]
    return args


def render(
    tmp: Path, values: dict[str, Any] | None = None, files: tuple[Path, ...] = (), chart: Path = CHART
) -> subprocess.CompletedProcess:
    return helm("template", RELEASE, str(chart), "--namespace", NAMESPACE, *value_args(values, tmp, files))


def template(tmp: Path, values: dict[str, Any] | None = None, files: tuple[Path, ...] = ()) -> list[dict[str, Any]]:
    """The rendered manifests (helm test hooks included), as dicts."""
    result = render(tmp, values, files)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def validate(docs: list[dict[str, Any]]) -> list[str]:
    """kubernetes-validate's complaints (strict: unknown fields too) about each manifest."""
    import kubernetes_validate

    problems = []
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            problems.append(f"{doc['kind']}/{doc['metadata']['name']}: {exc.message} at {list(exc.path)}")
    return problems


def checkov(docs: list[dict[str, Any]], tmp: Path) -> dict[str, Any]:
    """checkov's kubernetes report on the rendered manifests (offline: BC_SKIP_MAPPING).

    The rendered YAML rather than ``--framework helm``, which passes silently when no helm
    is on PATH ("There are no runners to run")."""
    scan = tmp / "scan"
    scan.mkdir()
    (scan / "manifests.yaml").write_text(yaml.safe_dump_all(docs), encoding="utf-8")
    env = {**os.environ, "BC_SKIP_MAPPING": "TRUE", "LOG_LEVEL": "ERROR"}
    cmd = [checkov_bin(), "--directory", str(scan), "--framework", "kubernetes", "--quiet", "--compact"]
    result = subprocess.run([*cmd, "--output", "json"], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode in (0, 1), result.stderr
    report = json.loads(result.stdout)
    report = report[0] if isinstance(report, list) else report
    assert report.get("check_type") == "kubernetes", report
    return report


def pod_specs(docs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """(kind/name, pod spec) of every workload."""
    out = []
    for doc in docs:
        spec = doc.get("spec", {})
        if doc["kind"] == "Pod":
            out.append((f"Pod/{doc['metadata']['name']}", spec))
        elif doc["kind"] in ("Deployment", "Job", "StatefulSet", "DaemonSet"):
            out.append((f"{doc['kind']}/{doc['metadata']['name']}", spec["template"]["spec"]))
    return out


def find(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]


def cluster_yaml(docs: list[dict[str, Any]]) -> str:
    (configmap,) = find(docs, "ConfigMap", f"{RELEASE}-config")
    return configmap["data"]["cluster.yaml"]
