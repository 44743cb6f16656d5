"""The ``kfnlp`` command."""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kfnlp import __version__
from kfnlp.errors import KfnlpError, PipelineError

log = logging.getLogger("kfnlp")

EPILOG = """\
Config: every pipeline starts from its embedded defaults (offline: a tiny BERT
masked-LM and IMDB reviews shipped by PyPI packages). A YAML file (--config) and
--set SECTION.KEY=VALUE overrides change them; see docs/configuration.md.
"""


@dataclass(frozen=True)
class StageCommand:
    """How ``kfnlp stage NAME`` maps flags onto a stage function."""

    section: str  # config section name in pipeline configs
    config_type: str  # "module:Class"
    function: str  # "module:function"
    inputs: tuple[tuple[str, str, bool], ...]  # (flag, help, required)
    help: str
    defaults: tuple[tuple[str, str], ...] = ()  # flag defaults beyond STAGE_DEFAULTS


STAGES = {
    "preprocess": StageCommand(
        "preprocess",
        "kfnlp.stages.preprocess:PreprocessConfig",
        "kfnlp.stages.preprocess:preprocess",
        (
            ("output", "dataset artifact directory to write", True),
            ("tokenizer", "model whose tokenizer to use (Hub id, path or builtin:splade-tiny)", False),
        ),
        "read, split, tokenize and chunk a corpus",
    ),
    "mask-eval": StageCommand(
        "mask_eval",
        "kfnlp.stages.mask_eval:MaskEvalConfig",
        "kfnlp.stages.mask_eval:mask_eval",
        (
            ("dataset", "dataset artifact from preprocess", True),
            ("output", "eval-set artifact directory to write", True),
        ),
        "mask the held-out split once with a fixed seed",
    ),
    "train-mlm": StageCommand(
        "train_mlm",
        "kfnlp.stages.train_mlm:TrainMlmConfig",
        "kfnlp.stages.train_mlm:train_mlm",
        (
            ("dataset", "dataset artifact from preprocess", True),
            ("eval_set", "eval-set artifact from mask-eval", True),
            ("output", "model artifact directory to write", True),
            ("base_model", "model to adapt (Hub id, path or builtin:splade-tiny)", False),
        ),
        "adapt a masked-LM to the corpus",
    ),
    "evaluate": StageCommand(
        "evaluate",
        "kfnlp.stages.evaluate:EvaluateConfig",
        "kfnlp.stages.evaluate:evaluate_mlm",
        (
            ("model", "model to score (artifact, path, Hub id or builtin:splade-tiny)", True),
            ("eval_set", "eval-set artifact from mask-eval", True),
            ("output", "evaluation directory to write", True),
            ("label", "name for this model in reports", False),
        ),
        "perplexity on the masked eval set plus fill-mask examples",
    ),
    "register": StageCommand(
        "register",
        "kfnlp.stages.register:RegisterConfig",
        "kfnlp.stages.register:register",
        (
            ("model", "model artifact from train-mlm", True),
            ("evaluation", "evaluation of that model", True),
            ("baseline", "evaluation of the base model (optional)", False),
            ("run_name", "pipeline run name", False),
        ),
        "record the model as a new version in the model registry",
    ),
    "promote": StageCommand(
        "promote",
        "kfnlp.registry.promotion:PromoteConfig",
        "kfnlp.stages.promote:promote_registered",
        (
            ("registered", "the JSON a register stage wrote (name and version)", True),
            ("tracking_uri", "registry URI (default: $MLFLOW_TRACKING_URI or the embedded store)", False),
        ),
        "the promotion gate for a registered version (humans: kfnlp registry promote)",
    ),
    "preprocess-ner": StageCommand(
        "preprocess_ner",
        "kfnlp.stages.preprocess_ner:NerPreprocessConfig",
        "kfnlp.stages.preprocess_ner:preprocess_ner",
        (
            ("output", "NER dataset artifact directory to write", True),
            ("tokenizer", "model whose tokenizer to use (Hub id, path or builtin:minilm)", False),
        ),
        "NER mode of preprocess: read labelled sentences, split, tokenize, align labels",
        (("tokenizer", "builtin:minilm"),),
    ),
    "train-ner": StageCommand(
        "train_ner",
        "kfnlp.stages.train_ner:TrainNerConfig",
        "kfnlp.stages.train_ner:train_ner",
        (
            ("dataset", "NER dataset artifact from preprocess-ner", True),
            ("output", "model artifact directory to write", True),
            ("base_model", "encoder: Hub id, path, builtin:minilm or a train-mlm model artifact", False),
        ),
        "fine-tune an encoder for token classification",
        (("base_model", "builtin:minilm"),),
    ),
    "evaluate-ner": StageCommand(
        "evaluate_ner",
        "kfnlp.stages.evaluate_ner:EvaluateNerConfig",
        "kfnlp.stages.evaluate_ner:evaluate_ner",
        (
            ("model", "NER model (train-ner artifact or a token-classification model directory)", True),
            ("dataset", "NER dataset artifact from preprocess-ner", True),
            ("output", "evaluation directory to write", True),
            ("label", "name for this model in reports", False),
        ),
        "NER mode of evaluate: word-level seqeval scores, predictions file and report",
    ),
    "compare": StageCommand(
        "compare",
        "kfnlp.stages.compare:CompareConfig",
        "kfnlp.stages.compare:compare",
        (
            ("mlm_base", "masked-LM evaluation of the base model", True),
            ("mlm_adapted", "masked-LM evaluation of the adapted model", True),
            ("ner_base", "NER evaluation of the model fine-tuned from the base encoder", True),
            ("ner_adapted", "NER evaluation of the model fine-tuned from the adapted encoder", True),
            ("output", "comparison directory to write", True),
        ),
        "base versus adapted encoder: perplexity and NER F1 side by side",
    ),
}
STAGE_DEFAULTS = {"tokenizer": "builtin:splade-tiny", "base_model": "builtin:splade-tiny", "label": "model"}


