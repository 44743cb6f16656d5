"""One Kubeflow Pipelines REST API (v2beta1) endpoint, through ``kfp.Client``.

Before anything is sent, one bounded request to ``/apis/v2beta1/healthz`` (no retries, no
redirects) turns an unreachable host, a refused credential, a login page or a wrong
address into one clear line, instead of kfp's five retries five seconds apart. Every
later call runs inside :meth:`Api.calling`, which turns kfp's, kfp_server_api's and
urllib3's failures into one-line :class:`SubmitError` s naming the operation.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import warnings
from collections.abc import Iterator
from typing import Any

from kfnlp.errors import ConfigError, KfnlpError, SubmitError
from kfnlp.launch.cluster.auth import Auth

DEFAULT_EXPERIMENT = "Default"  # KFP's own default experiment
POD_NAMESPACE_PATH = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 60.0


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


def is_loopback(host: str) -> bool:
    """Whether the URL ``host`` names this machine (localhost, 127.0.0.0/8, ::1): a port-forward."""
    import ipaddress
    from urllib.parse import urlsplit

    name = urlsplit(host).hostname or ""
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def check_transport(host: str, auth: Auth, insecure: bool = False) -> None:
    """Credentials never cross the network in clear text unless asked to (``--insecure``): plain
    ``http://`` is for a port-forward on this machine."""
    if auth.sources and host.startswith("http://") and not is_loopback(host) and not insecure:
        raise ConfigError(
            f"--host {host}: refusing to send the {auth.describe()} over plain http to another machine; "
            "use https://, a port-forward to localhost, or --insecure"
        )


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


class Api:
    """One KFP API endpoint: host, credentials, namespace and a ``kfp.Client``."""

    def __init__(self, host: str, auth: Auth, namespace: str | None = None, insecure: bool = False):
        self.host = normalize_host(host)
        check_transport(self.host, auth, insecure)
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

    def connect(self, need_namespace: bool) -> Api:
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
