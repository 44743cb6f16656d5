"""The pipeline catalog: name -> pipeline function (by name), config type and embedded defaults;
the one config loader (embedded defaults <- --config file <- --set overrides) and the pipeline
parameters a config becomes.

The catalog names each ``@dsl.pipeline`` function but never imports it: the KFP wrapper layer
is the launchers' business (:mod:`kfnlp.launch.pipelines`). Its defaults have one home, the
entry's ``defaults.yaml`` over the stage config classes' own defaults.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from kfnlp.config import apply_overrides, blame_file, build, deep_merge, option, read_yaml, to_dict
from kfnlp.errors import ConfigError
from kfnlp.registry.promotion import PromoteConfig
from kfnlp.serving.deploy import DeployConfig
from kfnlp.stages.compare import CompareConfig
from kfnlp.stages.evaluate import METRICS as MLM_METRICS
from kfnlp.stages.evaluate import EvaluateConfig
from kfnlp.stages.evaluate_clm import METRICS as CLM_METRICS
from kfnlp.stages.evaluate_clm import EvaluateClmConfig
from kfnlp.stages.evaluate_cls import METRICS as CLS_METRICS
from kfnlp.stages.evaluate_cls import EvaluateClsConfig
from kfnlp.stages.evaluate_ner import METRICS as NER_METRICS
from kfnlp.stages.evaluate_ner import EvaluateNerConfig
from kfnlp.stages.mask_eval import MaskEvalConfig
from kfnlp.stages.preprocess import PreprocessConfig
from kfnlp.stages.preprocess_cls import PreprocessClsConfig
from kfnlp.stages.preprocess_ner import NerPreprocessConfig
from kfnlp.stages.publish import PublishConfig
from kfnlp.stages.register import TASK_METRICS, RegisterConfig
from kfnlp.stages.train_clm import TrainClmConfig
from kfnlp.stages.train_cls import TrainClsConfig
from kfnlp.stages.train_mlm import TrainMlmConfig
from kfnlp.stages.train_ner import TrainNerConfig
from kfnlp.sweep import SweepConfig, SweepPlan, SweepTarget, plan

PIPELINES_DIR = Path(__file__).parent / "pipelines"
CLUSTER = "cluster"  # the config file section (and --set prefix) for kfnlp compile, submit and upload
T = TypeVar("T")

# what each pipeline sweeps: its train stage, scored by its evaluate stage on the validation split or (masked
# and causal LM) the evaluate stage's fixed eval set; by default on the registry's primary metric of the task
MLM_SWEEP = SweepTarget("train_mlm", "evaluate", MLM_METRICS, TASK_METRICS["mlm"][1], None)
NER_SWEEP = SweepTarget("train_ner", "evaluate_ner", NER_METRICS, TASK_METRICS["ner"][1], "validation")
CLS_SWEEP = SweepTarget("train_cls", "evaluate_cls", CLS_METRICS, TASK_METRICS["cls"][1], "validation")
CLM_SWEEP = SweepTarget("train_clm", "evaluate_clm", CLM_METRICS, TASK_METRICS["clm"][1], None)

# The settings people change most, shown as typed fields of the KFP UI's run form: one pipeline parameter each,
# named SECTION_KEY (train_mlm_learning_rate). Each stage's JSON parameter still carries all its settings; the
# typed one wins over the same key there. kfnlp run/compile/submit fill both from the one config.
Knobs = tuple[tuple[str, str], ...]
_TRAIN_KNOBS = ("learning_rate", "num_epochs", "max_steps", "batch_size", "seed")
_GATE_KNOBS = (("register", "model_name"), ("promote", "margin"))


def _train_knobs(section: str, keys: Iterable[str] = _TRAIN_KNOBS) -> Knobs:
    return tuple((section, key) for key in keys)


MLM_KNOBS = (
    (("preprocess", "source"), ("mask_eval", "strategy"))
    + _train_knobs("train_mlm", (*_TRAIN_KNOBS, "masking"))
    + _GATE_KNOBS
)
NER_KNOBS = (("preprocess_ner", "source"),) + _train_knobs("train_ner") + _GATE_KNOBS
CLS_KNOBS = (("preprocess_cls", "source"),) + _train_knobs("train_cls") + _GATE_KNOBS
CLM_KNOBS = (("preprocess", "source"),) + _train_knobs("train_clm") + _GATE_KNOBS
# adapt-then-TASK: the labelled data's source, the adaptation's and the fine-tuning's settings. Every train task
# gets all five train knobs: kfp 2.17's local runner fails on an optional integer input left unset (int(None)).
_ADAPT_KNOBS = (("mask_eval", "strategy"),) + _train_knobs("train_mlm", (*_TRAIN_KNOBS, "masking"))
ADAPT_NER_KNOBS = (("preprocess_ner", "source"),) + _ADAPT_KNOBS + _train_knobs("train_ner") + _GATE_KNOBS
ADAPT_CLS_KNOBS = (("preprocess_cls", "source"),) + _ADAPT_KNOBS + _train_knobs("train_cls") + _GATE_KNOBS


def knob_parameter(section: str, key: str) -> str:
    """The pipeline parameter of a knob: ``train_mlm_learning_rate``."""
    return f"{section}_{key}"


def _field(config_type: type, name: str) -> dataclasses.Field:
    return next(f for f in dataclasses.fields(config_type) if f.name == name)


@dataclass
class MlmAdaptConfig:
    model: str = option(
        "builtin:splade-tiny",
        "the model to adapt and the tokenizer for preprocess: Hub id, local directory, kfnlp model artifact "
        "or builtin:splade-tiny",
        kind="model",
    )
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    mask_eval: MaskEvalConfig = field(default_factory=MaskEvalConfig)
    train_mlm: TrainMlmConfig = field(default_factory=TrainMlmConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    register: RegisterConfig = field(default_factory=RegisterConfig)
    promote: PromoteConfig = field(default_factory=PromoteConfig)
    deploy: DeployConfig = field(default_factory=DeployConfig)
    publish: PublishConfig = field(default_factory=PublishConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)


@dataclass
class NerConfig:
    model: str = option(
        "builtin:minilm",
        "the encoder to fine-tune and the tokenizer for preprocess-ner: Hub id, local directory, kfnlp model "
        "artifact, builtin:minilm or builtin:splade-tiny",
        kind="model",
    )
    preprocess_ner: NerPreprocessConfig = field(default_factory=NerPreprocessConfig)
    train_ner: TrainNerConfig = field(default_factory=TrainNerConfig)
    evaluate_ner: EvaluateNerConfig = field(default_factory=EvaluateNerConfig)
    register: RegisterConfig = field(default_factory=RegisterConfig)
    promote: PromoteConfig = field(default_factory=PromoteConfig)
    deploy: DeployConfig = field(default_factory=DeployConfig)
    publish: PublishConfig = field(default_factory=PublishConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)


@dataclass
class AdaptThenNerConfig:
    model: str = option(
        "builtin:splade-tiny",
        "the base encoder: adapted by train-mlm, fine-tuned as is by train-ner-base, and the tokenizer for "
        "preprocess-ner and preprocess; needs a masked-LM head (builtin:splade-tiny has one)",
        kind="model",
    )
    preprocess_ner: NerPreprocessConfig = field(default_factory=NerPreprocessConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    mask_eval: MaskEvalConfig = field(default_factory=MaskEvalConfig)
    train_mlm: TrainMlmConfig = field(default_factory=TrainMlmConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    train_ner: TrainNerConfig = field(default_factory=TrainNerConfig)
    evaluate_ner: EvaluateNerConfig = field(default_factory=EvaluateNerConfig)
    compare: CompareConfig = field(default_factory=CompareConfig)
    register: RegisterConfig = field(default_factory=RegisterConfig)
    promote: PromoteConfig = field(default_factory=PromoteConfig)
    deploy: DeployConfig = field(default_factory=DeployConfig)
    publish: PublishConfig = field(default_factory=PublishConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)


@dataclass
class ClsConfig:
    model: str = option(
        "builtin:splade-tiny",
        "the encoder to fine-tune and the tokenizer for preprocess-cls: Hub id, local directory, kfnlp model "
        "artifact, builtin:minilm or builtin:splade-tiny",
        kind="model",
    )
    preprocess_cls: PreprocessClsConfig = field(default_factory=PreprocessClsConfig)
    train_cls: TrainClsConfig = field(default_factory=TrainClsConfig)
    evaluate_cls: EvaluateClsConfig = field(default_factory=EvaluateClsConfig)
    register: RegisterConfig = field(default_factory=RegisterConfig)
    promote: PromoteConfig = field(default_factory=PromoteConfig)
    deploy: DeployConfig = field(default_factory=DeployConfig)
    publish: PublishConfig = field(default_factory=PublishConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)


@dataclass
class AdaptThenClsConfig:
    model: str = option(
        "builtin:splade-tiny",
        "the base encoder: adapted by train-mlm, fine-tuned as is by train-cls-base, and the tokenizer for "
        "preprocess-cls and preprocess; needs a masked-LM head (builtin:splade-tiny has one)",
        kind="model",
    )
    preprocess_cls: PreprocessClsConfig = field(default_factory=PreprocessClsConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    mask_eval: MaskEvalConfig = field(default_factory=MaskEvalConfig)
    train_mlm: TrainMlmConfig = field(default_factory=TrainMlmConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    train_cls: TrainClsConfig = field(default_factory=TrainClsConfig)
    evaluate_cls: EvaluateClsConfig = field(default_factory=EvaluateClsConfig)
    compare: CompareConfig = field(default_factory=CompareConfig)
    register: RegisterConfig = field(default_factory=RegisterConfig)
    promote: PromoteConfig = field(default_factory=PromoteConfig)
    deploy: DeployConfig = field(default_factory=DeployConfig)
    publish: PublishConfig = field(default_factory=PublishConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)


@dataclass
class ClmAdaptConfig:
    model: str = option(
        "builtin:gpt2-imdb",
        "the causal LM to adapt and the tokenizer for preprocess: Hub id, local directory, kfnlp model artifact "
        "or builtin:gpt2-imdb (made on this machine on first use: kfnlp builtin make gpt2-imdb)",
        kind="model",
    )
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    train_clm: TrainClmConfig = field(default_factory=TrainClmConfig)
    evaluate_clm: EvaluateClmConfig = field(default_factory=EvaluateClmConfig)
    register: RegisterConfig = field(default_factory=RegisterConfig)
    promote: PromoteConfig = field(default_factory=PromoteConfig)
    deploy: DeployConfig = field(default_factory=DeployConfig)
    publish: PublishConfig = field(default_factory=PublishConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)


@dataclass(frozen=True)
class PipelineEntry:
    name: str
    module: str  # module holding the @dsl.pipeline function (loaded by kfnlp.launch.pipelines)
    function: str
    config_type: type
    description: str
    sweep: SweepTarget | None = None  # what a sweep: block tries and scores; None: the pipeline cannot sweep
    knobs: Knobs = ()  # (section, key) of the settings that are typed pipeline parameters of their own

    @property
    def defaults_file(self) -> Path:
        return PIPELINES_DIR / self.module.split(".")[-2] / "defaults.yaml"

    def sweep_plan(self, config: Any) -> SweepPlan | None:
        """The trials of ``config``'s sweep block (None: no sweep); a bad block raises ConfigError."""
        return plan(config, self.sweep)


