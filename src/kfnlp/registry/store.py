"""The model registry: MLflow, embedded (sqlite under the kfnlp home) or a server.

Nothing here contacts a server at import time; MLflow is imported lazily because
it is slow to import.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kfnlp.assets import kfnlp_home
from kfnlp.errors import ConfigError, RegistryError, StorageError, disk_full
from kfnlp.storage import sha256_file

log = logging.getLogger(__name__)

EXPERIMENT = "kfnlp"
SQLITE = "sqlite:///"
LOCK_MODEL_PREFIX = "kfnlp-promotion-lock."  # registered models that only hold promotion leases
DOWNLOAD_RECORD = ".kfnlp-download.json"  # in a cached models:/ copy: where it came from, file hashes
_SECRET_KEY = re.compile(r"(secret|token|password|passwd|credential|api[_-]?key)", re.IGNORECASE)
CURVE_PREFIX = "train/"  # a training curve named like one of the version's metrics (masked/causal LM eval_loss)


def default_tracking_uri() -> str:
    path = kfnlp_home() / "registry" / "mlflow.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"{SQLITE}{path}"


def _artifact_root(tracking_uri: str) -> str | None:
    """Embedded stores keep artifacts next to the database, not in ./mlruns."""
    if tracking_uri.startswith(SQLITE):
        return Path(tracking_uri[len(SQLITE) :]).parent.joinpath("artifacts").resolve().as_uri()
    return None


def redact_uri(uri: str) -> str:
    """A URI fit for logs and outputs: any user:password@ part removed."""
    return re.sub(r"//[^/@]*@", "//", uri)


def normalise_uri(uri: str) -> str:
    """One spelling per registry, whoever wrote the URI: no credentials, lower-case scheme and host,
    no trailing or doubled ``/``, an absolute sqlite path. Keys the promotion lock and the cache."""
    if uri.startswith(SQLITE):
        return f"{SQLITE}{Path(uri[len(SQLITE) :]).resolve()}"
    parts = urllib.parse.urlsplit(redact_uri(uri))
    path = re.sub(r"/+", "/", parts.path).rstrip("/")
    return urllib.parse.urlunsplit((parts.scheme.lower(), parts.netloc.lower(), path, parts.query, ""))


def models_cache(tracking_uri: str) -> Path:
    """Where ``models:/`` copies from the registry at ``tracking_uri`` are cached (one per registry)."""
    return kfnlp_home() / "cache" / "models" / hashlib.sha256(normalise_uri(tracking_uri).encode()).hexdigest()[:16]


def reject_credentials(uri: str | None, key: str) -> None:
    """Refuse a user name or password in a URI that would be passed on (stage arguments, summaries)."""
    if uri and "@" in urllib.parse.urlsplit(uri).netloc:
        raise ConfigError(
            f"{key}: the URL holds a user name or password, which would be passed to every stage and written "
            f"to the run summary; give {redact_uri(uri)} and set $MLFLOW_TRACKING_USERNAME and "
            "$MLFLOW_TRACKING_PASSWORD (or $MLFLOW_TRACKING_TOKEN) instead",
            key,
        )


def safe_tags(tags: dict[str, Any]) -> dict[str, str]:
    """Tags as strings, refusing anything that looks like a secret."""
    out = {}
    for key, value in tags.items():
        if value is None:
            continue
        if _SECRET_KEY.search(key):
            raise RegistryError(f"refusing to record {key!r} in the registry: it looks like a secret")
        out[key] = str(value)
    return out


def safe_params(params: dict[str, Any]) -> dict[str, str]:
    """Params as MLflow takes them (strings of at most 6000 characters), without credentials in URIs,
    leaving out a key that looks like a secret (a training setting is lineage, not worth a failed register)."""
    out = {}
    for key, value in params.items():
        if _SECRET_KEY.search(key):
            log.warning("not recording the param %r in the registry: its name looks like a secret's", key)
            continue
        out[key] = redact_uri(str(value))[:6000]
    return out


def curve_points(history: list[dict[str, Any]], reserved: set[str]) -> list[tuple[str, int, float]]:
    """``(key, step, value)`` of every numeric value of the training history's rows (``step`` is the
    row's optimizer step), one per key and step (the later row wins); a key in ``reserved`` (a metric
    of the version itself) gets :data:`CURVE_PREFIX`, so the curve never hides the version's score."""
    points: dict[tuple[str, int], float] = {}
    for row in history:
        step = row.get("step")
        if not isinstance(step, int):
            continue
        for key, value in row.items():
            if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                points[(f"{CURVE_PREFIX}{key}" if key in reserved else key, step)] = float(value)
    return [(key, step, value) for (key, step), value in points.items()]


