"""Run a pipeline with the real KFP local executor and summarise what happened.

``kfp.local`` (SubprocessRunner, no venv) executes every component in a subprocess
exactly as the compiled pipeline wires it. Its chatty log goes to
``OUTPUT/pipeline.log``; the terminal gets one line per stage event and kfnlp's own
progress lines. Afterwards the task directories are read back: the output
artifacts' metadata (wall time), manifests and error files give ``summary.json`` and
``report.md``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from kfnlp.catalog import pipeline_arguments
from kfnlp.config import to_dict
from kfnlp.errors import PipelineError, StorageError
from kfnlp.launch.in_pod import ERROR_FILE, STATUS_KEY, STORAGE_ENV
from kfnlp.storage import is_remote, open_artifact, read_any_manifest

ANSI = re.compile(r"\x1b\[[0-9;]*m")
KFP_TASK_LINE = re.compile(r"(Executing task|Task '.*' finished with status|Pipeline '.*' finished with status)")
STAGE_PREFIX = "kfnlp | "


class _LogRouter:
    """A stdout stand-in: everything to the log file, the essentials to the terminal."""

    def __init__(self, log: TextIO, terminal: TextIO, verbose: bool):
        self.log, self.terminal, self.verbose = log, terminal, verbose
        self._pending = ""

    def write(self, text: str) -> int:
        self.log.write(text)
        if self.verbose:
            self.terminal.write(text)
            return len(text)
        self._pending += text
        *lines, self._pending = self._pending.split("\n")
        for line in lines:
            plain = ANSI.sub("", line).strip()
            if plain.startswith(STAGE_PREFIX):
                self.terminal.write("  " + plain[len(STAGE_PREFIX) :] + "\n")
            elif KFP_TASK_LINE.search(plain):
                self.terminal.write(plain.split(" - ", 2)[-1] + "\n")
        self.terminal.flush()
        return len(text)

    def flush(self) -> None:
        self.log.flush()
        self.terminal.flush()

    def isatty(self) -> bool:
        return False


def _display_names(pipeline_fn) -> dict[str, str]:
    tasks = pipeline_fn.pipeline_spec.root.dag.tasks
    return {name: task.task_info.name for name, task in tasks.items()}


def _read_task(task_dir: Path) -> dict[str, Any]:
    info: dict[str, Any] = {"task": task_dir.name, "status": "not run", "outputs": {}}
    error = task_dir / ERROR_FILE
    executor_output = task_dir / "executor_output.json"
    if error.is_file():
        info.update(status="failed", error=json.loads(error.read_text(encoding="utf-8"))["error"])
    elif executor_output.is_file():
        info["status"] = "succeeded"
        data = json.loads(executor_output.read_text(encoding="utf-8"))
        for name, entry in data.get("artifacts", {}).items():
            artifact = entry["artifacts"][0]
            info["outputs"][name] = artifact["uri"]
            stage = artifact.get("metadata", {}).get(STATUS_KEY)
            if stage:
                info["wall_time_s"] = stage["wall_time_s"]
                info["started"] = stage["started"]
    elif any(task_dir.iterdir()):
        info["status"] = "failed"
        info["error"] = "the stage crashed; see pipeline.log"
    return info


def _manifest(uri: str) -> dict[str, Any]:
    """The manifest of a stage's output artifact (local or on S3), or {} for a plain file output."""
    if not is_remote(uri) and not Path(uri).is_dir():
        return {}
    try:
        return read_any_manifest(uri)
    except StorageError:
        return {}


def _artifact_json(uri: str, name: str) -> dict[str, Any]:
    return json.loads((open_artifact(uri)[0] / name).read_text(encoding="utf-8"))


def _collect(run_dir: Path, names: dict[str, str]) -> list[dict[str, Any]]:
    stages = []
    for task, display in names.items():
        task_dir = run_dir / task
        info = _read_task(task_dir) if task_dir.is_dir() else {"task": task, "status": "not run", "outputs": {}}
        info["name"] = display
        stages.append(info)
    stages.sort(key=lambda s: (s.get("started") is None, s.get("started") or 0))
    return stages


