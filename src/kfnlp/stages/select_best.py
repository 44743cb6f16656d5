"""select-best: a sweep's pick among its trials, by the metric each trial's evaluation wrote.

The sweep's trials run in a ``dsl.ParallelFor``; KFP collects their models and evaluations in
iteration order, which is the order of the trials in the selection (``SweepPlan.selection()``, this
stage's config). A trial failed when its model (or else its evaluation) is a ``failed-trial`` record
(what a trial task writes instead of failing the run) or its metric is not a finite number; the
others are ranked by the metric in the selection's direction, a tie going to the lowest trial
index. The chosen trial's model and evaluation are copied out (files and facts, the trials' table in
the model's manifest), so that the stages after it see one model as without a sweep; the table,
a report and a plot of the metric against each swept key go to the sweep artifact.

Each succeeded model's training config is checked against its trial's values: a model that was not
trained with them means the collected lists are not in trial order, and is refused.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from dataclasses import dataclass
from typing import Any, Literal

from kfnlp.artifacts import open_evaluation
from kfnlp.config import FieldError, bounded, option
from kfnlp.errors import ConfigError, InputError
from kfnlp.reports import sweep_headline, sweep_table
from kfnlp.reports import table as markdown_table
from kfnlp.stages.entry import Input, Stage
from kfnlp.storage import check_output, open_artifact, read_any_manifest, write_artifact
from kfnlp.sweep import FAILED_TRIAL_KIND, Trial, value_text

log = logging.getLogger(__name__)

KIND = "sweep"
TABLE_FILE = "sweep.json"
PLOT_FILE = "sweep.svg"
SHOWN_FAILURES = 5  # failed trials named in the one-line error when every trial failed
MANIFEST_KEYS = ("format", "kind", "created", "files")  # what write_artifact writes itself


@dataclass
class SelectBestConfig:
    """The sweep's selection, as the pipeline compiles it in (``SweepPlan.selection()``)."""

    stage: str = option("", "the swept train stage's section (e.g. train_ner), for the table and the reports")
    metric: str = option("", "the metric of the trials' evaluations that ranks them (e.g. f1, perplexity)")
    direction: Literal["maximize", "minimize"] = option("maximize", "whether the higher or the lower metric wins")
    keys: list[str] = option(default_factory=list, help="the swept train keys: the table's and the plot's columns")
    trials: list = option(
        default_factory=list,
        help='the trials in iteration order, each {"index": I, "values": {KEY: VALUE}}; the collected models '
        "and evaluations pair with them by position",
    )

    def __post_init__(self):
        seen: set[int] = set()
        for i, trial in enumerate(self.trials):
            index = trial.get("index") if isinstance(trial, dict) else None
            values = trial.get("values") if isinstance(trial, dict) else None
            if (
                not isinstance(trial, dict)
                or set(trial) != {"index", "values"}
                or not isinstance(index, int)
                or isinstance(index, bool)
                or not isinstance(values, dict)
            ):
                raise FieldError(f"trials[{i}]", 'expected {"index": INTEGER, "values": {KEY: VALUE, ...}}')
            if index in seen:
                raise FieldError(f"trials[{i}]", f"trial index {index} is given twice")
            if set(values) != set(self.keys):
                raise FieldError(
                    f"trials[{i}]", f"its keys {sorted(values)} are not the swept keys {sorted(self.keys)}"
                )
            seen.add(index)


def _refs(value: list[str] | tuple[str, ...] | str, name: str) -> list[str]:
    """Artifact references as a list: a list as it is; a string (``kfnlp stage``) as a JSON list or
    comma-separated."""
    if not isinstance(value, str):
        return [str(v) for v in value]
    text = value.strip()
    if text.startswith("["):
        try:
            refs = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"--{name}: not a JSON list ({exc})") from None
        if not isinstance(refs, list) or not all(isinstance(r, str) for r in refs):
            raise InputError(f"--{name}: expected a JSON list of artifact paths or URIs")
        return refs
    return [part.strip() for part in text.split(",") if part.strip()]


def _same(a: Any, b: Any) -> bool:
    """A trial value and the model's: numbers as floats (1 and 1.0, 3e-4 and 0.0003), else equal."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return float(a) == float(b)
    return a == b


def _check_values(row: dict, used: Any, ref: str, what: str) -> None:
    """Refuse a trial artifact made with other values than the selection's trial at its position."""
    if not isinstance(used, dict):
        return
    for key, value in row["values"].items():
        if key not in used or not _same(value, used[key]):
            found = f"{key}={value_text(used[key])}" if key in used else f"no {key}"
            raise InputError(
                f"trial {row['index']} ({row['label']}): {ref} was made with {found} ({what}); the collected "
                "models and evaluations are not in the order of the selection's trials"
            )


