"""The KFP UI's run form: each pipeline's key settings are typed parameters with descriptions (checked against
the config classes they stand for, in the IR parsed by kfp's protobufs), each reaches its stage's tasks, and under
kfp.local a typed parameter wins over the same key of the stage's JSON parameter."""

import dataclasses
import json
import typing
from pathlib import Path

import pytest
from kfp import compiler, dsl, local
from kfp.pipeline_spec import pipeline_spec_pb2

from kfnlp import catalog
from kfnlp.catalog import knob_parameter, load_config, parameter_help, pipeline_arguments
from kfnlp.config import from_json
from kfnlp.errors import ConfigError
from kfnlp.launch.pipelines import pipeline_function
from kfnlp.stages.train_mlm import TrainMlmConfig
from kfnlp.storage import read_manifest
from tests.unit.test_components import strict_documents

# what a config field's Python type becomes in the IR (kfp's ParameterType names)
KFP_TYPE = {int: "NUMBER_INTEGER", float: "NUMBER_DOUBLE", str: "STRING", bool: "BOOLEAN"}
# the key knobs: every pipeline shows these (as SECTION_KEY) and the model
EVERY_PIPELINE = {"source", "learning_rate", "batch_size", "seed", "model_name", "margin"}


def field_type(config_type: type, section: str, key: str) -> type:
    section_type = typing.get_type_hints(config_type)[section]
    hint = typing.get_type_hints(section_type)[key]
    return str if typing.get_origin(hint) is typing.Literal else hint


@pytest.fixture(scope="module", params=sorted(catalog.PIPELINES))
def compiled(request, tmp_path_factory):
    """The pipeline as plain kfp tooling compiles it (no kfnlp config): its signature's own defaults."""
    entry = catalog.PIPELINES[request.param]
    path = tmp_path_factory.mktemp("ir") / f"{entry.name}.yaml"
    compiler.Compiler().compile(pipeline_function(entry), str(path))
    return entry, strict_documents(path)


def test_knobs_are_typed_described_and_default_to_the_embedded_config(compiled):
    entry, spec = compiled
    parameters = spec.root.input_definitions.parameters
    config = load_config(entry)
    assert {key for _, key in entry.knobs} >= EVERY_PIPELINE
    assert "model" in parameters and (entry.knobs[0][1] == "source")
    for section, key in entry.knobs:
        name = knob_parameter(section, key)
        assert name in parameters, f"{entry.name}: no parameter {name}"
        parameter = parameters[name]
        kind = field_type(entry.config_type, section, key)
        assert pipeline_spec_pb2.ParameterType.ParameterTypeEnum.Name(parameter.parameter_type) == KFP_TYPE[kind], name
        help_text = dataclasses.fields(type(getattr(config, section)))
        help_text = next(f for f in help_text if f.name == key).metadata["help"]
        assert parameter.description == f"{help_text} ({section}.{key})"
        default = parameter.default_value
        assert getattr(default, default.WhichOneof("kind")) == getattr(getattr(config, section), key), name
    for name, parameter in parameters.items():  # the model, the knobs and every stage's JSON parameter
        assert parameter.description == parameter_help(entry, name)
    assert parameters["model"].default_value.string_value == config.model
    sections = {f.name for f in dataclasses.fields(config) if dataclasses.is_dataclass(getattr(config, f.name))}
    compiled_in = {"sweep", "deploy", "publish"}  # part of the graph (trials, tasks), not parameters
    assert {f"{s}_config" for s in sections - compiled_in} <= set(parameters)  # everything else stays reachable
    assert set(parameters) == set(pipeline_arguments(config))


def test_each_knob_reaches_every_task_of_its_stage(compiled):
    entry, spec = compiled
    for section, key in entry.knobs:
        component = f"comp-{section.replace('_', '-')}"
        tasks = [
            (name, task)
            for name, task in spec.root.dag.tasks.items()
            if task.component_ref.name == component or task.component_ref.name.startswith(component + "-")
        ]
        assert tasks, f"{entry.name}: no task runs {section}"
        for name, task in tasks:
            wired = task.inputs.parameters[key].component_input_parameter
            assert wired == knob_parameter(section, key), f"{entry.name}: {name}.{key} <- {wired!r}"


