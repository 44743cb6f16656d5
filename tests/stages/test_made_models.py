"""Making builtin:gpt2-imdb (kfnlp.launch.made_models): two makers at once give one model, a failed make
leaves nothing that looks made, and (slow) the real recipe gives a model plain transformers loads."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kfnlp import assets
from kfnlp.assets import MadeModel, made_model_dir
from kfnlp.errors import KfnlpError
from kfnlp.launch import made_models

# the recipe's shape at toy size: seconds, not minutes
TINY = {
    "tokenizer": {"source": "builtin:imdb", "vocab_size": 400, "min_frequency": 2},
    "preprocess": {"source": "builtin:imdb", "chunk_size": 64, "max_documents": 60, "test_size": 0.2, "seed": 1},
    "train_clm": {
        "from_scratch": True,
        "scratch_layers": 1,
        "scratch_heads": 2,
        "scratch_hidden": 16,
        "max_steps": 2,
        "batch_size": 4,
        "learning_rate": 1e-3,
        "seed": 1,
    },
}

MAKER = """
import logging, sys
logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
from kfnlp import assets
assets.MADE_MODELS["gpt2-imdb"] = assets.MadeModel(about="a toy", minutes="seconds", recipe={recipe})
from kfnlp.launch import made_models
made_models.EVAL_CHUNKS = 8
print(made_models.make("gpt2-imdb"))
"""


@pytest.fixture
def tiny_recipe(monkeypatch):
    monkeypatch.setitem(assets.MADE_MODELS, "gpt2-imdb", MadeModel(about="a toy", minutes="seconds", recipe=TINY))
    monkeypatch.setattr(made_models, "EVAL_CHUNKS", 8)
    return made_model_dir("gpt2-imdb")


def _wait_for(predicate, seconds: float = 120.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def test_two_makers_at_once_make_it_once_and_both_get_it(tiny_recipe, kfnlp_home, tmp_path):
    target = tiny_recipe
    target.parent.mkdir(parents=True)
    script = tmp_path / "maker.py"
    script.write_text(MAKER.replace("{recipe}", repr(TINY)))
    logs = [tmp_path / f"maker{i}.log" for i in range(2)]
    lock = target.parent / f".{target.name}.lock"
    with open(lock, "a") as held:  # hold the lock until both makers wait on it: a real race, every time
        fcntl.flock(held, fcntl.LOCK_EX)
        makers = [
            subprocess.Popen(
                [sys.executable, str(script)],
                stdout=subprocess.PIPE,
                stderr=open(log, "w"),  # noqa: SIM115 - closed with the process
                text=True,
                env={**os.environ, "KFNLP_HOME": str(kfnlp_home)},
            )
            for log in logs
        ]
        _wait_for(lambda: all("another process is making it; waiting" in log.read_text() for log in logs))
        fcntl.flock(held, fcntl.LOCK_UN)
    printed = [maker.communicate(timeout=300)[0].strip() for maker in makers]
    texts = [log.read_text() for log in logs]
    assert [maker.returncode for maker in makers] == [0, 0], texts
    assert printed == [str(target)] * 2
    assert sum("1/4 byte-level BPE tokenizer" in text for text in texts) == 1, texts
    assert sum("made by another process meanwhile" in text for text in texts) == 1, texts
    assert (target / "model.safetensors").is_file() and (target / "tokenizer.json").is_file()
    assert (
        json.loads(made_models.record_file("gpt2-imdb").read_text())["version"]
        == assets.MADE_MODELS["gpt2-imdb"].version
    )
    assert not list(target.parent.glob("*.making")), "the scratch directory is gone"


def test_a_failed_make_leaves_nothing_that_looks_made(monkeypatch):
    broken = {**TINY, "tokenizer": {**TINY["tokenizer"], "vocab_size": 100}}  # fewer than the 256 bytes
    monkeypatch.setitem(assets.MADE_MODELS, "gpt2-imdb", MadeModel(about="a toy", minutes="s", recipe=broken))
    target = made_model_dir("gpt2-imdb")
    target.parent.mkdir(parents=True)
    leftover = target.parent / f".{target.name}.dead.making"  # a make that was killed
    leftover.mkdir()
    with pytest.raises(KfnlpError, match="vocab_size must be at least 257"):
        made_models.make("gpt2-imdb")
    assert not target.exists() and not made_models.record_file("gpt2-imdb").exists()
    assert not list(target.parent.glob("*.making"))
    with pytest.raises(KfnlpError, match="kfnlp builtin make gpt2-imdb"):
        assets.resolve_model_ref("builtin:gpt2-imdb")


@pytest.mark.slow
def test_the_real_recipe_makes_a_model_that_plain_transformers_generates_with(kfnlp_home):
    """builtin:gpt2-imdb as `kfnlp builtin make` makes it (minutes), loaded by pipeline("text-generation")."""
    from transformers import pipeline

    started = time.monotonic()
    target = Path(made_models.make("gpt2-imdb"))
    seconds = time.monotonic() - started
    assert target == made_model_dir("gpt2-imdb") and target.parent == kfnlp_home / "builtin"
    assert assets.resolve_model_ref("builtin:gpt2-imdb") == str(target)
    record = json.loads(made_models.record_file("gpt2-imdb").read_text())
    assert record["eval_chunks"] == made_models.EVAL_CHUNKS and record["perplexity"] < 1000, record
    generator = pipeline("text-generation", model=str(target))
    text = generator("This movie was", max_new_tokens=20, do_sample=False)[0]["generated_text"]
    assert text.startswith("This movie was") and len(text.split()) > 6
    assert generator.tokenizer.eos_token == "<|endoftext|>" and generator.model.config.n_positions == 128
    print(f"made in {seconds:.0f} s; perplexity {record['perplexity']:.1f}; greedy: {text!r}")