def _failure(manifest: dict) -> str:
    error = " ".join(str(manifest.get("error") or "failed without a message").split())
    return f"{manifest['stage']}: {error}" if manifest.get("stage") else error


def _score(spec: dict, model: str, evaluation: str, config: SelectBestConfig) -> tuple[dict, dict | None]:
    """One trial's row of the table, and its evaluation's result when it succeeded."""
    row = {
        "index": spec["index"],
        "values": spec["values"],
        "label": Trial(spec["index"], spec["values"]).label,
        "status": "failed",
        "metric": None,
        "error": None,
        "selected": False,
    }
    trained = read_any_manifest(model)
    if trained.get("kind") == FAILED_TRIAL_KIND:
        _check_values(row, trained.get("values"), model, "its failure record")
        return {**row, "error": _failure(trained)}, None
    if trained.get("kind") != "model":
        raise InputError(f"{model}: expected a model or a {FAILED_TRIAL_KIND} artifact, found {trained.get('kind')!r}")
    _check_values(row, (trained.get("training") or {}).get("config"), model, "its training config")
    scored = read_any_manifest(evaluation)
    if scored.get("kind") == FAILED_TRIAL_KIND:
        return {**row, "error": _failure(scored)}, None
    if scored.get("kind") != "evaluation":
        raise InputError(
            f"{evaluation}: expected an evaluation or a {FAILED_TRIAL_KIND} artifact, found {scored.get('kind')!r}"
        )
    result = open_evaluation(evaluation).result()
    metrics = result.get("metrics") or {}
    if config.metric not in metrics:
        raise InputError(
            f"trial {row['index']} ({row['label']}): the evaluation {evaluation} has no metric {config.metric!r}; "
            f"it has {', '.join(sorted(metrics)) or 'none'}"
        )
    value = metrics[config.metric]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return {**row, "error": f"{config.metric} is {value_text(value)}, not a finite number"}, None
    return {**row, "status": "succeeded", "metric": float(value)}, result


def _every_trial_failed(rows: list[dict]) -> InputError:
    shown = [f"trial {r['index']} ({r['label']}): {bounded(r['error'], 300)}" for r in rows[:SHOWN_FAILURES]]
    more = len(rows) - len(shown)
    return InputError(
        "every trial of the sweep failed: " + "; ".join(shown) + (f"; and {more} more" if more > 0 else "")
    )


def _scored_on(result: dict) -> str:
    if result.get("split"):
        return f"the {result['split']} split"
    if result.get("eval_set_fingerprint"):
        return f"the fixed eval set {str(result['eval_set_fingerprint'])[:12]}"
    return "the selection set"


def choose(rows: list[dict], direction: str) -> tuple[dict, list[int]]:
    """The best succeeded row (a tie: the lowest trial index) and the indices that tie with it."""
    succeeded = [r for r in rows if r["status"] == "succeeded"]
    if not succeeded:
        raise _every_trial_failed(rows)
    best = (max if direction == "maximize" else min)(r["metric"] for r in succeeded)
    ties = sorted(r["index"] for r in succeeded if r["metric"] == best)
    return next(r for r in succeeded if r["index"] == ties[0]), ties


def _copy(source: str, dest: str, kind: str, **extra: Any) -> None:
    """Artifact ``source`` (files and facts) written anew at ``dest``, with ``extra`` facts."""
    path, manifest = open_artifact(source, kind)
    with write_artifact(dest, kind) as out:
        for entry in manifest.get("files", []):
            target = out.path / entry["path"]
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path / entry["path"], target)
        out.info.update({k: v for k, v in manifest.items() if k not in MANIFEST_KEYS}, **extra)


def _chosen(table: dict) -> dict:
    return next(t for t in table["trials"] if t["selected"])


def sweep_markdown(table: dict) -> str:
    return (
        "\n\n".join(
            [
                f"# Sweep of {table['stage'].replace('_', '-')}",
                sweep_headline(table),
                markdown_table(*sweep_table(table)),
                f"![{table['metric']} against each swept key]({PLOT_FILE})",
            ]
        )
        + "\n"
    )


