"""``kfnlp report SOURCE``: render a run's report.md and report.html again (:mod:`kfnlp.launch.report`)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

DESCRIPTION = """\
Render the reports of a run again from what it left: report.md and report.html from SOURCE/summary.json
and the artifacts it names (local or s3://), e.g. after an upgrade of kfnlp, or for a run whose
reports were lost.

SOURCE is a `kfnlp run --local` output directory or an s3:// run prefix (<storage>/<pipeline run>, where
a --storage run wrote its artifacts). Without a summary.json (an interrupted run), the reports are
rebuilt from the stage outputs found and say what is missing (a warning on stderr; exit 0). The reports
go to SOURCE (a local directory) or to --to DIR (required for s3://)."""


def add_parser(sub) -> None:
    report = sub.add_parser(
        "report",
        help="render a run's report.md and report.html again",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    report.add_argument("source", metavar="SOURCE", help="a run's output directory, or an s3:// run prefix")
    report.add_argument("--to", metavar="DIR", help="write the reports here (default: SOURCE; needed for s3://)")


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def run(args: argparse.Namespace) -> int:
    from kfnlp.errors import ConfigError, InputError
    from kfnlp.launch.report import load_run, render_reports

    if args.source.startswith("s3://") and not args.to:
        raise ConfigError(f"{args.source}: reports of an s3:// run are written locally: add --to DIR")
    if not args.source.startswith("s3://") and not Path(args.source).is_dir():
        print(f"kfnlp: error: {args.source}: no such run directory", file=sys.stderr)
        return 2
    dest = Path(args.to or args.source)
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"{dest}: cannot write the reports there ({exc.strerror or exc})") from None
    summary, missing = load_run(args.source)
    markdown, html = render_reports(summary, missing)
    _write_atomic(dest / "report.md", markdown)
    _write_atomic(dest / "report.html", html)
    if missing:
        print(f"kfnlp: warning: {missing[0]}" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""),
              file=sys.stderr)  # fmt: skip
    print(f"report:   {dest / 'report.md'}")
    print(f"html:     {dest / 'report.html'}")
    return 0
