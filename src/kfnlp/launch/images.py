"""``kfnlp images build``: the runtime image (images/Containerfile) through the Docker SDK.

The engine is whatever ``$DOCKER_HOST`` points at (the Docker SDK's own rules): a
Docker daemon, or podman's Docker-compatible API (``podman system service``). The
build context is the repository root filtered by ``.dockerignore``, plus optional
local inputs (a wheelhouse for offline builds, a CA bundle for pip) that are put into
``images/local/`` of the context only, never the working tree, and that only the
builder stage sees.
"""

from __future__ import annotations

import datetime as dt
import io
import os
import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from kfnlp import __version__
from kfnlp.errors import KfnlpError

VARIANTS = ("cpu", "cuda")
REPOSITORY = "ghcr.io/kfnlp/kfnlp"
CONTAINERFILE = "images/Containerfile"
IMAGE_ENV = "KFNLP_IMAGE"  # the runtime image: the CLI's default when set; every task is told its own


class ImageError(KfnlpError):
    """The container engine is unreachable, or a build or push failed."""


def default_tag(variant: str) -> str:
    return f"{REPOSITORY}:{__version__}" + ("" if variant == "cpu" else f"-{variant}")


# --runner docker's default: the tag a local `kfnlp images build` gives. No kfnlp image is published, so
# it is never pulled, and a cluster compile has no default (cluster.image, docs/cluster.md#image)
LOCAL_IMAGE = default_tag("cpu")


def repo_root() -> Path:
    """The source tree with images/Containerfile: the checkout kfnlp runs from, or the cwd."""
    for cand in (Path(__file__).resolve().parents[3], Path.cwd()):
        if (cand / CONTAINERFILE).is_file() and (cand / "pyproject.toml").is_file():
            return cand
    raise ImageError(f"no {CONTAINERFILE} here: run from a kfnlp source checkout")