def _results(stages: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Final metrics and artifact locations, read from the stages' own outputs."""
    metrics: dict[str, Any] = {}
    artifacts: dict[str, Any] = {}
    for stage in stages:
        for name, uri in stage["outputs"].items():
            if name in ("metrics", "report", "html"):
                if name in ("report", "html"):
                    artifacts.setdefault("reports", []).append(uri)
                continue
            manifest = _manifest(uri)
            kind = manifest.get("kind")
            if kind == "evaluation":
                label = manifest.get("label", stage["name"])
                metrics[label] = _artifact_json(uri, "metrics.json")["metrics"]
                artifacts.setdefault("evaluations", {})[label] = uri
            elif kind == "model":
                artifacts.setdefault("models", {})[stage["name"]] = uri
                artifacts["model"] = uri
                training = manifest.get("training", {})
                metrics.setdefault("training", {})[stage["name"]] = {
                    k: training.get(k) for k in ("global_step", "train_loss", "train_samples_per_second", "wall_time_s")
                }
            elif kind in ("dataset", "eval_set"):
                artifacts.setdefault("datasets", {})[stage["name"]] = uri
                metrics.setdefault("data", {})[stage["name"]] = manifest.get("counts")
            elif kind == "comparison":
                artifacts["comparison"] = uri
                comparison = _artifact_json(uri, "comparison.json")
                metrics["comparison"] = {
                    k: comparison[k] for k in ("verdict", "winner", "f1_delta", "ner", "perplexity")
                }
            elif name == "decision" and Path(uri).is_file():
                decision = json.loads(Path(uri).read_text(encoding="utf-8"))
                metrics["promotion"] = {
                    k: decision.get(k) for k in ("outcome", "reason", "champion_before", "champion_after")
                }
            elif name == "registered" and Path(uri).is_file():
                reg = json.loads(Path(uri).read_text(encoding="utf-8"))
                artifacts["registry"] = {k: reg[k] for k in ("name", "version", "uri", "tracking_uri")}
                if reg.get("source"):
                    artifacts["model"] = reg["source"]  # the registered model is the run's product
    base, adapted = metrics.get("base", {}), metrics.get("adapted", {})
    if "perplexity" in base and "perplexity" in adapted:
        metrics["perplexity_before"] = base["perplexity"]
        metrics["perplexity_after"] = adapted["perplexity"]
        metrics["perplexity_ratio"] = adapted["perplexity"] / base["perplexity"]
    return metrics, artifacts


def _set_environ(values: dict[str, str | None]) -> None:
    for key, value in values.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@contextlib.contextmanager
def _environment(values: dict[str, str | None]):
    """Set (or, for None, remove) environment variables for the duration of the block."""
    saved = {key: os.environ.get(key) for key in values}
    try:
        _set_environ(values)
        yield
    finally:
        _set_environ(saved)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def run_local(
    entry,
    config,
    output: str | os.PathLike,
    verbose: bool = False,
    terminal: TextIO | None = None,
    storage: str | None = None,
    runner: str = "subprocess",
    image: str | None = None,
) -> dict:
    """Run ``entry``'s pipeline under kfp.local; write summary.json and report.md.

    With ``storage`` (``s3://bucket/prefix``) every dataset, model and evaluation the stages
    write goes there (see :mod:`kfnlp.launch.in_pod`); ``output`` keeps the logs, the KFP
    bookkeeping, the UI reports and the summary. ``runner="docker"`` runs every stage in
    ``image`` (default: the components' image) through kfp's DockerRunner (:mod:`kfnlp.launch.docker`)."""
    from kfp import local

    from kfnlp.reports import run_report

    terminal = terminal or sys.stdout
    output = Path(output).resolve()
    try:
        output.mkdir(parents=True, exist_ok=True)
        for stale in ("summary.json", "report.md"):
            (output / stale).unlink(missing_ok=True)  # never leave an old run's results looking current
        root = output / "artifacts"
        root.mkdir(exist_ok=True)
    except OSError as exc:
        raise StorageError(f"{output}: cannot use as the output directory ({exc.strerror or exc})") from None
    if storage is not None:
        from kfnlp.storage import s3

        storage = storage.rstrip("/")
        s3.parse_uri(storage)
        s3.check_writable(storage)  # a missing bucket or bad credentials fail here, not in the third stage
    before = set(root.iterdir())
    pipeline_fn = entry.load()
    arguments = pipeline_arguments(config)
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ["KFNLP_LOG_PREFIX"] = STAGE_PREFIX
    kfp_runner, exit_codes = local.SubprocessRunner(use_venv=False), contextlib.nullcontext()
    if runner == "docker":
        from kfnlp.components import IMAGE
        from kfnlp.launch import docker as local_docker

        image = image or IMAGE
        pipeline_fn, config, kfp_runner = local_docker.prepare(pipeline_fn, config, image, root, {STORAGE_ENV: storage})
        arguments = pipeline_arguments(config)  # with the input paths the containers see
        exit_codes = local_docker.real_exit_codes()
    local.init(runner=kfp_runner, pipeline_root=str(root), raise_on_error=False)
    started = time.time()
    log_path = output / "pipeline.log"
    with (
        open(log_path, "w", encoding="utf-8") as log,
        contextlib.redirect_stdout(_LogRouter(log, terminal, verbose)),
        _environment({STORAGE_ENV: storage}),  # the stage subprocesses inherit it
        exit_codes,
    ):
        pipeline_fn(**arguments)
    wall = time.time() - started
    new_runs = sorted(set(root.iterdir()) - before, key=lambda p: p.stat().st_mtime)
    if not new_runs:
        raise PipelineError(f"kfp.local produced no run directory under {root}; see {log_path}")
    run_dir = new_runs[-1]
    stages = _collect(run_dir, _display_names(pipeline_fn))
    metrics, artifacts = _results(stages)
    failed = [s for s in stages if s["status"] != "succeeded"]
    summary = {
        "pipeline": entry.name,
        "run": run_dir.name,
        "status": "failed" if failed else "succeeded",
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "wall_time_s": round(wall, 2),
        "parameters": to_dict(config),
        "storage": storage or str(root),
        "runner": runner,
        "image": image,
        "stages": stages,
        "metrics": metrics,
        "artifacts": artifacts,
        "log": str(log_path),
    }
    _write_atomic(output / "summary.json", json.dumps(summary, indent=2, default=str))
    _write_atomic(output / "report.md", run_report(summary))
    return summary
