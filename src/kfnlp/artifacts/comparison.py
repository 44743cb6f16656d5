"""Comparison artifacts (kind ``comparison``), written by compare: ``comparison.json``,
``report.md`` and ``report.html``."""

from __future__ import annotations

import json
from typing import Any

from kfnlp.artifacts.evaluation import write_reports
from kfnlp.storage import write_artifact

KIND = "comparison"
COMPARISON_FILE = "comparison.json"


def write_comparison(output: str, result: dict[str, Any], markdown: str, html: str, /, **facts: Any) -> None:
    with write_artifact(output, kind=KIND) as out:
        (out.path / COMPARISON_FILE).write_text(json.dumps(result, indent=2), encoding="utf-8")
        write_reports(out.path, markdown, html)
        out.info.update(facts)
