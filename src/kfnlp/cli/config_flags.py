"""The ``--config``/``--set`` flags every config-taking command shares, and the note explaining them."""

from __future__ import annotations

import argparse

EPILOG = """\
Config: every pipeline starts from its embedded defaults (offline: a tiny BERT
masked-LM and IMDB reviews shipped by PyPI packages). A YAML file (--config) and
--set SECTION.KEY=VALUE overrides change them; see docs/configuration.md.
"""


def add_config_flags(parser: argparse.ArgumentParser, example: str = "train_mlm.max_steps=100") -> None:
    parser.add_argument("--config", metavar="FILE.yaml", help="YAML config file (overrides the embedded defaults)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"override one config value, e.g. --set {example} (repeatable)",
    )
