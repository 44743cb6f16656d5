"""`kfnlp run --local` killed during train-mlm, then run again into the same output: the
interrupted run is resumed (real kfp.local, real SIGKILL, tiny sizes)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kfnlp.launch.log_routing import ANSI
from kfnlp.storage import MANIFEST
from tests.pipelines.test_pipeline_local import TINY
from tests.support.cli import run_cli

RESUMABLE = [*TINY, "--set", "train_mlm.save_steps=5"]  # 40 steps: a checkpoint every 5


def _checkpoints(out: Path) -> list[Path]:
    return sorted(out.glob(f"artifacts/*/train-mlm/model-checkpoints/*/step-*/{MANIFEST}"))


def _step(manifest: Path) -> int:
    return int(manifest.parent.name.removeprefix("step-"))


@pytest.fixture(scope="module")
def killed_then_rerun(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    env = {**os.environ, "KFNLP_HOME": str(tmp_path_factory.mktemp("home"))}
    cmd = [sys.executable, "-m", "kfnlp", "run", "mlm-adapt", "--local", "--output", str(out), *RESUMABLE]
    with open(out.parent / "killed.log", "w") as log:
        # its own process group: the kill takes kfnlp run and the stage it is running, as a crash would
        process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            deadline = time.monotonic() + 900
            while not _checkpoints(out):
                assert process.poll() is None, (out.parent / "killed.log").read_text()[-3000:]
                assert time.monotonic() < deadline, "no checkpoint within 900 s"
                time.sleep(0.1)
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(60)
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
    killed_at = max(map(_step, _checkpoints(out)))
    runs = sorted(p.name for p in (out / "artifacts").iterdir())
    completed = {p.parent.name for p in out.glob("artifacts/*/*/executor_output.json")}
    state = json.loads((out / "run.json").read_text())
    result = run_cli("run", "mlm-adapt", "--local", "--output", str(out), *RESUMABLE, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out, killed_at, runs, state, completed, result


def test_the_killed_run_is_recorded_as_running_with_a_checkpoint(killed_then_rerun):
    _, killed_at, runs, state, _, _ = killed_then_rerun
    assert len(runs) == 1 and state["run"] == runs[0] and state["status"] == "running"
    assert 5 <= killed_at < 40


def test_the_rerun_continues_the_same_run(killed_then_rerun):
    out, _, runs, _, _, result = killed_then_rerun
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "succeeded" and summary["resumed"] is True
    assert summary["run"] == runs[0]
    assert sorted(p.name for p in (out / "artifacts").iterdir()) == runs  # no second run directory
    assert json.loads((out / "run.json").read_text())["status"] == "succeeded"
    assert f"resuming the interrupted run {runs[0]}" in result.stdout


def test_completed_stages_are_reused_not_rerun(killed_then_rerun):
    out, _, _, _, completed, result = killed_then_rerun
    stages = json.loads((out / "summary.json").read_text())["stages"]
    assert all(s["status"] == "succeeded" for s in stages)
    assert {"preprocess", "mask-eval"} <= completed and "train-mlm" not in completed
    reused = [s for s in stages if s.get("reused")]
    assert {s["task"] for s in reused} == completed
    line = next(line for line in result.stdout.splitlines() if line.startswith("reused:"))
    assert all(s["name"] in line for s in reused)
    log = ANSI.sub("", (out / "pipeline.log").read_text())
    rerun = log[log.rindex("Running pipeline") :]  # the rerun appends to the killed run's log
    for task in completed:
        assert f"Executing task '{task}'" not in rerun, task
    assert "Executing task 'train-mlm'" in rerun


def test_training_resumes_from_the_checkpoint(killed_then_rerun):
    out, killed_at, _, _, _, _ = killed_then_rerun
    summary = json.loads((out / "summary.json").read_text())
    training = summary["metrics"]["training"]["train-mlm"]
    assert training["resumed_from_step"] == killed_at
    assert training["global_step"] == 40
    assert summary["metrics"]["perplexity_after"] < summary["metrics"]["perplexity_before"]


def test_no_checkpoints_remain_after_success(killed_then_rerun):
    out, _, _, _, _, _ = killed_then_rerun
    assert not list(out.rglob("step-*")) and not list(out.glob("artifacts/*/*/*-checkpoints"))
    assert not list(out.glob(".kfp-cache/*"))  # a succeeded run is never resumed: its task cache goes too
