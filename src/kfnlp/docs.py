"""Generate the config reference in docs/configuration.md (and components/*/README.md) from the
config dataclasses.

The reference lists every key of every pipeline config (name, type, the code
default, the pipeline's embedded default from its defaults.yaml, and help). Help
comes from the trailing ``# comment`` on the field's line in the dataclass source,
read with :mod:`tokenize`; fields without such a comment take their help from
:data:`EXTRA_HELP` below, so this module is the one place that documents them. A
field with neither is an error, and so is an :data:`EXTRA_HELP` entry for a field
that has gained a comment (one source of help per field).

The same tables, with the code defaults only, go into each components/*/README.md
(the stage is found through its metadata.yaml). Only the part between :data:`BEGIN`
and :data:`END` in a file is generated; the rest is hand-written. Regenerate with::

    python -m kfnlp.docs            # rewrite every generated part
    python -m kfnlp.docs --check    # exit 1 if one is out of date
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import importlib
import inspect
import io
import json
import sys
import tokenize
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

BEGIN = "<!-- BEGIN GENERATED: edit the config dataclasses or src/kfnlp/docs.py, then run `python -m kfnlp.docs` -->"
END = "<!-- END GENERATED -->"
TOP = "(top level)"

# Help for fields whose dataclass source line carries no trailing comment, keyed by
# (config class name, field name). Keep each entry true to what the code does.
EXTRA_HELP: dict[tuple[str, str], str] = {
    ("MlmAdaptConfig", "model"): "the model to adapt and the tokenizer for preprocess: Hub id, local "
    "directory, kfnlp model artifact or builtin:splade-tiny",
    ("PreprocessConfig", "hf_config"): "configuration (subset) name of an hf: dataset",
    ("PreprocessConfig", "hf_split"): "split of an hf: dataset to read",
    ("PreprocessConfig", "chunk_size"): "tokens per training chunk (at least 2)",
    ("PreprocessConfig", "seed"): "seed for the downsample and the train/test split",
    ("MaskEvalConfig", "strategy"): "mask single tokens or whole words",
    ("MaskEvalConfig", "seed"): "seed for the masked positions (and the max_chunks sample)",
    ("TrainMlmConfig", "learning_rate"): "peak learning rate (> 0)",
    ("TrainMlmConfig", "weight_decay"): "AdamW weight decay",
    ("TrainMlmConfig", "batch_size"): "training batch size per device",
    ("TrainMlmConfig", "num_epochs"): "passes over the training chunks (ignored when max_steps > 0)",
    ("TrainMlmConfig", "warmup_ratio"): "share of the training steps spent on linear warmup "
    "(passed to the Trainer as warmup_steps, which reads a float below 1 as a ratio)",
    ("TrainMlmConfig", "masking"): "dynamic masking while training: single tokens or whole words",
    ("TrainMlmConfig", "seed"): "seed for initialisation, the chunk sample and the masking collator",
    ("TrainMlmConfig", "eval_strategy"): "when train-mlm scores the eval set during training; the evaluate "
    "stage scores the final model either way",
    ("TrainMlmConfig", "eval_steps"): "steps between evaluations when eval_strategy is steps",
    ("TrainMlmConfig", "logging_steps"): "steps between loss log lines",
    ("TrainMlmConfig", "save_steps"): "steps between checkpoints",
    ("EvaluateConfig", "batch_size"): "evaluation batch size",
    ("EvaluateConfig", "top_k"): "fill-mask predictions shown per prompt",
    ("EvaluateConfig", "sparse_head"): "MLM head and loss only at masked positions (same perplexity, faster)",
    ("RegisterConfig", "model_name"): "registered model name; each run adds a new version",
    ("NerConfig", "model"): "the encoder to fine-tune and the tokenizer for preprocess-ner: Hub id, local "
    "directory, kfnlp model artifact, builtin:minilm or builtin:splade-tiny",
    ("AdaptThenNerConfig", "model"): "the base encoder: adapted by train-mlm, fine-tuned as is by train-ner-base, "
    "and the tokenizer for preprocess-ner and preprocess; needs a masked-LM head (builtin:splade-tiny has one)",
    ("NerPreprocessConfig", "hf_config"): "configuration (subset) name of an hf: dataset",
    ("NerPreprocessConfig", "tokens_column"): "column of an hf: dataset holding each sentence's words",
    ("NerPreprocessConfig", "tags_column"): "column of an hf: dataset holding the tags: ClassLabel ids (their "
    "names are the labels) or tag strings",
    ("NerPreprocessConfig", "seed"): "seed for the validation/test split and the max_sentences downsample",
    ("TrainNerConfig", "learning_rate"): "peak learning rate (> 0)",
    ("TrainNerConfig", "weight_decay"): "AdamW weight decay",
    ("TrainNerConfig", "batch_size"): "training batch size per device",
    ("TrainNerConfig", "eval_batch_size"): "batch size of the evaluations during training",
    ("TrainNerConfig", "num_epochs"): "passes over the training sentences (ignored when max_steps > 0)",
    ("TrainNerConfig", "warmup_ratio"): "share of the training steps spent on linear warmup (passed to the "
    "Trainer as warmup_steps, which reads a float below 1 as a ratio)",
    ("TrainNerConfig", "seed"): "seed for the new classification head, the max_train_sentences sample and the "
    "batch order",
    ("TrainNerConfig", "eval_strategy"): "when train-ner scores the validation split during training (seqeval "
    "over the labelled sub-tokens, the recipe's compute_metrics); evaluate-ner scores the final model either way",
    ("TrainNerConfig", "eval_steps"): "steps between evaluations when eval_strategy is steps",
    ("TrainNerConfig", "logging_steps"): "steps between loss log lines",
    ("TrainNerConfig", "save_strategy"): "when checkpoints are written",
    ("TrainNerConfig", "save_steps"): "steps between checkpoints when save_strategy is steps",
    ("EvaluateNerConfig", "split"): "split of the preprocess-ner dataset to score",
    ("EvaluateNerConfig", "batch_size"): "evaluation batch size (sentences, batched by length)",
    ("EvaluateNerConfig", "top_confusions"): "most frequent (gold, predicted) word-label confusions listed "
    "in the report",
    ("CompareConfig", "confidence"): "level of the bootstrap interval for the F1 difference (0.5 to below 1)",
    ("CompareConfig", "seed"): "seed for the bootstrap resamples",
}


def field_comments(cls: type) -> dict[str, str]:
    """Trailing ``# comments`` of the fields of dataclass ``cls``, from its source."""
    source = Path(inspect.getsourcefile(cls)).read_text(encoding="utf-8")
    comments: dict[int, str] = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string.lstrip("#").strip()
    node = class_node(cls, source)
    out = {}
    for stmt in node.body:
        if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
            for line in range(stmt.lineno, (stmt.end_lineno or stmt.lineno) + 1):
                if line in comments:
                    out[stmt.target.id] = comments[line]
                    break
    return out


