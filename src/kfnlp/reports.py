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


def per_entity_rows(per_entity: dict) -> list[list[Any]]:
    return [
        [name, row["precision"], row["recall"], row["f1"], row["support"]]
        for name, row in sorted(per_entity.items(), key=lambda kv: -kv[1]["support"])
    ]


PER_ENTITY_HEADERS = ["entity", "precision", "recall", "F1", "support"]


def ner_evaluation_markdown(result: dict) -> str:
    m = result["metrics"]
    notes = []
    if m.get("words_not_seen"):
        notes.append(
            f"{m['words_not_seen']} words lay beyond the truncation length, were not seen by the model and "
            "are scored as predicted `O`."
        )
    return (
        "\n\n".join(
            [
                f"# NER evaluation: {result['label']}",
                f"Model `{result['model']}` on the {result['split']} split ({m['sentences']} sentences, "
                f"{m['words']} words, {m['entities']} entities). Word-level: each word takes its first "
                "sub-token's prediction; scores are seqeval's (entity-level, micro-averaged).",
                table(
                    ["mode", "precision", "recall", "F1", "accuracy"],
                    [
                        ["default (conlleval)", m["precision"], m["recall"], m["f1"], m["accuracy"]],
                        [
                            "strict IOB2",
                            result["strict"]["precision"],
                            result["strict"]["recall"],
                            result["strict"]["f1"],
                            result["strict"]["accuracy"],
                        ],
                    ],
                ),
                "## Per entity type",
                table(PER_ENTITY_HEADERS, per_entity_rows(result["per_entity"])),
                "## Most frequent confusions (word labels)",
                table(
                    ["gold", "predicted", "words"],
                    [[c["gold"], c["predicted"], c["count"]] for c in result["confusions"]],
                )
                if result["confusions"]
                else "None.",
                *notes,
                "Predictions: `predictions.conll` (token, gold, predicted).",
            ]
        )
        + "\n"
    )


