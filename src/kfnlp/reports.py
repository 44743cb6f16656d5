"""Markdown reports people read instead of logs (rendered by the KFP UI too)."""

from __future__ import annotations

import contextlib
import json
import os
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


def evaluation_html(result: dict) -> str:
    """The masked-LM evaluation's page: the report's numbers, the perplexity and each prompt's fill-mask scores."""
    from html import escape

    from kfnlp import plots

    m, label = result["metrics"], result["label"]
    keys = ("perplexity", "eval_loss", "masked_tokens", "eval_chunks", "eval_seconds")
    parts = [
        f"<p>Model <code>{escape(result['model'])}</code> on masked eval set "
        f"<code>{escape(result['eval_set_fingerprint'][:12])}</code>: perplexity <b>{m['perplexity']:,.2f}</b> "
        f"over {m['masked_tokens']:,} masked tokens.</p>",
        _html_table(["metric", "value"], [[k, m[k]] for k in keys]),
        html_figure(
            plots.perplexity_bars({label: m["perplexity"]}, f"Masked-LM perplexity: {label}"),
            "exp(mean cross-entropy over every masked token of the eval set); lower is better.",
        ),
        "<h2>Fill-mask</h2>",
    ]
    for example in result["fill_mask"]:
        if "error" in example:
            parts.append(f"<p><b>{escape(example['prompt'])}</b>: {escape(example['error'])}</p>")
            continue
        scores = {p["token"]: p["score"] for p in example["predictions"]}
        parts.append(
            html_figure(
                plots.score_bars({label: scores}, "probability", example["prompt"]),
                f"The top {len(scores)} tokens for [MASK] and their probabilities.",
            )
        )
        parts.append(_html_table(["token", "score"], [[p["token"], p["score"]] for p in example["predictions"]]))
    return html_page(f"Evaluation: {label}", "".join(parts))


def samples_markdown(samples: list[dict]) -> str:
    """Generation samples: each prompt with its greedy and seeded sampled continuation, one line each."""
    rows = [[_one_line(s["prompt"]), _one_line(s["greedy"]), _one_line(s["sampled"])] for s in samples]
    return table(["prompt", "greedy", "sampled"], rows) if rows else "No prompts."


def clm_evaluation_markdown(result: dict) -> str:
    m, config = result["metrics"], result["config"]
    return (
        "\n\n".join(
            [
                f"# Causal-LM evaluation: {result['label']}",
                f"Model `{result['model']}` on the first {m['eval_chunks']} chunks of the {result['split']} split "
                f"(eval set `{result['eval_set_fingerprint'][:12]}`). Perplexity = exp(mean cross-entropy of the "
                f"next token over all {m['tokens']} predicted positions), as the stock model computes its loss with "
                "labels = input ids: how well the model fits this held-out text, not how good its generations are.",
                table(
                    ["metric", "value"],
                    [[k, m[k]] for k in ("perplexity", "eval_loss", "tokens", "eval_chunks", "eval_seconds")],
                ),
                "## Generation samples",
                f"Up to {config['max_new_tokens']} new tokens per prompt: greedy, and sampled (top-k 50, "
                f"temperature 1) with seed {config['samples_seed']}. The prompt is not repeated.",
                samples_markdown(result["samples"]),
            ]
        )
        + "\n"
    )


def clm_evaluation_html(result: dict) -> str:
    """The causal-LM evaluation's page: the report's numbers, the perplexity and the generation samples."""
    from html import escape

    from kfnlp import plots

    m, label, config = result["metrics"], result["label"], result["config"]
    keys = ("perplexity", "eval_loss", "tokens", "eval_chunks", "eval_seconds")
    samples = [[s["prompt"], s["greedy"], s["sampled"]] for s in result["samples"]]
    return html_page(
        f"Causal-LM evaluation: {label}",
        f"<p>Model <code>{escape(result['model'])}</code> on the first {m['eval_chunks']} chunks of the "
        f"{escape(result['split'])} split: perplexity <b>{m['perplexity']:,.2f}</b> over {m['tokens']:,} predicted "
        "tokens (next-token prediction: how well the model fits this held-out text, not how good its "
        "generations are).</p>"
        + _html_table(["metric", "value"], [[k, m[k]] for k in keys])
        + html_figure(
            plots.perplexity_bars({label: m["perplexity"]}, f"Causal-LM perplexity: {label}"),
            "exp(mean next-token cross-entropy over the held-out chunks); lower is better.",
        )
        + "<h2>Generation samples</h2>"
        + f"<p>Up to {config['max_new_tokens']} new tokens per prompt: greedy, and sampled (top-k 50, temperature 1) "
        f"with seed {config['samples_seed']}. The prompt is not repeated.</p>"
        + (_html_table(["prompt", "greedy", "sampled"], samples) if samples else "<p>No prompts.</p>"),
    )


