"""``kfnlp stage NAME``: run one stage in this process, one subcommand per :mod:`kfnlp.stages` entry."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import json
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

from kfnlp.stages.entry import Stage


class _StageCommands(argparse._SubParsersAction):
    """The ``kfnlp stage`` subcommands, added on first use: they import every stage module, which
    ``kfnlp --help`` and the other commands need not pay for."""

    def __init__(self, *args: Any, populate: Callable[[argparse._SubParsersAction], None], **kwargs: Any):
        self._populate = populate
        super().__init__(*args, **kwargs)

    def _ensure(self) -> None:
        if self._populate is not None:
            populate, self._populate = self._populate, None
            populate(self)

    @property
    def choices(self) -> dict[str, argparse.ArgumentParser]:  # argparse checks the name against these
        self._ensure()
        return self._name_parser_map

    @choices.setter
    def choices(self, value: Any) -> None:  # argparse sets it to the (still empty) subparser map
        pass

    def _get_subactions(self) -> list[argparse.Action]:  # the list in `kfnlp stage --help`
        self._ensure()
        return super()._get_subactions()


def add_parser(sub: argparse._SubParsersAction, add_config_flags: Callable[..., None]) -> None:
    parser = sub.add_parser(
        "stage",
        help="run one stage directly",
        description="Run one stage in this process: the same function the KFP component calls "
        "(and what a container runs). Config keys are the stage's own (no section prefix).",
    )
    parser.add_subparsers(
        dest="stage",
        metavar="STAGE",
        required=True,
        action=_StageCommands,
        populate=functools.partial(_add_stages, add_config_flags=add_config_flags),
    )


def _add_stages(stage_sub: argparse._SubParsersAction, add_config_flags: Callable[..., None]) -> None:
    from kfnlp import stages

    for stage in stages.by_name().values():
        sp = stage_sub.add_parser(
            stage.name,
            help=stage.help,
            description=stage.help,
            epilog=functools.partial(_epilog, stage),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        for item in stage.inputs:
            sp.add_argument(
                item.flag,
                dest=item.name,
                required=item.required,
                default=item.default,
                help=item.help + (f" (default: {item.default})" if item.default else ""),
            )
        add_config_flags(sp, stage.example)
        sp.add_argument(
            "--config-json",
            metavar="JSON",
            help="the stage's config as one JSON object of its keys, as its component receives it "
            "(instead of --config; --set applies on top)",
        )


def _epilog(stage: Stage) -> str:
    """The stage's config keys, types and defaults, for ``kfnlp stage NAME --help``."""
    from typing import get_type_hints

    from kfnlp.config import _type_name

    hints = get_type_hints(stage.config)
    rows = []
    for f in dataclasses.fields(stage.config):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        rows.append(f"  {f.name:<18} {_type_name(hints[f.name])} (default: {json.dumps(default)})")
    return (
        "config keys (--set KEY=VALUE; a --config file may hold them at its top level\n"
        f"or in its {stage.section}: section, as a pipeline config does):\n" + "\n".join(rows)
    )


def _config(stage: Stage, config_file: str | None, config_json: str | None, overrides: list[str]):
    from kfnlp.catalog import layered, load_section
    from kfnlp.config import build
    from kfnlp.errors import ConfigError

    # a stage's keys have no section prefix, but accept the pipeline spelling too
    overrides = [_strip_section(item, stage.section) for item in overrides]
    if config_json is None:
        return load_section(stage.config, stage.section, config_file, overrides)
    if config_file:
        raise ConfigError("--config and --config-json: give one of them")
    try:
        data = json.loads(config_json)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--config-json: not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"--config-json: expected a JSON object of {stage.name}'s keys, got {type(data).__name__}")
    return layered(lambda values: build(stage.config, values, stage.section), data, None, overrides)


def _strip_section(item: str, section: str) -> str:
    for prefix in (section + ".", section.replace("_", "-") + "."):
        if item.startswith(prefix):
            return item[len(prefix) :]
    return item


def run(args: argparse.Namespace) -> int:
    from kfnlp import stages
    from kfnlp.config import sequence_length_fields
    from kfnlp.modeling import check_position_limit
    from kfnlp.refs import check_model_ref

    stage = stages.get(args.stage)
    config = _config(stage, args.config, args.config_json, args.overrides)
    kwargs = {item.name: getattr(args, item.name) for item in stage.inputs if getattr(args, item.name) is not None}
    for item in stage.inputs:
        if item.kind == "model" and item.name in kwargs:
            check_model_ref(kwargs[item.name], item.flag)
            check_position_limit(kwargs[item.name], sequence_length_fields(config))
    if "output" in kwargs:  # before any work: the artifact replaces only what kfnlp wrote, never an input
        from kfnlp.config import fields_of_kind
        from kfnlp.storage import check_output

        sources = fields_of_kind(config, "source", "ner_source", "cls_source", prefix=f"{stage.section}.")
        reads = {key: value for key, value, _ in sources} | {i.flag: kwargs.get(i.name) for i in stage.inputs if i.kind}
        check_output(kwargs["output"], reads)
    from kfnlp.launch.allocator import keep_freed_memory

    keep_freed_memory()  # this process does one stage's work, then exits
    with _stdout_to_stderr():
        result = stage.function(config=config, **kwargs)
    print(json.dumps(result, indent=2, default=str))
    return 0


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """Send what the stage prints (library prints, progress, native code, child processes) to stderr,
    so that stdout carries the result JSON only: ``kfnlp stage ... | jq`` works."""
    sys.stdout.flush()
    try:
        fd, err = sys.stdout.fileno(), sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # stdout or stderr is no file (captured in tests)
        fd = saved = None
    else:
        saved = os.dup(fd)
        os.dup2(err, fd)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stderr.flush()
        if saved is not None:
            os.dup2(saved, fd)
            os.close(saved)
