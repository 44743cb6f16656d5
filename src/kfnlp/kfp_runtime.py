"""What runs inside a KFP component around a stage call.

``stage_guard`` times the stage, records the time on the output artifact's metadata,
and turns a :class:`KfnlpError` into one clear log line, an error file next to the
outputs (which ``kfnlp run`` reads to say why a stage failed) and a non-zero exit.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from kfnlp.errors import KfnlpError

ERROR_FILE = "kfnlp-error.json"
STATUS_KEY = "kfnlp_stage"


def configure_logging() -> None:
    root = logging.getLogger("kfnlp")
    if not any(getattr(h, "_kfnlp", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        # kfnlp run sets a prefix so that it can pick kfnlp's lines out of the task log
        handler.setFormatter(logging.Formatter(os.environ.get("KFNLP_LOG_PREFIX", "") + "%(message)s"))
        handler._kfnlp = True  # type: ignore[attr-defined]
        root.addHandler(handler)
        root.propagate = False
    root.setLevel(logging.INFO)


@contextlib.contextmanager
def stage_guard(stage: str, output) -> Iterator[None]:
    """Run a stage body for ``output`` (a KFP output artifact)."""
    configure_logging()
    started = time.time()
    task_dir = Path(output.path).parent
    try:
        yield
    except KfnlpError as exc:
        task_dir.mkdir(parents=True, exist_ok=True)
        (task_dir / ERROR_FILE).write_text(
            json.dumps({"stage": stage, "error": str(exc), "type": type(exc).__name__}), encoding="utf-8"
        )
        logging.getLogger("kfnlp").error("kfnlp %s: error: %s", stage, exc)
        raise SystemExit(exc.exit_code) from None
    output.metadata[STATUS_KEY] = {"stage": stage, "started": started, "wall_time_s": round(time.time() - started, 3)}


def log_metrics(metrics_artifact, values: dict) -> None:
    for key, value in values.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            metrics_artifact.log_metric(key, float(value))
