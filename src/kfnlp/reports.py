"""Markdown reports people read instead of logs (rendered by the KFP UI too)."""

from __future__ import annotations

import json
from typing import Any


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1e6 else f"{value:,.0f}"
    return "" if value is None else str(value)


def table(headers: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(_fmt(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def fill_mask_markdown(examples: list[dict]) -> str:
    parts = []
    for ex in examples:
        parts.append(f"**{ex['prompt']}**")
        if "error" in ex:
            parts.append(f"- {ex['error']}")
            continue
        parts.append(table(["token", "score"], [[p["token"], p["score"]] for p in ex["predictions"]]))
    return "\n\n".join(parts)


def evaluation_markdown(result: dict) -> str:
    m = result["metrics"]
    return (
        "\n\n".join(
            [
                f"# Evaluation: {result['label']}",
                f"Model `{result['model']}` on masked eval set `{result['eval_set_fingerprint'][:12]}`.",
                table(
                    ["metric", "value"],
                    [[k, m[k]] for k in ("perplexity", "eval_loss", "masked_tokens", "eval_chunks", "eval_seconds")],
                ),
                "## Fill-mask",
                fill_mask_markdown(result["fill_mask"]),
            ]
        )
        + "\n"
    )


def run_report(summary: dict) -> str:
    """The run's report.md: outcome first, then stages, data, examples and artifacts."""
    metrics, artifacts = summary["metrics"], summary["artifacts"]
    parts = [
        f"# kfnlp run: {summary['pipeline']}",
        f"Run `{summary['run']}`: **{summary['status']}** in {summary['wall_time_s']:.0f} s.",
    ]
    if "perplexity_before" in metrics:
        before, after = metrics["perplexity_before"], metrics["perplexity_after"]
        verdict = "fell" if after < before else "did not fall"
        parts.append(
            f"Perplexity on the fixed masked eval set {verdict}: **{before:,.1f} → {after:,.1f}** "
            f"({after / before:.1%} of the base model's)."
        )
        parts.append(
            table(
                ["model", "perplexity", "eval loss", "masked tokens"],
                [
                    [label, metrics[label]["perplexity"], metrics[label]["eval_loss"], metrics[label]["masked_tokens"]]
                    for label in ("base", "adapted")
                ],
            )
        )
    parts.append("## Stages")
    parts.append(
        table(
            ["stage", "status", "wall time (s)", "note"],
            [[s["name"], s["status"], s.get("wall_time_s"), s.get("error", "")] for s in summary["stages"]],
        )
    )
    if "training" in metrics:
        t = metrics["training"]
        parts.append("## Training")
        parts.append(
            table(
                ["steps", "train loss", "samples/s", "wall time (s)"],
                [[t["global_step"], t["train_loss"], t["train_samples_per_second"], t["wall_time_s"]]],
            )
        )
    if "data" in metrics:
        rows = []
        for kind, counts in metrics["data"].items():
            for split, c in (counts or {}).items():
                rows.append(
                    [kind, split, c if not isinstance(c, dict) else ", ".join(f"{k} {v}" for k, v in c.items())]
                )
        parts.append("## Data")
        parts.append(table(["artifact", "split / count", "value"], rows))
    for label, path in artifacts.get("evaluations", {}).items():
        file = f"{path}/metrics.json"
        try:
            with open(file, encoding="utf-8") as handle:
                examples = json.load(handle)["fill_mask"]
        except OSError:
            continue
        parts.append(f"## Fill-mask: {label}")
        parts.append(fill_mask_markdown(examples))
    parts.append("## Artifacts")
    rows = [[k, v] for k, v in artifacts.items() if isinstance(v, str)]
    if "registry" in artifacts:
        reg = artifacts["registry"]
        rows.append(["registry", f"{reg['uri']} in {reg['tracking_uri']}"])
    parts.append(table(["artifact", "location"], rows))
    if "model" in artifacts:
        parts.append(
            "Load the adapted model:\n\n```\n"
            f'kfnlp predict fill-mask --model {artifacts["model"]} "This is a great [MASK]."\n'
            f'python -c \'from transformers import pipeline; print(pipeline("fill-mask", model="{artifacts["model"]}")("This is a great [MASK]."))\'\n```'
        )
    parts.append(f"Full log: `{summary['log']}`")
    return "\n\n".join(parts) + "\n"
