"""The ``kfnlp`` command: the parser, one module per command group, and the one error line.

Each group module (``kfnlp.cli.run``, ``pipelines``, ``stage``, ``registry``, ``images``,
``cluster``, ``predict``, ``builtin``, ``report``, ``serve``, ``deploy``) adds its subcommands with ``add_parser`` and runs them; library modules
hold no argparse.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable

from kfnlp import __version__
from kfnlp.cli import builtin, cluster, deploy, images, pipelines, predict, registry, report, run, serve, stage
from kfnlp.cli.config_flags import EPILOG, add_config_flags
from kfnlp.config import bounded
from kfnlp.errors import KfnlpError

log = logging.getLogger("kfnlp")


MAX_ERROR_CHARACTERS = 2000  # the error line: long enough for any message kfnlp writes, bounded for echoed input
DEBUG_HELP = "show tracebacks and debug logs"


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose epilog may be a function, called only for --help.

    Every command's parser (argparse makes subparsers of the parent's class) takes the top-level
    ``--debug`` too, so it may follow the command (``kfnlp run mlm-adapt --debug``); its SUPPRESS
    default there keeps one given before the command."""

    def __init__(self, *args, subcommand: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        if subcommand:
            self.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)

    def format_help(self) -> str:
        if callable(self.epilog):
            self.epilog = self.epilog()
        return super().format_help()


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="kfnlp",
        description="Kubeflow pipeline components for NLP model adaptation.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        subcommand=False,
    )
    parser.add_argument("--version", action="version", version=f"kfnlp {__version__}")
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    run.add_parser(sub, add_config_flags)
    pipelines.add_parser(sub)
    stage.add_parser(sub, add_config_flags)
    registry.add_parser(sub, add_config_flags)
    images.add_parser(sub)
    cluster.add_parsers(sub, add_config_flags)
    predict.add_parser(sub)
    builtin.add_parser(sub)
    report.add_parser(sub)
    serve.add_parser(sub)
    deploy.add_parser(sub, add_config_flags)
    return parser


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "run": run.run,
    "pipelines": pipelines.run,
    "stage": stage.run,
    "registry": registry.run,
    "images": images.run,
    "compile": cluster.run_compile,
    "submit": cluster.run_submit,
    "upload": cluster.run_upload,
    "predict": predict.run,
    "builtin": builtin.run,
    "report": report.run,
    "serve": serve.run,
    "deploy": deploy.run,
}


class _Stderr(logging.StreamHandler):
    """A handler writing to whatever ``sys.stderr`` is when a record comes, not to the stream of the call that
    configured it: ``main()`` called again in one process (a test, a notebook) after stderr was swapped keeps
    working, and never writes to a closed stream."""

    def __init__(self, fmt: str):
        super().__init__()
        self.setFormatter(logging.Formatter(fmt))

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def _configure_logging(debug: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING, handlers=[_Stderr("%(levelname)s %(name)s: %(message)s")]
    )
    # one handler of ours on the kfnlp logger, however often main() runs in a process
    log.handlers[:] = [h for h in log.handlers if not isinstance(h, _Stderr)] + [_Stderr("%(message)s")]
    log.propagate = False
    log.setLevel(logging.DEBUG if debug else logging.INFO)
    if not debug:
        import warnings

        # it logs a traceback for each database error it then raises, which kfnlp reports in one line
        logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)

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
    """The one line a failed command prints on stderr (bounded: a message may echo huge input)."""
    print(f"kfnlp: error: {bounded(' '.join(message.split()), MAX_ERROR_CHARACTERS)}", file=sys.stderr)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
