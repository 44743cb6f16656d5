"""What a finished kfp.local run did, read back from its task directories: each stage's
status, wall time and outputs (``executor_output.json``, the error file ``stage_guard``
writes, the ``kfnlp_stage`` metadata), and the metrics and artifact locations the stages'
own outputs (manifests, metrics.json, register's and promote's JSON) hold."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kfnlp.errors import StorageError
from kfnlp.launch.in_pod import ERROR_FILE, STATUS_KEY
from kfnlp.storage import open_artifact, read_any_manifest, store_for
from kfnlp.sweep import FAILED_TRIAL_KIND

TRIAL_FAILED = "trial failed"  # a sweep trial's task ran and recorded its failure (the sweep went on)


def display_names(pipeline_fn) -> dict[str, str | dict[str, str]]:
    """Task name -> display name, from the compiled pipeline spec; a sweep's loop task -> the
    display names of the tasks each of its iterations runs."""
    spec = pipeline_fn.pipeline_spec
    names: dict[str, str | dict[str, str]] = {}
    for name, task in spec.root.dag.tasks.items():
        if task.HasField("iterator_policy") or task.HasField("parameter_iterator"):
            inner = spec.components[task.component_ref.name].dag.tasks
            names[name] = {inner_name: inner_task.task_info.name for inner_name, inner_task in inner.items()}
        else:
            names[name] = task.task_info.name
    return names


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


def _read_trial(task_dir: Path, iteration: int) -> dict[str, Any]:
    """A sweep trial's task: as any task, and "trial failed" when its output is a failure record."""
    info = _read_task(task_dir)
    info["trial"] = iteration
    if info["status"] == "succeeded":
        for uri in info["outputs"].values():
            manifest = _manifest(uri)
            if manifest.get("kind") == FAILED_TRIAL_KIND:
                info.update(status=TRIAL_FAILED, error=manifest.get("error", ""))
                break
    return info


def _iterations(run_dir: Path, loop: str) -> list[tuple[int, Path]]:
    """(iteration, directory) of a loop task's iterations that kfp.local started, in iteration order."""
    prefix = f"{loop}-iteration-"
    found = []
    for path in run_dir.glob(prefix + "*"):
        suffix = path.name[len(prefix) :]
        if suffix.isdigit() and path.is_dir():
            found.append((int(suffix), path))
    return sorted(found)


def collect_stages(run_dir: Path, names: dict[str, str | dict[str, str]]) -> list[dict[str, Any]]:
    """One entry per task of the pipeline (``names``: task -> display name), in the order they started;
    a sweep's trial tasks once per trial, named ``train-ner-trial[K]``."""
    stages = []
    for task, display in names.items():
        if isinstance(display, dict):
            for iteration, directory in _iterations(run_dir, task):
                for inner, inner_display in display.items():
                    if (directory / inner).is_dir():
                        info = _read_trial(directory / inner, iteration)
                        info["name"] = f"{inner_display}[{iteration}]"
                        stages.append(info)
            continue
        task_dir = run_dir / task
        info = _read_task(task_dir) if task_dir.is_dir() else {"task": task, "status": "not run", "outputs": {}}
        info["name"] = display
        stages.append(info)
    stages.sort(key=lambda s: (s.get("started") is None, s.get("started") or 0))
    return stages


def _manifest(uri: str) -> dict[str, Any]:
    """The manifest of a stage's output artifact (local or on S3), or {} for a plain file output."""
    local = store_for(uri).local_path(uri)
    if local is not None and not local.is_dir():
        return {}
    try:
        return read_any_manifest(uri)
    except StorageError:
        return {}


def _artifact_json(uri: str, name: str) -> dict[str, Any]:
    return json.loads((open_artifact(uri)[0] / name).read_text(encoding="utf-8"))


def results(stages: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Final metrics and artifact locations, read from the stages' own outputs."""
    metrics: dict[str, Any] = {}
    artifacts: dict[str, Any] = {}
    for stage in stages:
        if "trial" in stage:  # a sweep trial: the sweep's table (select-best's) speaks for it
            continue
        for name, uri in stage["outputs"].items():
            if name in ("metrics", "report", "html"):
                if name in ("report", "html"):
                    artifacts.setdefault("reports", []).append(uri)
                continue
            manifest = _manifest(uri)
            kind = manifest.get("kind")
            if kind == "sweep":
                artifacts["sweep"] = uri
                metrics["sweep"] = _artifact_json(uri, "sweep.json")
            elif kind == "evaluation" and manifest.get("label") == "trial":
                continue  # select-best's copy of the chosen trial's scores on the selection split
            elif kind == "evaluation":
                label = manifest.get("label", stage["name"])
                metrics[label] = _artifact_json(uri, "metrics.json")["metrics"]
                artifacts.setdefault("evaluations", {})[label] = uri
            elif kind == "model":
                artifacts.setdefault("models", {})[stage["name"]] = uri
                artifacts["model"] = uri
                training = manifest.get("training", {})
                metrics.setdefault("training", {})[stage["name"]] = {
                    k: training.get(k)
                    for k in (
                        "global_step",
                        "resumed_from_step",
                        "train_loss",
                        "train_samples_per_second",
                        "wall_time_s",
                    )
                }
            elif kind in ("dataset", "eval_set"):
                artifacts.setdefault("datasets", {})[stage["name"]] = uri
                metrics.setdefault("data", {})[stage["name"]] = manifest.get("counts")
            elif kind == "comparison":
                artifacts["comparison"] = uri
                comparison = _artifact_json(uri, "comparison.json")
                metrics["comparison"] = {
                    k: comparison[k] for k in ("task", "title", "verdict", "winner", "primary", "metrics", "perplexity")
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
