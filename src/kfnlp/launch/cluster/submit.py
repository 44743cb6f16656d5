"""``kfnlp submit`` and ``kfnlp upload``: send a pipeline to a Kubeflow Pipelines API.

Both compile the catalog pipeline in this process with the merged config (embedded
defaults <- --config <- --set) as its parameter defaults, then talk to the KFP REST API
(v2beta1) through ``kfp.Client``:

- ``submit`` finds or creates the experiment and creates a run whose runtime
  parameters are the same merged config (``<section>_config`` JSON strings, as
  ``kfnlp run --local`` passes them), optionally with a pipeline root; ``--wait``
  polls the run and prints one line per state change.
- ``upload`` creates the pipeline, or a new version of the pipeline of that name.

Credentials, in this order (the first found is the bearer token; a cookie is sent as
well when one is given): ``--token-file``, ``$KFNLP_KFP_TOKEN``, ``$KF_PIPELINES_TOKEN``,
the in-cluster service-account token (``$KF_PIPELINES_SA_TOKEN_PATH``, default
``/var/run/secrets/kubeflow/pipelines/token``); a session cookie (Dex/Istio
``authservice_session=...``) from ``--cookie-env NAME`` or ``$KFNLP_KFP_COOKIE``. Their
values are never printed: messages name where a credential came from, not what it is.

Before anything is sent, one bounded request to ``/apis/v2beta1/healthz`` (no retries, no
redirects) turns an unreachable host, a refused credential, a login page or a wrong
address into one clear line, instead of kfp's five retries five seconds apart.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TextIO

from kfnlp.errors import ConfigError, KfnlpError, PipelineError, SubmitError

TOKEN_ENVS = ("KFNLP_KFP_TOKEN", "KF_PIPELINES_TOKEN")
COOKIE_ENV = "KFNLP_KFP_COOKIE"
SA_TOKEN_ENV = "KF_PIPELINES_SA_TOKEN_PATH"  # as kfp's ServiceAccountTokenVolumeCredentials
SA_TOKEN_PATH = "/var/run/secrets/kubeflow/pipelines/token"
POD_NAMESPACE_PATH = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
DEFAULT_COOKIE_NAME = "authservice_session"
DEFAULT_EXPERIMENT = "Default"  # KFP's own default experiment
CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 60.0
SUCCEEDED = "SUCCEEDED"
FINAL_STATES = {"SUCCEEDED", "FAILED", "CANCELED", "SKIPPED", "ERROR"}  # ERROR: pre-v2 servers
WAIT_RETRIES = 3  # consecutive transient API failures tolerated while waiting


# -- credentials -----------------------------------------------------------------------
@dataclass(frozen=True)
class Auth:
    """What to send: a bearer token (inline or re-read from a file per request) and/or a
    cookie. ``sources`` says where each came from, for messages; never the values."""

    token: str | None = field(default=None, repr=False)
    token_file: str | None = None
    cookie: str | None = field(default=None, repr=False)
    sources: tuple[str, ...] = ()

    def headers(self) -> dict[str, str]:
        headers = {}
        token = self.token
        if self.token_file:
            token = _read_token(self.token_file, "token file")
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if self.cookie:
            headers["Cookie"] = self.cookie
        return headers

    def describe(self) -> str:
        return " and ".join(self.sources) if self.sources else "no credentials"


def _read_token(path: str, what: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            token = f.read().strip()
    except OSError as exc:
        raise ConfigError(f"{what} {path}: cannot read ({exc.strerror or exc})") from None
    if not token:
        raise ConfigError(f"{what} {path} is empty")
    return token


def resolve_auth(
    token_file: str | None = None, cookie_env: str | None = None, environ: Mapping[str, str] | None = None
) -> Auth:
    """The credentials to use, from flags and the environment (empty variables count as unset)."""
    env = os.environ if environ is None else environ
    token = file = None
    sources = []
    if token_file:
        _read_token(token_file, "--token-file")  # fail now on a missing or empty file
        file = token_file
        sources.append(f"bearer token from --token-file {token_file}")
    else:
        for name in TOKEN_ENVS:
            if env.get(name, "").strip():
                token = env[name].strip()
                sources.append(f"bearer token from ${name}")
                break
        else:
            explicit = env.get(SA_TOKEN_ENV, "").strip()
            sa_path = explicit or SA_TOKEN_PATH
            if explicit or os.path.isfile(sa_path):
                _read_token(
                    sa_path, f"service-account token (${SA_TOKEN_ENV})" if explicit else "service-account token"
                )
                file = sa_path
                sources.append(f"service-account token {sa_path}")
    cookie = None
    if cookie_env:
        cookie = env.get(cookie_env, "").strip()
        if not cookie:
            raise ConfigError(f"--cookie-env {cookie_env}: the environment variable {cookie_env} is not set or empty")
        sources.append(f"session cookie from ${cookie_env}")
    elif env.get(COOKIE_ENV, "").strip():
        cookie = env[COOKIE_ENV].strip()
        sources.append(f"session cookie from ${COOKIE_ENV}")
    if cookie and "=" not in cookie:
        cookie = f"{DEFAULT_COOKIE_NAME}={cookie}"  # a bare value is the Kubeflow authservice's session
    return Auth(token=token, token_file=file, cookie=cookie, sources=tuple(sources))


# -- compiling -------------------------------------------------------------------------
def compiled_pipeline(entry, config, cluster=None) -> str:
    """Compile ``entry``'s pipeline for the cluster (the ``kfnlp compile`` output: the
    config's values as parameter defaults, ``cluster``'s Kubernetes settings) into a new
    temporary YAML file and return its path; the caller deletes it."""
    from pathlib import Path

    from kfnlp.launch.cluster.compile import compile_to
    from kfnlp.launch.cluster.settings import ClusterConfig

    fd, path = tempfile.mkstemp(prefix=f"kfnlp-{entry.name}-", suffix=".yaml")
    os.close(fd)
    try:
        compile_to(entry, config, cluster or ClusterConfig(), Path(path))
    except BaseException:
        os.unlink(path)
        raise
    return path


@contextlib.contextmanager
def _compiled(entry, config, cluster=None) -> Iterator[str]:
    path = compiled_pipeline(entry, config, cluster)
    try:
        yield path
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)


# -- talking to the API ----------------------------------------------------------------
def normalize_host(host: str) -> str:
    host = (host or "").strip().rstrip("/")
    if not host:
        raise ConfigError("--host: give the Kubeflow Pipelines address, e.g. http://localhost:8080")
    if not host.startswith(("http://", "https://")):
        raise ConfigError(
            f"--host {host}: give the scheme, e.g. http://localhost:8080 (a port-forward) "
            "or https://kubeflow.example.com/pipeline"
        )
    return host


def _reason(exc: BaseException) -> str:
    """A short, credential-free reason for a network failure."""
    import socket
    import ssl

    seen = exc
    while seen is not None:
        if isinstance(seen, ConnectionRefusedError):
            return "connection refused"
        if isinstance(seen, socket.gaierror):
            return "unknown host name"
        if isinstance(seen, ssl.SSLError | ssl.CertificateError):
            return f"TLS failed ({getattr(seen, 'reason', None) or seen})"
        if isinstance(seen, TimeoutError):
            return f"no answer within {CONNECT_TIMEOUT_S:.0f} s"
        seen = seen.__cause__ or seen.__context__ or getattr(seen, "reason", None)
        if not isinstance(seen, BaseException):
            break
    text = str(getattr(exc, "reason", None) or exc)
    return text.split(": ", 1)[-1] if "object at 0x" in text else text


def _server_message(body: Any) -> str:
    """The ``message`` of a KFP error body (``{"error", "code", "message"}``), or a short excerpt."""
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    if not body:
        return ""
    try:
        data = json.loads(body)
    except (TypeError, ValueError):
        text = " ".join(str(body).split())
        return "" if text.lstrip().startswith("<") else text[:200]
    if isinstance(data, dict):
        return str(data.get("message") or data.get("error") or "")[:300]
    return ""


class _Api:
    """One KFP API endpoint: host, credentials, namespace and a ``kfp.Client``."""

    def __init__(self, host: str, auth: Auth, namespace: str | None = None):
        self.host = normalize_host(host)
        self.auth = auth
        self.namespace = namespace or None
        self.multi_user = False
        self.client = None

    # errors --------------------------------------------------------------------------
    def _auth_failure(self, status: int, what: str) -> SubmitError:
        tried = self.auth.describe()
        hint = (
            "set $KF_PIPELINES_TOKEN or $KFNLP_KFP_TOKEN, pass --token-file, or a session cookie with --cookie-env"
            if not self.auth.sources
            else "check that the credential is current and meant for this host"
        )
        if status == 403:
            scope = f" in namespace {self.namespace}" if self.namespace else ""
            return SubmitError(
                f"{self.host} refused {what}: HTTP 403 Forbidden; authenticated with {tried}, "
                f"but not allowed{scope}; check the account's Kubeflow profile access"
            )
        return SubmitError(
            f"{self.host} refused {what}: HTTP {status} Unauthorized, authentication failed; tried: {tried}; {hint}"
        )

    def error(self, exc: BaseException, what: str) -> KfnlpError:
        """A kfp / kfp_server_api / urllib3 failure as one line naming the operation."""
        import urllib3
        from kfp_server_api.exceptions import ApiException, ApiValueError

        if isinstance(exc, ApiException) and exc.status:
            status = int(exc.status)
            if status in (401, 403):
                return self._auth_failure(status, what)
            message = _server_message(exc.body)
            if status == 404:
                return SubmitError(f"{self.host}: {what} failed: HTTP 404 not found{': ' + message if message else ''}")
            error = SubmitError(
                f"{self.host}: {what} failed: HTTP {status} {exc.reason or ''}".rstrip()
                + (f": {message}" if message else "")
            )
            error.transient = status in (429, 502, 503, 504)  # type: ignore[attr-defined]
            return error
        if isinstance(exc, urllib3.exceptions.HTTPError | ApiException | OSError):
            error = SubmitError(f"cannot reach the Kubeflow Pipelines API at {self.host} ({what}): {_reason(exc)}")
            error.transient = True  # type: ignore[attr-defined]
            return error
        if isinstance(exc, ApiValueError | ValueError):  # kfp's own checks, e.g. duplicate names
            return SubmitError(f"{self.host}: {what} failed: {exc}")
        raise exc

    @contextlib.contextmanager
    def calling(self, what: str) -> Iterator[None]:
        """Run kfp calls: their links printed to stdout are dropped (kfnlp prints its own),
        their errors become one-line SubmitErrors."""
        try:
            with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                yield
        except KfnlpError:
            raise
        except Exception as exc:
            raise self.error(exc, what) from exc

    # connecting ----------------------------------------------------------------------
    def probe(self) -> dict[str, Any]:
        """GET /apis/v2beta1/healthz once, bounded, with the credentials; its JSON."""
        import certifi
        import urllib3

        url = f"{self.host}/apis/v2beta1/healthz"
        http = urllib3.PoolManager(cert_reqs="CERT_REQUIRED", ca_certs=certifi.where())
        headers = {"Accept": "application/json", **self.auth.headers()}
        try:
            response = http.request(
                "GET",
                url,
                headers=headers,
                retries=False,
                redirect=False,
                timeout=urllib3.Timeout(connect=CONNECT_TIMEOUT_S, read=READ_TIMEOUT_S),
            )
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise SubmitError(f"cannot reach the Kubeflow Pipelines API at {self.host}: {_reason(exc)}") from None
        finally:
            http.clear()
        status = response.status
        if status in (401, 403):
            raise self._auth_failure(status, "GET /apis/v2beta1/healthz")
        if 300 <= status < 400:
            target = response.headers.get("Location", "").split("?", 1)[0]  # a query may hold login state
            if any(word in target.lower() for word in ("dex", "login", "auth", "oidc", "oauth", "signin")):
                raise SubmitError(
                    f"{self.host} redirected the API request to {target} (HTTP {status}), a login page: "
                    f"authentication needed; tried: {self.auth.describe()}; pass a session cookie with "
                    "--cookie-env or a token with --token-file"
                )
            raise SubmitError(
                f"{self.host} redirected the API request to {target or 'another address'} (HTTP {status}); "
                "give the address it redirects to as --host"
            )
        if status == 404:
            raise SubmitError(
                f"{self.host}: no Kubeflow Pipelines v2beta1 API here (GET /apis/v2beta1/healthz: HTTP 404); "
                "--host is the KFP API or UI address, e.g. http://localhost:8080 after "
                "`kubectl port-forward -n kubeflow svc/ml-pipeline-ui 8080:80`, or https://KUBEFLOW/pipeline"
            )
        if status >= 400:
            message = _server_message(response.data)
            raise SubmitError(f"{self.host}: health check failed: HTTP {status}{': ' + message if message else ''}")
        try:
            data = json.loads(response.data)
        except ValueError:
            data = None
        if not isinstance(data, dict):
            kind = response.headers.get("Content-Type", "unknown content").split(";")[0]
            raise SubmitError(
                f"{self.host} answered the API health check with {kind}, not Kubeflow Pipelines JSON "
                f"(a login page or a different service?); tried: {self.auth.describe()}"
            )
        return data

    def connect(self, need_namespace: bool) -> _Api:
        healthz = self.probe()
        self.multi_user = healthz.get("multi_user") is True
        if self.multi_user and not self.namespace and need_namespace:
            self.namespace = _pod_namespace()
            if not self.namespace:
                raise ConfigError(
                    f"{self.host} runs Kubeflow Pipelines in multi-user mode: pass --namespace "
                    "(your Kubeflow profile namespace)"
                )
        self.client = self._client()
        return self

    def _client(self):
        import kfp
        from kfp.client.set_volume_credentials import ServiceAccountTokenVolumeCredentials
        from kfp_server_api import V2beta1GetHealthzResponse

        class Client(kfp.Client):
            # kfnlp has probed the API and resolved the namespace already: keep kfp from
            # probing again (5 tries, 5 s apart, tracebacks on stderr) and from writing
            # ~/.config/kfp/context.json when the server is multi-user
            def get_kfp_healthz(self, sleep_duration: int = 5):
                return V2beta1GetHealthzResponse(multi_user=False)

        kwargs: dict[str, Any] = {"host": self.host, "cookies": self.auth.cookie or ""}
        if self.auth.token_file:  # re-read per request: projected tokens rotate
            kwargs["credentials"] = ServiceAccountTokenVolumeCredentials(self.auth.token_file)
        elif self.auth.token:
            kwargs["existing_token"] = self.auth.token
        with self.calling("connecting"):
            return Client(**kwargs)

    def link(self, fragment: str) -> str:
        ui = os.environ.get("KF_PIPELINES_UI_ENDPOINT", "").rstrip("/") or self.host
        return f"{ui}/#/{fragment}"


def _pod_namespace() -> str | None:
    """The namespace of the pod we run in, as kfp finds it in multi-user mode."""
    try:
        with open(POD_NAMESPACE_PATH, encoding="utf-8") as f:
            return f.read().strip() or None
    except OSError:
        return None


# -- submit ----------------------------------------------------------------------------
def submit(
    entry,
    config,
    *,
    host: str,
    auth: Auth,
    namespace: str | None = None,
    experiment: str | None = None,
    run_name: str | None = None,
    pipeline_root: str | None = None,
    wait: bool = False,
    timeout: float | None = None,
    poll_interval: float = 5.0,
    cluster=None,
    out: TextIO | None = None,
) -> dict[str, Any]:
    """Compile, submit one run, and (``wait``) follow it to the end. Returns the run's
    id, name, experiment, url and last known state."""
    from kfnlp.catalog import pipeline_arguments

    out = out or sys.stdout
    api = _Api(host, auth, namespace).connect(need_namespace=True)
    client = api.client
    arguments = pipeline_arguments(config)
    experiment = experiment or DEFAULT_EXPERIMENT
    run_name = run_name or f"{entry.name} {time.strftime('%Y-%m-%d %H-%M-%S', time.gmtime())}"
    with _compiled(entry, config, cluster) as package:
        with api.calling(f"finding or creating experiment {experiment!r}"):
            found = client.create_experiment(name=experiment, namespace=api.namespace)
        if not getattr(found, "experiment_id", None):
            raise SubmitError(f"{api.host}: experiment {experiment!r}: the server answered without an experiment id")
        scope = f" in namespace {api.namespace}" if api.namespace else ""
        print(f"kfnlp: experiment {experiment} ({found.experiment_id}){scope}", file=out)
        with api.calling(f"creating run {run_name!r}"):
            run = client.run_pipeline(
                experiment_id=found.experiment_id,
                job_name=run_name,
                pipeline_package_path=package,
                params=arguments,
                pipeline_root=pipeline_root,
            )
    if not getattr(run, "run_id", None):
        raise SubmitError(f"{api.host}: creating run {run_name!r}: the server answered without a run id")
    url = api.link(f"runs/details/{run.run_id}")
    print(f"kfnlp: submitted {entry.name} as run {run_name!r} ({run.run_id})", file=out)
    print(f"  {url}", file=out)
    result = {
        "run_id": run.run_id,
        "run_name": run_name,
        "experiment_id": found.experiment_id,
        "url": url,
        "state": run.state,
    }
    if wait:
        final = wait_for_run(api, run.run_id, run_name, timeout=timeout, poll_interval=poll_interval, out=out)
        result["state"] = final.state
    out.flush()
    return result


def wait_for_run(
    api: _Api,
    run_id: str,
    run_name: str,
    *,
    timeout: float | None,
    poll_interval: float,
    out: TextIO,
):
    """Poll the run until it ends; one line per state change. Raises PipelineError when it
    ends other than SUCCEEDED, SubmitError when ``timeout`` seconds pass first."""
    url = api.link(f"runs/details/{run_id}")
    try:
        return _follow(api, run_id, run_name, url, timeout, poll_interval, out)
    except KeyboardInterrupt:
        print(f"kfnlp: stopped following run {run_id}; it goes on running: {url}", file=sys.stderr)
        raise


def _follow(api: _Api, run_id: str, run_name: str, url: str, timeout: float | None, poll: float, out: TextIO):
    started = time.monotonic()
    last = None
    failures = 0
    while True:
        left = None if timeout is None else timeout - (time.monotonic() - started)
        read_timeout = READ_TIMEOUT_S if left is None else max(1.0, min(READ_TIMEOUT_S, left))
        try:
            with api.calling(f"reading run {run_id}"):
                # kfp's get_run takes no timeout; the generated API it wraps does, so a
                # hung server cannot hold the wait long past --timeout
                run = api.client.runs.run_service_get_run(
                    run_id=run_id, _request_timeout=(CONNECT_TIMEOUT_S, read_timeout)
                )
            failures = 0
        except SubmitError as exc:
            failures += 1
            if not getattr(exc, "transient", False) or failures > WAIT_RETRIES:
                raise
            print(f"  (retrying: {exc})", file=out, flush=True)
            run = None
        elapsed = time.monotonic() - started
        if run is not None:
            state = str(run.state or "RUNTIME_STATE_UNSPECIFIED").upper()
            if state != last:
                print(f"  [{elapsed:6.0f}s] {state}", file=out, flush=True)
                last = state
            if state in FINAL_STATES:
                if state == SUCCEEDED:
                    print(f"kfnlp: run {run_name!r} succeeded", file=out, flush=True)
                    return run
                raise PipelineError(f"run {run_name!r} ({run_id}) ended {state}{_why(run)}; see {url}")
        if timeout is not None and elapsed >= timeout:
            raise SubmitError(
                f"run {run_name!r} ({run_id}) is still {last or 'unknown'} after {timeout:g} s (--timeout); "
                f"it goes on running on the cluster: {url}"
            )
        time.sleep(poll if timeout is None else max(0.0, min(poll, timeout - elapsed)))


def _why(run) -> str:
    parts = []
    message = getattr(getattr(run, "error", None), "message", None)
    if message:
        parts.append(message)
    details = getattr(run, "run_details", None)
    tasks = getattr(details, "task_details", None) or []
    failed = [t.display_name for t in tasks if str(getattr(t, "state", "")).upper() == "FAILED" and t.display_name]
    if failed:
        parts.append("failed tasks: " + ", ".join(failed))
    return (": " + "; ".join(parts)) if parts else ""


# -- upload ----------------------------------------------------------------------------
def upload(
    entry,
    config,
    *,
    host: str,
    auth: Auth,
    namespace: str | None = None,
    version: str | None = None,
    out: TextIO | None = None,
    cluster=None,
) -> dict[str, Any]:
    """Upload ``entry`` as a new pipeline named after it, or as a new version of the
    pipeline of that name. Returns pipeline id, version id and name, and whether the
    pipeline was created."""
    from kfnlp import __version__

    out = out or sys.stdout
    api = _Api(host, auth, namespace).connect(need_namespace=False)
    client = api.client
    name = entry.name
    existing = _find_pipeline(api, name)
    with _compiled(entry, config, cluster) as package:
        if existing is None:
            with api.calling(f"uploading pipeline {name!r}"):
                created = client.upload_pipeline(
                    package, pipeline_name=name, description=entry.description, namespace=api.namespace
                )
            pipeline_id = created.pipeline_id
            if not pipeline_id:
                raise SubmitError(f"{api.host}: uploading pipeline {name!r}: the server answered without a pipeline id")
            scope = f" in namespace {api.namespace}" if api.namespace else ""
            print(f"kfnlp: uploaded new pipeline {name} ({pipeline_id}){scope}", file=out)
            result = {"pipeline_id": pipeline_id, "created": True, "version_id": None, "version": None}
            if not version:  # KFP made its first version itself
                print(f"  {api.link(f'pipelines/details/{pipeline_id}')}", file=out)
                return result
        else:
            pipeline_id = existing
            result = {"pipeline_id": pipeline_id, "created": False}
            version = version or f"{name}-{__version__}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"
        with api.calling(f"uploading version {version!r} of pipeline {name!r}"):
            added = client.upload_pipeline_version(
                package, pipeline_version_name=version, pipeline_id=pipeline_id, description=entry.description
            )
    version_id = getattr(added, "pipeline_version_id", None)
    if not version_id:
        raise SubmitError(f"{api.host}: uploading version {version!r}: the server answered without a version id")
    print(f"kfnlp: uploaded version {version} ({version_id}) of pipeline {name} ({pipeline_id})", file=out)
    print(f"  {api.link(f'pipelines/details/{pipeline_id}/version/{version_id}')}", file=out)
    result.update(version_id=version_id, version=version)
    return result


def _find_pipeline(api: _Api, name: str) -> str | None:
    """The id of the pipeline whose display name is ``name`` (in the namespace, if given)."""
    # the Filter protobuf as JSON, as kfp.Client.get_pipeline_id builds it (operation 1: EQUALS)
    query = json.dumps({"predicates": [{"operation": 1, "key": "display_name", "stringValue": name}]})
    with api.calling(f"looking up pipeline {name!r}"):
        listing = api.client.list_pipelines(filter=query, page_size=100, namespace=api.namespace)
    # match exactly here too: a server that ignores the filter must not pick another pipeline
    found = [p for p in (listing.pipelines or []) if p.display_name == name]
    if len(found) > 1:
        raise SubmitError(f"{api.host}: {len(found)} pipelines are named {name!r}; delete or rename the extras")
    return found[0].pipeline_id if found else None


# -- the commands ----------------------------------------------------------------------
def add_parsers(sub, add_config_flags: Callable[[argparse.ArgumentParser], None]) -> None:
    """``kfnlp submit`` and ``kfnlp upload`` (``add_config_flags`` adds --config/--set)."""
    auth_help = (
        "Credentials: --token-file, $KFNLP_KFP_TOKEN or $KF_PIPELINES_TOKEN (bearer token), else the "
        f"in-cluster service-account token (${SA_TOKEN_ENV}, default {SA_TOKEN_PATH}); a session cookie "
        f"(Dex/Istio authservice_session=...) from --cookie-env NAME or ${COOKIE_ENV}. "
        "Values are never printed."
    )
    submit_p = sub.add_parser(
        "submit",
        help="run a pipeline on a Kubeflow Pipelines cluster",
        description="Compile a pipeline with the merged config (embedded defaults <- --config <- --set) and "
        "create a run of it on a Kubeflow Pipelines API (REST v2beta1, through kfp.Client), in an "
        f"experiment (default: {DEFAULT_EXPERIMENT}). " + auth_help,
    )
    submit_p.add_argument("pipeline", metavar="PIPELINE", help="pipeline name (see `kfnlp pipelines`)")
    _add_connection_flags(submit_p)
    submit_p.add_argument("--experiment", metavar="NAME", help=f"experiment (default: {DEFAULT_EXPERIMENT})")
    submit_p.add_argument("--run-name", metavar="NAME", help="run name (default: PIPELINE and the UTC time)")
    submit_p.add_argument("--pipeline-root", metavar="URI", help="where the run's artifacts go, e.g. s3://bucket/kfp")
    submit_p.add_argument("--wait", action="store_true", help="follow the run; exit non-zero unless it SUCCEEDED")
    submit_p.add_argument("--timeout", type=float, metavar="S", help="with --wait: give up after S seconds")
    submit_p.add_argument(
        "--poll-interval", type=float, default=5.0, metavar="S", help="with --wait: seconds between polls (default: 5)"
    )
    add_config_flags(submit_p)

    upload_p = sub.add_parser(
        "upload",
        help="upload a pipeline (or a new version of it) to Kubeflow Pipelines",
        description="Compile a pipeline with the merged config as its parameter defaults and upload it under "
        "its catalog name: a new pipeline, or a new version of the existing pipeline of that name. " + auth_help,
    )
    upload_p.add_argument("pipeline", metavar="PIPELINE", help="pipeline name (see `kfnlp pipelines`)")
    _add_connection_flags(upload_p)
    upload_p.add_argument(
        "--version", metavar="NAME", help="version name (default for an existing pipeline: PIPELINE-KFNLPVERSION-UTC)"
    )
    add_config_flags(upload_p)


def _add_connection_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--host",
        required=True,
        metavar="URL",
        help="Kubeflow Pipelines API, e.g. http://localhost:8080 or https://kubeflow.example.com/pipeline",
    )
    parser.add_argument("--namespace", metavar="NS", help="Kubeflow profile namespace (multi-user installs)")
    parser.add_argument("--token-file", metavar="FILE", help="file holding a bearer token (re-read per request)")
    parser.add_argument(
        "--cookie-env", metavar="NAME", help=f"environment variable holding a session cookie (default: ${COOKIE_ENV})"
    )


def _entry_and_config(args):
    from kfnlp import catalog
    from kfnlp.launch.cluster.compile import load_configs

    if not getattr(args, "debug", False):  # urllib3 logs its own retries as warnings; kfnlp reports what matters
        logging.getLogger("urllib3").setLevel(logging.ERROR)
    entry = catalog.get(args.pipeline)
    config, cluster = load_configs(entry, args.config, args.overrides)  # the cluster: section as kfnlp compile reads it
    return entry, config, cluster


def cmd_submit(args) -> int:
    if args.timeout is not None and not args.wait:
        raise ConfigError("--timeout needs --wait")
    if args.timeout is not None and args.timeout <= 0:
        raise ConfigError(f"--timeout: expected a number of seconds > 0, got {args.timeout:g}")
    if args.poll_interval <= 0:
        raise ConfigError(f"--poll-interval: expected a number of seconds > 0, got {args.poll_interval:g}")
    entry, config, cluster = _entry_and_config(args)
    auth = resolve_auth(args.token_file, args.cookie_env)
    submit(
        entry,
        config,
        host=args.host,
        auth=auth,
        namespace=args.namespace,
        experiment=args.experiment,
        run_name=args.run_name,
        pipeline_root=args.pipeline_root,
        wait=args.wait,
        timeout=args.timeout,
        poll_interval=args.poll_interval,
        cluster=cluster,
    )
    return 0


def cmd_upload(args) -> int:
    entry, config, cluster = _entry_and_config(args)
    auth = resolve_auth(args.token_file, args.cookie_env)
    upload(entry, config, host=args.host, auth=auth, namespace=args.namespace, version=args.version, cluster=cluster)
    return 0
