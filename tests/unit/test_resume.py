"""Which run `kfnlp run --local` continues, and what of an interrupted run it reuses (kfnlp.launch.resume)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kfnlp.errors import ConfigError
from kfnlp.launch.in_pod import ERROR_FILE
from kfnlp.launch.resume import (
    RunState,
    drop_checkpoints,
    interrupted,
    locked,
    new_run_name,
    prepare_rerun,
    read_state,
    run_named,
    write_state,
)
from kfnlp.storage import write_artifact

WANTED = RunState(run="", pipeline="mlm-adapt", runner="subprocess", storage=None)


def _last(tmp_path: Path, status: str, **changes) -> RunState:
    state = RunState(**{**vars(WANTED), "run": "mlm-adapt-1", "status": status, **changes})
    write_state(tmp_path, state)
    return read_state(tmp_path)


def test_an_interrupted_run_is_resumed_by_default_and_with_resume(tmp_path):
    for status in ("running", "failed"):
        last = _last(tmp_path, status)
        assert interrupted(tmp_path, last, WANTED, None).run == "mlm-adapt-1"
        assert interrupted(tmp_path, last, WANTED, True).run == "mlm-adapt-1"


def test_a_succeeded_run_or_none_starts_a_new_one(tmp_path):
    assert interrupted(tmp_path, None, WANTED, None) is None
    assert interrupted(tmp_path, _last(tmp_path, "succeeded"), WANTED, None) is None
    with pytest.raises(ConfigError, match="succeeded; nothing to resume"):
        interrupted(tmp_path, _last(tmp_path, "succeeded"), WANTED, True)
    with pytest.raises(ConfigError, match="holds no run to resume"):
        interrupted(tmp_path, None, WANTED, True)


def test_fresh_never_resumes(tmp_path):
    assert interrupted(tmp_path, _last(tmp_path, "running"), WANTED, False) is None


def test_an_interrupted_run_of_other_settings_is_not_silently_abandoned(tmp_path):
    last = _last(tmp_path, "running", storage="s3://bucket/prefix")
    with pytest.raises(ConfigError, match="interrupted mlm-adapt run .*storage s3://bucket/prefix.*--fresh"):
        interrupted(tmp_path, last, WANTED, None)


def test_one_run_at_a_time_per_output(tmp_path):
    with locked(tmp_path), pytest.raises(ConfigError, match="another kfnlp run is using"), locked(tmp_path):
        pass
    with locked(tmp_path):  # released
        pass


def test_kfp_local_names_the_run_directory_as_told_then_as_before():
    from kfp.local import executor_input_utils

    with run_named("mlm-adapt-fixed"):
        assert executor_input_utils.get_local_pipeline_resource_name("mlm-adapt") == "mlm-adapt-fixed"
    assert new_run_name("mlm-adapt").startswith("mlm-adapt-20")


def _entry(cache: Path, name: str, **uris: str) -> Path:
    cache.mkdir(parents=True, exist_ok=True)
    outputs = {k: {"__kfp_artifact__": True, "uri": v, "metadata": {}} for k, v in uris.items()}
    path = cache / f"{name}.json"
    path.write_text(json.dumps(outputs))
    return path


def test_rerun_keeps_complete_stages_and_clears_the_rest(tmp_path):
    run, cache = tmp_path / "artifacts" / "run-1", tmp_path / "cache"
    with write_artifact(str(run / "preprocess" / "dataset"), "dataset") as out:
        (out.path / "data.txt").write_text("x")
    (run / "evaluate").mkdir(parents=True)
    (run / "evaluate" / "report").write_text("# report")
    (run / "evaluate" / "results").mkdir()  # no manifest: the stage was killed while writing it
    (run / "train-mlm" / "model-checkpoints").mkdir(parents=True)
    for task in ("preprocess", "evaluate", "train-mlm"):
        (run / task / "executor_output.json").write_text("{}")
    (run / "train-mlm" / ERROR_FILE).write_text("{}")
    kept = _entry(cache, "a", dataset=str(run / "preprocess" / "dataset"))
    dropped = _entry(cache, "b", report=str(run / "evaluate" / "report"), results=str(run / "evaluate" / "results"))
    prepare_rerun(run, cache)
    assert kept.is_file() and not dropped.exists()
    assert (run / "preprocess" / "executor_output.json").is_file()
    for task in ("evaluate", "train-mlm"):
        assert not (run / task / "executor_output.json").exists() and not (run / task / ERROR_FILE).exists()
    assert (run / "train-mlm" / "model-checkpoints").is_dir()  # training resumes from them


def test_drop_checkpoints_removes_the_stage_checkpoint_stores_only(tmp_path):
    (tmp_path / "train-mlm" / "model-checkpoints" / "key" / "step-000000005").mkdir(parents=True)
    (tmp_path / "train-mlm" / "model").mkdir()
    assert drop_checkpoints(tmp_path) == [tmp_path / "train-mlm" / "model-checkpoints"]
    assert not (tmp_path / "train-mlm" / "model-checkpoints").exists() and (tmp_path / "train-mlm" / "model").is_dir()