def per_entity_rows(per_entity: dict) -> list[list[Any]]:
    return [
        [name, row["precision"], row["recall"], row["f1"], row["support"]]
        for name, row in sorted(per_entity.items(), key=lambda kv: -kv[1]["support"])
    ]


PER_ENTITY_HEADERS = ["entity", "precision", "recall", "F1", "support"]


def _unseen_note(m: dict, tag: str) -> list[str]:
    if not m.get("words_not_seen"):
        return []
    return [
        f"{m['words_not_seen']} words lay beyond the truncation length, were not seen by the model and "
        f"are scored as predicted `{tag}`."
    ]


def _confusion_rows(result: dict) -> list[list[Any]]:
    return [[c["gold"], c["predicted"], c["count"]] for c in result["confusions"]]


def ner_evaluation_markdown(result: dict) -> str:
    if result.get("tag_scheme") == "plain":
        return tag_evaluation_markdown(result)
    m = result["metrics"]
    notes = _unseen_note(m, "O")
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
                table(["gold", "predicted", "words"], _confusion_rows(result)) if result["confusions"] else "None.",
                *_confusion_matrix_markdown(result.get("confusion"), "word labels"),
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
# a stage's page: plots scale down to the window and are not split across printed pages
PAGE_STYLE = (
    HTML_STYLE + "figure{margin:1em 0;break-inside:avoid}svg.plot{max-width:100%;height:auto}"
    "figcaption{color:#444;font-size:.9em}@media print{body{margin:0;max-width:none}}"
)


def html_page(title: str, body: str) -> str:
    """A self-contained HTML page (inline style and SVG; no script, no external reference) around ``body``."""
    from html import escape

    return (
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{escape(title)}</title>"
        f"<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<style>{PAGE_STYLE}</style></head><body><h1>{escape(title)}</h1>{body}</body></html>\n"
    )


def html_figure(svg: str, caption: str) -> str:
    """An inline SVG plot with its caption."""
    from html import escape

    return f"<figure>{svg}<figcaption>{escape(caption)}</figcaption></figure>"


def occurring(confusion: dict) -> tuple[list[str], list[list[int]]]:
    """A confusion matrix without the labels no word or example has as gold or predicted label
    (a tag set of 21 labels is read more easily with the 12 a small test split holds)."""
    labels, matrix = confusion["labels"], confusion["matrix"]
    keep = [i for i in range(len(labels)) if any(matrix[i]) or any(row[i] for row in matrix)]
    return [labels[i] for i in keep], [[matrix[i][j] for j in keep] for i in keep]


def _confusion_matrix_markdown(confusion: dict | None, what: str) -> list[str]:
    """The full confusion matrix as a Markdown table (labels that occur), for the reports that also plot it."""
    if not confusion:
        return []
    labels, matrix = occurring(confusion)
    return [
        f"## Confusion matrix ({what}; rows gold, columns predicted)",
        table(["gold \\ predicted", *labels], [[name, *row] for name, row in zip(labels, matrix, strict=True)])
        if labels
        else "No words.",
    ]


def _scores_figure(rows: dict[str, dict], key: str, label: str, title: str, caption: str) -> str:
    """A bar plot of one score (``key``) per entity type, tag or class (``rows``: name -> scores), most support first."""
    from kfnlp import plots

    ordered = sorted(rows.items(), key=lambda kv: -kv[1].get("support", 0))
    return html_figure(plots.score_bars({label: {name: r[key] for name, r in ordered}}, key, title), caption)


def _confusion_figure(confusion: dict | None, title: str, caption: str) -> str:
    from kfnlp import plots

    if not confusion:
        return "<p>No confusion matrix in this evaluation.</p>"
    labels, matrix = occurring(confusion)
    return html_figure(plots.confusion_matrix(labels, matrix, title), caption)


