"""register: record the adapted model as a new registry version with its metrics,
lineage tags and a model card."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import kfnlp
from kfnlp.artifacts import open_model, read_evaluation
from kfnlp.config import bounded, option
from kfnlp.errors import ConfigError
from kfnlp.registry import Registry
from kfnlp.stages.entry import Input, Stage
from kfnlp.sweep import value_text

log = logging.getLogger(__name__)


@dataclass
class RegisterConfig:
    model_name: str = option("kfnlp-mlm", "registered model name; each run adds a new version")
    tracking_uri: str | None = option(None, "default: sqlite file under $KFNLP_HOME/registry")
    primary_metric: str | None = option(
        None,
        "the metric the promotion gate compares, one the task logs (e.g. macro_f1 for imbalanced classes); "
        "default: the task's own (mlm and clm perplexity, ner f1, ner with plain tags accuracy, cls accuracy)",
    )

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
    training = model_manifest.get("training", {})
    if evaluation.get("task") == "cls":
        rows = [["accuracy", m["accuracy"]], ["macro F1", m["macro_f1"]], ["micro F1", m["micro_f1"]]]
        if baseline:
            rows.append(["accuracy of the same recipe on the base encoder", baseline["metrics"]["accuracy"]])
        rows += [[f"F1 of class {name}", row["f1"]] for name, row in evaluation.get("per_class", {}).items()]
        task = "Task: text classification (sequence classification), fine-tuned with kfnlp."
        data = f"{training.get('train_examples')} training examples, {training.get('global_step')} optimizer steps."
        method = (
            f"scikit-learn scores of the predictions on the {evaluation['split']} split ({m['examples']} "
            "examples); macro F1 averages the classes with equal weight."
        )
        extra = [f"Labels: {', '.join(model_manifest.get('labels', []))}"]
        use = (
            "Sorts text like the training data into the labels above; texts longer than the training length are "
            "truncated. Scores hold for that data only (see the cross-domain split, where there is one); the model "
            "inherits the biases of its encoder and of the labels."
        )
        load = 'pipeline("text-classification", model="PATH/TO/model")'
    elif evaluation.get("task") == "ner" and evaluation.get("tag_scheme") == "plain":
        rows = [["word accuracy", m["accuracy"]], ["macro F1 over the tags", m["macro_f1"]]]
        if baseline:
            rows.append(["word accuracy of the same recipe on the base encoder", baseline["metrics"]["accuracy"]])
        task = "Task: token tagging with plain tags (e.g. part-of-speech), fine-tuned with kfnlp."
        data = f"{training.get('train_sentences')} training sentences, {training.get('global_step')} optimizer steps."
        method = (
            f"Word-level scores (each word takes its first sub-token's prediction; scikit-learn) on the "
            f"{evaluation['split']} split: {m['sentences']} sentences, {m['words']} words."
        )
        extra = [f"Tags: {', '.join(model_manifest.get('labels', []))}"]
        use = (
            "Tags each word of text like the training data. Scores hold for that data only; the model inherits "
            "the biases of its encoder and of the annotations."
        )
        load = 'pipeline("token-classification", model="PATH/TO/model")'
    elif evaluation.get("task") == "ner":
        rows = [
            ["F1", m["f1"]],
            ["precision", m["precision"]],
            ["recall", m["recall"]],
            ["F1, strict IOB2", m["strict_f1"]],
        ]
        if baseline:
            rows.append(["F1 of the same recipe on the base encoder", baseline["metrics"]["f1"]])
        task = "Task: named-entity recognition (token classification), fine-tuned with kfnlp."
        data = f"{training.get('train_sentences')} training sentences, {training.get('global_step')} optimizer steps."
        method = (
            f"Word-level seqeval scores (each word takes its first sub-token's prediction) on the "
            f"{evaluation['split']} split: {m['sentences']} sentences, {m['entities']} entities."
        )
        labels = ", ".join(model_manifest.get("labels", []))
        extra = [f"Labels: {labels}"]
        use = (
            "Tags entities of the types above in text like the training data. Scores hold for that data only; "
            "the model inherits the biases of its encoder and of the annotations."
        )
        load = 'pipeline("token-classification", model="PATH/TO/model", aggregation_strategy="simple")'
    elif evaluation.get("task") == "clm":
        rows = [["perplexity (adapted)", m["perplexity"]], ["eval loss (adapted)", m["eval_loss"]]]
        if baseline:
            rows.insert(0, ["perplexity (base)", baseline["metrics"]["perplexity"]])
        task = "Task: causal language modelling (text generation), domain-adapted with kfnlp."
        data = f"{training.get('train_chunks')} chunks, {training.get('global_step')} optimizer steps."
        method = (
            f"Perplexity = exp(mean cross-entropy of the next token) over all {m['tokens']} predicted positions "
            f"of the first {m['eval_chunks']} chunks of the dataset's {evaluation['split']} split (held-out "
            f"documents; eval set `{evaluation['eval_set_fingerprint']}`), the stock model's loss with labels = "
            "input ids. It measures how well the model predicts held-out text of this corpus, not the quality "
            "of what it generates; compare it only between models with the same tokenizer on the same eval set."
        )
        extra = (
            [
                f"A LoRA adapter on `{model_manifest['adapter_base']}`; `kfnlp registry export {name}/VERSION "
                "--output DIR --merge` writes it merged into its base, a plain model directory."
            ]
            if model_manifest.get("adapter_base")
            else []
        )
        lineage = f"{model_manifest.get('base_model')} {model_manifest.get('adapter_base')}"
        tiny = (
            "The embedded base (builtin:gpt2-imdb) is a tiny GPT-2 kfnlp trains from scratch on IMDB reviews on "
            "this machine: it writes fluent-looking but mostly incoherent text, and its perplexities are not "
            "comparable with those of published models. It demonstrates the recipe; it is not a model to deploy. "
            if "builtin:gpt2-imdb" in lineage
            else ""
        )
        use = (
            f"Continues text like the training corpus. {tiny}The model inherits the biases of its base model and "
            "of the corpus; read its generations before any use."
        )
        load = 'pipeline("text-generation", model="PATH/TO/model")'
    else:
        rows = [["perplexity (adapted)", m["perplexity"]]]
        if baseline:
            rows.insert(0, ["perplexity (base)", baseline["metrics"]["perplexity"]])
        task = "Task: masked-language modelling (fill-mask), domain-adapted with kfnlp."
        data = f"{training.get('train_chunks')} chunks, {training.get('global_step')} optimizer steps."
        method = (
            f"Perplexity = exp(mean cross-entropy over the masked tokens) of the eval set "
            f"`{evaluation['eval_set_fingerprint']}`, masked once with a fixed seed so that "
            "models are compared on identical positions."
        )
        extra = []
        use = (
            "A starting point for downstream fine-tuning (e.g. token classification) on text like the "
            "training corpus. Perplexity measures fit to that corpus, not task quality; the model inherits "
            "the biases of its base model and of the corpus."
        )
        load = 'pipeline("fill-mask", model="PATH/TO/model")'
    return (
        "\n\n".join(
            [
                f"# {name}",
                task,
                f"Base model: `{model_manifest['base_model']}`",
                *extra,
                f"Training data fingerprint: `{model_manifest['dataset_fingerprint']}`; {data}",
                "## Evaluation",
                method,
                table(["metric", "value"], rows),
                *sweep_card(model_manifest.get("sweep")),
                "## Intended use and limitations",
                use,
                "## Load",
                f"```python\nfrom transformers import pipeline\n{load}\n```",
            ]
        )
        + "\n"
    )


def sweep_card(sweep: dict | None) -> list[str]:
    """The model card's section on the sweep the model was chosen by (select-best's table), if any."""
    from kfnlp.reports import table

    if not sweep:
        return []
    chosen = next(t for t in sweep["trials"] if t["selected"])
    better = "higher" if sweep["direction"] == "maximize" else "lower"
    failed = sum(t["status"] != "succeeded" for t in sweep["trials"])
    rows = [
        [
            t["index"],
            *(value_text(t["values"].get(key)) for key in sweep["keys"]),
            t["metric"],
            "chosen" if t["selected"] else "succeeded" if t["status"] == "succeeded" else f"failed: {t['error']}",
        ]
        for t in sweep["trials"]
    ]
    return [
        "## Sweep",
        f"Chosen among {len(sweep['trials'])} trials of {sweep['stage'].replace('_', '-')}"
        + (f" ({failed} failed)" if failed else "")
        + f" by {sweep['metric']} ({better} is better) on {sweep.get('scored_on') or 'the selection set'}: "
        f"trial {chosen['index']} ({chosen['label']}). Only the chosen model was scored as above; the others "
        "were not evaluated further.",
        table(["trial", *sweep["keys"], sweep["metric"], "status"], rows),
    ]


def sweep_tags(sweep: dict | None) -> dict[str, str | int | None]:
    """The registry tags of the sweep a model was chosen by: its metric, how many trials, which one won."""
    if not sweep:
        return {}
    chosen = next(t for t in sweep["trials"] if t["selected"])
    return {
        "kfnlp.sweep.metric": sweep["metric"],
        "kfnlp.sweep.trials": len(sweep["trials"]),
        "kfnlp.sweep.selected": bounded(f"trial {chosen['index']}: {chosen['label']}", 1000),
    }


# task -> (metrics it logs, its primary metric, the registry's task tag)
TASK_METRICS = {
    "mlm": (("perplexity", "eval_loss"), "perplexity", "fill-mask"),
    "ner": (("f1", "precision", "recall", "strict_f1", "accuracy"), "f1", "token-classification"),
    "ner-plain": (("accuracy", "macro_f1"), "accuracy", "token-classification"),
    "cls": (("accuracy", "macro_f1", "micro_f1"), "accuracy", "text-classification"),
    "clm": (("perplexity", "eval_loss"), "perplexity", "text-generation"),
}


def task_of(evaluation: dict) -> str:
    """The evaluation's task, with NER's plain tag scheme as a task of its own (other metrics)."""
    task = evaluation.get("task", "mlm")
    return "ner-plain" if task == "ner" and evaluation.get("tag_scheme") == "plain" else task


def registry_metrics(evaluation: dict, baseline: dict | None, primary_metric: str | None = None) -> tuple[dict, str]:
    """Metrics logged with the version, and the primary one (what a promotion gate compares):
    ``primary_metric`` when given (one the task logs), else the task's own."""
    task = task_of(evaluation)
    keys, primary, _ = TASK_METRICS[task]
    metrics = {k: evaluation["metrics"][k] for k in keys}
    if baseline:  # the base encoder's score of the same recipe, beside the candidate's
        metrics[f"{primary}_base"] = baseline["metrics"][primary]
    if primary_metric is not None:
        if primary_metric not in keys:
            raise ConfigError(
                f"register.primary_metric: {primary_metric!r} is not a metric of a {task} evaluation "
                f"(one of {', '.join(keys)})"
            )
        primary = primary_metric
    return metrics, primary


