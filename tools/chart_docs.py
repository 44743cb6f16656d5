#!/usr/bin/env python3
"""Generate the values table in charts/kfnlp/README.md from the comments in values.yaml.

A key is documented by a ``# -- text`` comment on the line(s) right above it (helm-docs
style; further ``#`` lines continue the text). Its row shows the type and default of the
value under that key, so documenting a mapping documents it whole. Every leaf value must
be covered by a documented key or one of its parents. Only the part of the README between
:data:`BEGIN` and :data:`END` is generated.

    python tools/chart_docs.py            # rewrite the table
    python tools/chart_docs.py --check    # exit 1 if it is out of date or a value is undocumented
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

CHART = Path(__file__).resolve().parent.parent / "charts" / "kfnlp"
BEGIN = "<!-- BEGIN GENERATED: edit the comments in values.yaml, then run `python tools/chart_docs.py` -->"
END = "<!-- END GENERATED -->"
KEY_LINE = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z0-9_.-]+):(?:\s|$)")
DOC_START = re.compile(r"^ *# -- ?(?P<text>.*)$")
DOC_MORE = re.compile(r"^ *# ?(?P<text>.*)$")


def documented_keys(text: str) -> dict[str, str]:
    """Dotted key -> description, in file order, for keys with a ``# --`` comment."""
    out: dict[str, str] = {}
    stack: list[tuple[int, str]] = []  # (indent, key) of the mappings we are in
    pending: list[str] | None = None
    for line in text.splitlines():
        if start := DOC_START.match(line):
            pending = [start["text"].strip()]
            continue
        if pending is not None and (more := DOC_MORE.match(line)):
            pending.append(more["text"].strip())
            continue
        match = KEY_LINE.match(line)
        if not match:
            pending = None if line.strip() else pending
            continue
        indent = len(match["indent"])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, match["key"]))
        if pending is not None:
            out[".".join(key for _, key in stack)] = " ".join(pending)
            pending = None
    return out


def lookup(values: dict[str, Any], dotted: str) -> Any:
    node: Any = values
    for part in dotted.split("."):
        node = node[part]
    return node


def undocumented(values: dict[str, Any], docs: dict[str, str], prefix: str = "") -> list[str]:
    """Leaf keys of ``values`` covered neither by a documented key nor by a parent."""
    out = []
    for key, value in values.items():
        dotted = prefix + key
        if dotted in docs:
            continue
        if isinstance(value, dict) and value:
            out += undocumented(value, docs, dotted + ".")
        else:
            out.append(dotted)
    return out


def type_name(value: Any) -> str:
    for kind, name in ((bool, "bool"), (int, "int"), (float, "float"), (str, "string"), (list, "list")):
        if isinstance(value, kind):
            return name
    return "object"


def cell(text: str) -> str:
    return text.replace("|", "\\|")


def render(chart: Path = CHART) -> str:
    text = (chart / "values.yaml").read_text(encoding="utf-8")
    values = yaml.safe_load(text)
    docs = documented_keys(text)
    missing = undocumented(values, docs)
    if missing:
        raise ValueError(f"values.yaml: no '# --' comment for {', '.join(missing)} (nor for a parent key)")
    rows = ["| key | type | default | description |", "| --- | --- | --- | --- |"]
    for key, description in docs.items():
        default = lookup(values, key)
        shown = f"`{json.dumps(default)}`" if default not in ("", None) else '`""`'
        rows.append(f"| `{key}` | {type_name(default)} | {cell(shown)} | {cell(description)} |")
    return "\n".join(rows) + "\n"


def update(readme: Path, fresh: str, check: bool) -> bool:
    """Rewrite the generated part of ``readme``; True if it was already current."""
    text = readme.read_text(encoding="utf-8")
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"{readme}: no generated-table markers")
    current = text[start + len(BEGIN) : end].strip("\n") + "\n"
    if current == fresh:
        return True
    if not check:
        readme.write_text(f"{text[: start + len(BEGIN)]}\n\n{fresh}\n{text[end:]}", encoding="utf-8")
    return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Generate the values table of the kfnlp chart's README.")
    parser.add_argument("--chart", type=Path, default=CHART, help="the chart directory")
    parser.add_argument("--check", action="store_true", help="only check; exit 1 if the table is out of date")
    args = parser.parse_args(argv)
    readme = args.chart / "README.md"
    try:
        current = update(readme, render(args.chart), args.check)
    except ValueError as exc:
        print(f"chart_docs: error: {exc}", file=sys.stderr)
        return 1
    if not current:
        print(f"{readme}: {'out of date; run python tools/chart_docs.py' if args.check else 'regenerated'}")
    return 1 if args.check and not current else 0


if __name__ == "__main__":
    sys.exit(main())
