"""Plots for the reports people look at (the run's report.html, the evaluate and compare stages' HTML).

Each function returns one self-contained inline SVG string: drawn with matplotlib's object API (a
``Figure`` of its own, no pyplot state shared between threads or calls), text as paths (no font to
load), a fixed hash salt and no date (the same data gives the same bytes), no XML prolog or DOCTYPE
(its DTD is a URL) and no external reference. The root element carries ``role="img"``, an
``aria-label`` and a ``<title>``; every id inside is prefixed with a digest of the plot, so several
plots inlined in one page never share an id.
"""

from __future__ import annotations

import hashlib
import io
import re
from collections.abc import Iterator
from contextlib import contextmanager
from html import escape
from typing import Any

STATUS_COLOURS = {
    "succeeded": "#2ca02c",
    "failed": "#d62728",
    "trial failed": "#ff7f0e",
    "not run": "#9e9e9e",
}
MODEL_COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2"]
FONT_SIZE = 10
_SVG_METADATA = {"Creator": None, "Date": None, "Format": None, "Type": None}


@contextmanager
def _figure(width: float, height: float) -> Iterator[Any]:
    import matplotlib
    from matplotlib.figure import Figure

    style = {
        "svg.hashsalt": "kfnlp-plots",
        "svg.fonttype": "path",
        "font.size": FONT_SIZE,
        "axes.titlesize": FONT_SIZE + 1,
        "axes.labelsize": FONT_SIZE,
        "axes.spines.top": False,
        "axes.spines.right": False,
    }
    with matplotlib.rc_context(style):
        yield Figure(figsize=(width, height), layout="constrained")


def _svg(fig, title: str) -> str:
    """The figure as inline SVG: labelled for screen readers, ids made unique to this plot."""
    import matplotlib

    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": "kfnlp-plots", "svg.fonttype": "path"}):
        fig.savefig(buffer, format="svg", metadata=_SVG_METADATA)
    svg = buffer.getvalue()
    svg = svg[svg.index("<svg") :]
    prefix = "p" + hashlib.sha256(svg.encode("utf-8")).hexdigest()[:8] + "-"
    svg = re.sub(r'\bid="([^"]+)"', lambda m: f'id="{prefix}{m.group(1)}"', svg)
    svg = re.sub(r'(xlink:href|href)="#([^"]+)"', lambda m: f'{m.group(1)}="#{prefix}{m.group(2)}"', svg)
    svg = re.sub(r"url\(#([^)]+)\)", lambda m: f"url(#{prefix}{m.group(1)})", svg)
    label = escape(title, quote=True)
    head_end = svg.index(">")
    return (
        svg[:4]
        + f' role="img" aria-label="{label}" class="plot"'
        + svg[4:head_end]
        + f"><title>{label}</title>"
        + svg[head_end + 1 :]
    )


def _empty(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="#555", parse_math=False)
    ax.set_xticks([])
    ax.set_yticks([])


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def loss_curves(history: list[dict], title: str) -> str:
    """Training loss and evaluation loss against the optimizer step (the Trainer's log history)."""
    train = [(r["step"], _number(r.get("loss"))) for r in history if _number(r.get("loss")) is not None]
    evals = [(r["step"], _number(r.get("eval_loss"))) for r in history if _number(r.get("eval_loss")) is not None]
    with _figure(6.4, 3.4) as fig:
        ax = fig.add_subplot()
        if not train and not evals:
            _empty(ax, "no loss was logged (too few steps for a log line?)")
        if train:
            ax.plot(*zip(*train, strict=True), "-", marker="." if len(train) <= 30 else None, color=MODEL_COLOURS[0],
                    label="training loss", gid="train-loss")  # fmt: skip
        if evals:
            ax.plot(*zip(*evals, strict=True), "o--", color=MODEL_COLOURS[1], label="evaluation loss", gid="eval-loss")
        if train or evals:
            ax.set_xlabel("optimizer step")
            ax.set_ylabel("loss (cross-entropy)")
            ax.grid(alpha=0.3)
            ax.legend(frameon=False)
        ax.set_title(title, parse_math=False)
        return _svg(fig, title)