def register(
    model: str,
    evaluation: str,
    config: RegisterConfig,
    baseline: str | None = None,
    run_name: str | None = None,
) -> dict:
    trained = open_model(model)
    result = read_evaluation(evaluation)
    base = read_evaluation(baseline) if baseline else None
    metrics, primary = registry_metrics(result, base, config.primary_metric)
    training = trained.training
    for key in ("train_loss", "train_samples_per_second", "global_step"):
        if isinstance(training.get(key), (int, float)):
            metrics[key] = training[key]
    tags = {
        "kfnlp.task": TASK_METRICS[task_of(result)][2],
        "kfnlp.base_model": trained.manifest["base_model"],
        "kfnlp.adapter_base": trained.manifest.get("adapter_base"),  # a LoRA adapter: the model it loads onto
        "kfnlp.dataset_fingerprint": trained.manifest["dataset_fingerprint"],
        "kfnlp.eval_set_fingerprint": result.get("eval_set_fingerprint") or result.get("dataset_fingerprint"),
        "kfnlp.code_version": code_version(),
        "kfnlp.pipeline_run": run_name,
        # the runtime image, where the deployment says which one it is (KFNLP_IMAGE)
        "kfnlp.image": os.environ.get("KFNLP_IMAGE") or "local (no image)",
        "kfnlp.primary_metric": primary,
        **sweep_tags(trained.manifest.get("sweep")),
    }
    with tempfile.TemporaryDirectory() as tmp:
        card = Path(tmp) / "README.md"
        card.write_text(model_card(config.model_name, trained.manifest, result, base), encoding="utf-8")
        summary = Path(tmp) / "training_summary.json"
        summary.write_text(json.dumps(training, indent=2), encoding="utf-8")
        files = {"model": card, "": summary}
        if trained.manifest.get("sweep"):  # the trials it was chosen from, beside the version: sweep/sweep.json
            (Path(tmp) / "sweep.json").write_text(json.dumps(trained.manifest["sweep"], indent=2), encoding="utf-8")
            files["sweep"] = Path(tmp) / "sweep.json"
        registered = Registry(config.tracking_uri).register(
            config.model_name,
            trained.path,
            metrics=metrics,
            params=training.get("config", {}),
            tags=tags,
            files=files,
            run_name=run_name,
            # the step history; a model trained before kfnlp kept it has its loss rows
            history=training.get("history", training.get("losses", [])),
        )
    registered["metrics"] = metrics
    registered["tags"] = {k: v for k, v in tags.items() if v is not None}
    return registered


STAGE = Stage(
    name="register",
    config=RegisterConfig,
    function=register,
    help="record the model as a new version in the model registry",
    inputs=(
        Input("model", "model artifact from train-mlm, train-ner, train-cls or train-clm", required=True, kind="model"),
        Input("evaluation", "evaluation of that model", required=True, kind="artifact"),
        Input("baseline", "evaluation of the base model (optional)", kind="artifact"),
        Input("run_name", "pipeline run name"),
    ),
    example="model_name=kfnlp-mlm-imdb",
    registry=True,
    cache=False,
)
