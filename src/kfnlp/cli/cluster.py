"""``kfnlp compile``, ``kfnlp submit`` and ``kfnlp upload``: a pipeline for a Kubeflow cluster
(:mod:`kfnlp.launch.cluster`).

The runtime image comes from here, the edge: ``cluster.image`` in the config, else
``$KFNLP_IMAGE``; there is no default (compiling without one fails, docs/cluster.md#image).
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Callable
from typing import Any

from kfnlp.errors import ConfigError
from kfnlp.launch.cluster.api import DEFAULT_EXPERIMENT
from kfnlp.launch.cluster.auth import COOKIE_ENV, SA_TOKEN_ENV, SA_TOKEN_PATH, resolve_auth
from kfnlp.launch.images import IMAGE_ENV

COMPILE_DESCRIPTION = """\
Compile a pipeline to KFP v2 pipeline YAML for a Kubeflow cluster: the stage config
(embedded defaults <- --config <- --set) becomes the parameters' defaults, and the
cluster: section of the config (--set cluster.KEY=VALUE) sets the image, CPU/memory,
GPUs, node selector, tolerations, /dev/shm, secrets (by name only), retries, caching
and the pipeline root. The image is required: your own build, by digest
(cluster.image=REGISTRY/kfnlp@sha256:... or $KFNLP_IMAGE). See docs/cluster.md."""


def add_parsers(sub, add_config_flags: Callable[..., None]) -> None:
    """``kfnlp compile``, ``kfnlp submit`` and ``kfnlp upload`` (``add_config_flags`` adds --config/--set)."""
    compile_p = sub.add_parser(
        "compile",
        help="compile a pipeline for a Kubeflow cluster",
        description=COMPILE_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    compile_p.add_argument("pipeline", metavar="PIPELINE", help="pipeline name (see `kfnlp pipelines`)")
    compile_p.add_argument("-o", "--output", required=True, metavar="FILE.yaml", help="where to write the pipeline")
    add_config_flags(compile_p, "cluster.train.gpus=2")

    auth_help = (
        "Credentials: --token-file, $KFNLP_KFP_TOKEN or $KF_PIPELINES_TOKEN (bearer token), else the "
        f"in-cluster service-account token (${SA_TOKEN_ENV}, default {SA_TOKEN_PATH}); a session cookie "
        f"(Dex/Istio authservice_session=...) from --cookie-env NAME or ${COOKIE_ENV}. "
        "Values are never printed."
    )
    submit_p = sub.add_parser(
        "submit",
        help="run a pipeline on a Kubeflow Pipelines cluster",
        description="Compile a pipeline with the merged config (embedded defaults <- --config <- --set) and "
        "create a run of it on a Kubeflow Pipelines API (REST v2beta1, through kfp.Client), in an "
        f"experiment (default: {DEFAULT_EXPERIMENT}). " + auth_help,
    )
    submit_p.add_argument("pipeline", metavar="PIPELINE", help="pipeline name (see `kfnlp pipelines`)")
    _add_connection_flags(submit_p)
    submit_p.add_argument("--experiment", metavar="NAME", help=f"experiment (default: {DEFAULT_EXPERIMENT})")
    submit_p.add_argument("--run-name", metavar="NAME", help="run name (default: PIPELINE and the UTC time)")
    submit_p.add_argument("--pipeline-root", metavar="URI", help="where the run's artifacts go, e.g. s3://bucket/kfp")
    submit_p.add_argument("--wait", action="store_true", help="follow the run; exit non-zero unless it SUCCEEDED")
    submit_p.add_argument("--timeout", type=float, metavar="S", help="with --wait: give up after S seconds")
    submit_p.add_argument(
        "--poll-interval", type=float, default=5.0, metavar="S", help="with --wait: seconds between polls (default: 5)"
    )
    add_config_flags(submit_p)

    upload_p = sub.add_parser(
        "upload",
        help="upload a pipeline (or a new version of it) to Kubeflow Pipelines",
        description="Compile a pipeline with the merged config as its parameter defaults and upload it under "
        "its catalog name: a new pipeline, or a new version of the existing pipeline of that name. " + auth_help,
    )
    upload_p.add_argument("pipeline", metavar="PIPELINE", help="pipeline name (see `kfnlp pipelines`)")
    _add_connection_flags(upload_p)
    upload_p.add_argument(
        "--version", metavar="NAME", help="version name (default for an existing pipeline: PIPELINE-KFNLPVERSION-UTC)"
    )
    add_config_flags(upload_p)


def _add_connection_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--host",
        required=True,
        metavar="URL",
        help="Kubeflow Pipelines API, e.g. http://localhost:8080 or https://kubeflow.example.com/pipeline",
    )
    parser.add_argument("--namespace", metavar="NS", help="Kubeflow profile namespace (multi-user installs)")
    parser.add_argument("--token-file", metavar="FILE", help="file holding a bearer token (re-read per request)")
    parser.add_argument(
        "--cookie-env", metavar="NAME", help=f"environment variable holding a session cookie (default: ${COOKIE_ENV})"
    )
    parser.add_argument(
        "--insecure",
        action="store_true",
        help="send the token or cookie to a plain http:// host other than localhost (readable on the network)",
    )


def _default_image() -> str:
    """``$KFNLP_IMAGE``, the image when the config names none (there is no default image)."""
    return os.environ.get(IMAGE_ENV, "").strip()


def run_compile(args: argparse.Namespace) -> int:
    from kfnlp.launch.cluster.compile import compile_pipeline

    result = compile_pipeline(args.pipeline, args.output, args.config, args.overrides, _default_image())
    c = result.cluster
    gpus = f"{c.gpu_resource}: {', '.join(result.gpu_tasks)}" if result.gpu_tasks else "no GPUs"
    print(
        f"kfnlp: compiled {result.pipeline} to {result.path} (image {c.image}; {gpus}; "
        f"pipeline root {c.pipeline_root or 'the deployment default'})"
    )
    return 0


def _entry_and_config(args: argparse.Namespace) -> tuple[Any, Any, Any]:
    from kfnlp import catalog
    from kfnlp.launch.cluster.compile import load_configs

    if not getattr(args, "debug", False):  # urllib3 logs its own retries as warnings; kfnlp reports what matters
        logging.getLogger("urllib3").setLevel(logging.ERROR)
    entry = catalog.get(args.pipeline)
    # the cluster: section as kfnlp compile reads it
    config, cluster = load_configs(entry, args.config, args.overrides, _default_image())
    return entry, config, cluster


def run_submit(args: argparse.Namespace) -> int:
    from kfnlp.launch.cluster.submit import submit

    if args.timeout is not None and not args.wait:
        raise ConfigError("--timeout needs --wait")
    if args.timeout is not None and args.timeout <= 0:
        raise ConfigError(f"--timeout: expected a number of seconds > 0, got {args.timeout:g}")
    if args.poll_interval <= 0:
        raise ConfigError(f"--poll-interval: expected a number of seconds > 0, got {args.poll_interval:g}")
    entry, config, cluster = _entry_and_config(args)
    auth = resolve_auth(args.token_file, args.cookie_env)
    submit(
        entry,
        config,
        host=args.host,
        auth=auth,
        namespace=args.namespace,
        experiment=args.experiment,
        run_name=args.run_name,
        pipeline_root=args.pipeline_root,
        wait=args.wait,
        timeout=args.timeout,
        poll_interval=args.poll_interval,
        cluster=cluster,
        insecure=args.insecure,
    )
    return 0


def run_upload(args: argparse.Namespace) -> int:
    from kfnlp.launch.cluster.submit import upload

    entry, config, cluster = _entry_and_config(args)
    auth = resolve_auth(args.token_file, args.cookie_env)
    upload(
        entry,
        config,
        host=args.host,
        auth=auth,
        namespace=args.namespace,
        version=args.version,
        cluster=cluster,
        insecure=args.insecure,
    )
    return 0