def _import(path: str) -> Any:
    import importlib

    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def _add_config_flags(parser: argparse.ArgumentParser, example: str = "train_mlm.max_steps=100") -> None:
    parser.add_argument("--config", metavar="FILE.yaml", help="YAML config file (overrides the embedded defaults)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"override one config value, e.g. --set {example} (repeatable)",
    )


def _stage_epilog(spec: StageCommand) -> str | None:
    """The stage's config keys, types and defaults, for ``kfnlp stage NAME --help``."""
    try:
        from typing import get_type_hints

        from kfnlp.config import _type_name

        cls = _import(spec.config_type)
        hints = get_type_hints(cls)
        rows = []
        for f in dataclasses.fields(cls):
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            rows.append(f"  {f.name:<18} {_type_name(hints[f.name])} (default: {json.dumps(default)})")
    except Exception:  # help must work even if a stage module cannot be imported
        return None
    return (
        "config keys (--set KEY=VALUE; a --config file may hold them at its top level\n"
        f"or in its {spec.section}: section, as a pipeline config does):\n" + "\n".join(rows)
    )


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose epilog may be a function, called only for --help."""

    def format_help(self) -> str:
        if callable(self.epilog):
            self.epilog = self.epilog()
        return super().format_help()


STAGE_EXAMPLES = {
    "preprocess": "max_documents=1000",
    "mask_eval": "max_chunks=500",
    "train_mlm": "max_steps=100",
    "evaluate": "batch_size=32",
    "register": "model_name=kfnlp-mlm-imdb",
    "promote": "margin=0.01",
    "preprocess_ner": "max_sentences=500",
    "train_ner": "num_epochs=1",
    "evaluate_ner": "split=validation",
    "compare": "bootstrap_samples=1000",
}


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="kfnlp",
        description="Kubeflow pipeline components for NLP model adaptation.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"kfnlp {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run = sub.add_parser(
        "run",
        help="run a pipeline",
        description="Run a pipeline. --local runs it with the KFP local executor "
        "(kfp.local, one subprocess per stage, or one container with --runner docker) and writes "
        "OUTPUT/summary.json and OUTPUT/report.md.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("pipeline", metavar="PIPELINE", help="pipeline name (see `kfnlp pipelines`)")
    run.add_argument("--local", action="store_true", required=True, help="run on this machine with kfp.local")
    run.add_argument(
        "--output", default="out", metavar="DIR", help="where artifacts, summary and report go (default: out)"
    )
    run.add_argument(
        "--storage",
        metavar="URI",
        default=os.environ.get("KFNLP_STORAGE") or None,
        help="s3://bucket/prefix: the stages read and write every dataset, model and evaluation there, "
        "with the endpoint and credentials of the AWS_* environment (default: $KFNLP_STORAGE, else OUTPUT/artifacts)",
    )
    run.add_argument("--verbose", "-v", action="store_true", help="stream the full KFP log, not just stage events")
    run.add_argument(
        "--runner",
        choices=("subprocess", "docker"),
        default="subprocess",
        help="subprocess (default): each stage in a subprocess of this Python; docker: each stage in a container "
        "of the runtime image, through $DOCKER_HOST (Docker or a podman socket)",
    )
    run.add_argument(
        "--image",
        metavar="REF",
        help="runtime image for --runner docker (default: $KFNLP_IMAGE, else the release image)",
    )
    _add_config_flags(run)

    pipes = sub.add_parser("pipelines", help="list the pipelines", description="List pipelines and their stages.")
    pipes.add_argument(
        "--config", dest="show_config", metavar="PIPELINE", help="print a pipeline's effective default config"
    )

    stage = sub.add_parser(
        "stage",
        help="run one stage directly",
        description="Run one stage in this process: the same function the KFP component calls "
        "(and what a container runs). Config keys are the stage's own (no section prefix).",
    )
    stage_sub = stage.add_subparsers(dest="stage", metavar="STAGE", required=True)
    for name, spec in STAGES.items():
        sp = stage_sub.add_parser(
            name,
            help=spec.help,
            description=spec.help,
            epilog=functools.partial(_stage_epilog, spec),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        for flag, text, required in spec.inputs:
            default = dict(spec.defaults).get(flag, STAGE_DEFAULTS.get(flag))
            sp.add_argument(
                "--" + flag.replace("_", "-"),
                dest=flag,
                required=required,
                default=default,
                help=text + (f" (default: {default})" if default else ""),
            )
        _add_config_flags(sp, STAGE_EXAMPLES[spec.section])

    from kfnlp.cli import registry as registry_cli

    registry_cli.add_parser(sub)

    from kfnlp.launch import images

    images.add_parser(sub)

    from kfnlp.launch.cluster import compile as compile_cmd

    compile_cmd.add_parser(sub, _add_config_flags)

    from kfnlp.launch.cluster import submit

    submit.add_parsers(sub, _add_config_flags)

    predict = sub.add_parser("predict", help="use a model", description="Run a trained model on text.")
    predict_sub = predict.add_subparsers(dest="task", metavar="TASK", required=True)
    fm = predict_sub.add_parser(
        "fill-mask",
        help="predict the masked word",
        description="Top-k predictions for [MASK] in each text (written as [MASK] whatever the model's mask token is).",
    )
    fm.add_argument(
        "--model",
        required=True,
        help="model directory, kfnlp model artifact (local or s3://), Hub id, builtin:NAME or models:/NAME@ALIAS",
    )
    fm.add_argument("--top-k", type=int, default=5, help="predictions per text (default: 5)")
    fm.add_argument("--json", action="store_true", help="print JSON instead of a table")
    fm.add_argument("texts", nargs="+", metavar="TEXT", help="text containing [MASK]")
    ner = predict_sub.add_parser(
        "ner",
        help="tag named entities",
        description="Named entities in each text, sub-tokens grouped into entities (aggregation_strategy simple).",
    )
    ner.add_argument(
        "--model",
        required=True,
        help="NER model directory, kfnlp model artifact (local or s3://), Hub id or models:/NAME@champion",
    )
    ner.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ner.add_argument("texts", nargs="+", metavar="TEXT", help="text to tag")
    return parser


def _stage_config(spec: StageCommand, config_file: str | None, overrides: list[str]):
    from kfnlp.config import apply_overrides, blame_file, build, read_yaml
    from kfnlp.errors import ConfigError

    config_type = _import(spec.config_type)
    data: dict[str, Any] = {}
    if config_file:
        data = read_yaml(config_file)
        if spec.section in data and isinstance(data[spec.section], dict):
            data = data[spec.section]  # a whole pipeline config: take this stage's section
        try:
            build(config_type, data, spec.section)
        except ConfigError as exc:
            raise blame_file(exc, config_file, spec.section) from None
    # a stage's keys have no section prefix, but accept the pipeline spelling too
    data = apply_overrides(data, [_strip_section(item, spec.section) for item in overrides])
    return build(config_type, data, spec.section)


MODEL_FLAGS = ("tokenizer", "base_model", "model")


def _strip_section(item: str, section: str) -> str:
    for prefix in (section + ".", section.replace("_", "-") + "."):
        if item.startswith(prefix):
            return item[len(prefix) :]
    return item


def cmd_stage(args) -> int:
    from kfnlp.catalog import check_model_ref

    spec = STAGES[args.stage]
    config = _stage_config(spec, args.config, args.overrides)
    kwargs = {flag: getattr(args, flag) for flag, _, _ in spec.inputs if getattr(args, flag) is not None}
    for flag in MODEL_FLAGS:
        if flag in kwargs:
            check_model_ref(kwargs[flag], "--" + flag.replace("_", "-"))
    result = _import(spec.function)(config=config, **kwargs)
    print(json.dumps(result, indent=2, default=str))
    return 0


def cmd_run(args) -> int:
    from kfnlp import catalog
    from kfnlp.catalog import load_config, preflight
    from kfnlp.errors import ConfigError
    from kfnlp.launch.local import run_local

    entry = catalog.get(args.pipeline)
    config = load_config(entry, args.config, args.overrides)
    if args.image and args.runner != "docker":
        raise ConfigError("--image needs --runner docker")
    preflight(config)  # bad paths and model names fail here, before any stage starts
    log_path = os.path.join(args.output, "pipeline.log")
    print(f"kfnlp: running {entry.name} locally (kfp.local, {args.runner}); log: {log_path}")
    summary = run_local(
        entry, config, args.output, verbose=args.verbose, storage=args.storage, runner=args.runner, image=args.image
    )
    print()
    metrics, artifacts = summary["metrics"], summary["artifacts"]
    if "perplexity_before" in metrics:
        print(f"perplexity: {metrics['perplexity_before']:,.2f} (base) -> {metrics['perplexity_after']:,.2f} (adapted)")
    for label, m in metrics.items():
        if isinstance(m, dict) and "strict_f1" in m:
            print(f"NER F1 ({label}): {m['f1']:.4f} (precision {m['precision']:.4f}, recall {m['recall']:.4f})")
    if "comparison" in metrics:
        print(f"verdict:  {metrics['comparison']['verdict']}")
    if "model" in artifacts:
        print(f"model:    {artifacts['model']}")
    if "registry" in artifacts:
        reg = artifacts["registry"]
        print(f"registry: {reg['uri']} ({reg['tracking_uri']})")
    print(f"summary:  {os.path.join(args.output, 'summary.json')}")
    print(f"report:   {os.path.join(args.output, 'report.md')}")
    if summary["status"] != "succeeded":
        failed = [s for s in summary["stages"] if s["status"] == "failed"]
        why = "; ".join(f"{s['name']}: {s.get('error', 'failed')}" for s in failed) or "see the log"
        raise PipelineError(f"pipeline {entry.name} failed: {why}")
    return 0


def cmd_pipelines(args) -> int:
    from kfnlp import catalog
    from kfnlp.catalog import load_config

    if args.show_config:
        import yaml

        from kfnlp.config import to_dict

        print(yaml.safe_dump(to_dict(load_config(catalog.get(args.show_config))), sort_keys=False), end="")
        return 0
    for entry in catalog.PIPELINES.values():
        print(f"{entry.name:12s} {entry.description}")
    return 0


def cmd_predict(args) -> int:
    from kfnlp.catalog import check_model_ref
    from kfnlp.errors import ConfigError

    check_model_ref(args.model, "--model")
    if not args.debug:  # a weight-loading bar is noise here, and would precede an error line
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if args.task == "ner":
        from kfnlp.predict import entities

        results = entities(args.model, args.texts)
        if args.json:
            print(json.dumps(results, indent=2))
            return 0
        for item in results:
            print(item["text"])
            for e in item["entities"]:
                print(f"  {e['score']:7.4f}  {e['entity_group']:<14} {e['word']!r} [{e['start']}:{e['end']}]")
            if not item["entities"]:
                print("  (no entities)")
        return 0
    from kfnlp.predict import fill_mask

    if args.top_k < 1:
        raise ConfigError(f"--top-k: expected an integer >= 1, got {args.top_k}")
    results = fill_mask(args.model, args.texts, args.top_k)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for item in results:
        print(item["text"])
        for p in item["predictions"]:
            print(f"  {p['score']:7.4f}  {p['token']}")
    return 0


def cmd_submit(args) -> int:
    from kfnlp.launch.cluster import submit

    return submit.cmd_submit(args)


def cmd_upload(args) -> int:
    from kfnlp.launch.cluster import submit

    return submit.cmd_upload(args)


def cmd_compile(args) -> int:
    from kfnlp.launch.cluster import compile as compile_cmd

    return compile_cmd.run(args)


def cmd_images(args) -> int:
    from kfnlp.launch import images

    return images.run(args)


def cmd_registry(args) -> int:
    from kfnlp.cli import registry as registry_cli

    return registry_cli.run(args)


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "registry": cmd_registry,
    "images": cmd_images,
    "run": cmd_run,
    "stage": cmd_stage,
    "pipelines": cmd_pipelines,
    "predict": cmd_predict,
    "compile": cmd_compile,
    "submit": cmd_submit,
    "upload": cmd_upload,
}


def _configure_logging(debug: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(handler)
    log.propagate = False
    log.setLevel(logging.DEBUG if debug else logging.INFO)
    if not debug:
        import warnings

        warnings.filterwarnings("ignore")
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args.debug)
    try:
        return COMMANDS[args.command](args)
    except KfnlpError as exc:
        if args.debug:
            raise
        _error(str(exc))
        return exc.exit_code
    except KeyboardInterrupt:
        print("kfnlp: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:  # a file we could not read or write, outside the checked paths
        if args.debug:
            raise
        where = f"{exc.filename}: " if exc.filename else ""
        _error(f"{where}{exc.strerror or exc}")
        return 1
    except Exception as exc:  # a bug: say what, keep the traceback for --debug
        if args.debug:
            raise
        _error(f"unexpected {type(exc).__name__}: {exc} (rerun with --debug for the traceback)")
        return 1


def _error(message: str) -> None:
    """The one line a failed command prints on stderr."""
    print(f"kfnlp: error: {' '.join(message.split())}", file=sys.stderr)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
