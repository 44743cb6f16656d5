"""Generate the config reference in docs/configuration.md (and components/*/README.md) from the
config dataclasses.

The reference lists every key of every pipeline config (name, type, the code
default, the pipeline's embedded default from its defaults.yaml, and help). Help
is the ``help`` in the field's metadata (declared with :func:`kfnlp.config.option`);
a field without it is an error.

The same tables, with the code defaults only, go into each stage's component README
(``components/SECTION/README.md``, one per :mod:`kfnlp.stages` entry). Only the part
between :data:`BEGIN` and :data:`END` in a file is generated; the rest is hand-written.
Regenerate with::

    python -m kfnlp.docs            # rewrite every generated part
    python -m kfnlp.docs --check    # exit 1 if one is out of date
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import inspect
import json
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

BEGIN = "<!-- BEGIN GENERATED: edit the config dataclasses or src/kfnlp/docs.py, then run `python -m kfnlp.docs` -->"
END = "<!-- END GENERATED -->"
TOP = "(top level)"


def class_node(cls: type, source: str | None = None) -> ast.ClassDef:
    source = source if source is not None else Path(inspect.getsourcefile(cls)).read_text(encoding="utf-8")
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ClassDef) and node.name == cls.__name__:
            return node
    raise LookupError(f"class {cls.__name__} not found in {inspect.getsourcefile(cls)}")


def field_help(cls: type) -> dict[str, str]:
    """Help for every non-section field of ``cls``; raises if one has none."""
    hints = get_type_hints(cls)
    out = {
        f.name: f.metadata.get("help", "")
        for f in dataclasses.fields(cls)
        if not dataclasses.is_dataclass(hints[f.name])
    }
    missing = [f"{cls.__name__}.{name}" for name, text in out.items() if not text]
    if missing:
        raise ValueError(f"no help for {', '.join(missing)}: declare the field with kfnlp.config.option(default, help)")
    return out


def type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return " or ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        names = [type_name(a) for a in args if a is not type(None)]
        return " or ".join(names) + (" or null" if type(None) in args else "")
    if origin is list:
        return f"list of {type_name(get_args(tp)[0])}"
    if origin is dict:
        return f"mapping of {type_name(get_args(tp)[0])} to {type_name(get_args(tp)[1])}"
    return getattr(tp, "__name__", str(tp))


def value_text(value: Any) -> str:
    if value is None:
        return "`null`"
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    if isinstance(value, str):
        return f"`{value}`" if value else '`""`'
    if isinstance(value, (list, dict)):
        return f"`{json.dumps(value)}`"
    return f"`{value!r}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _table(cls: type, code: Any, embedded: Any, where: str) -> list[str]:
    hints = get_type_hints(cls)
    helps = field_help(cls)
    rows = [
        f"| key | type | code default | {where} default | help |",
        "| --- | --- | --- | --- | --- |",
    ]
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            continue
        rows.append(
            "| "
            + " | ".join(
                _cell(cell)
                for cell in (
                    f"`{f.name}`",
                    type_name(hints[f.name]),
                    value_text(getattr(code, f.name)),
                    value_text(getattr(embedded, f.name)),
                    helps[f.name],
                )
            )
            + " |"
        )
    return rows


def render_reference() -> str:
    """The generated part of docs/configuration.md (without the markers)."""
    from kfnlp import catalog
    from kfnlp.catalog import load_config

    lines: list[str] = []
    for entry in catalog.PIPELINES.values():
        cls = entry.config_type
        code, embedded = cls(), load_config(entry)
        defaults = f"pipelines/{entry.defaults_file.parent.name}/{entry.defaults_file.name}"
        lines += [
            f"## Reference: {entry.name}",
            "",
            f"Config type `{cls.__name__}`. *Code default* is the dataclass default (what `kfnlp stage` "
            f"and a compiled pipeline's `{{}}` stage config use); *{entry.name} default* is the value after "
            f"the embedded `{defaults}` (what `kfnlp run {entry.name}` starts from).",
            "",
            f"### {TOP}",
            "",
            *_table(cls, code, embedded, entry.name),
            "",
        ]
        hints = get_type_hints(cls)
        for f in dataclasses.fields(cls):
            section = hints[f.name]
            if not dataclasses.is_dataclass(section):
                continue
            doc = ast.get_docstring(class_node(section))
            lines += [
                f"### {f.name}",
                "",
                f"`{section.__module__}.{section.__name__}`" + (f": {doc}" if doc else ""),
                "",
            ]
            # the section class's own defaults, not the pipeline dataclass's field default
            # (which may differ): `{}` and `kfnlp stage` build the class itself
            lines += [*_table(section, section(), getattr(embedded, f.name), entry.name), ""]
    return "\n".join(lines).rstrip() + "\n"


def render_pipeline_parameters() -> str:
    """The generated part of docs/pipelines.md: each pipeline's parameters as the KFP UI's run form shows them."""
    from kfnlp import catalog
    from kfnlp.catalog import load_config, parameter_help, pipeline_arguments

    lines: list[str] = []
    for entry in catalog.PIPELINES.values():
        arguments = pipeline_arguments(load_config(entry))
        knobs = [catalog.knob_parameter(section, key) for section, key in entry.knobs]
        lines += [
            f"### {entry.name}",
            "",
            "| parameter | type | default | description |",
            "| --- | --- | --- | --- |",
        ]
        for name in ["model", *knobs]:
            value = arguments[name]
            lines.append(
                f"| `{name}` | {type(value).__name__} | {_cell(value_text(value))} | {_cell(parameter_help(entry, name))} |"
            )
        sections = [name for name in arguments if name.endswith("_config")]
        lines += [
            f"| {', '.join(f'`{name}`' for name in sections)} | str (JSON) | the whole section | "
            f"{_cell(parameter_help(entry, sections[0]).replace(sections[0][: -len('_config')] + ' stage', 'stage'))} |",
            "",
        ]
    return "\n".join(lines).rstrip() + "\n"


def render_stage_config(cls: type) -> str:
    """The config table of one stage's config class, for its component README."""
    hints, helps, code = get_type_hints(cls), field_help(cls), cls()
    rows = ["| key | type | default | help |", "| --- | --- | --- | --- |"]
    for f in dataclasses.fields(cls):
        cells = (f"`{f.name}`", type_name(hints[f.name]), value_text(getattr(code, f.name)), helps[f.name])
        rows.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(rows) + "\n"


