"""The pipeline catalog: name -> pipeline function, config type and embedded defaults; the one config
loader (defaults <- file <- --set), the checks ``kfnlp run`` makes before any stage, and the pipeline
parameters a config becomes."""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kfnlp.config import apply_overrides, blame_file, build, deep_merge, read_yaml, to_dict
from kfnlp.errors import ConfigError, KfnlpError
from kfnlp.registry.promotion import PromoteConfig
from kfnlp.stages.compare import CompareConfig
from kfnlp.stages.evaluate import EvaluateConfig
from kfnlp.stages.evaluate_ner import EvaluateNerConfig
from kfnlp.stages.mask_eval import MaskEvalConfig
from kfnlp.stages.preprocess import PreprocessConfig
from kfnlp.stages.preprocess_ner import NerPreprocessConfig
from kfnlp.stages.register import RegisterConfig
from kfnlp.stages.train_mlm import TrainMlmConfig
from kfnlp.stages.train_ner import TrainNerConfig
from kfnlp.storage import is_remote, read_any_manifest

PIPELINES_DIR = Path(__file__).parent / "pipelines"


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
        return PIPELINES_DIR / self.module.split(".")[-2] / "defaults.yaml"

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


def load_config(entry, config_file: str | None = None, overrides: list[str] | tuple[str, ...] = ()):
    """Embedded defaults <- config file <- --set overrides, validated once. A file's
    ``cluster:`` section is for ``kfnlp compile``/``submit`` and is ignored here."""
    data = read_yaml(entry.defaults_file)
    if config_file:
        try:
            data = deep_merge(data, {k: v for k, v in read_yaml(config_file).items() if k != "cluster"})
            build(entry.config_type, data)
        except ConfigError as exc:
            raise blame_file(exc, config_file) from None
    overrides = [item for item in overrides if not item.startswith("cluster.")]
    return build(entry.config_type, apply_overrides(data, overrides))


MODEL_KEYS = ("model", "base_model", "tokenizer")
NER_SOURCE_KEYS = ("source", "validation_source", "test_source")


def _looks_like_path(ref: str) -> bool:
    """Hub ids are NAME or ORG/NAME; anything else path-shaped is a local path."""
    return ref.startswith(("/", "./", "../", "~", ".")) or ref.count("/") > 1 or "\\" in ref


def check_model_ref(ref: str, key: str = "model") -> None:
    """Fail fast, before any stage starts, on a model reference that cannot load:
    an unknown ``builtin:`` name, a local path that does not exist, an ``s3://`` URI
    without a complete model artifact, or (offline) a Hub id that is not in the local
    Hugging Face cache."""
    from kfnlp.assets import BUILTIN_PREFIX, resolve_model_ref

    if not ref or not ref.strip():
        raise ConfigError(f"{key}: empty model reference; expected a directory, a Hub id or builtin:NAME", key)
    if ref.startswith("models:/"):
        from kfnlp.registry import Registry

        try:
            Registry().resolve(ref)
        except KfnlpError as exc:
            raise ConfigError(f"{key}: {exc}", key) from None
        return
    if is_remote(ref):  # a model artifact on S3: its manifest must exist (no download yet)
        try:
            read_any_manifest(ref, kind="model")
        except KfnlpError as exc:
            raise ConfigError(f"{key}: {exc}", key) from None
        return
    if ref.startswith(BUILTIN_PREFIX):
        try:
            location = Path(resolve_model_ref(ref))
        except ConfigError as exc:
            raise ConfigError(f"{key}: {exc}", key) from None
        if not location.is_dir():
            raise ConfigError(f"{key}: {ref} resolves to {location}, which does not exist; reinstall its package", key)
        return
    path = Path(ref).expanduser()
    if path.exists() or _looks_like_path(ref):
        if not path.exists():
            raise ConfigError(f"{key}: {ref}: no such model directory", key)
        if not path.is_dir():
            raise ConfigError(f"{key}: {ref}: expected a model directory, found a file", key)
        if not os.access(path, os.R_OK | os.X_OK):
            raise ConfigError(f"{key}: {ref}: model directory is not readable", key)
        return
    try:
        from huggingface_hub.utils import HFValidationError, validate_repo_id
    except ImportError:  # pragma: no cover - transformers depends on huggingface_hub
        return
    try:
        validate_repo_id(ref)
    except HFValidationError:
        raise ConfigError(f"{key}: {ref!r}: no such directory, and not a valid Hugging Face Hub id", key) from None
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        from huggingface_hub import try_to_load_from_cache

        cached = (try_to_load_from_cache(ref, name) for name in ("config.json", "tokenizer_config.json"))
        if not any(isinstance(path, str) for path in cached):
            raise ConfigError(
                f"{key}: {ref!r}: no such directory, and not a Hub model in the local Hugging Face cache "
                "(HF_HUB_OFFLINE is set); use a local model directory or builtin:splade-tiny",
                key,
            )


def preflight(config) -> None:
    """Cheap checks of a validated pipeline config before launching any stage:
    local corpus sources exist, are readable, non-empty and of a supported type;
    model references resolve. Raises ConfigError/InputError naming the key."""
    from kfnlp.data.corpus import check_source
    from kfnlp.data.ner_corpus import check_ner_source
    from kfnlp.stages.preprocess_ner import NerPreprocessConfig

    def walk(obj, prefix: str) -> None:
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            key = f"{prefix}{f.name}"
            if dataclasses.is_dataclass(value):
                walk(value, key + ".")
            elif f.name in NER_SOURCE_KEYS and isinstance(obj, NerPreprocessConfig) and isinstance(value, str):
                check_ner_source(value, key)
            elif f.name == "source" and isinstance(value, str):
                check_source(value, key)
            elif f.name in MODEL_KEYS and isinstance(value, str):
                check_model_ref(value, key)

    walk(config, "")


def pipeline_arguments(config) -> dict[str, str]:
    """Pipeline parameters: plain fields as they are, stage sections as JSON strings."""
    args = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            args[f"{f.name}_config"] = json.dumps(to_dict(value), sort_keys=True)
        else:
            args[f.name] = value
    return args
