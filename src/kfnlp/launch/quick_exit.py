"""A stage process ends as soon as KFP's executor has written its outputs, skipping the interpreter's teardown.

Freeing torch, transformers, datasets or MLflow module by module at exit takes one to a few seconds
per stage process (on 2 cores, longer than the work of mask-eval, register or promote). Once a stage
has succeeded and the executor has written its output file, nothing is left to do, so an exit
handler ends the process with ``os._exit(0)``.

Only in KFP's executor process (``python -m kfp.dsl.executor_main``: kfp.local's subprocesses,
containers, cluster pods), and only after the stage body succeeded. The handler is registered
when the stage starts, so the handlers registered while it ran (it runs after them) still run,
and the one registered before it (``logging.shutdown``) is called here; an uncaught exception
afterwards (which sets ``sys.last_value`` before the exit handlers run) keeps its exit status.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import sys

EXECUTOR_MAIN = "kfp.dsl.executor_main"

_succeeded = False


def _in_executor() -> bool:
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    return getattr(spec, "name", None) == EXECUTOR_MAIN


def _exit_now() -> None:
    if not _succeeded or hasattr(sys, "last_value"):
        return
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed or broken pipe: nothing more to say
            stream.flush()
    os._exit(0)


def prepare() -> None:
    """Call when a stage starts: in the executor process, end it quickly once :func:`succeeded` was called."""
    if _in_executor():
        atexit.unregister(_exit_now)
        atexit.register(_exit_now)


def succeeded() -> None:
    """The stage body finished without error: the process may end without teardown."""
    global _succeeded
    _succeeded = True
