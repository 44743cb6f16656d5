"""Credentials for the Kubeflow Pipelines API, from flags and the environment.

In this order (the first found is the bearer token; a cookie is sent as well when one is
given): ``--token-file``, ``$KFNLP_KFP_TOKEN``, ``$KF_PIPELINES_TOKEN``, the in-cluster
service-account token (``$KF_PIPELINES_SA_TOKEN_PATH``, default
``/var/run/secrets/kubeflow/pipelines/token``); a session cookie (Dex/Istio
``authservice_session=...``) from ``--cookie-env NAME`` or ``$KFNLP_KFP_COOKIE``. Their
values are never printed: messages name where a credential came from, not what it is.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from kfnlp.errors import ConfigError

TOKEN_ENVS = ("KFNLP_KFP_TOKEN", "KF_PIPELINES_TOKEN")
COOKIE_ENV = "KFNLP_KFP_COOKIE"
SA_TOKEN_ENV = "KF_PIPELINES_SA_TOKEN_PATH"  # as kfp's ServiceAccountTokenVolumeCredentials
SA_TOKEN_PATH = "/var/run/secrets/kubeflow/pipelines/token"
DEFAULT_COOKIE_NAME = "authservice_session"


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