def ner_evaluation_html(result: dict) -> str:
    """The NER evaluation's page: the report's numbers, per-entity F1 bars and the word-label confusion matrix."""
    from html import escape

    if result.get("tag_scheme") == "plain":
        return tag_evaluation_html(result)
    m, label = result["metrics"], result["label"]
    return html_page(
        f"NER evaluation: {label}",
        f"<p>Model <code>{escape(result['model'])}</code>, {escape(result['split'])} split: "
        f"{m['sentences']} sentences, {m['entities']} entities. F1 <b>{m['f1']:.4f}</b> "
        f"(strict IOB2 {m['strict_f1']:.4f}).</p>"
        + _html_table(["metric", "value"], [[k, m[k]] for k in ("precision", "recall", "f1", "accuracy", "strict_f1")])
        + "<h2>Per entity type</h2>"
        + _scores_figure(
            result["per_entity"],
            "f1",
            label,
            f"Entity F1 per type: {label}",
            "seqeval F1 of each entity type (default mode), the most frequent type first.",
        )
        + _html_table(PER_ENTITY_HEADERS, per_entity_rows(result["per_entity"]))
        + "<h2>Confusion matrix (word labels)</h2>"
        + _confusion_figure(
            result.get("confusion"),
            f"Word labels: {label}",
            "Every word by its gold label (rows) and predicted label (columns); labels no word has are left out.",
        )
        + "<h2>Most frequent confusions</h2>"
        + _html_table(["gold", "predicted", "words"], _confusion_rows(result)),
    )


PER_TAG_HEADERS = ["tag", "precision", "recall", "F1", "support"]


def tag_evaluation_markdown(result: dict) -> str:
    """The report of an evaluation of plain tags (part-of-speech, ...): word accuracy and per-tag scores."""
    m = result["metrics"]
    return (
        "\n\n".join(
            [
                f"# Tagging evaluation: {result['label']}",
                f"Model `{result['model']}` on the {result['split']} split ({m['sentences']} sentences, "
                f"{m['words']} words), plain tags. Word-level: each word takes its first sub-token's prediction; "
                "scores are scikit-learn's on the words.",
                table(["metric", "value"], [["word accuracy", m["accuracy"]], ["macro F1", m["macro_f1"]]]),
                "## Per tag",
                table(PER_TAG_HEADERS, per_entity_rows(result["per_tag"])),
                "## Most frequent confusions (word tags)",
                table(["gold", "predicted", "words"], _confusion_rows(result)) if result["confusions"] else "None.",
                *_confusion_matrix_markdown(result.get("confusion"), "word tags"),
                *_unseen_note(m, "_"),
                "Predictions: `predictions.conll` (token, gold, predicted).",
            ]
        )
        + "\n"
    )


def tag_evaluation_html(result: dict) -> str:
    """The page of an evaluation of plain tags: the report's numbers, per-tag F1 bars and the confusion matrix."""
    from html import escape

    m, label = result["metrics"], result["label"]
    return html_page(
        f"Tagging evaluation: {label}",
        f"<p>Model <code>{escape(result['model'])}</code>, {escape(result['split'])} split: "
        f"{m['sentences']} sentences, {m['words']} words. Word accuracy <b>{m['accuracy']:.4f}</b> "
        f"(macro F1 {m['macro_f1']:.4f}).</p>"
        + _html_table(["metric", "value"], [["word accuracy", m["accuracy"]], ["macro F1", m["macro_f1"]]])
        + "<h2>Per tag</h2>"
        + _scores_figure(
            result["per_tag"],
            "f1",
            label,
            f"F1 per tag: {label}",
            "scikit-learn F1 of each tag, the most frequent first.",
        )
        + _html_table(PER_TAG_HEADERS, per_entity_rows(result["per_tag"]))
        + "<h2>Confusion matrix (word tags)</h2>"
        + _confusion_figure(
            result.get("confusion"),
            f"Word tags: {label}",
            "Every word by its gold tag (rows) and predicted tag (columns); tags no word has are left out.",
        )
        + "<h2>Most frequent confusions</h2>"
        + _html_table(["gold", "predicted", "words"], _confusion_rows(result)),
    )


def _comparison_rows(result: dict) -> tuple[list[list[Any]], list[list[Any]]]:
    ppl = result["perplexity"]
    overall = [["masked-LM perplexity", ppl["base"], ppl["adapted"], f"×{ppl['ratio']:.3f}"]]
    for key, row in result["metrics"].items():
        overall.append([key, row["base"], row["adapted"], f"{row['delta']:+.4f}"])
    classes = [
        [name, row["support"], row["f1_base"], row["f1_adapted"], f"{row['delta']:+.4f}"]
        for name, row in sorted(result["per_class"].items(), key=lambda kv: -kv[1]["support"])
    ]
    return overall, classes


