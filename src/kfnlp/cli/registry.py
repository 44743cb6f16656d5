"""``kfnlp registry``: look at versions, aliases, metrics and decisions; promote and roll back."""

from __future__ import annotations

import argparse
import functools
import json
from typing import Any

from kfnlp.registry import Registry
from kfnlp.registry.promotion import CHAMPION, PREVIOUS, PromoteConfig, decisions, promote, rollback

SHOWN_METRICS = ("perplexity", "f1", "precision", "recall", "strict_f1", "eval_loss")
READ_ONLY = ("list", "show", "diff", "export")  # never create a store


def add_parser(sub, add_config_flags=None) -> None:
    registry = sub.add_parser(
        "registry",
        help="model registry: list, show, diff, promote, rollback, export, publish",
        description="The model registry (MLflow): the embedded store under the kfnlp home by default, "
        "or the server in $MLFLOW_TRACKING_URI / --tracking-uri. Models load from it with "
        "--model models:/NAME@champion or models:/NAME/VERSION.",
    )
    _add_common(registry, suppress=False)
    # the same flags after the action (`registry list NAME --json`); SUPPRESS keeps one given before
    common = argparse.ArgumentParser(add_help=False)
    _add_common(common, suppress=True)
    actions = registry.add_subparsers(dest="action", metavar="ACTION", required=True)
    add_action = functools.partial(actions.add_parser, parents=[common])
    listing = add_action("list", help="models, or the versions of one model")
    listing.add_argument("name", nargs="?", metavar="NAME")
    show = add_action("show", help="one version (default: the champion) with metrics, tags and decisions")
    show.add_argument("name", metavar="NAME")
    show.add_argument("version", nargs="?", metavar="VERSION", help="a number or @ALIAS (default: @champion)")
    diff = add_action("diff", help="two versions side by side")
    diff.add_argument("name", metavar="NAME")
    diff.add_argument("a", metavar="A", help="a version number or @ALIAS")
    diff.add_argument("b", metavar="B", help="a version number or @ALIAS")
    prom = add_action(
        "promote",
        help="run the promotion gate for a version",
        description="Make VERSION @champion if it was evaluated on the champion's eval set and beats it by "
        "--margin on the primary metric without guard regressions. The decision is recorded either way.",
    )
    prom.add_argument("name", metavar="NAME")
    prom.add_argument("version", type=int, metavar="VERSION")
    prom.add_argument("--margin", type=float, default=0.0, help="required improvement of the primary metric")
    prom.add_argument("--guard", action="append", default=[], metavar="METRIC:TOL", help="e.g. recall:0.02")
    prom.add_argument("--force", action="store_true", help="promote even if the gate rejects (recorded as forced)")
    back = add_action(
        "rollback",
        help="make @previous-champion the champion again",
        description="Make @previous-champion the champion again; with --redeploy also render and apply the "
        "InferenceService of the new champion, as kfnlp deploy NAME --apply does (its flags below).",
    )
    back.add_argument("name", metavar="NAME")
    back.add_argument("--redeploy", action="store_true", help="deploy the new champion on KServe (kfnlp deploy)")
    if add_config_flags is not None:
        from kfnlp.cli.deploy import add_deploy_flags

        add_deploy_flags(back, add_config_flags, redeploy=True)
        back.set_defaults(apply=True)
    publish = add_action(
        "publish",
        help="push a version to the Hugging Face Hub (model files, tokenizer, model card; a tag per version)",
        description="Push NAME's champion (NAME@ALIAS, NAME/VERSION: another version) to the Hub repository "
        "REPO_ID: its model files, tokenizer and model card (metrics, data lineage, eval set, limitations) in one "
        "commit on main, tagged vVERSION. The token is read from $HF_TOKEN only; $HF_ENDPOINT names another Hub.",
    )
    publish.add_argument("name", metavar="NAME[@ALIAS|/VERSION]")
    publish.add_argument("--hub", required=True, metavar="REPO_ID", help="Hub repository, NAMESPACE/NAME")
    publish.add_argument("--private", action="store_true", help="create the repository private")
    export = add_action(
        "export",
        help="write a version's model files to a new directory (--merge: a LoRA adapter merged into its base)",
        description="Write the files of NAME's champion (NAME@ALIAS, NAME/VERSION: another version) to DIR, a "
        "new or empty directory, as a model artifact; with --merge a LoRA adapter version is merged into its "
        "base (tag kfnlp.adapter_base), so DIR loads with plain transformers: pipeline('text-generation', model=DIR).",
    )
    export.add_argument("name", metavar="NAME[@ALIAS|/VERSION]")
    export.add_argument("--output", required=True, metavar="DIR", help="new or empty local directory")
    export.add_argument("--merge", action="store_true", help="merge a LoRA adapter into its base model")


