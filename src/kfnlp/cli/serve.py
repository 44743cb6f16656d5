"""``kfnlp serve``: a model on a local HTTP server speaking KServe's v1 and Open Inference protocols
(:mod:`kfnlp.serving`). The flags are :class:`kfnlp.serving.ServeConfig`'s fields, with their help."""

from __future__ import annotations

import argparse
import dataclasses
import sys

DESCRIPTION = (
    "Serve a kfnlp model over HTTP with KServe's Python model server: POST /v1/models/NAME:predict "
    '{"instances": [text, ...]} or /v2/models/NAME/infer (Open Inference: one BYTES input of texts); '
    "GET /v2/health/live, /v2/health/ready, /v2/models/NAME/ready, /metrics. Concurrent requests are "
    "batched into one forward pass. Answers are what kfnlp predict prints with --json for the model's task. "
    "Stops on Ctrl-C or SIGTERM, finishing the requests in flight."
)


def add_parser(sub) -> None:
    from kfnlp.serving import ServeConfig

    parser = sub.add_parser(
        "serve", help="serve a model over HTTP (KServe v1 and v2 protocols)", description=DESCRIPTION
    )
    for field in dataclasses.fields(ServeConfig):
        flag = "--" + field.name.replace("_", "-")
        default = field.default
        parser.add_argument(
            flag,
            dest=field.name,
            type=type(default),
            default=default,
            required=field.name == "model",
            metavar=field.name.upper() if field.name != "model" else "REF",
            help=field.metadata["help"] + ("" if default in ("", None) else f" (default: {default})"),
        )


def run(args: argparse.Namespace) -> int:
    from kfnlp.serving import ServeConfig, serve

    config = ServeConfig(**{field.name: getattr(args, field.name) for field in dataclasses.fields(ServeConfig)})

    def listening(host: str, port: int, model) -> None:
        where = f"http://{'[' + host + ']' if ':' in host else host}:{port}"
        print(
            f"serving {config.model} as {model.name} ({model.runner.task}) on {where}\n"
            f"  v1: POST {where}/v1/models/{model.name}:predict\n"
            f"  v2: POST {where}/v2/models/{model.name}/infer\n"
            f"  ready: GET {where}/v2/health/ready",
            flush=True,
        )

    serve(config, on_listening=listening)
    print("kfnlp serve: stopped", file=sys.stderr)
    return 0