def sweep_html(table: dict, svg: str) -> str:
    """The report as one HTML file: the table and the plot inline (nothing it loads from elsewhere)."""
    from html import escape

    from kfnlp.reports import HTML_STYLE

    def cell(value: Any) -> str:
        return escape(f"{value:.6g}" if isinstance(value, float) else "" if value is None else str(value))

    headers, rows = sweep_table(table)
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join(
        f"<tr{' class=chosen' if row[-1] == 'chosen' else ''}>" + "".join(f"<td>{cell(c)}</td>" for c in row) + "</tr>"
        for row in rows
    )
    title = escape(f"Sweep of {table['stage'].replace('_', '-')}")
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title>"
        f"<style>{HTML_STYLE}tr.chosen td{{font-weight:bold}}</style></head><body><h1>{title}</h1>"
        f"<p>{escape(sweep_headline(table))}</p><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
        f"<figure>{svg}</figure></body></html>\n"
    )


def _numeric(values: list[Any]) -> bool:
    return bool(values) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def sweep_plot(table: dict) -> str:
    """SVG: the metric of each succeeded trial against each swept key (one panel per key), the chosen
    trial marked; failed trials listed under the panels. Text is drawn as paths (no fonts to load)."""
    import io

    import matplotlib
    from matplotlib.figure import Figure

    keys = table["keys"] or ["trial"]
    trials = table["trials"]
    succeeded = [t for t in trials if t["status"] == "succeeded"]
    failed = [t for t in trials if t["status"] != "succeeded"]
    chosen = _chosen(table)
    notes = [f"failed, not plotted: trial {t['index']} ({t['label']}): {t['error']}" for t in failed]
    notes = [n if len(n) <= 120 else n[:119] + "…" for n in notes[:SHOWN_FAILURES]]
    if len(failed) > SHOWN_FAILURES:
        notes.append(f"and {len(failed) - SHOWN_FAILURES} more failed trials (see the table)")
    width, height = 0.8 + 3.6 * len(keys), 3.4 + 0.18 * len(notes)
    better = "higher" if table["direction"] == "maximize" else "lower"
    with matplotlib.rc_context({"svg.hashsalt": "kfnlp-sweep", "svg.fonttype": "path"}):
        fig = Figure(figsize=(width, height))
        fig.subplots_adjust(
            left=0.75 / width, right=1 - 0.45 / width, top=1 - 0.5 / height,
            bottom=(0.6 + 0.18 * len(notes)) / height, wspace=0.3,
        )  # fmt: skip
        axes = fig.subplots(1, len(keys), sharey=True, squeeze=False)[0]
        for ax, key in zip(axes, keys, strict=True):

            def value(trial: dict, key: str = key) -> Any:
                return trial["index"] if key == "trial" and not table["keys"] else trial["values"].get(key)

            values = [value(t) for t in trials]
            if _numeric(values):
                position = {id(t): float(value(t)) for t in trials}
                low, high = min(position.values()), max(position.values())
                if low > 0 and high / low >= 10:
                    ax.set_xscale("log")
                ticks = sorted({position[id(t)]: value(t) for t in trials}.items())
                if len(ticks) <= 8:  # the values tried, as given, rather than a scale's round numbers
                    ax.set_xticks([x for x, _ in ticks], [value_text(v) for _, v in ticks], parse_math=False)
                    ax.minorticks_off()
            else:  # categories, in the order the trials first use them
                labels = list(dict.fromkeys(value_text(v) for v in values))
                position = {id(t): float(labels.index(value_text(value(t)))) for t in trials}
                ax.set_xticks(range(len(labels)), labels, parse_math=False)
                ax.set_xlim(-0.5, len(labels) - 0.5)
            ax.plot(
                [position[id(t)] for t in succeeded], [t["metric"] for t in succeeded], "o",
                color="#1f77b4", gid=f"trials-{key}",
            )  # fmt: skip
            ax.plot(
                [position[id(chosen)]], [chosen["metric"]], "*", markersize=15, color="#d62728", gid=f"chosen-{key}"
            )
            ax.annotate(
                f"trial {chosen['index']}", (position[id(chosen)], chosen["metric"]), xytext=(6, 6),
                textcoords="offset points", color="#d62728", fontsize=8, parse_math=False,
            )  # fmt: skip
            ax.margins(x=0.15, y=0.2)
            ax.set_xlabel(key, parse_math=False)
            ax.grid(alpha=0.3)
        axes[0].set_ylabel(table["metric"], parse_math=False)
        fig.suptitle(f"{table['metric']} ({better} is better) against each swept key", parse_math=False)
        if notes:
            fig.text(0.01, 0.02, "\n".join(notes), fontsize=7, va="bottom", gid="failed-trials", parse_math=False)
        buffer = io.StringIO()
        fig.savefig(buffer, format="svg", metadata={"Creator": None, "Date": None, "Format": None, "Type": None})
    svg = buffer.getvalue()
    return svg[svg.index("<svg") :]  # no XML prolog or DOCTYPE (it names the DTD's URL): inlined as it is


