"""A stage process ends without teardown only after success, and only in KFP's executor process."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import importlib.machinery, sys
    if {executor}:
        sys.modules["__main__"].__spec__ = importlib.machinery.ModuleSpec("kfp.dsl.executor_main", None)
    from kfnlp.launch import quick_exit
    import atexit
    atexit.register(lambda: print("teardown handler ran", flush=True))  # registered before the stage: skipped
    quick_exit.prepare()
    atexit.register(lambda: print("stage handler ran", flush=True))  # registered while the stage ran: runs
    if {succeeded}:
        quick_exit.succeeded()
    print("output", end="")  # unflushed: the quick exit flushes it
    {after}
    """
)


def run(executor: bool, succeeded: bool, after: str = "") -> subprocess.CompletedProcess:
    code = SCRIPT.format(executor=executor, succeeded=succeeded, after=after)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)


def test_after_success_the_executor_exits_at_once_with_its_output_flushed():
    result = run(executor=True, succeeded=True)
    assert result.returncode == 0
    assert "output" in result.stdout and "stage handler ran" in result.stdout
    assert "teardown handler ran" not in result.stdout


@pytest.mark.parametrize(
    ("succeeded", "after", "code"),
    [(True, "raise RuntimeError('after the stage')", 1), (False, "raise SystemExit(3)", 3)],
)
def test_a_failure_keeps_its_exit_status(succeeded, after, code):
    result = run(executor=True, succeeded=succeeded, after=after)
    assert result.returncode == code
    assert "teardown handler ran" in result.stdout


def test_other_processes_exit_normally():
    result = run(executor=False, succeeded=True)
    assert result.returncode == 0
    assert "teardown handler ran" in result.stdout