def _unreachable(exc: BaseException) -> str | None:
    """Why the server could not be reached, when that is what ``exc`` is about."""
    import requests

    seen: BaseException | None = exc
    for _ in range(8):  # MLflow wraps the requests error (raise ... from, or raise inside except)
        if seen is None:
            break
        if isinstance(seen, (requests.exceptions.ConnectionError, requests.exceptions.Timeout)):
            errno = re.search(r"\[Errno -?\d+\] ([^'\"()]+)", str(seen))
            if errno:
                return errno.group(1).strip().lower()
            return "timed out" if isinstance(seen, requests.exceptions.Timeout) else "no connection"
        seen = seen.__cause__ or seen.__context__
    return None


def registry_error(exc: BaseException, uri: str) -> RegistryError:
    """A one-line RegistryError for an MLflow failure, without credentials."""
    why = _unreachable(exc)
    if why:
        return RegistryError(
            f"cannot reach the registry at {redact_uri(uri)}: {why} "
            "(is the server running? check --tracking-uri or $MLFLOW_TRACKING_URI)"
        )
    return RegistryError(f"registry {redact_uri(uri)}: {redact_uri(getattr(exc, 'message', None) or str(exc))}")


class _Client:
    """An MlflowClient whose calls fail with a clear RegistryError when the server cannot be reached
    (other MlflowExceptions, e.g. not found, pass through unchanged)."""

    def __init__(self, client, uri: str):
        self._client, self._uri = client, uri

    def __getattr__(self, name: str):
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr

        def call(*args, **kwargs):
            from mlflow.exceptions import MlflowException

            try:
                return attr(*args, **kwargs)
            except MlflowException as exc:
                if _unreachable(exc):
                    raise registry_error(exc, self._uri) from None
                raise

        return call


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock between the processes of this host (released when the holder dies)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _ensure_sqlite_store(path: Path, artifact_root: str) -> None:
    """Create the embedded store once, whoever comes first.

    MLflow migrates an empty database in place, and processes that do so at once fail on each
    other's schema changes; one killed midway leaves a database that looks like a store but is not.
    So one process at a time (a lock file next to it) migrates a hidden temporary database and
    renames the finished one into place; the others find it there."""
    if path.is_file():
        return
    with _file_lock(path.with_name(f"{path.name}.lock")):
        if path.is_file():
            return
        for stale in path.parent.glob(f".{path.name}.*.tmp*"):  # a killed creator's database and journal
            stale.unlink()
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

        staging = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            SqlAlchemyStore(f"{SQLITE}{staging}", artifact_root).engine.dispose()
            os.replace(staging, path)
        finally:
            for leftover in path.parent.glob(f"{staging.name}*"):
                leftover.unlink()


