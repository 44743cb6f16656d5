"""``kfnlp run --local --runner docker``: every stage in the runtime image.

kfp.local's DockerRunner runs each task in a container of the task's image, through
the Docker SDK (``$DOCKER_HOST``: a Docker daemon or a podman socket). It bind-mounts
only the pipeline root, at the same path, and runs the image's own user (uid 1000 in
the kfnlp image). For the stages to see what they see under the SubprocessRunner:

- the pipeline is traced again with every task's image set to the chosen one (as
  ``kfnlp compile`` does) and ``KFNLP_IMAGE`` set, so ``register`` records it;
- ``$KFNLP_HOME`` is mounted at the same path and passed as ``KFNLP_HOME``: register
  and promote share the embedded registry with each other and with the host;
- local files and directories named by the config's source and model keys are mounted
  read-only at their absolute paths (relative paths are made absolute first);
- the host network: loopback servers named in the config (MLflow, S3) stay reachable;
- the Hugging Face offline switches and the credentials a cluster gives a pod from
  secrets pass through from this environment when set. The builtin models and data are
  in the image.

Run as root, kfnlp hands the pipeline root and what the stages write under ``$KFNLP_HOME``
(caches, locks, the embedded registry) to the image's user, and nothing else;
otherwise the containers run as your uid in group 0 (the image supports arbitrary uids,
as OpenShift uses them), so the files they write stay yours.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import os
from collections.abc import Iterator
from pathlib import Path

from kfnlp.assets import kfnlp_home
from kfnlp.launch import images
from kfnlp.launch.cluster.settings import HF_KEYS, REGISTRY_OPTIONAL_KEYS, S3_KEYS, S3_OPTIONAL_KEYS
from kfnlp.launch.images import ImageError
from kfnlp.launch.pipelines import in_image, retrace

IMAGE_UID = 1000  # USER of images/Containerfile
INPUT_KINDS = ("source", "ner_source", "cls_source", "model")  # config fields naming files or directories to read
PASS_ENV = (
    "HF_HUB_OFFLINE",
    "HF_DATASETS_OFFLINE",
    "HF_HUB_DISABLE_PROGRESS_BARS",
    "TOKENIZERS_PARALLELISM",
    *S3_KEYS,
    *S3_OPTIONAL_KEYS,
    *HF_KEYS,
    *REGISTRY_OPTIONAL_KEYS,
)
CONTAINER_LINE = "kfnlp container"
HOME_DIRS = ("cache", "locks")  # what the stages write under $KFNLP_HOME (kfnlp.assets, kfnlp.registry)
REGISTRY_DIR = "registry"  # the embedded registry under $KFNLP_HOME (kfnlp.registry.store)  # one log line per task: id, image, exit code


def check_image(image: str) -> None:
    """One clear error when the engine is unreachable or does not have ``image``."""
    from docker.errors import DockerException, ImageNotFound

    where = os.environ.get("DOCKER_HOST") or "the default Docker socket"
    try:
        cli = images.client()
    except ImageError as exc:
        raise ImageError(f"--runner docker needs image {image}: {exc}") from None
    try:
        cli.images.get(image)
    except ImageNotFound:
        raise ImageError(
            f"image {image} is not in the container engine at {where}: build it (kfnlp images build --tag {image}) "
            "or pass --image"
        ) from None
    except DockerException as exc:
        raise ImageError(f"cannot look up image {image} at {where}: {exc}") from None
    finally:
        cli.close()


def localize_inputs(config):
    """``config`` with local input paths made absolute, and the existing paths they name."""
    found: list[Path] = []

    def walk(obj):
        changes = {}
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if dataclasses.is_dataclass(value):
                changes[f.name] = walk(value)
            elif f.metadata.get("kind") in INPUT_KINDS and isinstance(value, str) and value.strip():
                path = os.path.abspath(os.path.expanduser(value))
                matches = [path] if os.path.exists(path) else glob.glob(path)  # a file, directory or glob
                if matches:
                    found.extend(Path(m) for m in matches)
                    changes[f.name] = path
        return dataclasses.replace(obj, **changes)

    return walk(config), found


def container_user() -> str | None:
    """None (the image's user) when kfnlp runs as root, else this uid in group 0."""
    return None if os.geteuid() == 0 else f"{os.geteuid()}:0"


def _chown_tree(path: Path) -> None:
    for top, dirs, files in os.walk(path):
        for name in (top, *(os.path.join(top, n) for n in dirs + files)):
            os.chown(name, IMAGE_UID, 0, follow_symlinks=False)


def _hand_over(root: Path, home: Path, registry: bool, paths: list[Path]) -> None:
    """As root: give the image's user what the stages write, and nothing else: the pipeline root,
    and under $KFNLP_HOME the caches and locks and, when register uses it, the embedded registry.
    The image's /root is private (mode 700), so nothing mounted under it is reachable for that user."""
    for path in paths:
        if path == Path("/root") or Path("/root") in path.parents:
            raise ImageError(
                f"{path} is under /root, which uid {IMAGE_UID} in the image cannot enter: "
                "use --output, KFNLP_HOME and inputs outside /root with --runner docker"
            )
    os.chown(root, IMAGE_UID, 0)
    for name in (*HOME_DIRS, *((REGISTRY_DIR,) if registry else ())):
        (home / name).mkdir(exist_ok=True)
        _chown_tree(home / name)


def prepare(pipeline_fn, config, image: str, root: Path, env: dict[str, str | None]):
    """(pipeline in ``image``, config with absolute input paths, kfp DockerRunner). ``env``
    adds variables the run sets for its stages (None: unset)."""
    from docker.types import Mount
    from kfp import local

    check_image(image)
    config, inputs = localize_inputs(config)
    home = kfnlp_home().expanduser().resolve()
    home.mkdir(parents=True, exist_ok=True)
    user = container_user()
    if user is None:
        embedded = not (getattr(config, "register", None) and config.register.tracking_uri)
        _hand_over(root, home, embedded and not os.environ.get("MLFLOW_TRACKING_URI"), [root, home, *inputs])
    mounts = [Mount(str(home), str(home), type="bind")]
    kept: list[Path] = []
    for path in sorted(set(inputs)):
        # kfp mounts the pipeline root; nested inputs ride on the mount of their parent
        if not any(path == p or p in path.parents for p in (root, home, *kept)):
            kept.append(path)
            mounts.append(Mount(str(path), str(path), type="bind", read_only=True))
    passed = {name: os.environ[name] for name in PASS_ENV if name in os.environ}
    passed.update({name: value for name, value in env.items() if value is not None}, KFNLP_HOME=str(home))
    run_args = {"environment": passed, "mounts": mounts, "network_mode": "host"}
    if user:
        run_args["user"] = user
    return retrace(pipeline_fn, in_image(image)), config, local.DockerRunner(**run_args)


def run_container(client, image: str, command: list[str], volumes: dict, **run_args) -> int:
    """Run one task's container to the end: stream its log, return its real exit code, remove it.
    (kfp's signature: it calls this with keywords.)"""
    from docker.errors import DockerException

    container = None
    try:
        container = client.containers.run(image=image, command=command, volumes=volumes, detach=True, **run_args)
        pending = b""  # podman streams fragments, not lines: print whole lines (kfp indents each print)
        for chunk in container.logs(stream=True, follow=True):
            *lines, pending = (pending + chunk).split(b"\n")
            for line in lines:
                print(line.decode(errors="replace"))
        if pending:
            print(pending.decode(errors="replace"))
        code = container.wait()["StatusCode"]
        print(f"{CONTAINER_LINE} {container.short_id} ({image}) exited with {code}")
        return code
    except DockerException as exc:
        print(f"{CONTAINER_LINE} error: {' '.join(str(exc).split())}")
        return 125
    finally:
        if container is not None:
            with contextlib.suppress(DockerException):
                container.remove(force=True)


@contextlib.contextmanager
def real_exit_codes() -> Iterator[None]:
    """Swap kfp.local's container runner for :func:`run_container` while a pipeline runs.

    Why: kfp 2.17 starts each container with ``auto_remove=True`` and reads the exit code
    afterwards; under podman the container is gone by then, and kfp takes the resulting
    NotFound for success (measured: ``sh -c 'exit 3'`` came back as 0 every time, even
    after a second of runtime). A failed stage would look successful. kfp picks the task
    handler by exact runner type, so a DockerRunner subclass is not an option: the module
    function is the patch point.
    """
    from kfp.local import docker_task_handler

    original = docker_task_handler.run_docker_container
    docker_task_handler.run_docker_container = run_container
    try:
        yield
    finally:
        docker_task_handler.run_docker_container = original