def sweep_report(table: dict) -> tuple[str, str, str]:
    """The sweep's report.md, report.html and plot."""
    svg = sweep_plot(table)
    return sweep_markdown(table), sweep_html(table, svg), svg


def summary_metrics(table: dict) -> dict[str, float]:
    """The numbers for the KFP UI: the chosen trial's metric, the trials and the failed ones."""
    failed = sum(t["status"] != "succeeded" for t in table["trials"])
    return {table["metric"]: _chosen(table)["metric"], "trials": len(table["trials"]), "failed_trials": failed}


def select_best(
    models: list[str] | str,
    evaluations: list[str] | str,
    output: str,
    evaluation_output: str,
    sweep_output: str,
    config: SelectBestConfig,
) -> dict:
    """Rank the trials (``models[i]`` and ``evaluations[i]`` are ``config.trials[i]``'s), write the chosen
    model to ``output``, its evaluation to ``evaluation_output`` and the table, report and plot to
    ``sweep_output``; return the table."""
    models, evaluations = _refs(models, "models"), _refs(evaluations, "evaluations")
    if not config.trials:
        raise ConfigError("select_best.trials: the selection has no trials", "select_best.trials")
    if not config.metric:
        raise ConfigError("select_best.metric: name the metric that ranks the trials", "select_best.metric")
    if len(models) != len(config.trials) or len(evaluations) != len(config.trials):
        raise InputError(
            f"select-best: the selection has {len(config.trials)} trials but there are {len(models)} models and "
            f"{len(evaluations)} evaluations; give one of each per trial, in trial order"
        )
    reads = {
        f"{name}[{i}]": ref
        for name, refs in (("models", models), ("evaluations", evaluations))
        for i, ref in enumerate(refs)
    }
    for dest in (output, evaluation_output, sweep_output):
        check_output(dest, reads)
    if len({output, evaluation_output, sweep_output}) < 3:
        raise InputError("select-best: the model, evaluation and sweep outputs must be three different places")
    scored = [_score(spec, m, e, config) for spec, m, e in zip(config.trials, models, evaluations, strict=True)]
    rows = [row for row, _ in scored]
    chosen, ties = choose(rows, config.direction)
    chosen["selected"] = True
    position = rows.index(chosen)
    table = {
        "stage": config.stage,
        "metric": config.metric,
        "direction": config.direction,
        "scored_on": _scored_on(scored[position][1]),
        "selected": chosen["index"],
        "keys": list(config.keys),
        "trials": rows,
        "ties": ties,
    }
    failed = [r for r in rows if r["status"] != "succeeded"]
    log.info(
        "select-best: trial %d (%s), %s %s; %d of %d trials failed",
        chosen["index"], chosen["label"], config.metric, chosen["metric"], len(failed), len(rows),
    )  # fmt: skip
    markdown, html, svg = sweep_report(table)
    with write_artifact(sweep_output, KIND) as out:
        (out.path / TABLE_FILE).write_text(json.dumps(table, indent=2), encoding="utf-8")
        (out.path / PLOT_FILE).write_text(svg, encoding="utf-8")
        (out.path / "report.md").write_text(markdown, encoding="utf-8")
        (out.path / "report.html").write_text(html, encoding="utf-8")
        out.info.update(
            stage=config.stage,
            metric=config.metric,
            direction=config.direction,
            selected=chosen["index"],
            trials=len(rows),
            failed_trials=len(failed),
        )
    _copy(evaluations[position], evaluation_output, "evaluation", sweep_trial=chosen["index"])
    _copy(models[position], output, "model", sweep=table)
    return table


STAGE = Stage(
    name="select-best",
    config=SelectBestConfig,
    function=select_best,
    help="pick a sweep's best trial by its metric: the chosen model and evaluation, the trials' table and plot",
    inputs=(
        Input("models", "the trials' model artifacts in trial order (a JSON list, or comma-separated)", required=True),
        Input("evaluations", "the trials' evaluations, in the same order", required=True),
        Input("output", "where to write the chosen model", required=True),
        Input("evaluation_output", "where to write the chosen model's evaluation", required=True),
        Input("sweep_output", "where to write the trials' table, report and plot", required=True),
    ),
    example="direction=minimize",
)
