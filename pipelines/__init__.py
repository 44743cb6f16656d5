"""The pipeline catalog: name -> pipeline function, config type and embedded defaults."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kfnlp.errors import ConfigError
from kfnlp.promotion import PromoteConfig
from kfnlp.stages.compare import CompareConfig
from kfnlp.stages.evaluate import EvaluateConfig
from kfnlp.stages.evaluate_ner import EvaluateNerConfig
from kfnlp.stages.mask_eval import MaskEvalConfig
from kfnlp.stages.preprocess import PreprocessConfig
from kfnlp.stages.preprocess_ner import NerPreprocessConfig
from kfnlp.stages.register import RegisterConfig
from kfnlp.stages.train_mlm import TrainMlmConfig
from kfnlp.stages.train_ner import TrainNerConfig

HERE = Path(__file__).parent


@dataclass
class MlmAdaptConfig:
    model: str = "builtin:splade-tiny"
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    mask_eval: MaskEvalConfig = field(default_factory=MaskEvalConfig)
    train_mlm: TrainMlmConfig = field(default_factory=TrainMlmConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    register: RegisterConfig = field(default_factory=RegisterConfig)
    promote: PromoteConfig = field(default_factory=PromoteConfig)


@dataclass
class NerConfig:
    model: str = "builtin:minilm"
    preprocess_ner: NerPreprocessConfig = field(default_factory=NerPreprocessConfig)
    train_ner: TrainNerConfig = field(default_factory=TrainNerConfig)
    evaluate_ner: EvaluateNerConfig = field(default_factory=EvaluateNerConfig)
    register: RegisterConfig = field(default_factory=lambda: RegisterConfig(model_name="kfnlp-ner"))
    promote: PromoteConfig = field(default_factory=PromoteConfig)


@dataclass
class AdaptThenNerConfig:
    model: str = "builtin:splade-tiny"
    preprocess_ner: NerPreprocessConfig = field(default_factory=NerPreprocessConfig)
    preprocess: PreprocessConfig = field(default_factory=lambda: PreprocessConfig(source="ner:train"))
    mask_eval: MaskEvalConfig = field(default_factory=MaskEvalConfig)
    train_mlm: TrainMlmConfig = field(default_factory=TrainMlmConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    train_ner: TrainNerConfig = field(default_factory=TrainNerConfig)
    evaluate_ner: EvaluateNerConfig = field(default_factory=EvaluateNerConfig)
    compare: CompareConfig = field(default_factory=CompareConfig)
    register: RegisterConfig = field(default_factory=lambda: RegisterConfig(model_name="kfnlp-ner-adapted"))
    promote: PromoteConfig = field(default_factory=PromoteConfig)


@dataclass(frozen=True)
class PipelineEntry:
    name: str
    module: str  # module holding the @dsl.pipeline function
    function: str
    config_type: type
    description: str

    @property
    def defaults_file(self) -> Path:
        return HERE / self.module.split(".")[-2] / "defaults.yaml"

    def load(self) -> Callable[..., Any]:
        return getattr(importlib.import_module(self.module), self.function)


PIPELINES = {
    "mlm-adapt": PipelineEntry(
        "mlm-adapt",
        "kfnlp.pipelines.mlm_adapt.pipeline",
        "mlm_adapt",
        MlmAdaptConfig,
        "masked-LM domain adaptation: preprocess, mask-eval, train-mlm, evaluate before/after, register",
    ),
    "ner": PipelineEntry(
        "ner",
        "kfnlp.pipelines.ner.pipeline",
        "ner",
        NerConfig,
        "named-entity recognition: preprocess-ner, train-ner, evaluate-ner (seqeval), register",
    ),
    "adapt-then-ner": PipelineEntry(
        "adapt-then-ner",
        "kfnlp.pipelines.adapt_then_ner.pipeline",
        "adapt_then_ner",
        AdaptThenNerConfig,
        "does domain adaptation help NER? adapt a masked-LM, fine-tune NER from base and adapted, compare",
    ),
}


def get(name: str) -> PipelineEntry:
    if name not in PIPELINES:
        raise ConfigError(f"unknown pipeline {name!r}; available: {', '.join(sorted(PIPELINES))}")
    return PIPELINES[name]