def _dockerignore(root: Path) -> list[str]:
    path = root / ".dockerignore"
    if not path.is_file():
        return []
    lines = (line.strip() for line in path.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def context_files(root: Path) -> list[str]:
    """Paths (relative, files and directories) the build context holds, as Docker computes them."""
    from docker.utils.build import exclude_paths

    return sorted(exclude_paths(str(root), _dockerignore(root), dockerfile=CONTAINERFILE))


def _reset(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def build_context(root: Path, wheelhouse: Path | None = None, ca_bundle: Path | None = None) -> Any:
    """An uncompressed tar of the context, as a temporary file positioned at 0."""
    fileobj = tempfile.TemporaryFile()  # noqa: SIM115 - the caller closes it (a with block)
    with tarfile.open(mode="w", fileobj=fileobj) as tar:
        for rel in context_files(root):
            tar.add(str(root / rel), arcname=rel, recursive=False, filter=_reset)
        if wheelhouse is not None:
            wheels = sorted(wheelhouse.glob("*.whl"))
            if not wheels:
                raise ImageError(f"{wheelhouse}: no .whl files in the wheelhouse")
            for whl in wheels:
                tar.add(str(whl), arcname=f"images/local/wheels/{whl.name}", filter=_reset)
        if ca_bundle is not None:
            if not ca_bundle.is_file():
                raise ImageError(f"{ca_bundle}: no such CA bundle")
            data = ca_bundle.read_bytes()
            info = tarfile.TarInfo("images/local/ca.pem")
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    fileobj.seek(0)
    return fileobj


def _vcs_ref(root: Path) -> str:
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else "unknown"


def client():
    """A Docker SDK client for $DOCKER_HOST (or the default socket), checked with a ping."""
    try:
        import docker
        from docker.errors import DockerException
    except ImportError:
        raise ImageError("the docker package is missing: pip install 'kfnlp[images]'") from None
    where = os.environ.get("DOCKER_HOST") or "the default Docker socket"
    try:
        cli = docker.from_env(timeout=600)
        cli.ping()
    except DockerException as exc:
        raise ImageError(f"cannot reach a container engine at {where} (set DOCKER_HOST): {_first_line(exc)}") from None
    except Exception as exc:  # requests/urllib3 errors escaping the SDK
        raise ImageError(f"cannot reach a container engine at {where} (set DOCKER_HOST): {_first_line(exc)}") from None
    return cli


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def _build_failure(detail: str, last_log_line: str) -> str:
    """A short reason: the last line of the build log (pip's error, say) and the engine's verdict,
    without the failing RUN script the engine quotes in full."""
    detail = " ".join(detail.split())
    detail = re.sub(r'building at STEP "(?:[^"\\]|\\.|"(?!: ))*": ', "", detail)
    last = " ".join(last_log_line.split())
    return f"{last} ({detail})" if last and last not in detail else detail or "see the build log"


def build(
    variant: str = "cpu",
    tag: str | None = None,
    *,
    push: bool = False,
    base_image: str | None = None,
    wheelhouse: Path | None = None,
    ca_bundle: Path | None = None,
    build_args: dict[str, str] | None = None,
    no_cache: bool = False,
    pull: bool = False,
    quiet: bool = False,
) -> dict[str, Any]:
    """Build (and optionally push) the image; returns tag, id, size and seconds."""
    import time

    if variant not in VARIANTS:
        raise ImageError(f"variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
    tag = tag or default_tag(variant)
    root = repo_root()
    cli = client()
    args = {
        "VARIANT": variant,
        "KFNLP_VERSION": __version__,
        "VCS_REF": _vcs_ref(root),
        "BUILD_DATE": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    if base_image:
        args["BASE_IMAGE"] = base_image
    args.update(build_args or {})
    out = sys.stderr
    start = time.monotonic()
    from docker.errors import APIError, DockerException

    with build_context(root, wheelhouse, ca_bundle) as context:
        try:
            stream = cli.api.build(
                fileobj=context,
                custom_context=True,
                dockerfile=CONTAINERFILE,
                tag=tag,
                buildargs=args,
                rm=True,
                forcerm=True,
                nocache=no_cache,
                pull=pull,
                decode=True,
            )
            image_id, last = None, ""
            for chunk in stream:
                if "error" in chunk or "errorDetail" in chunk:
                    detail = chunk.get("error") or chunk.get("errorDetail", {}).get("message", "")
                    raise ImageError(f"building {tag} failed: {_build_failure(detail, last)}")
                if "aux" in chunk and isinstance(chunk["aux"], dict) and chunk["aux"].get("ID"):
                    image_id = chunk["aux"]["ID"]
                text = chunk.get("stream")
                if text:
                    last = next((line for line in reversed(text.splitlines()) if line.strip()), last)
                    if not quiet:
                        out.write(text)
                        out.flush()
            image = cli.images.get(tag)
        except (APIError, DockerException) as exc:
            raise ImageError(f"building {tag} failed: {_first_line(exc)}") from None
    seconds = time.monotonic() - start
    result = {
        "tag": tag,
        "id": image.id or image_id,
        "size_bytes": image.attrs.get("Size"),
        "variant": variant,
        "build_seconds": round(seconds, 1),
    }
    if push:
        _push(cli, tag, quiet)
    return result


def _push(cli, tag: str, quiet: bool) -> None:
    from docker.errors import APIError, DockerException

    repo, _, name_tag = tag.rpartition(":")
    if not repo or "/" in name_tag:  # no tag given: the colon (if any) was a registry port
        repo, name_tag = tag, "latest"
    try:
        for chunk in cli.images.push(repo, tag=name_tag, stream=True, decode=True):
            if "error" in chunk or "errorDetail" in chunk:
                detail = chunk.get("error") or chunk.get("errorDetail", {}).get("message", "")
                raise ImageError(f"pushing {tag} failed: {detail}")
            if not quiet and chunk.get("status") and not chunk.get("progressDetail"):
                print(f"{chunk.get('id', '')} {chunk['status']}".strip(), file=sys.stderr)
    except (APIError, DockerException) as exc:
        raise ImageError(f"pushing {tag} failed: {_first_line(exc)}") from None