def cluster_reference_rows() -> list[tuple[str, str, Any, str]]:
    """(dotted key, type, default, help) for every leaf of the ``cluster:`` section (docs/cluster.md)."""
    from kfnlp.launch.cluster.settings import SECTION, ClusterConfig

    out = []

    def walk(cls: type, value: Any, prefix: str) -> None:
        hints, helps = get_type_hints(cls), field_help(cls)
        for f in dataclasses.fields(cls):
            if dataclasses.is_dataclass(hints[f.name]):
                walk(hints[f.name], getattr(value, f.name), f"{prefix}{f.name}.")
            else:
                out.append((prefix + f.name, type_name(hints[f.name]), getattr(value, f.name), helps[f.name]))

    walk(ClusterConfig, ClusterConfig(), f"{SECTION}.")
    return out


def render_cluster_reference() -> str:
    """The generated part of docs/cluster.md (without the markers)."""
    rows = ["| key | type | default | meaning |", "| --- | --- | --- | --- |"]
    for key, type_text, default, help_text in cluster_reference_rows():
        cells = (f"`{key}`", type_text, value_text(default), help_text)
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(rows) + "\n"


def split_document(text: str) -> tuple[str, str, str]:
    """(up to and with BEGIN, generated part, from END on) of a document with the markers."""
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise ValueError("the document has no generated-reference markers")
    body_start = start + len(BEGIN)
    return text[:body_start], text[body_start:end].strip("\n") + "\n", text[end:]


def update(path: Path, render: Callable[[], str], check: bool = False) -> bool:
    """Rewrite the generated part of ``path``; return True if it was already current."""
    head, current, tail = split_document(path.read_text(encoding="utf-8"))
    fresh = render()
    if current == fresh:
        return True
    if not check:
        path.write_text(f"{head}\n\n{fresh}\n{tail}", encoding="utf-8")
    return False


def targets(root: Path) -> dict[Path, Callable[[], str]]:
    """Every generated document under the repository ``root`` and what renders it."""
    from kfnlp import stages

    out: dict[Path, Callable[[], str]] = {
        root / "docs" / "configuration.md": render_reference,
        root / "docs" / "cluster.md": render_cluster_reference,
        root / "docs" / "pipelines.md": render_pipeline_parameters,
    }
    for stage in stages.by_name().values():
        readme = root / "components" / stage.section / "README.md"
        out[readme] = functools.partial(render_stage_config, stage.config)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m kfnlp.docs",
        description="Regenerate the config reference in docs/configuration.md and components/*/README.md.",
    )
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[2], help="the repository")
    parser.add_argument("--check", action="store_true", help="only check; exit 1 if a file is out of date")
    args = parser.parse_args(argv)
    stale = [path for path, render in targets(args.root).items() if not update(path, render, check=args.check)]
    for path in stale:
        print(
            f"{path}: {'out of date' if args.check else 'regenerated'}", file=sys.stderr if args.check else sys.stdout
        )
    if args.check and stale:
        print("run python -m kfnlp.docs to regenerate", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
