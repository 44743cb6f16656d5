"""``kfnlp submit`` and ``kfnlp upload`` against a stand-in Kubeflow Pipelines API.

Why no real cluster: no Kubernetes API server can run on these machines (no kind, k3s or
minikube), so there is no KFP backend to submit to. ``tests/support/kfp_api_server.py`` imitates
the REST API (v2beta1) that ``kfp.Client`` speaks, on loopback, and records every request.
The tests run the real ``kfnlp`` command (and so the real ``kfp.Client`` and its HTTP
stack) against it and check what arrives: the experiment, the run body (the pipeline spec
parsed strictly with kfp's protobufs, the runtime parameters, the pipeline root), the
uploaded package, and the credentials on the wire, which must never reach the terminal.
"""

from __future__ import annotations

import json
import socket
import time

import pytest
import yaml
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2

from kfnlp import catalog
from kfnlp.catalog import load_config, pipeline_arguments
from kfnlp.launch.cluster.auth import Auth, resolve_auth
from tests.support.cli import run_cli
from tests.support.kfp_api_server import API, FakeKfpApi

TOKEN = "tok-3f9a1c77e2b54d0aa1b2"
COOKIE_VALUE = "MTcwMDAwMDAwMHxzZXNzaW9uLXNlY3JldA"
IMAGE = "registry.example.com/ml/kfnlp@sha256:" + "ab" * 32  # compiling needs an image (issue 20)
CREDENTIAL_ENVS = ("KFNLP_KFP_TOKEN", "KF_PIPELINES_TOKEN", "KF_PIPELINES_SA_TOKEN_PATH", "KFNLP_KFP_COOKIE")