PIPELINES = {
    "mlm-adapt": PipelineEntry(
        "mlm-adapt",
        "kfnlp.pipelines.mlm_adapt.pipeline",
        "mlm_adapt",
        MlmAdaptConfig,
        "masked-LM domain adaptation: preprocess, mask-eval, train-mlm, evaluate before/after, register",
        MLM_SWEEP,
        MLM_KNOBS,
    ),
    "ner": PipelineEntry(
        "ner",
        "kfnlp.pipelines.ner.pipeline",
        "ner",
        NerConfig,
        "named-entity recognition: preprocess-ner, train-ner, evaluate-ner (seqeval), register",
        NER_SWEEP,
        NER_KNOBS,
    ),
    "adapt-then-ner": PipelineEntry(
        "adapt-then-ner",
        "kfnlp.pipelines.adapt_then_ner.pipeline",
        "adapt_then_ner",
        AdaptThenNerConfig,
        "does domain adaptation help NER? adapt a masked-LM, fine-tune NER from base and adapted, compare",
        MLM_SWEEP,
        ADAPT_NER_KNOBS,
    ),
    "cls": PipelineEntry(
        "cls",
        "kfnlp.pipelines.cls.pipeline",
        "cls",
        ClsConfig,
        "text classification: preprocess-cls, train-cls, evaluate-cls (scikit-learn), register",
        CLS_SWEEP,
        CLS_KNOBS,
    ),
    "adapt-then-cls": PipelineEntry(
        "adapt-then-cls",
        "kfnlp.pipelines.adapt_then_cls.pipeline",
        "adapt_then_cls",
        AdaptThenClsConfig,
        "does domain adaptation help text classification? adapt a masked-LM, fine-tune a classifier from base "
        "and adapted, compare",
        MLM_SWEEP,
        ADAPT_CLS_KNOBS,
    ),
    "clm-adapt": PipelineEntry(
        "clm-adapt",
        "kfnlp.pipelines.clm_adapt.pipeline",
        "clm_adapt",
        ClmAdaptConfig,
        "causal-LM domain adaptation: preprocess, train-clm, evaluate-clm before/after (perplexity, samples), register",
        CLM_SWEEP,
        CLM_KNOBS,
    ),
}