def _comparison_text(result: dict) -> tuple[str, str, str]:
    """(title, what was compared, the bootstrap interval in words) of a comparison."""
    p = result["primary"]
    data = ", ".join(f"{n:,} {name}" for name, n in result["data"].items())
    setup = (
        "Both models were fine-tuned with the same data, seed and settings; they differ only in the encoder they "
        f"started from. Scored on the same {result['split']} split ({data}); primary metric: {p['name']}."
    )
    interval = (
        f"A paired bootstrap over the {result['data'][result['unit']]:,} test {result['unit']} ({p['samples']} "
        f"resamples) puts the {p['name']} difference in [{p['low']:+.4f}, {p['high']:+.4f}] with "
        f"{p['confidence']:.0%} confidence; the adapted encoder scored higher in {p['p_adapted_better']:.0%} of "
        "the resamples."
        if "low" in p
        else "No bootstrap interval (bootstrap_samples: 0): the verdict only reports the sign of the difference."
    )
    return f"Does domain adaptation help {result['title']}?", setup, interval


def comparison_markdown(result: dict) -> str:
    overall, classes = _comparison_rows(result)
    title, setup, interval = _comparison_text(result)
    return (
        "\n\n".join(
            [
                f"# {title}",
                f"**Verdict: {result['verdict']}.**",
                setup,
                table(["metric", "base encoder", "adapted encoder", "change"], overall),
                interval,
                f"## Per {result['classes']} (F1)",
                table([result["classes"], "support", "F1 base", "F1 adapted", "change"], classes),
            ]
        )
        + "\n"
    )


def comparison_html(result: dict) -> str:
    """The comparison's page: the report's numbers, perplexity before/after and per-class F1 of both
    encoders with the primary metric's bootstrap interval."""
    from html import escape

    from kfnlp import plots

    overall, classes = _comparison_rows(result)
    title, setup, interval = _comparison_text(result)
    p, ppl = result["primary"], result["perplexity"]
    ordered = sorted(result["per_class"].items(), key=lambda kv: -kv[1]["support"])
    f1 = {
        "base encoder": {name: row["f1_base"] for name, row in ordered},
        "adapted encoder": {name: row["f1_adapted"] for name, row in ordered},
    }
    return html_page(
        title,
        f"<p><b>Verdict: {escape(result['verdict'])}.</b></p><p>{escape(setup)}</p>"
        + _html_table(["metric", "base encoder", "adapted encoder", "change"], overall)
        + f"<p>{escape(interval)}</p>"
        + html_figure(
            plots.perplexity_bars({"base": ppl["base"], "adapted": ppl["adapted"]}, "Masked-LM perplexity"),
            "Perplexity of the base and the adapted encoder on the fixed masked eval set.",
        )
        + f"<h2>Per {escape(result['classes'])} (F1)</h2>"
        + html_figure(
            plots.score_bars(
                f1,
                "f1",
                f"F1 per {result['classes']}: base and adapted encoder",
                (p["low"], p["high"]) if "low" in p else None,
            ),
            f"F1 per {result['classes']}, the most frequent first"
            + (
                f"; under the plot the {p['confidence']:.0%} bootstrap interval of the {p['name']} difference."
                if "low" in p
                else "."
            ),
        )
        + _html_table([result["classes"], "support", "F1 base", "F1 adapted", "change"], classes),
    )


def _ner_rows(metrics: dict) -> list[list[Any]]:
    return [
        [label, m["f1"], m["precision"], m["recall"], m["strict_f1"], m["entities"]]
        for label, m in metrics.items()
        if isinstance(m, dict) and "strict_f1" in m
    ]


def sweep_headline(table: dict) -> str:
    """One paragraph on a sweep (select-best's table): what was ranked, by what, on what, and the choice."""
    chosen = next(t for t in table["trials"] if t["selected"])
    failed = [t for t in table["trials"] if t["status"] != "succeeded"]
    better = "higher" if table["direction"] == "maximize" else "lower"
    text = (
        f"{len(table['trials'])} trials of {table['stage'].replace('_', '-') or 'the train stage'}, ranked by "
        f"{table['metric']} ({better} is better) on {table['scored_on']}: trial {chosen['index']} "
        f"({chosen['label']}) was chosen, {table['metric']} {chosen['metric']:.6g}."
    )
    if len(table["ties"]) > 1:
        text += f" Trials {', '.join(map(str, table['ties']))} tied; the lowest index was kept."
    if failed:
        text += f" {len(failed)} failed (not plotted)."
    return text


