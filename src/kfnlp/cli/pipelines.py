"""``kfnlp pipelines``: the catalog, or one pipeline's effective default config."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    pipes = sub.add_parser("pipelines", help="list the pipelines", description="List pipelines and their stages.")
    pipes.add_argument(
        "--config", dest="show_config", metavar="PIPELINE", help="print a pipeline's effective default config"
    )


def run(args: argparse.Namespace) -> int:
    from kfnlp import catalog

    if args.show_config:
        import yaml

        from kfnlp.config import to_dict

        config = catalog.load_config(catalog.get(args.show_config))
        print(yaml.safe_dump(to_dict(config), sort_keys=False), end="")
        return 0
    width = max(len(name) for name in catalog.PIPELINES)
    for entry in catalog.PIPELINES.values():
        print(f"{entry.name:{width}s}  {entry.description}")
    return 0