def class_node(cls: type, source: str | None = None) -> ast.ClassDef:
    source = source if source is not None else Path(inspect.getsourcefile(cls)).read_text(encoding="utf-8")
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ClassDef) and node.name == cls.__name__:
            return node
    raise LookupError(f"class {cls.__name__} not found in {inspect.getsourcefile(cls)}")


def field_help(cls: type) -> dict[str, str]:
    """Help for every non-section field of ``cls``; raises if one has none or two sources."""
    comments = field_comments(cls)
    hints = get_type_hints(cls)
    out, problems = {}, []
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            continue  # a config section: documented by its own table
        extra = EXTRA_HELP.get((cls.__name__, f.name))
        if f.name in comments and extra:
            problems.append(f"{cls.__name__}.{f.name} has a source comment; drop its EXTRA_HELP entry")
        help_text = comments.get(f.name) or extra
        if not help_text:
            problems.append(f"{cls.__name__}.{f.name} has no help: add a trailing comment or an EXTRA_HELP entry")
        out[f.name] = help_text or ""
    if problems:
        raise ValueError("; ".join(problems))
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


def render_stage_config(config_ref: str) -> str:
    """The config table of one stage (``module:Class``), for its component README."""
    module, _, name = config_ref.partition(":")
    cls = getattr(importlib.import_module(module), name)
    hints, helps, code = get_type_hints(cls), field_help(cls), cls()
    rows = ["| key | type | default | help |", "| --- | --- | --- | --- |"]
    for f in dataclasses.fields(cls):
        cells = (f"`{f.name}`", type_name(hints[f.name]), value_text(getattr(code, f.name)), helps[f.name])
        rows.append("| " + " | ".join(_cell(c) for c in cells) + " |")
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
    import yaml

    from kfnlp.launch.cluster import settings as cluster

    out: dict[Path, Callable[[], str]] = {
        root / "docs" / "configuration.md": render_reference,
        root / "docs" / "cluster.md": cluster.render_reference,
    }
    for meta_file in sorted((root / "components").glob("*/metadata.yaml")):
        config_ref = yaml.safe_load(meta_file.read_text(encoding="utf-8"))["stage"]["config"]
        out[meta_file.parent / "README.md"] = functools.partial(render_stage_config, config_ref)
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
