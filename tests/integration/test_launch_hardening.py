"""Issue 20, the cluster side of the launchers: the image is the user's explicit choice, the
compiled YAML is written through a private temporary file, credentials do not cross the
network in clear text, and `--runner docker` as root hands over only what the stages write."""

from __future__ import annotations

import logging
import os
import stat

import pytest

from kfnlp.errors import ConfigError
from kfnlp.launch import docker
from kfnlp.launch.cluster.api import Api, is_loopback
from kfnlp.launch.cluster.auth import Auth
from kfnlp.launch.cluster.compile import compile_pipeline
from tests.support.cli import run_cli
from tests.support.kfp_api_server import FakeKfpApi

DIGEST_IMAGE = "registry.example.com/ml/kfnlp@sha256:" + "ab" * 32
TAG_IMAGE = "registry.example.com/ml/kfnlp:0.1.0"
NO_IMAGE_ENV = {"KFNLP_IMAGE": ""}
NO_CREDENTIALS = dict.fromkeys(("KFNLP_KFP_TOKEN", "KF_PIPELINES_TOKEN", "KF_PIPELINES_SA_TOKEN_PATH"), "")


def _error_line(result) -> str:
    assert result.returncode != 0, result.stdout
    lines = [line for line in result.stderr.strip().splitlines() if not line.startswith("kfnlp: warning: ")]
    assert len(lines) == 1 and lines[0].startswith("kfnlp: error: "), result.stderr
    return lines[0]


# --- the image --------------------------------------------------------------------------------------


def test_compile_without_an_image_fails_with_one_line_and_writes_nothing(tmp_path):
    result = run_cli("compile", "ner", "-o", str(tmp_path / "ner.yaml"), env=NO_IMAGE_ENV)
    line = _error_line(result)
    assert "no image: build and push your own (docs/cluster.md#image)" in line
    assert "cluster.image=REGISTRY/kfnlp@sha256:" in line
    assert list(tmp_path.iterdir()) == []


def test_submit_and_upload_without_an_image_fail_before_any_request(tmp_path):
    with FakeKfpApi() as api:
        for command in ("submit", "upload"):
            result = run_cli(command, "ner", "--host", api.url, env={**NO_IMAGE_ENV, **NO_CREDENTIALS})
            assert "no image: build and push your own" in _error_line(result)
        assert api.requests == []


def test_a_tag_compiles_with_a_warning_a_digest_without(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="kfnlp.launch.cluster.compile"):
        compile_pipeline("ner", tmp_path / "tag.yaml", overrides=[f"cluster.image={TAG_IMAGE}"])
    assert any(f"{TAG_IMAGE} is a tag" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="kfnlp.launch.cluster.compile"):
        compile_pipeline("ner", tmp_path / "digest.yaml", image=DIGEST_IMAGE)  # as $KFNLP_IMAGE gives it
    assert not any("is a tag" in r.getMessage() for r in caplog.records)
    assert DIGEST_IMAGE in (tmp_path / "digest.yaml").read_text()


def test_a_made_builtin_model_compiles_with_a_warning(tmp_path, caplog):
    """builtin:gpt2-imdb exists only on the machine that made it: a pod would not find it."""
    with caplog.at_level(logging.WARNING, logger="kfnlp.launch.cluster.compile"):
        compile_pipeline("clm-adapt", tmp_path / "made.yaml", image=DIGEST_IMAGE)
    assert any("model is builtin:gpt2-imdb, which is made" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="kfnlp.launch.cluster.compile"):
        compile_pipeline(
            "clm-adapt", tmp_path / "hub.yaml", image=DIGEST_IMAGE, overrides=["model=openai-community/gpt2"]
        )
    assert not any("which is made" in r.getMessage() for r in caplog.records)


# --- the compiled file ------------------------------------------------------------------------------


