"""Markdown reports people read instead of logs (rendered by the KFP UI too)."""

from __future__ import annotations

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
    return "\n\n".join(
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
    ) + "\n"
