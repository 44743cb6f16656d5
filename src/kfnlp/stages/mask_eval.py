"""mask-eval: mask the held-out split once, with a fixed seed, so every model is
scored on exactly the same masked positions (deterministic, comparable perplexity)."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import numpy as np

from kfnlp.data.chunking import rows_dataset
from kfnlp.masking import DEFAULT_PROBABILITY, MaskSpec, Strategy, mask
from kfnlp.storage import fingerprint, open_artifact, write_artifact

log = logging.getLogger(__name__)


@dataclass
class MaskEvalConfig:
    strategy: Strategy = "token"
    probability: float | None = None  # default: 0.15 token-level, 0.2 whole-word
    seed: int = 42
    max_chunks: int | None = None  # seeded cap on the eval size

    def __post_init__(self):
        if self.probability is not None and not 0.0 < self.probability < 1.0:
            raise ValueError(f"probability must be between 0 and 1, got {self.probability}")

    @property
    def effective_probability(self) -> float:
        return self.probability if self.probability is not None else DEFAULT_PROBABILITY[self.strategy]


def mask_spec(tokenizer, strategy: Strategy, probability: float) -> MaskSpec:
    return MaskSpec(strategy, probability, tokenizer.mask_token_id, len(tokenizer))


def mask_eval(dataset: str, output: str, config: MaskEvalConfig) -> dict:
    import datasets

    from kfnlp.modeling import load_tokenizer

    local, source = open_artifact(dataset, kind="dataset")
    test = datasets.load_from_disk(str(local / "data"))["test"]
    rng = np.random.default_rng(config.seed)
    if config.max_chunks is not None and config.max_chunks < len(test):
        test = test.select(np.sort(rng.permutation(len(test))[: config.max_chunks]))
    table = test.with_format("numpy")
    input_ids = np.stack(table["input_ids"])
    word_ids = np.stack(table["word_ids"])
    tok = load_tokenizer(str(local / "tokenizer"))
    spec = mask_spec(tok, config.strategy, config.effective_probability)
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
    log.info(
        "mask-eval: %d chunks, %d masked tokens (%s, p=%.2f, seed %d)",
        n,
        n_masked,
        config.strategy,
        config.effective_probability,
        config.seed,
    )
    with write_artifact(output, kind="eval_set") as out:
        masked_set.save_to_disk(str(out.path / "data"))
        out.info.update(
            task="mlm",
            fingerprint=fingerprint(source["fingerprint"], asdict(config)),
            dataset_fingerprint=source["fingerprint"],
            tokenizer_fingerprint=source["tokenizer_fingerprint"],
            config=asdict(config),
            counts={"chunks": n, "masked_tokens": n_masked},
        )
        manifest = dict(out.info)
    return manifest