def test_compile_writes_through_a_private_temporary_file(tmp_path):
    """The temporary name was ``.STEM.PID.tmp.yaml``: anyone able to write the directory could
    plant a symlink there and have the compiler write through it."""
    victim = tmp_path / "victim.txt"
    victim.write_text("untouched")
    (tmp_path / f".ner.{os.getpid()}.tmp.yaml").symlink_to(victim)
    out = tmp_path / "ner.yaml"
    compile_pipeline("ner", out, image=DIGEST_IMAGE)
    assert victim.read_text() == "untouched"
    assert stat.S_ISREG(out.lstat().st_mode) and "pipelineInfo" in out.read_text()
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~umask  # the mode a plain write gives
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([victim.name, out.name, f".ner.{os.getpid()}.tmp.yaml"])


# --- credentials on the wire ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("http://localhost:8080", True),
        ("http://127.0.0.1:8080", True),
        ("http://127.9.9.9", True),
        ("http://[::1]:8080/pipeline", True),
        ("http://kfp.example.com", False),
        ("http://10.0.0.5:8888", False),
    ],
)
def test_loopback_hosts(host, loopback):
    assert is_loopback(host) is loopback


def test_credentials_over_plain_http_to_another_machine_are_refused_unless_insecure():
    token = Auth(token="tok-3f9a1c77e2b54d0aa1b2", sources=("bearer token from $KFNLP_KFP_TOKEN",))
    cookie = Auth(cookie="authservice_session=abc", sources=("session cookie from $KFNLP_KFP_COOKIE",))
    for auth in (token, cookie):
        with pytest.raises(ConfigError, match="refusing to send the .* over plain http.*--insecure") as caught:
            Api("http://kfp.example.com:8888", auth)
        assert "tok-3f9a" not in str(caught.value) and "abc" not in str(caught.value)
        Api("http://kfp.example.com:8888", auth, insecure=True)  # constructing sends nothing
        Api("https://kfp.example.com", auth)
        Api("http://localhost:8080", auth)
    Api("http://kfp.example.com:8888", Auth())  # nothing to leak


def test_submit_refuses_a_token_for_a_plain_http_host_before_any_request():
    result = run_cli(
        "submit",
        "ner",
        "--host",
        "http://kfp.example.com:8888",
        env={**NO_CREDENTIALS, "KFNLP_KFP_TOKEN": "tok-3f9a1c77e2b54d0aa1b2", "KFNLP_IMAGE": DIGEST_IMAGE},
    )
    line = _error_line(result)
    assert "over plain http" in line and "--insecure" in line and "tok-3f9a" not in result.stderr
    assert "cannot reach" not in line


def test_submit_still_sends_a_token_to_a_loopback_port_forward():
    with FakeKfpApi(token="tok-3f9a1c77e2b54d0aa1b2") as api:
        result = run_cli(
            "submit",
            "ner",
            "--host",
            api.url,
            env={**NO_CREDENTIALS, "KFNLP_KFP_TOKEN": "tok-3f9a1c77e2b54d0aa1b2", "KFNLP_IMAGE": DIGEST_IMAGE},
        )
        assert result.returncode == 0, result.stderr
        assert api.calls("POST", "/apis/v2beta1/runs")


# --- --runner docker as root -----------------------------------------------------------------------


@pytest.mark.skipif(os.geteuid() != 0, reason="handing files to uid 1000 needs root")
@pytest.mark.parametrize("embedded_registry", [True, False])
def test_docker_as_root_hands_over_only_what_the_stages_write(tmp_path, embedded_registry):
    root, home = tmp_path / "out" / "artifacts", tmp_path / "home"
    root.mkdir(parents=True)
    for name in ("registry", "cache/s3", "other"):
        (home / name).mkdir(parents=True)
    (home / "registry" / "mlflow.db").write_text("")
    (home / "other" / "private.txt").write_text("the user's own")
    docker._hand_over(root, home, embedded_registry, [root, home])
    uid = docker.IMAGE_UID
    assert root.stat().st_uid == uid
    assert (home / "cache").stat().st_uid == (home / "cache" / "s3").stat().st_uid == uid
    assert (home / "locks").stat().st_uid == uid
    assert ((home / "registry" / "mlflow.db").stat().st_uid == uid) is embedded_registry
    for untouched in (home, home / "other", home / "other" / "private.txt"):
        assert untouched.stat().st_uid == 0, untouched