class Registry:
    def __init__(self, tracking_uri: str | None = None, read_only: bool = False):
        """``read_only``: refuse (instead of creating) an embedded store whose directory does not exist."""
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        # MLflow prints each run's URL to stdout, with any user:password@ of the tracking URI in it.
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
        # An unreachable server fails in seconds, not after MLflow's default 7 retries (~4 minutes).
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "3")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
        import mlflow
        from mlflow.tracking import MlflowClient

        self.uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()
        self.display_uri = redact_uri(self.uri)
        database = Path(self.uri[len(SQLITE) :]) if self.uri.startswith(SQLITE) else None
        if read_only and database is not None and not database.parent.is_dir():
            raise RegistryError(f"no registry at {self.display_uri}: {database.parent} does not exist")
        self._mlflow = mlflow
        if self.uri.startswith(("http://", "https://")) and not log.isEnabledFor(logging.DEBUG):
            logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)  # retry chatter
        # set_tracking_uri/set_registry_uri also export MLFLOW_*_URI to os.environ; a later
        # Registry() in this process (or a child) would take that for the user's choice
        # and keep using this store whatever KFNLP_HOME says by then. Keep the user's values.
        exported = {key: os.environ.get(key) for key in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
        try:
            if database is not None:
                database.parent.mkdir(parents=True, exist_ok=True)
                _ensure_sqlite_store(database, _artifact_root(self.uri))
            mlflow.set_tracking_uri(self.uri)
            mlflow.set_registry_uri(self.uri)
            self.client = _Client(MlflowClient(tracking_uri=self.uri, registry_uri=self.uri), self.uri)
        except Exception as exc:  # MLflow raises many types for a bad URI
            raise RegistryError(f"cannot open the registry at {redact_uri(self.uri)}: {exc}") from None
        finally:
            for key, value in exported.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value

    def _experiment_id(self) -> str:
        from mlflow.exceptions import MlflowException

        found = self.client.get_experiment_by_name(EXPERIMENT)
        if found is not None:
            return found.experiment_id
        try:
            return self.client.create_experiment(EXPERIMENT, artifact_location=_artifact_root(self.uri))
        except MlflowException:  # created meanwhile by a concurrent register
            found = self.client.get_experiment_by_name(EXPERIMENT)
            if found is None:
                raise
            return found.experiment_id

    def register(
        self,
        name: str,
        model_dir: Path,
        *,
        metrics: dict[str, float],
        params: dict[str, Any],
        tags: dict[str, Any],
        files: dict[str, Path],
        run_name: str | None = None,
        history: list[dict[str, Any]] = (),
    ) -> dict[str, Any]:
        """Log a run with metrics, params, tags and files; add it as a new model version. ``history``
        (the training summary's step rows) becomes the run's step metrics: the curves of the model."""
        from mlflow.exceptions import MlflowException

        tags = safe_tags(tags)
        params = safe_params(params)
        run = None
        try:
            experiment_id = self._experiment_id()
            with self._mlflow.start_run(experiment_id=experiment_id, run_name=run_name) as run:
                self._log_values(run.info.run_id, metrics, params, tags, history)
                self._mlflow.log_artifacts(str(model_dir), artifact_path="model")
                for artifact_path, file in files.items():
                    self._mlflow.log_artifact(str(file), artifact_path=artifact_path or None)
                source = f"{run.info.artifact_uri}/model"
            try:
                self.client.get_registered_model(name)
            except MlflowException:
                try:
                    self.client.create_registered_model(name, tags={"kfnlp.task": tags.get("kfnlp.task", "")})
                except MlflowException:  # created meanwhile by a concurrent run
                    self.client.get_registered_model(name)
            version = self.client.create_model_version(name, source, run_id=run.info.run_id, tags=tags)
        except Exception as exc:
            if disk_full(exc):  # no version was created; drop the run's half-copied files
                where = run.info.artifact_uri if run is not None else redact_uri(self.uri)
                if where.startswith("file:"):
                    shutil.rmtree(urllib.parse.urlparse(where).path, ignore_errors=True)
                raise StorageError(
                    f"{where}: no space left on the device registering {name}; no version was added"
                ) from exc
            if isinstance(exc, MlflowException):
                raise registry_error(exc, self.uri) from None
            raise
        log.info("registered %s version %s", name, version.version)
        return {
            "name": name,
            "version": int(version.version),
            "uri": f"models:/{name}/{version.version}",
            "run_id": run.info.run_id,
            "tracking_uri": redact_uri(self.uri),
            "source": source,
        }

    def _log_values(self, run_id: str, metrics: dict, params: dict, tags: dict, history: list[dict]) -> None:
        """Params, tags, the version's metrics (at step 0) and the training curves in a few log_batch
        calls, each within MLflow's limit of 1000 metrics."""
        from mlflow.entities import Metric, Param, RunTag
        from mlflow.utils.validation import MAX_METRICS_PER_BATCH

        now = int(time.time() * 1000)
        points = [Metric(k, float(v), now, 0) for k, v in metrics.items() if isinstance(v, (int, float))]
        points += [Metric(k, v, now, step) for k, step, v in curve_points(history, set(metrics))]
        self.client.log_batch(
            run_id, params=[Param(k, v) for k, v in params.items()], tags=[RunTag(k, v) for k, v in tags.items()]
        )
        for start in range(0, len(points), MAX_METRICS_PER_BATCH):
            self.client.log_batch(run_id, metrics=points[start : start + MAX_METRICS_PER_BATCH])

    def get_version(self, name: str, version: int):
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_model_version(name, str(version))
        except MlflowException as exc:
            raise RegistryError(
                f"registry {redact_uri(self.uri)}: no version {version} of model {name!r} ({exc.message})"
            ) from None

    def get_model(self, name: str):
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_registered_model(name)
        except MlflowException as exc:
            raise RegistryError(f"registry {self.display_uri}: no model {name!r} ({exc.message})") from None

    def versions(self, name: str) -> list:
        """Every version of ``name``, oldest first."""
        self.get_model(name)
        found = self.client.search_model_versions(f"name='{name}'")
        return sorted(found, key=lambda v: int(v.version))

    def models(self) -> list:
        """The registered models, without the promotion gate's lease holders."""
        found = self.client.search_registered_models()
        return sorted((m for m in found if not m.name.startswith(LOCK_MODEL_PREFIX)), key=lambda m: m.name)

    def resolve(self, uri: str):
        """The version a ``models:/NAME/VERSION`` or ``models:/NAME@ALIAS`` URI names."""
        from mlflow.exceptions import MlflowException

        ref = uri[len("models:/") :]
        name, at, alias = ref.partition("@")
        if at:
            try:
                return self.client.get_model_version_by_alias(name, alias)
            except MlflowException:
                self.get_model(name)
                raise RegistryError(f"registry {self.display_uri}: model {name!r} has no @{alias}") from None
        name, _, version = ref.rpartition("/")
        if not name or not version.isdigit():
            raise RegistryError(f"{uri}: expected models:/NAME/VERSION or models:/NAME@ALIAS")
        return self.get_version(name, int(version))

    def download(self, uri: str) -> Path:
        """A verified local copy of a registered model's files.

        Cached per registry (its normalised URI), name and version; a cached copy is reused only
        when it came from the same source and every file still has the SHA-256 recorded when it
        was downloaded, otherwise it is downloaded again."""
        version = self.resolve(uri)
        target = models_cache(self.uri) / version.name / str(version.version)
        origin = {
            "registry": normalise_uri(self.uri),
            "name": version.name,
            "version": int(version.version),
            "source": version.source,
        }
        if _verified(target, origin):
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".download-"))
        try:
            local = Path(
                self._mlflow.artifacts.download_artifacts(
                    artifact_uri=version.source, dst_path=str(staging), tracking_uri=self.uri
                )
            )
            files = {p.relative_to(local).as_posix(): sha256_file(p) for p in sorted(local.rglob("*")) if p.is_file()}
            (local / DOWNLOAD_RECORD).write_text(json.dumps({**origin, "files": files}, indent=2), encoding="utf-8")
            if _verified(target, origin):  # a concurrent download finished first
                return target
            if target.exists():  # damaged or stale: set aside, then replaced
                os.replace(target, staging / "replaced")
            local.rename(target)
        except Exception as exc:
            if _unreachable(exc):
                raise registry_error(exc, self.uri) from None
            raise RegistryError(f"cannot download {uri} from {self.display_uri}: {redact_uri(str(exc))}") from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return target


def _verified(copy: Path, origin: dict[str, Any]) -> bool:
    """Whether ``copy`` is a complete download of ``origin`` whose files are unchanged."""
    try:
        record = json.loads((copy / DOWNLOAD_RECORD).read_text(encoding="utf-8"))
        present = {p.relative_to(copy).as_posix() for p in copy.rglob("*") if p.is_file()} - {DOWNLOAD_RECORD}
        return (
            {k: record.get(k) for k in origin} == origin
            and present == set(record["files"])
            and all(sha256_file(copy / name) == digest for name, digest in record["files"].items())
        )
    except (OSError, ValueError, KeyError, TypeError):
        return False