@pytest.fixture
def kfp(tmp_path, monkeypatch):
    """``kfp(*args, **env)`` runs ``kfnlp`` with no credentials in the environment but those
    given, and a fresh HOME (kfp reads ~/.config/kfp/context.json)."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))

    def run(*args: str, **env: str):
        base = {**dict.fromkeys(CREDENTIAL_ENVS, ""), "KF_PIPELINES_UI_ENDPOINT": "", "KFNLP_IMAGE": IMAGE}
        return run_cli(*args, env={**base, **env})

    return run


def one_error_line(result, *fragments: str) -> str:
    assert result.returncode != 0, result.stdout
    # compile's advice (e.g. no registry server configured) may precede the error
    lines = [line for line in result.stderr.strip().splitlines() if not line.startswith("kfnlp: warning: ")]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("kfnlp: error: ")
    assert "Traceback" not in result.stderr + result.stdout
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def parse_spec(doc: dict) -> pipeline_spec_pb2.PipelineSpec:
    """The compiled pipeline as kfp sends it: a PipelineSpec, or {pipeline_spec, platform_spec}."""
    if "pipeline_spec" in doc:
        json_format.ParseDict(doc.get("platform_spec", {}), pipeline_spec_pb2.PlatformSpec())
        doc = doc["pipeline_spec"]
    return json_format.ParseDict(doc, pipeline_spec_pb2.PipelineSpec())  # unknown fields are errors


def spec_defaults(spec: pipeline_spec_pb2.PipelineSpec) -> dict:
    params = spec.root.input_definitions.parameters
    return {name: getattr(p.default_value, p.default_value.WhichOneof("kind")) for name, p in params.items()}


# -- submit ----------------------------------------------------------------------------
def test_submit_sends_the_compiled_pipeline_and_the_merged_config(kfp, tmp_path):
    config_file = tmp_path / "ner.yaml"
    config_file.write_text(yaml.safe_dump({"train_ner": {"learning_rate": 0.0003}, "evaluate_ner": {"split": "test"}}))
    overrides = ("train_ner.num_epochs=1", "register.model_name=kfnlp-ner-test")
    expected = pipeline_arguments(load_config(catalog.get("ner"), str(config_file), overrides))
    with FakeKfpApi(token=TOKEN) as api:
        result = kfp(
            "submit", "ner", "--host", api.url, "--experiment", "nlp", "--run-name", "ner-1",
            "--pipeline-root", "s3://kfnlp-artifacts/runs", "--config", str(config_file),
            *(arg for o in overrides for arg in ("--set", o)),
            KF_PIPELINES_TOKEN=TOKEN,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        again = kfp("submit", "ner", "--host", api.url, "--experiment", "nlp", KF_PIPELINES_TOKEN=TOKEN)
        assert again.returncode == 0, again.stderr

    (experiment,) = api.experiments.values()  # created once, found the second time
    assert experiment["display_name"] == "nlp"
    assert len(api.calls("POST", f"{API}/experiments")) == 1
    lookups = api.calls("GET", f"{API}/experiments")
    assert len(lookups) == 2
    assert json.loads(lookups[0].query["filter"])["predicates"][0]["stringValue"] == "nlp"

    first, second = (api.runs[k] for k in sorted(api.runs))
    body = first.body
    assert body["display_name"] == "ner-1"
    assert body["experiment_id"] == experiment["experiment_id"]
    assert body["runtime_config"]["pipeline_root"] == "s3://kfnlp-artifacts/runs"
    assert body["runtime_config"]["parameters"] == expected
    assert json.loads(expected["train_ner_config"])["learning_rate"] == 0.0003
    assert json.loads(expected["train_ner_config"])["num_epochs"] == 1
    spec = parse_spec(body["pipeline_spec"])
    assert spec.pipeline_info.name == "ner"
    assert spec_defaults(spec) == expected  # the compiled defaults are the merged config too
    assert {t.task_info.name for t in spec.root.dag.tasks.values()} >= {"preprocess-ner", "train-ner", "register"}
    # the run is what `kfnlp compile` writes: GPUs, tolerations and secrets (by name) travel with it
    sent = json.dumps(body["pipeline_spec"])
    assert "nvidia.com/gpu" in sent and "kfnlp-s3" in sent
    assert second.body["display_name"].startswith("ner ")  # default run name: pipeline and time
    assert "pipeline_root" not in second.body["runtime_config"] or not second.body["runtime_config"]["pipeline_root"]

    assert "ner-1" in result.stdout and "run-" in result.stdout
    assert f"{api.url}/#/runs/details/" in result.stdout
    assert "Experiment details" not in result.stdout  # kfp's own prints are replaced by kfnlp's lines
    for request in api.requests:
        assert request.headers.get("authorization") == f"Bearer {TOKEN}", request.path
    assert TOKEN not in result.stdout + result.stderr + again.stdout + again.stderr


@pytest.mark.parametrize("source", ["KFNLP_KFP_TOKEN", "KF_PIPELINES_TOKEN", "--token-file", "sa-token"])
def test_bearer_token_sources(kfp, tmp_path, source):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    args, env = [], {}
    if source == "--token-file":
        args = ["--token-file", str(token_file)]
    elif source == "sa-token":
        env = {"KF_PIPELINES_SA_TOKEN_PATH": str(token_file)}
    else:
        env = {source: TOKEN}
    with FakeKfpApi(token=TOKEN) as api:
        result = kfp("submit", "mlm-adapt", "--host", api.url, *args, **env)
    assert result.returncode == 0, result.stderr
    assert api.runs
    assert {r.headers.get("authorization") for r in api.requests} == {f"Bearer {TOKEN}"}
    assert TOKEN not in result.stdout + result.stderr


@pytest.mark.parametrize("how", ["KFNLP_KFP_COOKIE", "--cookie-env"])
def test_session_cookie(kfp, how):
    expected = f"authservice_session={COOKIE_VALUE}"
    if how == "--cookie-env":  # a bare value is the authservice session
        args, env = ["--cookie-env", "MY_KF_SESSION"], {"MY_KF_SESSION": COOKIE_VALUE}
    else:
        args, env = [], {"KFNLP_KFP_COOKIE": expected}
    with FakeKfpApi(cookie=expected) as api:
        result = kfp("submit", "ner", "--host", api.url, *args, **env)
    assert result.returncode == 0, result.stderr
    assert {r.headers.get("cookie") for r in api.requests} == {expected}
    assert all("authorization" not in r.headers for r in api.requests)
    assert COOKIE_VALUE not in result.stdout + result.stderr


def test_wait_streams_state_changes_and_succeeds(kfp):
    with FakeKfpApi(run_states=("PENDING", "RUNNING", "RUNNING", "RUNNING", "SUCCEEDED")) as api:
        result = kfp("submit", "ner", "--host", api.url, "--wait", "--poll-interval", "0.05")
    assert result.returncode == 0, result.stderr
    states = [line.split()[-1] for line in result.stdout.splitlines() if line.startswith("  [")]
    assert states == ["PENDING", "RUNNING", "SUCCEEDED"]  # one line per change, not per poll
    assert "succeeded" in result.stdout.splitlines()[-1]
    (run,) = api.runs.values()
    assert run.polls == 5


@pytest.mark.parametrize("final", ["FAILED", "CANCELED"])
def test_wait_fails_when_the_run_does_not_succeed(kfp, final):
    with FakeKfpApi(run_states=("RUNNING", final)) as api:
        result = kfp("submit", "ner", "--host", api.url, "--wait", "--poll-interval", "0.05")
    assert result.returncode == 6
    line = one_error_line(result, f"ended {final}", "/#/runs/details/run-")
    if final == "FAILED":
        assert "task train-ner failed: exit code 1" in line and "failed tasks: train-ner" in line
    assert result.stdout.splitlines()[-1].endswith(final)


def test_wait_timeout(kfp):
    with FakeKfpApi(run_states=("RUNNING",)) as api:
        started = time.monotonic()
        result = kfp("submit", "ner", "--host", api.url, "--wait", "--timeout", "0.5", "--poll-interval", "0.1")
        elapsed = time.monotonic() - started
    assert result.returncode == 7
    one_error_line(result, "still RUNNING after 0.5 s", "--timeout", "goes on running")
    assert elapsed < 15


def test_timeout_needs_wait(kfp):
    one_error_line(kfp("submit", "ner", "--host", "http://127.0.0.1:9", "--timeout", "5"), "--timeout needs --wait")


def test_multi_user_needs_a_namespace(kfp):
    with FakeKfpApi(multi_user=True) as api:
        missing = kfp("submit", "ner", "--host", api.url)
        given = kfp("submit", "ner", "--host", api.url, "--namespace", "team-nlp")
    one_error_line(missing, "multi-user", "--namespace")
    assert given.returncode == 0, given.stderr
    (experiment,) = api.experiments.values()
    assert experiment["namespace"] == "team-nlp"
    assert "namespace team-nlp" in given.stdout


# -- upload ----------------------------------------------------------------------------
def test_upload_new_pipeline_then_new_versions(kfp):
    with FakeKfpApi(token=TOKEN) as api:
        first = kfp("upload", "ner", "--host", api.url, "--set", "train_ner.num_epochs=2", KFNLP_KFP_TOKEN=TOKEN)
        assert first.returncode == 0, first.stderr
        second = kfp("upload", "ner", "--host", api.url, KFNLP_KFP_TOKEN=TOKEN)
        assert second.returncode == 0, second.stderr
        named = kfp("upload", "ner", "--host", api.url, "--version", "v2", KFNLP_KFP_TOKEN=TOKEN)
        assert named.returncode == 0, named.stderr
        duplicate = kfp("upload", "ner", "--host", api.url, "--version", "v2", KFNLP_KFP_TOKEN=TOKEN)

    (pipeline,) = api.pipelines.values()
    assert pipeline["display_name"] == "ner"
    (created,) = api.calls("POST", f"{API}/pipelines/upload")
    assert created.query["name"] == "ner"
    spec = parse_spec(next(yaml.safe_load_all(created.upload)))
    assert spec.pipeline_info.name == "ner"
    assert json.loads(spec_defaults(spec)["train_ner_config"])["num_epochs"] == 2
    assert "uploaded new pipeline ner" in first.stdout

    versions = api.calls("POST", f"{API}/pipelines/upload_version")
    assert [v.query["pipelineid"] for v in versions] == [pipeline["pipeline_id"]] * 3
    assert versions[0].query["name"].startswith("ner-0.")  # default: pipeline, kfnlp version, time
    assert versions[1].query["name"] == "v2"
    assert (
        json.loads(spec_defaults(parse_spec(next(yaml.safe_load_all(versions[1].upload))))["train_ner_config"])[
            "num_epochs"
        ]
        == json.loads(pipeline_arguments(load_config(catalog.get("ner")))["train_ner_config"])["num_epochs"]
    )
    assert "uploaded version v2" in named.stdout and "/version/" in named.stdout
    one_error_line(duplicate, "HTTP 409", "already exists")
    assert {r.headers.get("authorization") for r in api.requests} == {f"Bearer {TOKEN}"}
    assert TOKEN not in "".join(r.stdout + r.stderr for r in (first, second, named, duplicate))


def test_upload_new_pipeline_with_a_version_name(kfp):
    with FakeKfpApi() as api:
        result = kfp("upload", "mlm-adapt", "--host", api.url, "--version", "2025-06", "--namespace", "team-nlp")
    assert result.returncode == 0, result.stderr
    (pipeline,) = api.pipelines.values()
    assert pipeline["display_name"] == "mlm-adapt" and pipeline["namespace"] == "team-nlp"
    assert [v["display_name"] for v in api.versions.values()] == ["mlm-adapt", "2025-06"]
    lookup = api.calls("GET", f"{API}/pipelines")[0]
    assert lookup.query["namespace"] == "team-nlp"


# -- errors ----------------------------------------------------------------------------
def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("command", ["submit", "upload"])
def test_unreachable_host_is_one_quick_line(kfp, command):
    host = f"http://127.0.0.1:{closed_port()}"
    started = time.monotonic()
    result = kfp(command, "ner", "--host", host, KF_PIPELINES_TOKEN=TOKEN)
    assert time.monotonic() - started < 20  # kfp alone retries healthz 5 times, 5 s apart
    assert result.returncode == 7
    one_error_line(result, "cannot reach the Kubeflow Pipelines API", host, "connection refused")
    assert TOKEN not in result.stderr


def test_refused_token_names_the_source_not_the_value(kfp):
    with FakeKfpApi(token="the-right-one") as api:
        result = kfp("submit", "ner", "--host", api.url, KF_PIPELINES_TOKEN=TOKEN)
        anonymous = kfp("upload", "ner", "--host", api.url)
    assert result.returncode == 7
    one_error_line(result, "HTTP 401", "authentication", "bearer token from $KF_PIPELINES_TOKEN")
    assert TOKEN not in result.stdout + result.stderr
    one_error_line(anonymous, "HTTP 401", "authentication", "no credentials", "--token-file")
    assert not api.runs and not api.pipelines
    assert len(api.requests) == 2  # the health check only: nothing compiled or sent after a refusal


def test_forbidden(kfp):
    with FakeKfpApi(status=403) as api:
        result = kfp("submit", "ner", "--host", api.url, "--namespace", "other-team", KFNLP_KFP_TOKEN=TOKEN)
    one_error_line(result, "HTTP 403", "not allowed in namespace other-team", "bearer token from $KFNLP_KFP_TOKEN")
    assert TOKEN not in result.stdout + result.stderr


def test_login_page_redirect(kfp):
    with FakeKfpApi(cookie="authservice_session=good", login_redirect=True) as api:
        result = kfp("submit", "ner", "--host", api.url, KFNLP_KFP_COOKIE="authservice_session=stale")
    one_error_line(result, "login page", "authentication", "session cookie from $KFNLP_KFP_COOKIE")
    assert "stale" not in result.stdout + result.stderr


def test_wrong_address(kfp):
    with FakeKfpApi() as api:
        result = kfp("submit", "ner", "--host", api.url + "/not-kfp")
    one_error_line(result, "no Kubeflow Pipelines v2beta1 API", "HTTP 404")


def test_server_error_during_submit(kfp):
    with FakeKfpApi() as api:
        api.experiments["experiment-x"] = {"experiment_id": "experiment-x", "display_name": "x", "namespace": ""}
        api.experiments["experiment-y"] = {"experiment_id": "experiment-y", "display_name": "x", "namespace": ""}
        result = kfp("submit", "ner", "--host", api.url, "--experiment", "x")
    one_error_line(result, "experiment 'x'", "Multiple experiments")
    assert not api.runs


def test_refusals_after_the_health_check(kfp):
    """Kubeflow's RBAC answers per namespace: the token passes the health check, then the
    experiment lookup is refused; a server error on run creation is one line too."""
    with FakeKfpApi(fail_on={f"{API}/experiments": [403], f"{API}/runs": [500]}) as api:
        forbidden = kfp("submit", "ner", "--host", api.url, "--namespace", "team-nlp", KF_PIPELINES_TOKEN=TOKEN)
        broken = kfp("submit", "ner", "--host", api.url, "--run-name", "r")
    one_error_line(
        forbidden,
        "refused finding or creating experiment 'Default'",
        "HTTP 403",
        "not allowed in namespace team-nlp",
        "bearer token from $KF_PIPELINES_TOKEN",
    )
    assert forbidden.returncode == 7 and TOKEN not in forbidden.stderr
    one_error_line(broken, "creating run 'r' failed: HTTP 500", "injected HTTP 500")
    assert not api.runs


@pytest.mark.parametrize("outages", [2, 4])
def test_wait_rides_out_brief_outages(kfp, outages):
    states = ("RUNNING", "RUNNING", "SUCCEEDED")
    with FakeKfpApi(run_states=states, fail_on={f"{API}/runs/": [503] * outages}) as api:
        result = kfp("submit", "ner", "--host", api.url, "--wait", "--poll-interval", "0.05")
    retries = [line for line in result.stdout.splitlines() if line.startswith("  (retrying: ")]
    if outages <= 3:  # up to three failed polls in a row are retried
        assert result.returncode == 0, result.stderr
        assert len(retries) == outages and "HTTP 503" in retries[0]
        assert result.stdout.splitlines()[-1].endswith("succeeded")
    else:
        assert result.returncode == 7
        one_error_line(result, "reading run run-", "HTTP 503")


@pytest.mark.parametrize("command", ["submit", "upload"])
def test_unknown_pipeline_lists_the_catalog(kfp, command):
    with FakeKfpApi() as api:
        result = kfp(command, "nre", "--host", api.url)
    assert result.returncode == 2
    one_error_line(
        result, "unknown pipeline 'nre'", "available: adapt-then-cls, adapt-then-ner, clm-adapt, cls, mlm-adapt, ner"
    )
    assert not api.requests


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--host", "localhost:8080"], "give the scheme"),
        (["--host", "http://127.0.0.1:9", "--token-file", "/nonexistent/token"], "--token-file /nonexistent/token"),
        (["--host", "http://127.0.0.1:9", "--cookie-env", "NO_SUCH_VARIABLE_SET"], "NO_SUCH_VARIABLE_SET"),
    ],
)
def test_bad_connection_flags(kfp, args, fragment):
    result = kfp("submit", "ner", *args)
    assert result.returncode == 2
    one_error_line(result, fragment)


# -- credentials, in process ------------------------------------------------------------
def test_credential_order_and_redaction(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("from-file")
    env = {"KFNLP_KFP_TOKEN": "kfnlp-env", "KF_PIPELINES_TOKEN": "kfp-env", "KF_PIPELINES_SA_TOKEN_PATH": ""}
    assert resolve_auth(str(token_file), environ=env).headers() == {"Authorization": "Bearer from-file"}
    assert resolve_auth(environ=env).headers() == {"Authorization": "Bearer kfnlp-env"}
    assert resolve_auth(environ={**env, "KFNLP_KFP_TOKEN": " "}).headers() == {"Authorization": "Bearer kfp-env"}
    sa = resolve_auth(environ={"KF_PIPELINES_SA_TOKEN_PATH": str(token_file)})
    assert sa.token_file == str(token_file) and sa.headers() == {"Authorization": "Bearer from-file"}
    token_file.write_text("rotated")  # projected tokens rotate: re-read per request
    assert sa.headers() == {"Authorization": "Bearer rotated"}
    both = resolve_auth(environ={**env, "KFNLP_KFP_COOKIE": "authservice_session=c00kie"})
    assert both.headers() == {"Authorization": "Bearer kfnlp-env", "Cookie": "authservice_session=c00kie"}
    assert both.describe() == "bearer token from $KFNLP_KFP_TOKEN and session cookie from $KFNLP_KFP_COOKIE"
    for text in (both.describe(), repr(both), str(both)):
        assert "kfnlp-env" not in text and "c00kie" not in text
    assert resolve_auth(environ={}).describe() == "no credentials"
    assert Auth().headers() == {}
