"""Sweeps: a config's sweep: block expands into its trials in a fixed order, every bad block is refused in
one line naming the sweep key (and the file's line) before anything runs, and a trial's values reach
the train config."""

from __future__ import annotations

import dataclasses
import itertools
import json
from typing import get_type_hints

import pytest

from kfnlp import catalog
from kfnlp.catalog import load_config, load_config_and_cluster, pipeline_arguments
from kfnlp.config import build, to_dict, yaml_key_line
from kfnlp.errors import ConfigError
from kfnlp.stages import evaluate_cls, evaluate_ner
from kfnlp.stages.evaluate_cls import cls_scores
from kfnlp.stages.evaluate_ner import entity_results, tag_results
from kfnlp.stages.train_ner import TrainNerConfig
from kfnlp.sweep import SweepConfig, SweepPlan, SweepTarget, Trial, merged, plan

NER = catalog.get("ner")


def ner_plan(*overrides: str) -> SweepPlan | None:
    return NER.sweep_plan(load_config(NER, None, overrides))


def refused(entry: catalog.PipelineEntry, *overrides: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config(entry, None, overrides)
    assert "\n" not in str(info.value)
    return info.value


# ---- expansion ---------------------------------------------------------------------------


def test_no_grid_no_sweep():
    assert not SweepConfig().enabled
    for entry in catalog.PIPELINES.values():
        assert entry.sweep_plan(load_config(entry)) is None


def test_grid_runs_every_combination_keys_sorted_last_fastest():
    sweep = ner_plan("sweep.grid.num_epochs=[2, 3]", "sweep.grid.learning_rate=[1e-4,3e-4,1e-3]")
    expected = [
        {"learning_rate": lr, "num_epochs": epochs} for lr, epochs in itertools.product([1e-4, 3e-4, 1e-3], [2.0, 3.0])
    ]
    assert [t.values for t in sweep.trials] == expected
    assert [t.index for t in sweep.trials] == list(range(6))
    assert sweep.items() == [json.dumps(v, sort_keys=True) for v in expected]
    assert sweep.trials[1].label == "learning_rate=0.0001, num_epochs=3.0"
    assert (sweep.metric, sweep.direction, sweep.parallelism) == ("f1", "maximize", 2)
    assert json.loads(sweep.selection()) == {
        "stage": "train_ner",
        "metric": "f1",
        "direction": "maximize",
        "keys": ["learning_rate", "num_epochs"],
        "trials": [{"index": i, "values": v} for i, v in enumerate(expected)],
    }


def test_the_same_sweep_in_another_key_order_gives_the_same_trials():
    first = ner_plan("sweep.grid.seed=[1,2]", "sweep.grid.learning_rate=[1e-4,3e-4]")
    second = ner_plan("sweep.grid.learning_rate=[1e-4,3e-4]", "sweep.grid.seed=[1,2]")
    assert first.items() == second.items() and first.selection() == second.selection()


def test_values_are_the_train_configs_own_types():
    # JSON first: 1e-4 is a number (YAML 1.1 would read a string); unquoted words come through YAML
    sweep = ner_plan("sweep.grid.learning_rate=[1e-4]", "sweep.grid.optim=[adamw_torch, adamw_torch_fused]")
    assert [t.values for t in sweep.trials] == [
        {"learning_rate": 0.0001, "optim": "adamw_torch"},
        {"learning_rate": 0.0001, "optim": "adamw_torch_fused"},
    ]
    one = ner_plan("sweep.grid.seed=7")  # one --set value is a list of one, as for any list key
    assert [t.values for t in one.trials] == [{"seed": 7}]


def test_random_draws_distinct_combinations_seeded_in_grid_order():
    grid = ("sweep.grid.learning_rate=[1e-5,2e-5,3e-5,4e-5]", "sweep.grid.seed=[1,2,3,4]")
    full = [t.values for t in ner_plan(*grid).trials]

    def drawn(seed: int) -> list[dict]:
        sweep = ner_plan(*grid, "sweep.method=random", "sweep.trials=5", f"sweep.seed={seed}")
        assert [t.index for t in sweep.trials] == list(range(5))
        return [t.values for t in sweep.trials]

    first = drawn(0)
    assert len(first) == 5 and all(v in full for v in first)
    assert len({json.dumps(v, sort_keys=True) for v in first}) == 5  # distinct
    assert sorted(full.index(v) for v in first) == [full.index(v) for v in first]  # in grid order
    assert drawn(0) == first  # reproducible
    assert drawn(1) != first  # the seed matters
    assert len(drawn(2)) == 5


def test_random_may_draw_the_whole_grid():
    sweep = ner_plan("sweep.grid.seed=[1,2,3]", "sweep.method=random", "sweep.trials=3")
    assert [t.values["seed"] for t in sweep.trials] == [1, 2, 3]


@pytest.mark.parametrize(
    ("pipeline", "split", "metric", "direction"),
    [
        ("mlm-adapt", None, "perplexity", "minimize"),
        ("ner", "validation", "f1", "maximize"),
        ("adapt-then-ner", None, "perplexity", "minimize"),
        ("cls", "validation", "accuracy", "maximize"),
        ("adapt-then-cls", None, "perplexity", "minimize"),
        ("clm-adapt", None, "perplexity", "minimize"),
    ],
)
def test_each_pipeline_sweeps_its_train_stage_scored_off_the_test_split(pipeline, split, metric, direction):
    entry = catalog.get(pipeline)
    config = load_config(entry, None, ["sweep.grid.seed=[1,2]"])
    sweep = entry.sweep_plan(config)
    target = entry.sweep
    assert (target.split, sweep.metric, sweep.direction) == (split, metric, direction)
    assert sweep.target is target and [t.values for t in sweep.trials] == [{"seed": 1}, {"seed": 2}]
    scoring = json.loads(sweep.evaluate_json)
    section = to_dict(getattr(config, target.evaluate))
    assert scoring == ({**section, "split": split} if split else section)
    assert list(json.loads(sweep.evaluate_json)) == sorted(scoring)
    assert build(type(getattr(config, target.evaluate)), scoring, target.evaluate)  # a config the stage takes
    if split is None and "split" in section:
        assert section["split"] == "test"  # clm-adapt: scored on the first max_chunks of the held-out text


def test_metric_and_direction_can_be_chosen():
    sweep = ner_plan("sweep.grid.seed=[1,2]", "sweep.metric=strict_f1")
    assert (sweep.metric, sweep.direction) == ("strict_f1", "maximize")
    sweep = ner_plan(
        "sweep.grid.seed=[1,2]", "sweep.metric=accuracy", "sweep.direction=minimize", "sweep.parallelism=3"
    )
    assert (sweep.metric, sweep.direction, sweep.parallelism) == ("accuracy", "minimize", 3)


# ---- bad input: one line, naming the key, before anything runs ---------------------------


@pytest.mark.parametrize(
    ("overrides", "key", "message"),
    [
        (
            ["sweep.grid.learnin_rate=[1e-4]"],
            "sweep.grid.learnin_rate",
            "train_ner has no key 'learnin_rate'; its keys: ",
        ),
        (["sweep.grid.learning_rate=[]"], "sweep.grid.learning_rate", "the list is empty"),
        (["sweep.grid.learning_rate=[1e-4, fast]"], "sweep.grid.learning_rate[1]", "expected a number, got 'fast'"),
        (["sweep.grid.learning_rate=[1e-4, -1]"], "sweep.grid.learning_rate[1]", "learning_rate must be > 0, got -1.0"),
        (["sweep.grid.seed=[1, -2]"], "sweep.grid.seed[1]", "expected an integer from 0 to 2**32 - 1"),
        (
            ["sweep.grid.learning_rate=[1e-4, 0.0001]"],
            "sweep.grid.learning_rate[1]",
            "0.0001 is given twice (also item 0)",
        ),
        (
            ["sweep.grid.eval_strategy=[epoch, steps]"],
            "sweep.grid.eval_strategy[1]",
            "eval_strategy steps needs eval_steps",
        ),
        (["sweep.grid=[1e-4]"], "sweep.grid", "expected a mapping of string keys to lists, got '[1e-4]'"),
        (
            ["sweep.grid.seed=[1,2,3,4,5]", "sweep.grid.learning_rate=[1,2,3,4]"],
            "sweep.grid",
            "4 x 5 = 20 trials, more than sweep.max_trials (16)",
        ),
        (["sweep.grid.seed=[1,2]", "sweep.max_trials=1"], "sweep.grid", "2 = 2 trials, more than sweep.max_trials (1)"),
        (["sweep.grid.seed=[1,2]", "sweep.method=random"], "sweep.trials", "method random needs how many"),
        (["sweep.grid.seed=[1,2]", "sweep.trials=2"], "sweep.trials", "only for method random"),
        (
            ["sweep.grid.seed=[1,2,3]", "sweep.method=random", "sweep.trials=4"],
            "sweep.trials",
            "4 distinct combinations asked, the grid has 3",
        ),
        (
            ["sweep.grid.seed=[1,2,3]", "sweep.method=random", "sweep.trials=3", "sweep.max_trials=2"],
            "sweep.trials",
            "3 trials, more than sweep.max_trials (2)",
        ),
        (["sweep.grid.seed=[1,2]", "sweep.metric=bleu"], "sweep.metric", "'bleu' is not a metric the evaluate_ner"),
        (["sweep.grid.seed=[1,2]", "sweep.parallelism=0"], "sweep.parallelism", "expected an integer >= 1, got 0"),
        (["sweep.grid.seed=[1,2]", "sweep.direction=up"], "sweep.direction", "expected one of 'auto', 'maximize'"),
        (["sweep.grid.seed=[1,2]", "sweep.method=bayes"], "sweep.method", "expected one of 'grid', 'random'"),
    ],
)
def test_a_bad_sweep_is_one_line_naming_the_key(overrides, key, message):
    exc = refused(NER, *overrides)
    assert str(exc).startswith(f"{key}: ") and message in str(exc), str(exc)
    assert exc.key == key


def test_metric_error_lists_what_the_evaluate_stage_writes():
    message = str(refused(catalog.get("cls"), "sweep.grid.seed=[1]", "sweep.metric=f1"))
    assert message.endswith("one of " + ", ".join(evaluate_cls.METRICS))


def test_a_combination_the_train_config_refuses_names_the_trial():
    # each value alone is fine beside the other key's defaults; one pair together is not
    exc = refused(NER, "train_ner.max_steps=5", "sweep.grid.num_epochs=[0, 1]", "sweep.grid.max_steps=[-1, 5]")
    assert str(exc) == "sweep.grid: trial 0 (max_steps=-1, num_epochs=0.0): set num_epochs > 0 or max_steps > 0"
    assert exc.key == "sweep.grid"
    # a value refused beside the defaults may pass beside another key's values
    sweep = ner_plan("sweep.grid.max_steps=[1, 2]", "sweep.grid.num_epochs=[0, 1]")
    assert [t.values["num_epochs"] for t in sweep.trials] == [0.0, 1.0, 0.0, 1.0]


def test_every_loader_refuses_a_bad_sweep():
    with pytest.raises(ConfigError, match=r"^sweep\.grid\.nope: "):
        load_config_and_cluster(NER, lambda cluster: cluster, None, ["sweep.grid.nope=[1]"])


def test_a_bad_sweep_in_a_config_file_is_blamed_on_its_line(tmp_path):
    path = tmp_path / "sweep.yaml"
    path.write_text(
        "train_ner:\n  num_epochs: 1\nsweep:\n  grid:\n    learning_rate: [1.0e-4, 3.0e-4]\n    seed:\n      - 1\n      - -2\n"
    )
    with pytest.raises(ConfigError) as info:
        load_config(NER, str(path))
    assert str(info.value).startswith(f"{path}:8: sweep.grid.seed[1]: expected an integer from 0")
    path.write_text("sweep:\n  metric: f1\n  grid:\n    learning_rate: 1.0e-4\n")
    with pytest.raises(ConfigError) as info:
        load_config(NER, str(path))
    assert str(info.value) == f"{path}:4: sweep.grid.learning_rate: expected a list, got 0.0001"
    path.write_text("sweep:\n  metric: bleu\n  grid:\n    seed: [1, 2]\n")
    with pytest.raises(ConfigError, match=rf"^{path}:2: sweep\.metric: 'bleu' is not a metric"):
        load_config(NER, str(path))


def test_a_config_file_grid_works(tmp_path):
    path = tmp_path / "sweep.yaml"
    path.write_text("sweep: {grid: {learning_rate: [1.0e-4, 3.0e-4]}, parallelism: 1}\n")
    config = load_config(NER, str(path), ["sweep.grid.seed=[1,2]"])
    assert config.sweep.grid == {"learning_rate": [1e-4, 3e-4], "seed": [1, 2]}
    assert [t.values for t in NER.sweep_plan(config).trials] == [
        {"learning_rate": lr, "seed": seed} for lr, seed in itertools.product([1e-4, 3e-4], [1, 2])
    ]


def test_a_pipeline_without_a_target_refuses_a_sweep_and_runs_without_one():
    config = load_config(NER)
    assert plan(config, None) is None
    config = dataclasses.replace(config, sweep=SweepConfig(grid={"seed": [1]}))
    with pytest.raises(ConfigError, match=r"^sweep\.grid: this pipeline has no train stage to sweep"):
        plan(config, None)


def test_a_sweep_config_built_in_code_is_checked_too():
    config = dataclasses.replace(load_config(NER), sweep=SweepConfig(grid={"seed": 3}))
    with pytest.raises(ConfigError, match=r"^sweep\.grid\.seed: expected a list of values to try, got 3$"):
        NER.sweep_plan(config)
    with pytest.raises(ValueError, match="parallelism"):
        SweepConfig(parallelism=0)


def test_grid_yaml_keys_and_list_items_are_found(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("sweep:\n  grid:\n    seed:\n      - 1\n      - 2\n    lr: [1, 2]\n")
    assert yaml_key_line(path, "sweep.grid.seed[1]") == 5
    assert yaml_key_line(path, "sweep.grid.seed[9]") == 3  # no such item: the list's key
    assert yaml_key_line(path, "sweep.grid.lr[1]") == 6


# ---- the config types a sweep needs ----------------------------------------------------


@dataclasses.dataclass
class Typed:
    table: dict[str, int] = dataclasses.field(default_factory=dict)
    anything: list = dataclasses.field(default_factory=list)


def test_mapping_and_bare_list_coercion():
    built = build(Typed, {"table": {"a": "1", "b": 2.0}, "anything": ["x", 1, [2], None]})
    assert built == Typed({"a": 1, "b": 2}, ["x", 1, [2], None])
    assert build(Typed, {"table": '{"a": 1}', "anything": "[1e-4, 2]"}) == Typed({"a": 1}, [0.0001, 2])
    assert build(Typed, {"anything": "[1e-4, b]"}).anything == ["1e-4", "b"]  # not JSON: YAML 1.1 reads
    assert build(Typed, {"table": "{a: 1}", "anything": "x"}) == Typed({"a": 1}, ["x"])
    for data, message in [
        ({"table": {"a": "one"}}, "table.a: expected an integer, got 'one'"),
        ({"table": {1: 2}}, "table: expected string keys, got 1 (quote it)"),
        ({"table": [1]}, "table: expected a mapping of string keys to integers, got [1]"),
        ({"table": "{a: [}"}, "table: expected a mapping like {a: 1}, got '{a: [}'"),
        ({"anything": 3}, "anything: expected a list, got 3"),
        ({"anything": "[a, [b]"}, "anything: expected a list like [a, b], got '[a, [b]'"),
    ]:
        with pytest.raises(ConfigError) as info:
            build(Typed, data)
        assert str(info.value).startswith(message), str(info.value)


# ---- a trial's train config ---------------------------------------------------------------


def test_merged_applies_a_trials_values():
    base = TrainNerConfig(num_epochs=1)
    sweep = ner_plan("sweep.grid.learning_rate=[1e-4,3e-4]", "sweep.grid.seed=[1,2]")
    trained = merged(base, sweep.items()[3], "train_ner")
    assert trained == dataclasses.replace(base, learning_rate=3e-4, seed=2)
    assert merged(base, "", "train_ner") is base
    with pytest.raises(ConfigError, match=r"^train_ner: the sweep trial is not valid JSON"):
        merged(base, "{learning", "train_ner")
    with pytest.raises(ConfigError, match=r"^train_ner: the sweep trial is not a mapping"):
        merged(base, "[1]", "train_ner")
    with pytest.raises(ConfigError, match=r"^unknown config key train_ner\.nope"):
        merged(base, '{"nope": 1}', "train_ner")


def test_trial_label_and_target_checks():
    assert Trial(0, {"optim": "adamw_torch", "max_steps": 5, "save_minutes": None}).label == (
        "optim=adamw_torch, max_steps=5, save_minutes=null"
    )
    with pytest.raises(ValueError):
        SweepTarget("train_ner", "evaluate_ner", {"f1": "maximize"}, "accuracy", "validation")
    with pytest.raises(ValueError):
        SweepTarget("train_ner", "evaluate_ner", {"f1": "higher"}, "f1", "validation")


# ---- the catalog: sweep is the last section, never a pipeline parameter --------------------


def test_sweep_is_every_pipeline_configs_last_section_and_no_parameter():
    for entry in catalog.PIPELINES.values():
        fields = dataclasses.fields(entry.config_type)
        assert fields[-1].name == "sweep" and get_type_hints(entry.config_type)["sweep"] is SweepConfig
        config = load_config(entry, None, ["sweep.grid.seed=[1,2]"])
        arguments = pipeline_arguments(config)
        assert "sweep" not in arguments and "sweep_config" not in arguments
        assert set(arguments) == {
            f"{f.name}_config" if dataclasses.is_dataclass(getattr(config, f.name)) else f.name
            for f in fields[:-1]
            if f.name not in ("deploy", "publish")  # compiled into the graph too (their tasks), not parameters
        } | {catalog.knob_parameter(section, key) for section, key in entry.knobs}
        target = entry.sweep
        assert target.train in {f.name for f in fields} and target.evaluate in {f.name for f in fields}


# ---- METRICS: the names the evaluate stages really write -------------------------------------
# NER and classification scores come from the stages' own scoring functions (what evaluate_ner and
# evaluate_cls put in result["metrics"]); the masked- and causal-LM METRICS are checked against a real
# evaluation in tests/stages/test_evaluate.py and tests/stages/test_evaluate_clm.py.


def test_ner_metrics_are_written_by_one_of_its_tag_schemes():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["O", "B-ORG"]]
    predicted = [["B-PER", "O", "O", "B-LOC"], ["B-ORG", "B-ORG"]]
    iob2 = entity_results(gold, predicted)["metrics"]
    plain = tag_results([["NN", "VB", "DT"]], [["NN", "NN", "DT"]])["metrics"]
    assert set(evaluate_ner.METRICS) <= set(iob2) | set(plain)
    assert set(iob2) - set(evaluate_ner.METRICS) == {"entities"}  # a count, nothing to select on
    assert set(plain) <= set(evaluate_ner.METRICS)
    assert NER.sweep.metrics == evaluate_ner.METRICS and NER.sweep.default_metric in iob2


def test_cls_metrics_are_what_scikit_learn_scoring_writes():
    written = cls_scores(["pos", "neg", "pos"], ["pos", "pos", "pos"], ["neg", "pos"])["metrics"]
    assert set(evaluate_cls.METRICS) == set(written)
    assert catalog.get("cls").sweep.metrics == evaluate_cls.METRICS


def test_a_grid_too_large_to_draw_from_is_refused():
    keys = ("seed", "logging_steps", "save_steps", "eval_steps", "batch_size", "eval_batch_size", "max_steps")
    keys += ("gradient_accumulation_steps", "save_total_limit", "num_epochs")
    grid = [f"sweep.grid.{key}=[{','.join(str(v) for v in range(1, 101))}]" for key in keys]
    exc = refused(NER, *grid, "sweep.method=random", "sweep.trials=2")  # 100**10 > 2**63
    assert str(exc).startswith("sweep.grid: 100 x 100 x ") and "too many to draw from" in str(exc)
    sweep = ner_plan(*grid[:9], "sweep.method=random", "sweep.trials=2")  # 100**9: fine
    assert len(sweep.trials) == 2