def _html_table(headers: list[str], rows: list[list[Any]]) -> str:
    from html import escape

    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{escape(_fmt(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


HTML_STYLE = (
    "body{font-family:system-ui,sans-serif;margin:2em;max-width:60em}"
    "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.3em .7em;text-align:right}"
    "th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}"
)


def ner_evaluation_html(result: dict) -> str:
    from html import escape

    m = result["metrics"]
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>NER evaluation: {escape(result['label'])}</title>"
        f"<style>{HTML_STYLE}</style></head><body>"
        f"<h1>NER evaluation: {escape(result['label'])}</h1>"
        f"<p>Model <code>{escape(result['model'])}</code>, {escape(result['split'])} split: "
        f"{m['sentences']} sentences, {m['entities']} entities. F1 <b>{m['f1']:.4f}</b> "
        f"(strict IOB2 {m['strict_f1']:.4f}).</p>"
        + _html_table(["metric", "value"], [[k, m[k]] for k in ("precision", "recall", "f1", "accuracy", "strict_f1")])
        + "<h2>Per entity type</h2>"
        + _html_table(PER_ENTITY_HEADERS, per_entity_rows(result["per_entity"]))
        + "<h2>Most frequent confusions</h2>"
        + _html_table(
            ["gold", "predicted", "words"], [[c["gold"], c["predicted"], c["count"]] for c in result["confusions"]]
        )
        + "</body></html>\n"
    )


def _comparison_rows(result: dict) -> tuple[list[list[Any]], list[list[Any]]]:
    ppl = result["perplexity"]
    overall = [["masked-LM perplexity", ppl["base"], ppl["adapted"], f"×{ppl['ratio']:.3f}"]]
    for key, name in (
        ("f1", "NER F1"),
        ("precision", "NER precision"),
        ("recall", "NER recall"),
        ("strict_f1", "NER F1, strict IOB2"),
    ):
        row = result["ner"][key]
        overall.append([name, row["base"], row["adapted"], f"{row['delta']:+.4f}"])
    entities = [
        [name, row["support"], row["f1_base"], row["f1_adapted"], f"{row['delta']:+.4f}"]
        for name, row in sorted(result["per_entity"].items(), key=lambda kv: -kv[1]["support"])
    ]
    return overall, entities


COMPARISON_HEADERS = (
    ["metric", "base encoder", "adapted encoder", "change"],
    ["entity", "support", "F1 base", "F1 adapted", "change"],
)


def comparison_markdown(result: dict) -> str:
    overall, entities = _comparison_rows(result)
    d = result["f1_delta"]
    interval = (
        f"A paired bootstrap over the {result['sentences']} test sentences ({d['samples']} resamples) puts the "
        f"F1 difference in [{d['low']:+.4f}, {d['high']:+.4f}] with {d['confidence']:.0%} confidence; the adapted "
        f"encoder scored higher in {d['p_adapted_better']:.0%} of the resamples."
        if "low" in d
        else ""
    )
    return (
        "\n\n".join(
            [
                "# Does domain adaptation help NER?",
                f"**Verdict: {result['verdict']}.**",
                "Both NER models were fine-tuned with the same data, seed and settings; they differ only in the "
                f"encoder they started from. Scored on the same {result['split']} split "
                f"({result['sentences']} sentences, {result['entities']} entities), word-level seqeval.",
                table(COMPARISON_HEADERS[0], overall),
                interval,
                "## Per entity type (F1)",
                table(COMPARISON_HEADERS[1], entities),
            ]
        )
        + "\n"
    )


def comparison_html(result: dict) -> str:
    from html import escape

    overall, entities = _comparison_rows(result)
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>Does domain adaptation help NER?</title>"
        f"<style>{HTML_STYLE}</style></head><body><h1>Does domain adaptation help NER?</h1>"
        f"<p><b>Verdict: {escape(result['verdict'])}.</b></p>"
        + _html_table(COMPARISON_HEADERS[0], overall)
        + "<h2>Per entity type (F1)</h2>"
        + _html_table(COMPARISON_HEADERS[1], entities)
        + "</body></html>\n"
    )


def _ner_rows(metrics: dict) -> list[list[Any]]:
    return [
        [label, m["f1"], m["precision"], m["recall"], m["strict_f1"], m["entities"]]
        for label, m in metrics.items()
        if isinstance(m, dict) and "strict_f1" in m
    ]


def run_report(summary: dict) -> str:
    """The run's report.md: outcome first, then stages, training, data, examples and artifacts."""
    metrics, artifacts = summary["metrics"], summary["artifacts"]
    parts = [
        f"# kfnlp run: {summary['pipeline']}",
        f"Run `{summary['run']}`: **{summary['status']}** in {summary['wall_time_s']:.0f} s.",
    ]
    if "comparison" in metrics:
        parts.append(f"**Does domain adaptation help NER? {metrics['comparison']['verdict']}.**")
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
    ner_rows = _ner_rows(metrics)
    if ner_rows:
        parts.append("NER on the held-out test split (word-level seqeval, entity micro-average):")
        parts.append(table(["model", "F1", "precision", "recall", "F1 strict IOB2", "entities"], ner_rows))
    if "comparison" in artifacts:
        parts.append(f"Comparison report: `{artifacts['comparison']}/report.md` (and `report.html`).")
    parts.append("## Stages")
    parts.append(
        table(
            ["stage", "status", "wall time (s)", "note"],
            [[s["name"], s["status"], s.get("wall_time_s"), s.get("error", "")] for s in summary["stages"]],
        )
    )
    if "training" in metrics:
        parts.append("## Training")
        parts.append(
            table(
                ["stage", "steps", "train loss", "samples/s", "wall time (s)"],
                [
                    [name, t["global_step"], t["train_loss"], t["train_samples_per_second"], t["wall_time_s"]]
                    for name, t in metrics["training"].items()
                ],
            )
        )
    if "data" in metrics:
        rows = []
        for stage, counts in metrics["data"].items():
            for split, c in (counts or {}).items():
                rows.append(
                    [stage, split, c if not isinstance(c, dict) else ", ".join(f"{k} {v}" for k, v in c.items())]
                )
        parts.append("## Data")
        parts.append(table(["stage", "split", "counts"], rows))
    for label, path in artifacts.get("evaluations", {}).items():
        try:
            with open(f"{path}/metrics.json", encoding="utf-8") as handle:
                examples = json.load(handle).get("fill_mask")
        except OSError:
            continue
        if examples:
            parts.append(f"## Fill-mask: {label}")
            parts.append(fill_mask_markdown(examples))
    parts.append("## Artifacts")
    rows = [[k, v] for k, v in artifacts.items() if isinstance(v, str)]
    rows += [[f"model ({stage})", uri] for stage, uri in artifacts.get("models", {}).items()]
    if "registry" in artifacts:
        reg = artifacts["registry"]
        rows.append(["registry", f"{reg['uri']} in {reg['tracking_uri']}"])
    parts.append(table(["artifact", "location"], rows))
    if "model" in artifacts:
        model = artifacts["model"]
        if ner_rows:
            usage = (
                f'kfnlp predict ner --model {model} "Empire State Building is in New York"\n'
                f"python -c 'from transformers import pipeline; "
                f'print(pipeline("token-classification", model="{model}", aggregation_strategy="simple")'
                f'("Empire State Building is in New York"))\''
            )
        else:
            usage = (
                f'kfnlp predict fill-mask --model {model} "This is a great [MASK]."\n'
                f"python -c 'from transformers import pipeline; "
                f'print(pipeline("fill-mask", model="{model}")("This is a great [MASK]."))\''
            )
        parts.append(f"Use the model:\n\n```\n{usage}\n```")
    parts.append(f"Full log: `{summary['log']}`")
    return "\n\n".join(parts) + "\n"
