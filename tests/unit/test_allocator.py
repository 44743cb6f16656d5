"""A stage process serves large blocks from a heap it keeps (kfnlp.launch.allocator), read back through
glibc's own accounting (``mallinfo2``) in a fresh process each."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(
    not (hasattr(os, "confstr") and (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc")),
    reason="the setting is glibc's",
)

SCRIPT = textwrap.dedent(
    """
    import ctypes, json, sys

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    libc.mallinfo2.restype = MallInfo2
    applied = None
    {setup}
    size = 100 * 2**20  # above glibc's largest mmap threshold (32 MiB)
    block = libc.malloc(size)
    ctypes.memset(block, 1, size)
    mapped = libc.mallinfo2().hblkhd  # bytes in blocks of their own mmap
    libc.free(block)
    kept = libc.mallinfo2().arena  # heap bytes still held after the free
    print(json.dumps({{"applied": applied, "mapped": mapped, "kept": kept, "size": size}}))
    """
)

APPLY = "from kfnlp.launch.allocator import keep_freed_memory; applied = keep_freed_memory()"
STAGE = textwrap.dedent(
    """
    import tempfile, types
    from kfnlp.launch.in_pod import stage_guard
    output = types.SimpleNamespace(path=tempfile.mkdtemp() + "/out", metadata={})
    with stage_guard("probe", output):
        pass
    """
)


def probe(setup: str, **env: str) -> dict:
    code = SCRIPT.format(setup=setup)
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env={**os.environ, **env}
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


def test_by_default_a_large_block_is_its_own_mapping_given_back_on_free():
    found = probe("")
    assert found["mapped"] >= found["size"]
    assert found["kept"] < found["size"]


def test_applied_a_large_block_comes_from_the_heap_and_stays_after_free():
    found = probe(APPLY)
    assert found["applied"] is True
    assert found["mapped"] < found["size"]
    assert found["kept"] >= found["size"]


def test_every_stage_body_runs_with_it():
    found = probe(STAGE)
    assert found["mapped"] < found["size"] and found["kept"] >= found["size"]


@pytest.mark.parametrize("value", ["0", "false", "off"])
def test_the_environment_opts_out(value):
    found = probe(APPLY, KFNLP_KEEP_FREED_MEMORY=value)
    assert found["applied"] is False
    assert found["mapped"] >= found["size"]
    found = probe(STAGE, KFNLP_KEEP_FREED_MEMORY=value)
    assert found["mapped"] >= found["size"]