def sweep_table(table: dict) -> tuple[list[str], list[list[Any]]]:
    """(headers, rows) of a sweep's trials: values, metric, status, and which was chosen or tied."""
    from kfnlp.sweep import value_text

    headers = ["trial", *table["keys"], table["metric"], "status", ""]
    rows = [
        [
            t["index"],
            *(value_text(t["values"].get(key)) for key in table["keys"]),
            t["metric"],
            "succeeded" if t["status"] == "succeeded" else f"failed: {t['error']}",
            "chosen" if t["selected"] else "tie" if t["index"] in table["ties"] else "",
        ]
        for t in table["trials"]
    ]
    return headers, rows


def _sweep_section(sweep: dict, location: str | None, log: str | None) -> list[str]:
    """The run report's sweep section: the choice, every trial and the plot."""
    parts = [
        "## Sweep",
        sweep_headline(sweep) + " Only the chosen model went on to the test split and the registry.",
        table(*sweep_table(sweep)),
    ]
    if location:
        plot = f"{location}/sweep.svg"
        if log and not location.startswith("s3://"):
            with contextlib.suppress(ValueError):
                plot = os.path.relpath(plot, os.path.dirname(log))
        parts.append(f"![{sweep['metric']} against each swept key]({plot})")
    return parts


def run_report(summary: dict) -> str:
    """The run's report.md: outcome first, then stages, training, data, examples and artifacts."""
    metrics, artifacts = summary["metrics"], summary["artifacts"]
    parts = [
        f"# kfnlp run: {summary['pipeline']}",
        f"Run `{summary['run']}`: **{summary['status']}** in {summary['wall_time_s']:.0f} s.",
    ]
    if "comparison" in metrics:
        comparison = metrics["comparison"]
        parts.append(f"**Does domain adaptation help {comparison['title']}? {comparison['verdict']}.**")
    causal = "perplexity_before" in metrics and "masked_tokens" not in metrics["base"]  # a clm evaluation
    if "perplexity_before" in metrics:
        before, after = metrics["perplexity_before"], metrics["perplexity_after"]
        verdict = "fell" if after < before else "did not fall"
        where, tokens, key = (
            ("the held-out chunks (next-token prediction)", "predicted tokens", "tokens")
            if causal
            else ("the fixed masked eval set", "masked tokens", "masked_tokens")
        )
        parts.append(
            f"Perplexity on {where} {verdict}: **{before:,.1f} → {after:,.1f}** "
            f"({after / before:.1%} of the base model's)."
        )
        parts.append(
            table(
                ["model", "perplexity", "eval loss", tokens],
                [
                    [label, metrics[label]["perplexity"], metrics[label]["eval_loss"], metrics[label][key]]
                    for label in ("base", "adapted")
                ],
            )
        )
    ner_rows = _ner_rows(metrics)
    if ner_rows:
        parts.append("NER on the held-out test split (word-level seqeval, entity micro-average):")
        parts.append(table(["model", "F1", "precision", "recall", "F1 strict IOB2", "entities"], ner_rows))
    cls_rows = [
        [label, m["accuracy"], m["macro_f1"], m["examples"]]
        for label, m in metrics.items()
        if isinstance(m, dict) and "micro_f1" in m
    ]
    if cls_rows:
        parts.append("Text classification on the held-out split (scikit-learn):")
        parts.append(table(["model", "accuracy", "macro F1", "examples"], cls_rows))
    if "comparison" in artifacts:
        parts.append(f"Comparison report: `{artifacts['comparison']}/report.md` (and `report.html`).")
    if summary.get("sweep"):
        parts += _sweep_section(summary["sweep"], summary.get("artifacts", {}).get("sweep"), summary.get("log"))
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
                evaluation = json.load(handle)
        except OSError:
            continue
        if evaluation.get("fill_mask"):
            parts.append(f"## Fill-mask: {label}")
            parts.append(fill_mask_markdown(evaluation["fill_mask"]))
        if evaluation.get("samples"):
            parts.append(f"## Generation samples: {label}")
            parts.append(samples_markdown(evaluation["samples"]))
    parts.append("## Artifacts")
    rows = [[k, v] for k, v in artifacts.items() if isinstance(v, str)]
    rows += [[f"model ({stage})", uri] for stage, uri in artifacts.get("models", {}).items()]
    if "registry" in artifacts:
        reg = artifacts["registry"]
        rows.append(["registry", f"{reg['uri']} in {reg['tracking_uri']}"])
    parts.append(table(["artifact", "location"], rows))
    if "model" in artifacts:
        model = artifacts["model"]
        if cls_rows:
            usage = (
                f'kfnlp predict text-classification --model {model} "A wonderful, moving film."\n'
                f"python -c 'from transformers import pipeline; "
                f'print(pipeline("text-classification", model="{model}")("A wonderful, moving film."))\''
            )
        elif causal:
            usage = (
                f'kfnlp predict generate --model {model} "This movie was"\n'
                f"python -c 'from transformers import pipeline; "
                f'print(pipeline("text-generation", model="{model}")("This movie was"))\''
            )
        elif ner_rows:
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


