"""mask-eval: mask the held-out split once, with a fixed seed, so every model is
scored on exactly the same masked positions (deterministic, comparable perplexity)."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import numpy as np

from kfnlp.artifacts import open_dataset, write_eval_set
from kfnlp.config import check_at_least, check_seed, option
from kfnlp.data.chunking import rows_dataset
from kfnlp.errors import InputError
from kfnlp.masking import DEFAULT_PROBABILITY, MaskSpec, Strategy, mask
from kfnlp.stages.entry import Input, Stage
from kfnlp.storage import fingerprint

log = logging.getLogger(__name__)


@dataclass
class MaskEvalConfig:
    strategy: Strategy = option("token", "mask single tokens or whole words")
    probability: float | None = option(None, "default: 0.15 token-level, 0.2 whole-word")
    seed: int = option(42, "seed for the masked positions (and the max_chunks sample)")
    max_chunks: int | None = option(None, "seeded cap on the eval size")

    def __post_init__(self):
        if self.probability is not None and not 0.0 < self.probability < 1.0:
            raise ValueError(f"probability must be between 0 and 1, got {self.probability}")
        check_seed(self.seed)
        check_at_least(self.max_chunks, 1, "max_chunks")

    @property
    def effective_probability(self) -> float:
        return self.probability if self.probability is not None else DEFAULT_PROBABILITY[self.strategy]


def mask_eval(dataset: str, output: str, config: MaskEvalConfig) -> dict:
    from kfnlp.modeling import load_tokenizer

    source = open_dataset(dataset)
    test = source.splits()["test"]
    rng = np.random.default_rng(config.seed)
    if config.max_chunks is not None and config.max_chunks < len(test):
        test = test.select(np.sort(rng.permutation(len(test))[: config.max_chunks]))
    table = test.with_format("numpy")
    input_ids = np.stack(table["input_ids"])
    word_ids = np.stack(table["word_ids"])
    tok = load_tokenizer(source.tokenizer_path)
    spec = MaskSpec.for_tokenizer(tok, config.strategy, config.effective_probability)
    masked, labels = mask(input_ids, word_ids, spec, rng)
    n = masked.shape[0]
    masked_set = rows_dataset(
        {
            "input_ids": masked,
            "attention_mask": np.stack(table["attention_mask"]).astype(np.int8),
            "labels": labels,
        }
    )
    n_masked = int((labels != -100).sum())
    if n_masked == 0:  # nothing to score: every evaluation on it would fail
        raise InputError(
            f"mask-eval: masking {n} chunks of {dataset} at p={config.effective_probability:g} masked no token; "
            "raise probability or max_chunks"
        )
    log.info(
        "mask-eval: %d chunks, %d masked tokens (%s, p=%.2f, seed %d)",
        n,
        n_masked,
        config.strategy,
        config.effective_probability,
        config.seed,
    )
    return write_eval_set(
        output,
        masked_set,
        task="mlm",
        fingerprint=fingerprint(source.fingerprint, asdict(config)),
        dataset_fingerprint=source.fingerprint,
        tokenizer_fingerprint=source.manifest["tokenizer_fingerprint"],
        config=asdict(config),
        counts={"chunks": n, "masked_tokens": n_masked},
    )


STAGE = Stage(
    name="mask-eval",
    config=MaskEvalConfig,
    function=mask_eval,
    help="mask the held-out split once with a fixed seed",
    inputs=(
        Input("dataset", "dataset artifact from preprocess", required=True, kind="artifact"),
        Input("output", "eval-set artifact directory to write", required=True),
    ),
    example="max_chunks=500",
)