def timeline(stages: list[dict]) -> str:
    """The run's stages as horizontal bars from their start to their end, coloured by status; a stage
    with no timing (it failed before reporting one, or never ran) is named with its status at zero."""
    rows = list(stages)
    starts = [s["started"] for s in rows if _number(s.get("started")) is not None]
    origin = min(starts) if starts else 0.0
    title = "Stages: start and wall time"
    with _figure(7.2, 1.0 + 0.32 * max(len(rows), 1)) as fig:
        ax = fig.add_subplot()
        if not rows:
            _empty(ax, "no stages recorded")
        end = max(
            [s["started"] - origin + (_number(s.get("wall_time_s")) or 0.0) for s in rows if s.get("started")] or [1]
        )
        seen: dict[str, Any] = {}
        for y, stage in enumerate(rows):
            status = stage.get("status", "not run")
            colour = STATUS_COLOURS.get(status, "#9e9e9e")
            wall = _number(stage.get("wall_time_s"))
            if _number(stage.get("started")) is not None and wall is not None:
                left = stage["started"] - origin
                bar = ax.barh(y, max(wall, end * 0.003), left=left, color=colour, height=0.6,
                              hatch="//" if stage.get("reused") else None, gid=f"stage-{y}")  # fmt: skip
                note = f"{wall:,.1f} s" + (" (reused)" if stage.get("reused") else "")
                ax.text(left + wall + end * 0.01, y, note, va="center", fontsize=FONT_SIZE - 1, parse_math=False)
            else:
                bar = ax.barh(y, 0, left=0, color=colour, height=0.6)
                ax.text(end * 0.01, y, status, va="center", fontsize=FONT_SIZE - 1, color=colour, parse_math=False)
            seen.setdefault(status, bar)
        ax.set_yticks(range(len(rows)), [s.get("name", s.get("task", "?")) for s in rows], parse_math=False)
        ax.invert_yaxis()
        ax.set_xlim(0, end * 1.3)
        ax.set_xlabel("seconds since the first stage started")
        ax.grid(axis="x", alpha=0.3)
        if seen:
            ax.legend(seen.values(), seen.keys(), frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0),
                      fontsize=FONT_SIZE - 1)  # fmt: skip
        ax.set_title(title, parse_math=False)
        return _svg(fig, title)


def perplexity_bars(values: dict[str, float], title: str) -> str:
    """One bar per model (e.g. base, adapted) with its perplexity written on it; a log scale when the
    values differ by more than 20 times (a drop from thousands to tens)."""
    items = [(label, v) for label, v in values.items() if _number(v) is not None and v > 0]
    with _figure(5.2, 3.2) as fig:
        ax = fig.add_subplot()
        if not items:
            _empty(ax, "no perplexity recorded")
        else:
            labels, numbers = zip(*items, strict=True)
            log = max(numbers) / min(numbers) > 20
            bars = ax.bar(labels, numbers, color=MODEL_COLOURS[: len(numbers)], width=0.55)
            for k, bar in enumerate(bars):
                bar.set_gid(f"perplexity-{k}")  # a gid given to bar() would repeat on every bar
            ax.bar_label(bars, labels=[f"{v:,.1f}" for v in numbers], padding=3)
            if log:
                ax.set_yscale("log")
            ax.set_ylabel("perplexity (log scale, lower is better)" if log else "perplexity (lower is better)")
            ax.margins(y=0.15)
            ax.grid(axis="y", alpha=0.3)
        ax.set_title(title, parse_math=False)
        return _svg(fig, title)


