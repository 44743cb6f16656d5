"""The checks ``kfnlp run`` (and ``kfnlp stage``, ``kfnlp predict``) make before any stage starts:
every model reference and corpus source a config names can be loaded. A bad one fails here, in
a second, naming its key, rather than minutes later in the stage that first opens it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from kfnlp.assets import made_builtin
from kfnlp.config import fields_of_kind, sequence_length_fields
from kfnlp.errors import ConfigError, KfnlpError
from kfnlp.storage import store_for


def _looks_like_path(ref: str) -> bool:
    """Hub ids are NAME or ORG/NAME; anything else path-shaped is a local path."""
    return ref.startswith(("/", "./", "../", "~", ".")) or ref.count("/") > 1 or "\\" in ref


def check_model_ref(ref: str, key: str = "model") -> None:
    """Fail fast, before any stage starts, on a model reference that cannot load:
    an unknown ``builtin:`` name, a local path that does not exist, a directory that is empty,
    has no tokenizer files or names a model type transformers does not know, an ``s3://`` URI
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
    store = store_for(ref)
    if store.local_path(ref) is None:  # a model artifact in a remote store: its manifest must exist (no download yet)
        try:
            store.read_manifest(ref, kind="model")
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
        from kfnlp.modeling import check_model_files

        try:  # every stage that takes a model loads its tokenizer too; a tokenizer-only directory may do
            check_model_files(path, ref, model=False)
        except ConfigError as exc:
            raise ConfigError(f"{key}: {exc}", key) from None
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


def preflight(config: Any, *, unmade_ok: bool = False) -> None:
    """Cheap checks of a validated pipeline config before launching any stage:
    local corpus sources exist, are readable, non-empty and of a supported type;
    model references resolve; no sequence length (``preprocess.chunk_size``, ``max_length``...) exceeds
    the position limit of the pipeline's ``model``. Raises ConfigError/InputError naming the key.
    ``unmade_ok``: a made builtin (``builtin:gpt2-imdb``) not made yet passes, as one about to be made."""
    from kfnlp.data.cls_corpus import check_cls_source
    from kfnlp.data.corpus import check_source
    from kfnlp.data.ner_corpus import check_ner_source
    from kfnlp.modeling import check_position_limit

    checks = {
        "model": check_model_ref,
        "source": check_source,
        "ner_source": check_ner_source,
        "cls_source": check_cls_source,
    }
    for key, value, kind in fields_of_kind(config, *checks):
        if isinstance(value, str) and not (unmade_ok and kind == "model" and made_builtin(value)):
            checks[kind](value, key)
    model = getattr(config, "model", None)
    if isinstance(model, str):  # every stage of a pipeline tokenizes and trains with its model
        check_position_limit(model, sequence_length_fields(config))