PER_CLASS_HEADERS = ["class", "precision", "recall", "F1", "support"]
CONFUSED_HEADERS = ["id", "gold", "predicted", "score", "text"]


def _cls_tables(result: dict) -> tuple[list, list, tuple[list[str], list[list[Any]]], list]:
    """The rows of a text-classification evaluation's tables: metrics, per class, the confusion
    matrix (its headers and rows: gold down, predicted across) and the most confused examples."""
    m = result["metrics"]
    keys = ("accuracy", "macro_f1", "micro_f1", "weighted_f1", "macro_precision", "macro_recall")
    overall = [[k, m[k]] for k in keys]
    per_class = [
        [name, row["precision"], row["recall"], row["f1"], row["support"]] for name, row in result["per_class"].items()
    ]
    confusion = result["confusion"]
    headers = ["gold \\ predicted", *confusion["labels"]]
    matrix = [[name, *row] for name, row in zip(confusion["labels"], confusion["matrix"], strict=True)]
    confused = [[e["id"], e["gold"], e["predicted"], e["score"], e["text"]] for e in result["most_confused"]]
    return overall, per_class, (headers, matrix), confused


def _one_line(text: str) -> str:
    """An example's text for a Markdown table cell: one line, and no HTML a renderer would run."""
    from html import escape

    return escape(" ".join(text.split()), quote=False)


def cls_evaluation_markdown(result: dict) -> str:
    overall, per_class, (headers, matrix), confused = _cls_tables(result)
    m = result["metrics"]
    return (
        "\n\n".join(
            [
                f"# Text-classification evaluation: {result['label']}",
                f"Model `{result['model']}` on the {result['split']} split ({m['examples']} examples, "
                f"{len(result['labels'])} classes). Scores are scikit-learn's on `predictions.jsonl`; "
                "averages over the classes present in gold or predicted labels.",
                table(["metric", "value"], overall),
                "## Per class",
                table(PER_CLASS_HEADERS, per_class),
                "## Confusion matrix (rows gold, columns predicted)",
                table(headers, matrix),
                "## Most confused examples (wrong, most confident first)",
                table(CONFUSED_HEADERS, [[*row[:4], _one_line(row[4])] for row in confused]) if confused else "None.",
                "Predictions: `predictions.jsonl` (id, gold, predicted, scores).",
            ]
        )
        + "\n"
    )


def cls_evaluation_html(result: dict) -> str:
    """The text-classification evaluation's page: the report's numbers, per-class F1 bars and the confusion matrix."""
    from html import escape

    from kfnlp import plots

    overall, per_class, (headers, matrix), confused = _cls_tables(result)
    m, label, confusion = result["metrics"], result["label"], result["confusion"]
    return html_page(
        f"Text-classification evaluation: {label}",
        f"<p>Model <code>{escape(result['model'])}</code>, {escape(result['split'])} split: "
        f"{m['examples']} examples. Accuracy <b>{m['accuracy']:.4f}</b>, macro F1 {m['macro_f1']:.4f}.</p>"
        + _html_table(["metric", "value"], overall)
        + "<h2>Per class</h2>"
        + html_figure(
            plots.score_bars(
                {label: {n: r["f1"] for n, r in result["per_class"].items()}}, "f1", f"F1 per class: {label}"
            ),
            "scikit-learn F1 of each class.",
        )
        + _html_table(PER_CLASS_HEADERS, per_class)
        + "<h2>Confusion matrix (rows gold, columns predicted)</h2>"
        + html_figure(
            plots.confusion_matrix(confusion["labels"], confusion["matrix"], f"Classes: {label}"),
            "Every example by its gold class (rows) and predicted class (columns).",
        )
        + _html_table(headers, matrix)
        + "<h2>Most confused examples</h2>"
        + _html_table(CONFUSED_HEADERS, confused),
    )
