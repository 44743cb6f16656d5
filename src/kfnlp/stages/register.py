"""register: record the adapted model as a new registry version with its metrics,
lineage tags and a model card."""

from __future__ import annotations

import json
import logging
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import kfnlp
from kfnlp.registry import Registry
from kfnlp.stages.evaluate import load_evaluation
from kfnlp.storage import read_manifest

log = logging.getLogger(__name__)


@dataclass
class RegisterConfig:
    model_name: str = "kfnlp-mlm"
    tracking_uri: str | None = None  # default: sqlite file under $KFNLP_HOME/registry

    def __post_init__(self):
        if not self.model_name.strip():
            raise ValueError("model_name must not be empty")


def code_version() -> str:
    """kfnlp's version, plus the git commit when running from a checkout."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(kfnlp.__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    return f"{kfnlp.__version__}+{sha}" if sha else kfnlp.__version__


def model_card(name: str, model_manifest: dict, evaluation: dict, baseline: dict | None) -> str:
    from kfnlp.reports import table

    m = evaluation["metrics"]
    rows = [["perplexity (adapted)", m["perplexity"]]]
    if baseline:
        rows.insert(0, ["perplexity (base)", baseline["metrics"]["perplexity"]])
    training = model_manifest.get("training", {})
    return (
        "\n\n".join(
            [
                f"# {name}",
                "Task: masked-language modelling (fill-mask), domain-adapted with kfnlp.",
                f"Base model: `{model_manifest['base_model']}`",
                f"Training data fingerprint: `{model_manifest['dataset_fingerprint']}`; "
                f"{training.get('train_chunks')} chunks, {training.get('global_step')} optimizer steps.",
                "## Evaluation",
                f"Perplexity = exp(mean cross-entropy over the masked tokens) of the eval set "
                f"`{evaluation['eval_set_fingerprint']}`, masked once with a fixed seed so that "
                "models are compared on identical positions.",
                table(["metric", "value"], rows),
                "## Intended use and limitations",
                "A starting point for downstream fine-tuning (e.g. token classification) on text like the "
                "training corpus. Perplexity measures fit to that corpus, not task quality; the model inherits "
                "the biases of its base model and of the corpus.",
                "## Load",
                '```python\nfrom transformers import pipeline\npipeline("fill-mask", model="PATH/TO/model")\n```',
            ]
        )
        + "\n"
    )


def register(
    model: str,
    evaluation: str,
    config: RegisterConfig,
    baseline: str | None = None,
    run_name: str | None = None,
) -> dict:
    model_manifest = read_manifest(model, kind="model")
    result = load_evaluation(evaluation)
    base = load_evaluation(baseline) if baseline else None
    metrics = {"perplexity": result["metrics"]["perplexity"], "eval_loss": result["metrics"]["eval_loss"]}
    if base:
        metrics["perplexity_base"] = base["metrics"]["perplexity"]
    training = model_manifest.get("training", {})
    for key in ("train_loss", "train_samples_per_second", "global_step"):
        if isinstance(training.get(key), (int, float)):
            metrics[key] = training[key]
    tags = {
        "kfnlp.task": "fill-mask",
        "kfnlp.base_model": model_manifest["base_model"],
        "kfnlp.dataset_fingerprint": model_manifest["dataset_fingerprint"],
        "kfnlp.eval_set_fingerprint": result["eval_set_fingerprint"],
        "kfnlp.code_version": code_version(),
        "kfnlp.pipeline_run": run_name,
        "kfnlp.primary_metric": "perplexity",
    }
    with tempfile.TemporaryDirectory() as tmp:
        card = Path(tmp) / "README.md"
        card.write_text(model_card(config.model_name, model_manifest, result, base), encoding="utf-8")
        summary = Path(tmp) / "training_summary.json"
        summary.write_text(json.dumps(training, indent=2), encoding="utf-8")
        registered = Registry(config.tracking_uri).register(
            config.model_name,
            Path(model),
            metrics=metrics,
            params=training.get("config", {}),
            tags=tags,
            files={"model": card, "": summary},
            run_name=run_name,
        )
    registered["metrics"] = metrics
    registered["tags"] = {k: v for k, v in tags.items() if v is not None}
    return registered