def score_bars(
    rows: dict[str, dict[str, float]],
    metric: str,
    title: str,
    interval: tuple[float, float] | None = None,
) -> str:
    """Grouped bars: for each entity type or class, one bar per model (``rows``: model -> name -> score).
    ``interval``: the bootstrap interval of the primary metric's difference, written under the plot."""
    models = list(rows)
    names = list(dict.fromkeys(name for scores in rows.values() for name in scores))
    width = min(11.0, 3.0 + 0.55 * len(names) * max(len(models), 1))
    with _figure(width, 3.6) as fig:
        ax = fig.add_subplot()
        if not names:
            _empty(ax, f"no {metric} recorded")
        else:
            step = 0.8 / len(models)
            for i, model in enumerate(models):
                xs = [j - 0.4 + step * (i + 0.5) for j in range(len(names))]
                values = [_number(rows[model].get(name)) for name in names]
                bars = ax.bar(xs, [v or 0.0 for v in values], width=step * 0.95, label=model,
                              color=MODEL_COLOURS[i % len(MODEL_COLOURS)])  # fmt: skip
                for k, bar in enumerate(bars):
                    bar.set_gid(f"scores-{i}-{k}")
                if len(names) * len(models) <= 24:
                    ax.bar_label(bars, labels=["" if v is None else f"{v:.2f}" for v in values],
                                 padding=2, fontsize=FONT_SIZE - 2)  # fmt: skip
            ax.set_xticks(range(len(names)), names, parse_math=False, rotation=30 if len(names) > 6 else 0,
                          ha="right" if len(names) > 6 else "center")  # fmt: skip
            top = max([_number(v) or 0.0 for scores in rows.values() for v in scores.values()] or [1.0])
            ax.set_ylim(0, max(1.0, top) * 1.12)
            ax.set_ylabel(metric, parse_math=False)
            ax.grid(axis="y", alpha=0.3)
            ax.legend(frameon=False, ncols=min(len(models), 4), loc="upper right")
        if interval is not None:
            low, high = interval
            fig.text(0.01, 0.005, f"Difference in the primary metric, bootstrap interval: [{low:+.4f}, {high:+.4f}]",
                     fontsize=FONT_SIZE - 1, gid="interval", parse_math=False)  # fmt: skip
            fig.get_layout_engine().set(rect=(0, 0.06, 1, 0.94))
        ax.set_title(title, parse_math=False)
        return _svg(fig, title)


def confusion_matrix(labels: list[str], matrix: list[list[int]], title: str) -> str:
    """Counts with gold labels down and predicted labels across, each cell written with its count and
    shaded by its share of the gold row (a rare class's errors stay visible beside a large ``O`` cell)."""
    n = len(labels)
    side = min(9.0, 2.6 + 0.45 * n)
    with _figure(side + 1.0, side) as fig:
        ax = fig.add_subplot()
        if not n:
            _empty(ax, "no labels")
        else:
            # vector cells (pcolormesh), not imshow's embedded bitmap: crisp on screen and in print
            shares = [[count / (sum(row) or 1) for count in row] for row in matrix]
            image = ax.pcolormesh(shares, cmap="Blues", vmin=0, vmax=1, edgecolors="white", linewidth=0.5,
                                  gid="matrix")  # fmt: skip
            ax.set_aspect("equal")
            ax.invert_yaxis()
            size = FONT_SIZE - 1 if n <= 10 else max(5, FONT_SIZE - 1 - (n - 10) // 3)
            for i, row in enumerate(matrix):
                for j, count in enumerate(row):
                    ax.text(j + 0.5, i + 0.5, f"{count:,}", ha="center", va="center", fontsize=size,
                            color="white" if shares[i][j] > 0.5 else "black", parse_math=False)  # fmt: skip
            ax.set_xticks([k + 0.5 for k in range(n)], labels, rotation=45 if n > 4 else 0, ha="right" if n > 4 else "center",
                          parse_math=False)  # fmt: skip
            ax.set_yticks([k + 0.5 for k in range(n)], labels, parse_math=False)
            ax.set_xlabel("predicted")
            ax.set_ylabel("gold")
            ax.spines[:].set_visible(False)
            fig.colorbar(image, ax=ax, shrink=0.8, label="share of the gold row")
        ax.set_title(title, parse_math=False)
        return _svg(fig, title)
