"""Sweeps through the pipeline engine: the compiled IR's loop, its parallelism and the collection (parsed
strictly by kfp's protobufs), and a 3-trial cls sweep end to end through `kfnlp run --local` (real
kfp.local) whose choice is checked against the trials' own evaluations. (cls, not ner: on the embedded
WNUT-16 sample a tiny run scores F1 0 whatever the learning rate, which would make every choice a tie.)"""

from __future__ import annotations

import json

import pytest
import yaml
from google.protobuf import json_format

from kfnlp import catalog
from kfnlp.launch.cluster.compile import compile_pipeline
from kfnlp.storage import open_artifact, read_any_manifest
from kfnlp.sweep import FAILED_TRIAL_KIND, TRIAL_ENV
from tests.pipelines.test_compile import FULL_CONFIG, Compiled
from tests.support.cli import run_cli

RATES = [1e-4, 1e-3, 1e-2]
TINY_CLS = [
    "--set",
    "model=builtin:splade-tiny",
    "--set",
    "preprocess_cls.max_examples=300",
    "--set",
    "preprocess_cls.max_length=64",
    "--set",
    "train_cls.num_epochs=2",
    "--set",
    "train_cls.batch_size=16",
]
# a random draw of 3 from this grid (seed 1): learning rates 1e-4 and 1e-3, which train, and 1e-3 in a trial whose
# checkpoint directory cannot be made ("Not a directory"): a real failure at run time, standing in for an OOM
SWEEP_SET = [
    "--set",
    f"sweep.grid.learning_rate={json.dumps(RATES)}",
    "--set",
    'sweep.grid.checkpoint_dir=[null, "/dev/null/kfnlp"]',
    "--set",
    "sweep.method=random",
    "--set",
    "sweep.trials=3",
    "--set",
    "sweep.seed=1",
    "--set",
    "sweep.parallelism=2",
]


def _loop(compiled: Compiled):
    loops = [task for task in compiled.spec.root.dag.tasks.values() if task.HasField("parameter_iterator")]
    assert len(loops) == 1
    return loops[0], compiled.spec.components[loops[0].component_ref.name]


@pytest.mark.parametrize("name", sorted(catalog.PIPELINES))
def test_the_compiled_sweep_fans_out_collects_and_selects(name, tmp_path):
    entry = catalog.get(name)
    config = {**FULL_CONFIG, "sweep": {"grid": {"learning_rate": RATES}, "parallelism": 2}}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    out = tmp_path / f"{name}.yaml"
    compile_pipeline(name, out, str(path))
    compiled = Compiled(out)
    loop, body = _loop(compiled)
    train = entry.sweep.train.replace("_", "-")
    score = entry.sweep.evaluate.replace("_", "-")

    # the loop: one iteration per trial, at most `parallelism` at once, over the trials' values
    assert loop.iterator_policy.parallelism_limit == 2
    items = json.loads(loop.parameter_iterator.items.raw)
    assert [json.loads(item)["learning_rate"] for item in items] == RATES
    inner = {task.task_info.name: task for task in body.dag.tasks.values()}
    assert set(inner) == {f"{train}-trial", f"{score}-trial"}
    trial_input = inner[f"{train}-trial"].inputs.parameters["trial"]
    assert trial_input.component_input_parameter == loop.parameter_iterator.item_input
    for task in inner.values():  # both run in trial mode, in the configured image
        executor = compiled.executors[compiled.spec.components[task.component_ref.name].executor_label]
        env = {e.name: e.value for e in executor.container.env}
        assert env[TRIAL_ENV] == "1"
    trial_executor = compiled.executors[
        compiled.spec.components[inner[f"{train}-trial"].component_ref.name].executor_label
    ]
    assert trial_executor.container.resources.accelerator.resource_count == "2"  # the train profile's GPUs

    # the collection: select-best takes every trial's model and evaluation from the loop's outputs
    select_name = next(n for n, t in compiled.spec.root.dag.tasks.items() if t.task_info.name == "select-best")
    select = compiled.spec.root.dag.tasks[select_name]
    for name_in, producer, output in (("models", train, "model"), ("evaluations", score, "results")):
        spec = select.inputs.artifacts[name_in].task_output_artifact
        assert compiled.spec.root.dag.tasks[spec.producer_task] == loop
        (selector,) = body.dag.outputs.artifacts[spec.output_artifact_key].artifact_selectors
        assert body.dag.tasks[selector.producer_subtask] == inner[f"{producer}-trial"]
        assert selector.output_artifact_key == output
    selection = json.loads(select.inputs.parameters["selection"].runtime_value.constant.string_value)
    assert selection["metric"] == entry.sweep.default_metric
    assert [t["values"]["learning_rate"] for t in selection["trials"]] == RATES

    # only the chosen model goes on: the plain train stage is gone, the stages after read select-best's model
    assert train not in compiled.tasks
    consumers = [
        task.task_info.name
        for task in compiled.spec.root.dag.tasks.values()
        for artifact in task.inputs.artifacts.values()
        if artifact.task_output_artifact.producer_task == select_name
        and artifact.task_output_artifact.output_artifact_key == "model"
    ]
    assert consumers and all("trial" not in c for c in consumers)


