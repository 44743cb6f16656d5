"""``kfnlp run PIPELINE --local``: a catalog pipeline on this machine (:mod:`kfnlp.launch.local`).

The environment is read here, at the edge: ``$KFNLP_STORAGE`` is ``--storage``'s default and
``$KFNLP_IMAGE`` ``--image``'s; the library gets explicit values.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable

from kfnlp.cli.config_flags import EPILOG
from kfnlp.errors import ConfigError, PipelineError


def add_parser(sub, add_config_flags: Callable[..., None]) -> None:
    run = sub.add_parser(
        "run",
        help="run a pipeline",
        description="Run a pipeline. --local runs it with the KFP local executor "
        "(kfp.local, one subprocess per stage, or one container with --runner docker) and writes "
        "OUTPUT/summary.json, OUTPUT/report.md and OUTPUT/report.html.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("pipeline", metavar="PIPELINE", help="pipeline name (see `kfnlp pipelines`)")
    run.add_argument("--local", action="store_true", required=True, help="run on this machine with kfp.local")
    run.add_argument(
        "--output",
        default="out",
        metavar="DIR",
        help="where artifacts, summary and report go; run again with the same DIR to resume an interrupted run "
        "(default: out)",
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
        help="runtime image for --runner docker (default: $KFNLP_IMAGE, else the tag a local `kfnlp images build` gives)",
    )
    again = run.add_mutually_exclusive_group()
    again.add_argument(
        "--resume",
        action="store_const",
        const=True,
        default=None,
        help="continue the interrupted run in OUTPUT (the default when there is one): completed stages are "
        "reused, training resumes from its newest checkpoint; fail if there is none",
    )
    again.add_argument(
        "--fresh",
        dest="resume",
        action="store_const",
        const=False,
        help="start a new run even if OUTPUT holds an interrupted one (whose checkpoints are deleted)",
    )
    add_config_flags(run)


def _runtime_image(args: argparse.Namespace) -> str | None:
    """The image of a --runner docker run: --image, else $KFNLP_IMAGE, else the local build tag."""
    if args.runner != "docker":
        return None
    from kfnlp.launch.images import IMAGE_ENV, LOCAL_IMAGE

    return args.image or os.environ.get(IMAGE_ENV) or LOCAL_IMAGE


def run(args: argparse.Namespace) -> int:
    from kfnlp import catalog
    from kfnlp.launch.local import run_local
    from kfnlp.launch.made_models import make_missing
    from kfnlp.refs import preflight

    entry = catalog.get(args.pipeline)
    config = catalog.load_config(entry, args.config, args.overrides)
    if args.image and args.runner != "docker":
        raise ConfigError("--image needs --runner docker")
    preflight(config, unmade_ok=True)  # bad paths and model names fail here, before any stage starts
    if make_missing(config):  # builtin:gpt2-imdb and the like, made on this machine once
        preflight(config)  # and now with the made model's own limits
    log_path = os.path.join(args.output, "pipeline.log")
    print(f"kfnlp: running {entry.name} locally (kfp.local, {args.runner}); log: {log_path}")
    summary = run_local(
        entry,
        config,
        args.output,
        verbose=args.verbose,
        storage=args.storage,
        runner=args.runner,
        image=_runtime_image(args),
        resume=args.resume,
    )
    print()
    reused = [s["name"] for s in summary["stages"] if s.get("reused")]
    if reused:
        print(f"reused:   {', '.join(reused)} (completed in the interrupted run)")
    metrics, artifacts = summary["metrics"], summary["artifacts"]
    if "perplexity_before" in metrics:
        print(f"perplexity: {metrics['perplexity_before']:,.2f} (base) -> {metrics['perplexity_after']:,.2f} (adapted)")
    for label, m in metrics.items():
        if isinstance(m, dict) and "strict_f1" in m:
            print(f"NER F1 ({label}): {m['f1']:.4f} (precision {m['precision']:.4f}, recall {m['recall']:.4f})")
        if isinstance(m, dict) and "micro_f1" in m:
            print(f"accuracy ({label}): {m['accuracy']:.4f} (macro F1 {m['macro_f1']:.4f}, {m['examples']} examples)")
    if "comparison" in metrics:
        print(f"verdict:  {metrics['comparison']['verdict']}")
    if "model" in artifacts:
        print(f"model:    {artifacts['model']}")
    if "registry" in artifacts:
        reg = artifacts["registry"]
        print(f"registry: {reg['uri']} ({reg['tracking_uri']})")
    print(f"summary:  {os.path.join(args.output, 'summary.json')}")
    print(f"report:   {os.path.join(args.output, 'report.md')}")
    print(f"html:     {os.path.join(args.output, 'report.html')}")
    if summary["status"] != "succeeded":
        failed = [s for s in summary["stages"] if s["status"] == "failed"]
        why = "; ".join(f"{s['name']}: {s.get('error', 'failed')}" for s in failed) or "see the log"
        raise PipelineError(f"pipeline {entry.name} failed: {why}")
    return 0
