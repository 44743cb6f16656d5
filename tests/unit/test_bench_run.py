"""The end-to-end benchmark reads each stage's task time from kfp.local's log as kfp.local writes it."""

from __future__ import annotations

import sys

from tests.support.cli import REPO

sys.path.insert(0, str(REPO / "benchmarks"))  # the scripts import their helpers as `common`

import bench_run  # noqa: E402

LOG = """\
23:59:58.500 - INFO - Running pipeline: \x1b[95m'mlm-adapt'\x1b[0m
23:59:58.600 - INFO - Executing task \x1b[96m'preprocess'\x1b[0m
    kfnlp | preprocess: train: 3600 documents -> 8693 chunks of 128
00:00:01.100 - INFO - Task \x1b[96m'preprocess'\x1b[0m finished with status \x1b[92mSUCCESS\x1b[0m
00:00:01.101 - INFO - Task \x1b[96m'preprocess'\x1b[0m outputs:
00:00:01.200 - INFO - Executing task \x1b[96m'evaluate-2'\x1b[0m
00:00:03.700 - INFO - Task \x1b[96m'evaluate-2'\x1b[0m finished with status \x1b[91mFAILURE\x1b[0m
"""


def test_task_seconds_from_the_pipeline_log_across_midnight(tmp_path):
    log = tmp_path / "pipeline.log"
    log.write_text(LOG, encoding="utf-8")
    seconds = bench_run.task_seconds(log)
    assert seconds.keys() == {"preprocess", "evaluate-2"}
    assert abs(seconds["preprocess"] - 2.5) < 1e-6
    assert abs(seconds["evaluate-2"] - 2.5) < 1e-6


def test_each_kfnlp_side_is_compared_with_each_recipe_side():
    times = {"kfnlp": [10.0, 20.0, 12.0], "recipe": [30.0, 50.0, 48.0], "recipe + allocator": [20.0, 30.0, 24.0]}
    run = {"stages": {"preprocess": 1.0}, "tasks": {"preprocess": 1.5}}
    parts = {"parts_s": {"imports": 5.0, "train": 20.0}}
    results = {"kfnlp": [run] * 3, "recipe": [parts] * 3, "recipe + allocator": [parts] * 3}
    text = bench_run.markdown(times, results, {"model": "m"})
    assert "| kfnlp | recipe | 4.00× | 2.50–4.00× |" in text  # 48 / 12; per round 3.0, 2.5, 4.0
    assert "| kfnlp | recipe + allocator | 2.00× | 1.50–2.00× |" in text  # 24 / 12
    assert "| recipe part, wall s (median) | recipe | recipe + allocator |" in text
    assert "| preprocess | 1.5 / 1.0 |" in text