def _add_common(parser: argparse.ArgumentParser, suppress: bool) -> None:
    """--tracking-uri and --json. With ``suppress`` (on the actions) an absent flag sets nothing,
    so one given before the action stands."""
    defaults: dict[str, Any] = {"default": argparse.SUPPRESS} if suppress else {}
    parser.add_argument(
        "--tracking-uri", metavar="URI", help="registry URI (default: $MLFLOW_TRACKING_URI or embedded)", **defaults
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables", **defaults)


def _version_ref(registry: Registry, name: str, ref: str | None):
    ref = ref or f"@{CHAMPION}"
    return registry.resolve(f"models:/{name}{ref}" if ref.startswith("@") else f"models:/{name}/{ref}")


def _aliases(registry: Registry, name: str) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for alias, version in registry.get_model(name).aliases.items():
        out.setdefault(int(version), []).append(alias)
    return out


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    cells = [[str(h) for h in headers]] + [
        ["" if c is None else f"{c:.4g}" if isinstance(c, float) else str(c) for c in row] for row in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _version_row(registry: Registry, version, aliases: dict[int, list[str]]) -> dict[str, Any]:
    metrics = dict(registry.client.get_run(version.run_id).data.metrics) if version.run_id else {}
    return {
        "version": int(version.version),
        "aliases": sorted(aliases.get(int(version.version), [])),
        "decision": version.tags.get("kfnlp.decision", ""),
        "primary_metric": version.tags.get("kfnlp.primary_metric"),
        "metrics": metrics,
        "eval_set": (version.tags.get("kfnlp.eval_set_fingerprint") or "")[:12],
        "created": version.creation_timestamp,
        "pipeline_run": version.tags.get("kfnlp.pipeline_run"),
    }


def export_ref(spec: str) -> str:
    """``NAME``, ``NAME@ALIAS`` or ``NAME/VERSION`` as a ``models:/`` URI (a bare name: its champion)."""
    name, at, alias = spec.partition("@")
    if at:
        return f"models:/{name}@{alias}"
    head, slash, tail = spec.rpartition("/")
    if slash and tail.isdigit():
        return f"models:/{head}/{tail}"
    return f"models:/{spec}@{CHAMPION}"


def _export(registry: Registry, args: argparse.Namespace) -> int:
    from kfnlp.modeling import export_model

    version = registry.resolve(export_ref(args.name))
    uri = f"models:/{version.name}/{version.version}"
    result = export_model(uri, args.output, merge=args.merge, location=str(registry.download(uri)))
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        what = "merged into its base" if result["merged"] else "a LoRA adapter" if result["adapter"] else "a model"
        note = " (not an adapter: nothing to merge)" if args.merge and not result["merged"] else ""
        print(f"exported {uri} to {args.output}: {what}{note}")
    return 0


def run(args: argparse.Namespace) -> int:
    registry = Registry(args.tracking_uri, read_only=args.action in READ_ONLY)
    if args.action == "export":
        return _export(registry, args)
    if args.action == "publish":
        from kfnlp.serving.hub import publish

        result = publish(registry, args.name, args.hub, private=args.private)
        print(
            json.dumps(result, indent=2)
            if args.json
            else f"published {args.name} (v{result['version']}) to {result['url']} at revision {result['revision']}"
        )
        return 0
    if args.action == "promote":
        decision = promote(
            registry, args.name, args.version, PromoteConfig(margin=args.margin, guards=args.guard), args.force
        )
        print(json.dumps(decision.__dict__, indent=2) if args.json else decision.line())
        return 0 if decision.outcome in ("promoted", "unchanged") else 3
    if args.action == "rollback":
        if args.redeploy:
            from kfnlp.cli.deploy import deploy_config

            deploy_config(args)  # a bad deploy setting is refused before the aliases move
        decision = rollback(registry, args.name)
        print(json.dumps(decision.__dict__, indent=2) if args.json else decision.line())
        if args.redeploy:
            from kfnlp.cli.deploy import deploy_spec

            return deploy_spec(args, f"{args.name}@{CHAMPION}", registry)
        return 0
    if args.action == "list" and not args.name:
        models = [
            {"name": m.name, "task": m.tags.get("kfnlp.task", ""), "aliases": dict(m.aliases)}
            for m in registry.models()
        ]
        if args.json:
            print(json.dumps(models, indent=2))
        else:
            print(
                _table(
                    ["model", "task", "champion", "previous"],
                    [[m["name"], m["task"], m["aliases"].get(CHAMPION), m["aliases"].get(PREVIOUS)] for m in models],
                )
                if models
                else f"no models in {registry.display_uri}"
            )
        return 0
    aliases = _aliases(registry, args.name)
    if args.action == "list":
        rows = [_version_row(registry, v, aliases) for v in registry.versions(args.name)]
        if args.json:
            print(json.dumps(rows, indent=2))
            return 0
        keys = [k for k in SHOWN_METRICS if any(k in r["metrics"] for r in rows)]
        print(
            _table(
                ["version", "aliases", *keys, "eval set", "decision"],
                [
                    [
                        r["version"],
                        ",".join(r["aliases"]),
                        *[r["metrics"].get(k) for k in keys],
                        r["eval_set"],
                        r["decision"],
                    ]
                    for r in rows
                ],
            )
        )
        return 0
    if args.action == "show":
        version = _version_ref(registry, args.name, args.version)
        row = _version_row(registry, version, aliases)
        row["tags"] = dict(version.tags)
        row["source"] = version.source
        row["decisions"] = [d for d in decisions(registry, args.name) if d["version"] == row["version"]]
        if args.json:
            print(json.dumps(row, indent=2))
            return 0
        print(f"{args.name} version {row['version']} {' '.join('@' + a for a in row['aliases'])}".rstrip())
        print(_table(["metric", "value"], [[k, v] for k, v in sorted(row["metrics"].items())]))
        print()
        print(_table(["tag", "value"], [[k, v] for k, v in sorted(row["tags"].items())]))
        if row["decisions"]:
            print()
            print(
                _table(
                    ["#", "outcome", "reason", "forced", "by", "time"],
                    [
                        [d["sequence"], d["outcome"], d["reason"], d["forced"], d["by"], d["time"]]
                        for d in row["decisions"]
                    ],
                )
            )
        return 0
    a, b = (_version_row(registry, _version_ref(registry, args.name, ref), aliases) for ref in (args.a, args.b))
    keys = sorted(set(a["metrics"]) | set(b["metrics"]))
    rows = []
    for key in keys:
        x, y = a["metrics"].get(key), b["metrics"].get(key)
        rows.append([key, x, y, (y - x) if x is not None and y is not None else None])
    rows.append(["eval set", a["eval_set"], b["eval_set"], "same" if a["eval_set"] == b["eval_set"] else "DIFFERENT"])
    if args.json:
        print(json.dumps({"a": a, "b": b}, indent=2))
        return 0
    print(_table(["", f"v{a['version']}", f"v{b['version']}", "B - A"], rows))
    return 0
