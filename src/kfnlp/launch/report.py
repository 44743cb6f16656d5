"""The run's ``report.html``: what a person looks at after ``kfnlp run`` (or ``kfnlp report``).

One self-contained page (inline CSS and SVG plots from :mod:`kfnlp.plots`, no script, no font or
stylesheet from the network), readable on a laptop and printable: the outcome first, then the
stages' timeline, the training curves of each train stage (its model artifact's training history),
perplexity before and after, per-entity or per-class F1 with compare's bootstrap interval, the
confusion matrices, data counts, examples, the registry's decision and the sweep. It reads the
stages' own artifacts (local or ``s3://``) named in ``summary.json``; a section whose artifact is
missing or unreadable says so, and the page lists what is missing at the top, so a failed or
partial run still renders.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from html import escape
from pathlib import Path
from typing import Any

from kfnlp import plots
from kfnlp.errors import KfnlpError

STYLE = """
body{font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;color:#222;
 margin:0 auto;padding:1.2em 1.6em 3em;max-width:64em}
h1{font-size:1.7em;margin:.3em 0}h2{font-size:1.3em;border-bottom:1px solid #ddd;padding-bottom:.15em;margin-top:1.8em}
h3{font-size:1.05em;margin-bottom:.3em}
table{border-collapse:collapse;margin:.7em 0;font-size:.92em}
td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right;vertical-align:top}
th{background:#f3f4f6}td:first-child,th:first-child{text-align:left}.text{text-align:left}
figure{margin:1em 0}figure svg{max-width:100%;height:auto;display:block}
figcaption{color:#555;font-size:.9em;margin-top:.2em}
code{font-size:.92em;overflow-wrap:anywhere}
.headline{font-size:1.08em;background:#f5f7fa;border-left:4px solid #1f77b4;padding:.5em 1em}
.headline p{margin:.3em 0}
.succeeded{color:#1a7f37;font-weight:bold}.failed{color:#c62828;font-weight:bold}
.missing{background:#fff4e5;border-left:4px solid #ff9800;padding:.4em 1em}
.note{color:#8a4b00}
nav ul{columns:3;list-style:none;padding:0;margin:.5em 0}nav a{color:#1f5f99}
.ent{background:#e3effa;border-radius:3px;padding:0 .15em}.ent.wrong{background:#fde2e1}
.ent small{color:#555;font-size:.7em;margin-left:.2em}
@media print{body{max-width:none;padding:0;font-size:10.5pt}nav{display:none}
 section,figure,table{break-inside:avoid}h2,h3{break-after:avoid}a{color:inherit;text-decoration:none}}
"""
NER_EXAMPLES = 5  # sentences with entities shown per NER evaluation
_READ_ERRORS = (KfnlpError, OSError, KeyError, ValueError, TypeError, IndexError)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1e6 else f"{value:,.0f}"
    return "" if value is None else str(value)


def _table(headers: list[str], rows: list[list[Any]], text_columns: tuple[int, ...] = ()) -> str:
    head = "".join(
        f"<th class=text>{escape(h)}</th>" if i in text_columns else f"<th>{escape(h)}</th>"
        for i, h in enumerate(headers)
    )
    body = "".join(
        "<tr>"
        + "".join(
            f"<td class=text>{escape(_fmt(c))}</td>" if i in text_columns else f"<td>{escape(_fmt(c))}</td>"
            for i, c in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _figure(svg: str, caption: str) -> str:
    return f"<figure>{svg}<figcaption>{escape(caption)}</figcaption></figure>"


def _note(text: str) -> str:
    return f"<p class=note>{escape(text)}</p>"


class _Reader:
    """The artifacts the page needs, each read once; what could not be read is remembered."""

    def __init__(self, summary: dict[str, Any], missing: list[str]):
        self.summary = summary
        self.missing = missing
        self._evaluations: dict[str, dict[str, Any] | None] = {}

    def evaluation(self, label: str) -> dict[str, Any] | None:
        if label not in self._evaluations:
            from kfnlp.artifacts.evaluation import read_evaluation

            uri = self.summary.get("artifacts", {}).get("evaluations", {}).get(label)
            try:
                self._evaluations[label] = read_evaluation(uri)
            except _READ_ERRORS as exc:
                self.missing.append(f"evaluation {label} ({uri}): {_reason(exc)}")
                self._evaluations[label] = None
        return self._evaluations[label]

    def evaluations(self) -> dict[str, dict[str, Any]]:
        labels = self.summary.get("artifacts", {}).get("evaluations", {})
        return {label: e for label in labels if (e := self.evaluation(label)) is not None}


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, KeyError):
        text = f"no {text}"
    return text if len(text) <= 300 else text[:299] + "…"


def _headline(summary: dict[str, Any]) -> str:
    metrics, artifacts = summary.get("metrics", {}), summary.get("artifacts", {})
    status = summary.get("status", "unknown")
    wall = summary.get("wall_time_s")
    lines = [
        f"Run <code>{escape(str(summary.get('run', '?')))}</code>: <span class={escape(status)}>{escape(status)}</span>"
        + (f" in {wall:,.0f} s" if isinstance(wall, (int, float)) else "")
        + "."
    ]
    if "comparison" in metrics:
        c = metrics["comparison"]
        lines.append(f"<b>Does domain adaptation help {escape(c['title'])}? {escape(c['verdict'])}.</b>")
    if "perplexity_before" in metrics:
        before, after = metrics["perplexity_before"], metrics["perplexity_after"]
        verdict = "fell" if after < before else "did not fall"
        lines.append(
            f"Perplexity {verdict}: <b>{before:,.1f} → {after:,.1f}</b> ({after / before:.1%} of the base model's)."
        )
    for label, m in metrics.items():
        if isinstance(m, dict) and "strict_f1" in m:
            lines.append(f"NER F1 ({escape(label)}): <b>{m['f1']:.4f}</b> (strict IOB2 {m['strict_f1']:.4f}).")
        elif isinstance(m, dict) and "micro_f1" in m:
            lines.append(f"Accuracy ({escape(label)}): <b>{m['accuracy']:.4f}</b> (macro F1 {m['macro_f1']:.4f}).")
    if "registry" in artifacts:
        reg = artifacts["registry"]
        text = f"Registered <code>{escape(str(reg['uri']))}</code>"
        promotion = metrics.get("promotion")
        if promotion:
            text += (
                f"; promotion: <b>{escape(str(promotion.get('outcome')))}</b> ({escape(str(promotion.get('reason')))})"
            )
        lines.append(text + ".")
    failed = [s for s in summary.get("stages", []) if s.get("status") == "failed"]
    for stage in failed:
        lines.append(
            f"<span class=failed>{escape(stage.get('name', '?'))} failed</span>: "
            f"{escape(str(stage.get('error', 'see the log')))}"
        )
    return "<div class=headline>" + "".join(f"<p>{line}</p>" for line in lines) + "</div>"


def _stages(summary: dict[str, Any], reader: _Reader) -> str:
    stages = summary.get("stages") or []
    if not stages:
        raise ValueError("the summary lists no stages")
    rows = [
        [s.get("name"), s.get("status"), s.get("wall_time_s"), "reused" if s.get("reused") else s.get("error", "")]
        for s in stages
    ]
    caption = "Each stage's bar runs from its start to its end; hatched: reused from an interrupted attempt."
    return _figure(plots.timeline(stages), caption) + _table(
        ["stage", "status", "wall time (s)", "note"], rows, text_columns=(3,)
    )


def _training(summary: dict[str, Any], reader: _Reader) -> str:
    from kfnlp.storage import read_any_manifest

    models = summary.get("artifacts", {}).get("models", {})
    if not models:
        return _note("No train stage produced a model in this run.")
    parts = []
    for stage, uri in models.items():
        try:
            training = read_any_manifest(uri).get("training") or {}
        except _READ_ERRORS as exc:
            reader.missing.append(f"training history of {stage} ({uri}): {_reason(exc)}")
            parts.append(f"<h3>{escape(stage)}</h3>" + _note(f"The model's manifest could not be read: {_reason(exc)}"))
            continue
        history = training.get("history") or training.get("losses") or []
        caption = (
            f"{stage}: {training.get('global_step', '?')} optimizer steps, final training loss "
            f"{_fmt(training.get('train_loss'))}, {_fmt(training.get('train_samples_per_second'))} samples/s, "
            f"{_fmt(training.get('wall_time_s'))} s. From the Trainer's log history, kept in the model artifact."
        )
        parts.append(f"<h3>{escape(stage)}</h3>" + _figure(plots.loss_curves(history, f"{stage}: loss"), caption))
    return "".join(parts)


def _perplexity(summary: dict[str, Any], reader: _Reader) -> str:
    metrics = summary.get("metrics", {})
    values = {
        label: metrics[label]["perplexity"] for label in ("base", "adapted") if "perplexity" in metrics.get(label, {})
    }
    if not values:
        return ""
    parts = []
    if len(values) < 2:
        parts.append(
            _note(f"Only the {', '.join(values)} model's perplexity is known: the other evaluation is missing.")
        )
    causal = "masked_tokens" not in metrics[next(iter(values))]  # a causal-LM evaluation
    where = "the held-out chunks (next-token prediction)" if causal else "the fixed masked eval set"
    parts.append(_figure(plots.perplexity_bars(values, "Perplexity before and after adaptation"), f"On {where}."))
    key = "tokens" if causal else "masked_tokens"
    rows = [
        [label, metrics[label]["perplexity"], metrics[label].get("eval_loss"), metrics[label].get(key)]
        for label in values
    ]
    parts.append(_table(["model", "perplexity", "eval loss", "predicted tokens" if causal else "masked tokens"], rows))
    return "".join(parts)


def _per_class(evaluation: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    for key, name in (("per_entity", "entity type"), ("per_class", "class"), ("per_tag", "tag")):
        if isinstance(evaluation.get(key), dict):
            return name, evaluation[key]
    return None


def _comparison(summary: dict[str, Any], reader: _Reader) -> dict[str, Any] | None:
    from kfnlp.artifacts.comparison import COMPARISON_FILE
    from kfnlp.storage import open_artifact

    uri = summary.get("artifacts", {}).get("comparison")
    if not uri:
        return None
    try:
        return json.loads((open_artifact(uri, "comparison")[0] / COMPARISON_FILE).read_text(encoding="utf-8"))
    except _READ_ERRORS as exc:
        reader.missing.append(f"comparison ({uri}): {_reason(exc)}")
        return None


def _scores(summary: dict[str, Any], reader: _Reader) -> str:
    evaluations = {label: e for label, e in reader.evaluations().items() if _per_class(e)}
    if not evaluations:
        return ""
    kind = _per_class(next(iter(evaluations.values())))[0]
    rows = {label: {name: row["f1"] for name, row in _per_class(e)[1].items()} for label, e in evaluations.items()}
    comparison = _comparison(summary, reader)
    interval, text = None, ""
    if comparison and "low" in comparison.get("primary", {}):
        p = comparison["primary"]
        interval = (p["low"], p["high"])
        text = (
            f" Adapted minus base {p['name']}: {p['delta']:+.4f}, paired bootstrap interval "
            f"[{p['low']:+.4f}, {p['high']:+.4f}] at {p['confidence']:.0%} confidence ({p['samples']} resamples); "
            f"verdict: {comparison['verdict']}."
        )
    svg = plots.score_bars(rows, "F1", f"F1 per {kind}", interval)
    parts = [_figure(svg, f"F1 per {kind} of each evaluated model on its test split.{text}")]
    overall = []
    for label, e in evaluations.items():
        m = e.get("metrics", {})
        if "strict_f1" in m:
            overall.append([label, "F1", m["f1"], f"precision {m['precision']:.4f}, recall {m['recall']:.4f}"])
        elif "micro_f1" in m:
            overall.append([label, "accuracy", m["accuracy"], f"macro F1 {m['macro_f1']:.4f}"])
        elif "macro_f1" in m:
            overall.append([label, "word accuracy", m.get("accuracy"), f"macro F1 {m['macro_f1']:.4f}"])
    parts.append(_table(["model", "primary metric", "value", "also"], overall, text_columns=(3,)))
    return "".join(parts)


def _confusions(summary: dict[str, Any], reader: _Reader) -> str:
    parts = []
    for label, e in reader.evaluations().items():
        confusion = e.get("confusion")
        if not isinstance(confusion, dict):
            continue
        title = f"{label}: confusion matrix"
        unit = "words" if e.get("task") == "ner" else "examples"
        parts.append(
            _figure(
                plots.confusion_matrix(confusion["labels"], confusion["matrix"], title),
                f"{label}: {unit} by gold label (rows) and predicted label (columns), shaded by the share of the row.",
            )
        )
    return "".join(parts)


def _data(summary: dict[str, Any], reader: _Reader) -> str:
    data = summary.get("metrics", {}).get("data")
    if not data:
        return _note("No dataset counts were recorded.")
    rows = []
    for stage, counts in data.items():
        for split, c in (counts or {}).items():
            text = ", ".join(f"{k} {_fmt(v)}" for k, v in c.items()) if isinstance(c, dict) else _fmt(c)
            rows.append([stage, split, text])
    return _table(["stage", "split", "counts"], rows, text_columns=(2,))


def _spans(tags: list[str]) -> list[tuple[int, int, str]]:
    """(start, end, type) of the entities in BIO tags (an I- without a B- starts one, as conlleval does)."""
    spans, start, kind = [], None, None
    for i, tag in enumerate([*tags, "O"]):
        prefix, _, name = tag.partition("-")
        continues = prefix == "I" and kind == name and start is not None
        if start is not None and not continues:
            spans.append((start, i, kind))
            start, kind = None, None
        if prefix in ("B", "I") and name and not continues:
            start, kind = i, name
    return spans


def _marked(tokens: list[str], spans: list[tuple[int, int, str]], right: set) -> str:
    starts = {s: (s, e, k) for s, e, k in spans}
    out, i = [], 0
    while i < len(tokens):
        if i in starts:
            s, e, k = starts[i]
            cls = "ent" if (s, e, k) in right else "ent wrong"
            out.append(f"<span class='{cls}'>{escape(' '.join(tokens[s:e]))}<small>{escape(k)}</small></span>")
            i = e
        else:
            out.append(escape(tokens[i]))
            i += 1
    return " ".join(out)


def _ner_examples(uri: str) -> str:
    from kfnlp.artifacts.evaluation import PREDICTIONS_FILE, open_evaluation

    path = open_evaluation(uri).path / PREDICTIONS_FILE
    sentences, rows = [], []
    with open(path, encoding="utf-8") as handle:
        for line in [*handle.read().split("\n"), ""]:
            if line.strip():
                rows.append(line.split("\t"))
            elif rows:
                if any(r[1] != "O" or r[2] != "O" for r in rows):
                    sentences.append(rows)
                rows = []
            if len(sentences) >= NER_EXAMPLES:
                break
    items = []
    for rows in sentences:
        tokens = [r[0] for r in rows]
        gold, predicted = set(_spans([r[1] for r in rows])), set(_spans([r[2] for r in rows]))
        items.append(
            f"<tr><td>gold</td><td class=text>{_marked(tokens, sorted(gold), gold)}</td></tr>"
            f"<tr><td>predicted</td><td class=text>{_marked(tokens, sorted(predicted), gold)}</td></tr>"
        )
    if not items:
        return _note("No test sentence with an entity.")
    return (
        "<table><tbody>" + "".join(items) + "</tbody></table>"
        "<p>Red: a predicted entity that is not in the gold annotation (span or type).</p>"
    )


def _examples(summary: dict[str, Any], reader: _Reader) -> str:
    parts = []
    uris = summary.get("artifacts", {}).get("evaluations", {})
    for label, e in reader.evaluations().items():
        if e.get("fill_mask"):
            parts.append(f"<h3>Fill-mask: {escape(label)}</h3>")
            for ex in e["fill_mask"]:
                if "error" in ex:
                    parts.append(f"<p><b>{escape(ex['prompt'])}</b>: {escape(ex['error'])}</p>")
                    continue
                guesses = ", ".join(f"{escape(p['token'])} ({p['score']:.3f})" for p in ex["predictions"])
                parts.append(f"<p><b>{escape(ex['prompt'])}</b> → {guesses}</p>")
        if e.get("samples"):
            parts.append(f"<h3>Generation samples: {escape(label)}</h3>")
            rows = [[s["prompt"], s["greedy"], s["sampled"]] for s in e["samples"]]
            parts.append(_table(["prompt", "greedy", "sampled"], rows, text_columns=(0, 1, 2)))
        if e.get("task") == "ner" and e.get("tag_scheme", "iob2") != "plain":
            parts.append(f"<h3>NER examples: {escape(label)}</h3>")
            try:
                parts.append(_ner_examples(uris[label]))
            except _READ_ERRORS as exc:
                reader.missing.append(f"NER predictions of {label}: {_reason(exc)}")
                parts.append(_note(f"The predictions could not be read: {_reason(exc)}"))
        if e.get("most_confused"):
            parts.append(f"<h3>Most confused examples: {escape(label)}</h3>")
            rows = [[x["id"], x["gold"], x["predicted"], x["score"], x["text"]] for x in e["most_confused"][:5]]
            parts.append(_table(["id", "gold", "predicted", "score", "text"], rows, text_columns=(4,)))
    return "".join(parts)


def _registry(summary: dict[str, Any], reader: _Reader) -> str:
    metrics, artifacts = summary.get("metrics", {}), summary.get("artifacts", {})
    reg, promotion = artifacts.get("registry"), metrics.get("promotion")
    if not reg and not promotion:
        ran = [s for s in summary.get("stages", []) if s.get("name") in ("register", "promote")]
        if ran:
            return _note("Nothing was registered: " + "; ".join(f"{s['name']} {s.get('status')}" for s in ran) + ".")
        return ""
    rows = []
    if reg:
        rows += [["version", reg.get("uri")], ["registry", reg.get("tracking_uri")]]
    if promotion:
        rows += [
            ["promotion", promotion.get("outcome")],
            ["reason", promotion.get("reason")],
            ["champion before", promotion.get("champion_before")],
            ["champion after", promotion.get("champion_after")],
        ]
    return _table(["registry", ""], rows, text_columns=(1,))


def _sweep(summary: dict[str, Any], reader: _Reader) -> str:
    from kfnlp.reports import sweep_headline, sweep_table
    from kfnlp.stages.select_best import sweep_plot

    sweep = summary.get("sweep")
    if not sweep:
        return ""
    headers, rows = sweep_table(sweep)
    return (
        f"<p>{escape(sweep_headline(sweep))} Only the chosen model went on to the test split and the registry.</p>"
        + _table(headers, rows)
        + _figure(sweep_plot(sweep), f"{sweep['metric']} of each trial against each swept key; the star is the choice.")
    )


def _artifacts(summary: dict[str, Any], reader: _Reader) -> str:
    artifacts = summary.get("artifacts", {})
    rows = [[k, v] for k, v in artifacts.items() if isinstance(v, str)]
    rows += [[f"model ({stage})", uri] for stage, uri in artifacts.get("models", {}).items()]
    rows += [[f"evaluation ({label})", uri] for label, uri in artifacts.get("evaluations", {}).items()]
    rows += [[f"dataset ({stage})", uri] for stage, uri in artifacts.get("datasets", {}).items()]
    if summary.get("log"):
        rows.append(["log", summary["log"]])
    return _table(["artifact", "location"], rows, text_columns=(1,)) if rows else _note("No artifact was recorded.")


SECTIONS: list[tuple[str, str, Callable[[dict[str, Any], _Reader], str]]] = [
    ("stages", "Stages", _stages),
    ("training", "Training", _training),
    ("perplexity", "Perplexity", _perplexity),
    ("scores", "Scores", _scores),
    ("confusion", "Confusion matrices", _confusions),
    ("data", "Data", _data),
    ("examples", "Examples", _examples),
    ("registry", "Registry", _registry),
    ("sweep", "Sweep", _sweep),
    ("artifacts", "Artifacts", _artifacts),
]


def run_report_html(summary: dict[str, Any], missing: list[str] | None = None) -> str:
    """The run's report.html from its ``summary.json`` (and the artifacts it names). ``missing``: what
    the caller already knows is missing (e.g. the summary itself, for a run that never finished)."""
    missing = list(missing or [])
    reader = _Reader(summary, missing)
    body = []
    for anchor, title, render in SECTIONS:
        try:
            html = render(summary, reader)
        except _READ_ERRORS as exc:
            missing.append(f"{title}: {_reason(exc)}")
            html = _note(f"This section could not be rendered: {_reason(exc)}")
        if html:
            body.append((anchor, title, html))
    try:
        headline = _headline(summary)
    except _READ_ERRORS as exc:
        headline = _note(f"The outcome could not be summarized: {_reason(exc)}")
        missing.append(f"outcome: {_reason(exc)}")
    pipeline = escape(str(summary.get("pipeline", "unknown pipeline")))
    notice = ""
    if missing:
        items = "".join(f"<li>{escape(m)}</li>" for m in dict.fromkeys(missing))
        notice = f"<section id=missing class=missing><h2>Missing from this report</h2><ul>{items}</ul></section>"
    nav = "<nav><ul>" + "".join(f"<li><a href='#{a}'>{escape(t)}</a></li>" for a, t, _ in body) + "</ul></nav>"
    sections = "".join(f"<section id={a}><h2>{escape(t)}</h2>{html}</section>" for a, t, html in body)
    started = escape(str(summary.get("started", "")))
    return (
        "<!doctype html><html lang=en><head><meta charset='utf-8'>"
        "<meta name=viewport content='width=device-width, initial-scale=1'>"
        f"<title>kfnlp run: {pipeline}</title><style>{STYLE}</style></head><body>"
        f"<header><h1>kfnlp run: {pipeline}</h1><p>Started {started or 'at an unknown time'}.</p>"
        f"{headline}</header>{notice}{nav}<main>{sections}</main></body></html>\n"
    )


# --- kfnlp report: the reports of a finished (or unfinished) run, rendered again ---

SUMMARY_FILE = "summary.json"


def _summary_shell(pipeline: str, run: str, stages: list[dict[str, Any]], storage: str) -> dict[str, Any]:
    """A summary rebuilt from the stage outputs found, for a run that wrote none."""
    from kfnlp.launch.summary import results

    metrics, artifacts = results(stages)
    starts = [s["started"] for s in stages if isinstance(s.get("started"), (int, float))]
    ends = [s["started"] + s.get("wall_time_s", 0) for s in stages if isinstance(s.get("started"), (int, float))]
    return {
        "pipeline": pipeline,
        "run": run,
        "status": "incomplete",
        "started": "",
        "wall_time_s": round(max(ends) - min(starts), 2) if starts else 0.0,
        "storage": storage,
        "stages": stages,
        "metrics": metrics,
        "sweep": metrics.pop("sweep", None),
        "artifacts": artifacts,
        "log": "",
    }


def _local_run(output: Path) -> tuple[dict[str, Any], list[str]]:
    """A local OUTPUT without summary.json (the run was interrupted, or the file lost): its kfp.local
    task directories, read back as ``kfnlp run`` reads them."""
    from kfnlp.launch.resume import read_state
    from kfnlp.launch.summary import collect_stages

    missing = [f"{output / SUMMARY_FILE}: not there (the run did not finish?); rebuilt from the stage outputs found"]
    state = read_state(output)
    runs = sorted(p for p in (output / "artifacts").glob("*") if p.is_dir()) if (output / "artifacts").is_dir() else []
    run_dir = output / "artifacts" / state.run if state else (runs[-1] if runs else None)
    if run_dir is None or not run_dir.is_dir():
        missing.append(f"{output}: no kfp.local run directory (artifacts/RUN) either: no stage output found")
        return _summary_shell(state.pipeline if state else "unknown", "", [], str(output)), missing
    tasks = {p.name: p.name for p in sorted(run_dir.iterdir()) if p.is_dir() and "-iteration-" not in p.name}
    stages = collect_stages(run_dir, tasks)
    summary = _summary_shell(state.pipeline if state else "unknown", run_dir.name, stages, str(run_dir))
    summary["log"] = str(output / "pipeline.log")
    return summary, missing


def _s3_run(prefix: str) -> tuple[dict[str, Any], list[str]]:
    """An ``s3://`` run prefix (``<storage>/<pipeline run>``, where ``--storage`` runs write): its
    summary.json when one was put there, else the artifacts found under ``<task>/<output>``."""
    from kfnlp.storage import read_any_manifest, store_for

    store = store_for(prefix)
    try:
        local = store.fetch_input(f"{prefix}/{SUMMARY_FILE}")
        return json.loads(Path(local).read_text(encoding="utf-8")), []
    except (KfnlpError, OSError, ValueError):
        pass
    stages = []
    for task in store.children(prefix):
        outputs = {}
        for name in store.children(f"{prefix}/{task}"):
            try:
                read_any_manifest(f"{prefix}/{task}/{name}")
            except (KfnlpError, OSError, ValueError):
                continue
            outputs[name] = f"{prefix}/{task}/{name}"
        if outputs:
            stages.append({"task": task, "name": task, "status": "output found", "outputs": outputs})
    missing = [f"{prefix}/{SUMMARY_FILE}: not there; rebuilt from the {len(stages)} stages' outputs found"]
    if not stages:
        missing.append(f"{prefix}: no complete artifact under <task>/<output>")
    run = prefix.rstrip("/").rsplit("/", 1)[-1]
    return _summary_shell("unknown", run, stages, prefix), missing


def load_run(source: str) -> tuple[dict[str, Any], list[str]]:
    """The summary of the run at ``source`` (a local OUTPUT directory or an ``s3://`` run prefix) and
    what is missing from it."""
    from kfnlp.errors import InputError

    if source.startswith("s3://"):
        return _s3_run(source.rstrip("/"))
    output = Path(source)
    if not output.is_dir():
        raise InputError(f"{source}: no such run directory")
    path = output / SUMMARY_FILE
    if not path.is_file():
        return _local_run(output)
    try:
        return json.loads(path.read_text(encoding="utf-8")), []
    except ValueError as exc:
        raise InputError(f"{path}: not valid JSON ({exc})") from None


def render_reports(summary: dict[str, Any], missing: list[str]) -> tuple[str, str]:
    """(report.md, report.html) of a run; the Markdown says what is missing first."""
    from kfnlp.reports import run_report

    try:
        markdown = run_report(summary)
    except _READ_ERRORS as exc:
        markdown = f"# kfnlp run: {summary.get('pipeline')}\n\nThe report could not be rendered: {_reason(exc)}\n"
        missing = [*missing, f"report.md: {_reason(exc)}"]
    if missing:
        notice = "\n".join(f"- {m}" for m in missing)
        markdown = f"**Missing from this report:**\n\n{notice}\n\n" + markdown
    return markdown, run_report_html(summary, missing)