def test_a_config_without_a_sweep_compiles_the_plain_pipeline(tmp_path):
    out = tmp_path / "ner.yaml"
    compile_pipeline("ner", out, None, image=f"registry.example.com/kfnlp@sha256:{'0' * 64}")
    compiled = Compiled(out)
    assert "train-ner" in compiled.tasks and "select-best" not in compiled.tasks
    assert not any(task.HasField("parameter_iterator") for task in compiled.spec.root.dag.tasks.values())
    json_format.MessageToDict(compiled.spec)


@pytest.fixture(scope="module")
def sweep_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep")
    home = tmp_path_factory.mktemp("home")
    result = run_cli(
        "run", "cls", "--local", "--output", str(out), *TINY_CLS, *SWEEP_SET, env={"KFNLP_HOME": str(home)}
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out, json.loads((out / "summary.json").read_text()), result


def _trial_scores(summary) -> dict[int, float | None]:
    """Each trial's accuracy on the validation split, read from its own evaluation artifact (None: failed)."""
    scores = {}
    for stage in summary["stages"]:
        if stage.get("trial") is None or not stage["name"].startswith("evaluate-cls-trial"):
            continue
        manifest = read_any_manifest(stage["outputs"]["results"])
        if manifest["kind"] == FAILED_TRIAL_KIND:
            scores[stage["trial"]] = None
            continue
        result = json.loads((open_artifact(stage["outputs"]["results"])[0] / "metrics.json").read_text())
        assert result["split"] == "validation"  # selection never looks at the test split
        scores[stage["trial"]] = result["metrics"]["accuracy"]
    return scores


def test_the_sweep_chooses_the_best_trial_by_its_own_validation_accuracy(sweep_run):
    out, summary, _ = sweep_run
    assert summary["status"] == "succeeded"
    sweep = summary["sweep"]
    trials = sweep["trials"]
    assert len(trials) == 3 and sweep["metric"] == "accuracy" and sweep["direction"] == "maximize"
    assert [t["values"]["learning_rate"] for t in trials] == [1e-4, 1e-3, 1e-3]
    scores = _trial_scores(summary)
    assert sorted(scores) == [0, 1, 2]
    succeeded = {i: s for i, s in scores.items() if s is not None}
    assert sorted(succeeded) == [0, 1], scores
    best = max(succeeded.values())
    chosen = [t for t in trials if t["selected"]]
    assert len(chosen) == 1 and chosen[0]["index"] == min(i for i, s in succeeded.items() if s == best)
    for trial in trials:
        expected = scores[trial["index"]]
        assert trial["metric"] == (None if expected is None else pytest.approx(expected, abs=1e-12))


def test_a_failed_trial_is_reported_and_the_sweep_goes_on(sweep_run):
    _, summary, _ = sweep_run
    failed = [t for t in summary["sweep"]["trials"] if t["status"] == "failed"]
    assert [t["index"] for t in failed] == [2] and failed[0]["values"]["checkpoint_dir"] == "/dev/null/kfnlp"
    assert "Not a directory" in failed[0]["error"]
    trial_stages = [s for s in summary["stages"] if s.get("trial") == 2]
    assert len(trial_stages) == 2 and {s["status"] for s in trial_stages} == {"trial failed"}


def test_only_the_chosen_model_is_evaluated_on_test_and_registered(sweep_run):
    out, summary, _ = sweep_run
    names = [s["name"] for s in summary["stages"]]
    assert names.count("evaluate-cls") == 1 and "train-cls" not in names
    assert sorted(n for n in names if n.startswith("train-cls-trial")) == [f"train-cls-trial[{i}]" for i in range(3)]
    final = json.loads((open_artifact(summary["artifacts"]["evaluations"]["cls"])[0] / "metrics.json").read_text())
    assert final["split"] == "test" and final["metrics"] == summary["metrics"]["cls"]
    registered = read_any_manifest(summary["artifacts"]["model"])
    chosen = next(t for t in summary["sweep"]["trials"] if t["selected"])
    assert registered["sweep"]["selected"] == chosen["index"]
    assert registered["training"]["config"]["learning_rate"] == pytest.approx(chosen["values"]["learning_rate"])
    assert str(summary["artifacts"]["registry"]["version"]) == "1"  # one version: the chosen model only
    assert summary["metrics"]["promotion"]["outcome"] == "promoted"


def test_the_run_report_shows_the_trials_and_the_plot(sweep_run):
    out, summary, _ = sweep_run
    report = (out / "report.md").read_text()
    assert "## Sweep" in report and "validation split" in report
    for trial in summary["sweep"]["trials"]:
        assert f"| {trial['index']} |" in report
    plot = next(line for line in report.splitlines() if line.startswith("![") and "sweep.svg" in line)
    path = out / plot[plot.index("(") + 1 : -1]
    assert path.is_file() and "<svg" in path.read_text()[:2000]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("sweep.grid.lr=[1e-4]", "sweep.grid.lr: train_cls has no key 'lr'"),
        ("sweep.grid.learning_rate=[]", "sweep.grid.learning_rate: the list is empty"),
        ("sweep.metric=bleu", "sweep.metric: 'bleu' is not a metric"),
        ("sweep.max_trials=2", "more than sweep.max_trials (2)"),
    ],
)
def test_a_bad_sweep_is_one_line_before_anything_runs(override, message, tmp_path):
    out = tmp_path / "out"
    grid = [] if override.startswith("sweep.grid") else ["--set", f"sweep.grid.learning_rate={json.dumps(RATES)}"]
    result = run_cli("run", "cls", "--local", "--output", str(out), *grid, "--set", override)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert not out.exists()
