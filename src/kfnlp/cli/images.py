"""``kfnlp images build``: the runtime image (:mod:`kfnlp.launch.images`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from kfnlp.launch.images import VARIANTS, ImageError, build, default_tag


def add_parser(sub) -> None:
    images = sub.add_parser(
        "images",
        help="build the runtime image",
        description="The kfnlp runtime image (images/Containerfile). The container engine is $DOCKER_HOST: "
        "a Docker daemon or a podman socket (podman system service).",
    )
    actions = images.add_subparsers(dest="action", metavar="ACTION", required=True)
    b = actions.add_parser(
        "build",
        help="build (and push) the runtime image",
        description="Build the runtime image through the Docker SDK against $DOCKER_HOST, from the "
        "repository root filtered by .dockerignore. Prints the tag, id and size as JSON on stdout.",
    )
    b.add_argument("--variant", choices=VARIANTS, default="cpu", help="torch build: cpu (default) or cuda")
    b.add_argument("--tag", metavar="REF", help=f"image reference (default: {default_tag('cpu')}, -cuda for cuda)")
    b.add_argument("--push", action="store_true", help="push the tag after building (registry login is the engine's)")
    b.add_argument("--base-image", metavar="REF", help="BASE_IMAGE build arg (default: python:3.11-slim-bookworm)")
    b.add_argument(
        "--wheelhouse", metavar="DIR", type=Path, help="install offline from these wheels (context only, builder stage)"
    )
    b.add_argument("--ca-bundle", metavar="FILE", type=Path, help="CA bundle for pip in the build (builder stage only)")
    b.add_argument(
        "--build-arg", metavar="KEY=VALUE", action="append", default=[], help="extra build argument (repeatable)"
    )
    b.add_argument("--no-cache", action="store_true", help="do not reuse cached layers")
    b.add_argument("--pull", action="store_true", help="always pull the base image (default: only when missing)")
    b.add_argument("--quiet", action="store_true", help="do not stream the build log to stderr")


def run(args: argparse.Namespace) -> int:
    extra = {}
    for item in args.build_arg:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ImageError(f"--build-arg wants KEY=VALUE, got {item!r}")
        extra[key] = value
    result = build(
        args.variant,
        args.tag,
        push=args.push,
        base_image=args.base_image,
        wheelhouse=args.wheelhouse,
        ca_bundle=args.ca_bundle,
        build_args=extra,
        no_cache=args.no_cache,
        pull=args.pull,
        quiet=args.quiet,
    )
    print(json.dumps(result))
    return 0
