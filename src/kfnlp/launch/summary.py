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


def display_names(pipeline_fn) -> dict[str, str]:
    """Task name -> display name, from the compiled pipeline spec."""
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


def collect_stages(run_dir: Path, names: dict[str, str]) -> list[dict[str, Any]]:
    """One entry per task of the pipeline (``names``: task -> display name), in the order they started."""
    stages = []
    for task, display in names.items():
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