def test_a_knob_wins_over_the_json_and_none_leaves_it():
    cfg = from_json(TrainMlmConfig, json.dumps({"learning_rate": 1e-3, "max_steps": 7}), "train_mlm", {})
    assert (cfg.learning_rate, cfg.max_steps) == (1e-3, 7)
    # what KFP hands a component: values typed or as strings (kfp.local turns integers into "5.0")
    knobs = {"learning_rate": "0.02", "max_steps": "5.0", "masking": "whole_word", "seed": None}
    cfg = from_json(TrainMlmConfig, json.dumps({"learning_rate": 1e-3, "seed": 3}), "train_mlm", knobs)
    assert (cfg.learning_rate, cfg.max_steps, cfg.masking, cfg.seed) == (0.02, 5, "whole_word", 3)
    with pytest.raises(ConfigError, match=r"^train_mlm\.learning_rate: expected a number, got 'fast'"):
        from_json(TrainMlmConfig, "{}", "train_mlm", {"learning_rate": "fast"})
    with pytest.raises(ConfigError, match=r"^train_mlm: learning_rate must be > 0"):
        from_json(TrainMlmConfig, "{}", "train_mlm", {"learning_rate": -1.0})


@pytest.mark.slow
def test_typed_parameters_reach_the_stages_under_kfp_local(tmp_path):
    """A run from the KFP UI's form: the typed field differs from the stage's JSON and wins; a task given no
    typed value keeps the JSON's."""
    from kfnlp.components.mask_eval.component import mask_eval
    from kfnlp.components.preprocess.component import preprocess

    preprocess_json = json.dumps({"source": "builtin:imdb", "max_documents": 60, "chunk_size": 64, "test_size": 0.5})

    @dsl.pipeline(name="knobs")
    def knobs(preprocess_source: str, mask_eval_strategy: str):
        data = preprocess(config=preprocess_json, tokenizer="builtin:splade-tiny", source=preprocess_source)
        mask_eval(config='{"strategy": "token"}', dataset=data.outputs["dataset"], strategy=mask_eval_strategy)
        mask_eval(config='{"strategy": "token"}', dataset=data.outputs["dataset"])

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path))
    knobs(preprocess_source="builtin:rotten-tomatoes", mask_eval_strategy="whole_word")
    manifests = [read_manifest(p.parent) for p in Path(tmp_path).glob("knobs-*/*/*/kfnlp-manifest.json")]
    by_kind: dict[str, list] = {}
    for manifest in manifests:
        by_kind.setdefault(manifest["kind"], []).append(manifest)
    (dataset,) = by_kind["dataset"]
    assert dataset["config"]["source"] == "builtin:rotten-tomatoes"
    assert dataset["config"]["max_documents"] == 60  # the rest of the JSON still applies
    strategies = sorted(m["config"]["strategy"] for m in by_kind["eval_set"])
    assert strategies == ["token", "whole_word"]


def test_no_task_leaves_an_optional_integer_input_unset(compiled):
    """kfp 2.17's local runner turns an optional integer input that a task does not set into int(None) and
    crashes before the task starts; so every task (in every DAG, sweep loops included) sets them all."""
    entry, spec = compiled
    dags = [spec.root.dag, *(c.dag for c in spec.components.values() if c.HasField("dag"))]
    integer = pipeline_spec_pb2.ParameterType.ParameterTypeEnum.NUMBER_INTEGER
    for dag in dags:
        for name, task in dag.tasks.items():
            declared = spec.components[task.component_ref.name].input_definitions.parameters
            for key, parameter in declared.items():
                if parameter.parameter_type == integer and not parameter.HasField("default_value"):
                    assert key in task.inputs.parameters, f"{entry.name}: task {name} leaves {key} unset"