def parameter_help(entry: PipelineEntry, parameter: str) -> str:
    """What a pipeline parameter of ``entry`` is, for the KFP UI's run form: a knob's or plain field's
    option help, or what a stage's JSON parameter holds."""
    for section, key in entry.knobs:
        if knob_parameter(section, key) == parameter:
            return f"{_field(type(getattr(entry.config_type(), section)), key).metadata['help']} ({section}.{key})"
    names = {f.name: f for f in dataclasses.fields(entry.config_type)}
    if parameter.endswith("_config") and parameter[: -len("_config")] in names:
        section = parameter[: -len("_config")]
        return (
            f"Advanced: the {section} stage's settings as a JSON object (docs/configuration.md); "
            "{} means the stage's code defaults. The typed parameters win over the same keys here."
        )
    return names[parameter].metadata["help"]


def get(name: str) -> PipelineEntry:
    if name not in PIPELINES:
        raise ConfigError(f"unknown pipeline {name!r}; available: {', '.join(sorted(PIPELINES))}")
    return PIPELINES[name]


def _built(entry: PipelineEntry, data: dict[str, Any]) -> Any:
    """``entry``'s config from a mapping, its sweep checked too: every loader refuses a bad one."""
    config = build(entry.config_type, data)
    entry.sweep_plan(config)
    return config


