"""A stage process keeps the memory it frees for its next allocation instead of handing it back to the OS.

glibc's malloc serves an allocation above 32 MiB with a fresh ``mmap`` and unmaps it on ``free``.
A training step allocates and frees tensors that large every step (the MLM head's logits and their
gradients: 608 x 30,522 floats, 74 MB, several times a step for a BERT vocabulary), so every step
faults in tens of thousands of new pages and zeroes them. Measured on 2 CPU cores with
``builtin:splade-tiny`` (batch 32, sparse head): 0.46-0.56 s a step as allocated by default,
0.31-0.34 s with the setting below. PyTorch's CPU tuning guide reaches the same end by preloading
jemalloc or tcmalloc; ``mallopt`` does it in the process, with no extra library in the image.

``M_MMAP_MAX=0`` serves large blocks from the heap and a high ``M_TRIM_THRESHOLD`` keeps freed heap
memory mapped, so the process holds its peak until it exits: right for a stage process, which ends
after its one job, not for a long-lived server (``kfnlp serve`` does not call this). Set
``KFNLP_KEEP_FREED_MEMORY=0`` to opt out. Elsewhere than glibc (musl, macOS) nothing changes.
"""

from __future__ import annotations

import ctypes
import logging
import os

OPT_OUT_ENV = "KFNLP_KEEP_FREED_MEMORY"
M_TRIM_THRESHOLD = -1  # glibc's <malloc.h> parameter numbers
M_MMAP_MAX = -4
_TRIM_NEVER = 2**31 - 1  # mallopt takes an int

log = logging.getLogger(__name__)


def keep_freed_memory() -> bool:
    """Tune glibc malloc for a stage process (see the module docstring); True when applied."""
    if os.environ.get(OPT_OUT_ENV, "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    try:
        libc_version = os.confstr("CS_GNU_LIBC_VERSION")  # "glibc 2.36"; absent elsewhere
    except (AttributeError, ValueError, OSError):
        libc_version = None
    if not libc_version or not libc_version.startswith("glibc"):
        return False
    mallopt = ctypes.CDLL(None).mallopt
    applied = bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, _TRIM_NEVER))
    if not applied:
        log.debug("mallopt refused the stage allocator settings; keeping glibc's defaults")
    return applied
