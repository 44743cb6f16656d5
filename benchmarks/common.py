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


def device_fact() -> str:
    """The GPU the run trained on, or that there was none."""
    import torch

    if not torch.cuda.is_available():
        return "none (CPU)"
    props = torch.cuda.get_device_properties(0)
    return f"{props.name}, {props.total_memory / 2**30:.0f} GiB, CUDA {torch.version.cuda}"


def add_speed_flags(parser) -> None:
    """The GPU-feature flags both training benchmarks take (benchmarks/gpu.sh turns them on)."""
    parser.add_argument(
        "--precision",
        choices=("auto", "no", "fp16", "bf16"),
        default="auto",
        help="kfnlp's training precision (auto: bf16/fp16 on a GPU, fp32 on CPU)",
    )
    parser.add_argument("--compile", action="store_true", help="kfnlp trains through torch.compile")