def layered(
    build_config: Callable[[dict[str, Any]], T],
    defaults: dict[str, Any],
    config_file: str | None = None,
    overrides: Iterable[str] = (),
    *,
    pick: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    section: str | None = None,
) -> T:
    """The one way a config is loaded: ``defaults`` <- the YAML ``config_file`` (``pick`` chooses
    what of it applies) <- ``--set`` ``overrides``, built by ``build_config``. The file's values are
    built on their own first, so that a bad one is reported at its FILE:LINE (``section``: the file
    may hold that section's keys at its top level, as ``kfnlp stage`` reads it)."""
    data = defaults
    if config_file:
        try:
            from_file = read_yaml(config_file)
            data = deep_merge(data, pick(from_file) if pick else from_file)
            build_config(data)
        except ConfigError as exc:
            raise blame_file(exc, config_file, section) from None
    return build_config(apply_overrides(data, overrides))


def load_config(entry: PipelineEntry, config_file: str | None = None, overrides: Iterable[str] = ()) -> Any:
    """``entry``'s config: embedded defaults <- config file <- --set overrides, validated once.
    A file's ``cluster:`` section and ``--set cluster.*`` are for ``kfnlp compile``/``submit``
    and are ignored here."""
    return layered(
        lambda data: _built(entry, data),
        read_yaml(entry.defaults_file),
        config_file,
        [item for item in overrides if not item.startswith(CLUSTER + ".")],
        pick=lambda data: {k: v for k, v in data.items() if k != CLUSTER},
    )


def load_config_and_cluster(
    entry: PipelineEntry,
    build_cluster: Callable[[Any], T],
    config_file: str | None = None,
    overrides: Iterable[str] = (),
) -> tuple[Any, T]:
    """(``entry``'s config, its ``cluster:`` section built by ``build_cluster``), loaded as
    :func:`load_config` does with the cluster section and ``--set cluster.*`` kept."""

    def build_both(data: dict[str, Any]) -> tuple[Any, T]:
        data = dict(data)
        cluster = data.pop(CLUSTER, None)
        return _built(entry, data), build_cluster(cluster)

    return layered(build_both, read_yaml(entry.defaults_file), config_file, overrides)


def load_section(
    config_type: type[T], section: str, config_file: str | None = None, overrides: Iterable[str] = ()
) -> T:
    """One stage's config (``kfnlp stage``): its code defaults <- a config file holding its keys at the
    top level or in its ``section`` (a whole pipeline config) <- --set overrides of its keys."""

    def own_section(data: dict[str, Any]) -> dict[str, Any]:
        return data[section] if isinstance(data.get(section), dict) else data

    return layered(
        lambda data: build(config_type, data, section), {}, config_file, overrides, pick=own_section, section=section
    )


def pipeline_arguments(config) -> dict[str, Any]:
    """Pipeline parameters: plain fields as they are, stage sections as JSON strings, the pipeline's knobs as
    their typed values; the sweep, deploy and publish blocks are compiled into the pipeline's graph (the trials, the
    deploy and publish tasks and their configs), not parameters."""
    entry = next(e for e in PIPELINES.values() if isinstance(config, e.config_type))
    args = {knob_parameter(section, key): getattr(getattr(config, section), key) for section, key in entry.knobs}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if isinstance(value, (SweepConfig, DeployConfig, PublishConfig)):  # compiled into the graph (trials, tasks)
            continue
        if dataclasses.is_dataclass(value):
            args[f"{f.name}_config"] = json.dumps(to_dict(value), sort_keys=True)
        else:
            args[f.name] = value
    return args
