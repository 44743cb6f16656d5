"""Helpers every benchmark script uses (the scripts run as ``python benchmarks/NAME.py``, which puts
this directory on ``sys.path``)."""

from __future__ import annotations

import sys
import time


def log(message: str) -> None:
    """Progress to stderr; the results table goes to stdout."""
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def timed(fn, *args, **kwargs):
    """(result, seconds) of one call."""
    started = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - started
