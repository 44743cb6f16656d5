"""preprocess-cls: labelled texts -> deduplicated, stratified train/validation/test (and, for
builtin:imdb, cross_domain) datasets, tokenized for sequence classification, with the label
maps and the training text (for task-adaptive masked-LM pretraining)."""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import asdict, dataclass

import numpy as np

from kfnlp.artifacts import tokenizer_fingerprint, write_labelled_dataset
from kfnlp.config import check_seed, option, sequence_length_fields
from kfnlp.data.cls_corpus import Columns, Example, load_cls_source, name_labels
from kfnlp.data.unknown_tokens import UnknownTokens
from kfnlp.errors import InputError
from kfnlp.modeling import check_position_limit, load_tokenizer
from kfnlp.stages.entry import Input, Stage
from kfnlp.storage import fingerprint

log = logging.getLogger(__name__)

TOKENIZE_BATCH = 1000  # examples per tokenizer call


@dataclass
class PreprocessClsConfig:
    """How to turn labelled texts into sequence-classification datasets."""

    source: str = option(
        "builtin:imdb",
        "CSV/TSV/JSONL/Parquet file, directory or glob, hf:DATASET or builtin:imdb (IMDB sentiment, "
        "with a Rotten Tomatoes cross_domain split)",
        kind="cls_source",
    )
    validation_source: str | None = option(
        None,
        "file, directory or glob; default: the source's validation split or a seeded stratified split of train",
        kind="cls_source",
    )
    test_source: str | None = option(
        None,
        "file, directory or glob; default: the source's test split or a seeded stratified split of train",
        kind="cls_source",
    )
    hf_config: str | None = option(None, "configuration (subset) name of an hf: dataset")
    text_column: str = option("text", "column holding the text; dotted path for nested fields (review.body)")
    text_pair_column: str | None = option(
        None, "column holding a second text (sentence pairs, NLI); none: single texts"
    )
    label_column: str = option("label", "column holding the label: a name, or a class id (named by labels)")
    labels: list[str] | None = option(
        None,
        "label names in class-id order; default: an hf: dataset's ClassLabel names, builtin:imdb's neg/pos, "
        "else the labels found, sorted",
    )
    dedupe: bool = option(
        True, "drop repeated texts before splitting, and validation/test texts that are also in train"
    )
    validation_size: float = option(0.1, "share of train held out (stratified) when the source has no validation split")
    test_size: float = option(0.1, "share of train held out (stratified) when the source has no test split")
    max_examples: int | None = option(None, "seeded stratified downsample of each split")
    max_length: int = option(
        256,
        "sub-tokens per example (text and pair), special tokens included; longer ones are truncated (at most "
        "the model's position limit)",
        sequence_length=True,
    )
    seed: int = option(42, "seed for the stratified split and the max_examples downsample")

    def __post_init__(self):
        for name in ("validation_size", "test_size"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.validation_size + self.test_size >= 1.0:
            raise ValueError("validation_size + test_size must leave examples to train on")
        if self.max_length < 4:
            raise ValueError(f"max_length must be at least 4, got {self.max_length}")
        if self.max_examples is not None and self.max_examples < 2:
            raise ValueError(f"max_examples must be at least 2, got {self.max_examples}")
        check_seed(self.seed)


def dedupe(examples: list[Example], seen: set | None = None) -> tuple[list[Example], int]:
    """First occurrence of each text (and pair), whatever its label, not already in ``seen`` (which grows)."""
    seen, kept = set() if seen is None else seen, []
    for e in examples:
        key = (e.text, e.text_pair)
        if key not in seen:
            seen.add(key)
            kept.append(e)
    return kept, len(examples) - len(kept)


def quotas(class_counts: np.ndarray, k: int) -> np.ndarray:
    """How many of each class a stratified sample of ``k`` takes: in proportion (largest remainder),
    at least one of every class present."""
    exact = class_counts * k / class_counts.sum()
    take = np.maximum(np.floor(exact).astype(np.int64), np.minimum(class_counts, 1))
    short = k - int(take.sum())
    for c in np.argsort(-(exact - np.floor(exact)), kind="stable"):
        if short <= 0:
            break
        if take[c] < class_counts[c]:
            take[c] += 1
            short -= 1
    return take


def stratified_sample(classes: np.ndarray, k: int, n_classes: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of a seeded stratified sample of ``k`` from ``classes`` (see :func:`quotas`)."""
    take = quotas(np.bincount(classes, minlength=n_classes), k)
    picked = [rng.permutation(np.flatnonzero(classes == c))[: take[c]] for c in range(n_classes)]
    return np.sort(np.concatenate(picked))


def class_ids(examples: list[Example], labels: list[str]) -> np.ndarray:
    index = {name: i for i, name in enumerate(labels)}
    return np.array([index[e.label] for e in examples], dtype=np.int64)


def split_examples(
    splits: dict[str, list[Example]], labels: list[str], config: PreprocessClsConfig
) -> dict[str, list[Example]]:
    """Carve the missing test/validation splits out of train, stratified by class with a seeded
    sample; every class must keep an example in each split (else InputError naming the class)."""
    train = splits["train"]
    classes = class_ids(train, labels)
    counts = np.bincount(classes, minlength=len(labels))
    if (counts == 0).any():
        unused = labels[int(np.argmin(counts))]
        raise InputError(f"{config.source}: class {unused!r} has no training examples (labels: {labels})")
    rng = np.random.default_rng(config.seed)
    remaining = np.arange(len(train))
    out = dict(splits)
    for name, share in (("test", config.test_size), ("validation", config.validation_size)):
        if name in splits or share == 0:
            continue
        picked = remaining[stratified_sample(classes[remaining], max(1, round(len(train) * share)), len(labels), rng)]
        remaining = np.setdiff1d(remaining, picked)
        left = np.bincount(classes[remaining], minlength=len(labels))
        if (left == 0).any():
            c = int(np.argmin(left))
            raise InputError(
                f"{config.source}: class {labels[c]!r} has {counts[c]} training example(s), too few for a stratified "
                f"train/validation/test split (the train split would have none of it); add examples of it, or "
                f"set preprocess_cls.validation_source/test_source"
            )
        out[name] = [train[i] for i in picked]
    out["train"] = [train[i] for i in remaining]
    return out


def downsample(examples: list[Example], labels: list[str], limit: int | None, seed: int) -> list[Example]:
    """A seeded stratified sample of ``limit`` examples (more only to keep one of each class present)."""
    if limit is None or limit >= len(examples):
        return examples
    keep = stratified_sample(class_ids(examples, labels), limit, len(labels), np.random.default_rng(seed))
    return [examples[i] for i in keep]


def tokenize(tok, examples: list[Example], pair: bool, max_length: int) -> tuple[dict[str, list], int]:
    """``input_ids`` (and ``token_type_ids`` for pairs when the model takes them), truncated to
    ``max_length``; and how many examples were longer."""
    type_ids = pair and "token_type_ids" in tok.model_input_names
    columns: dict[str, list] = {"input_ids": [], **({"token_type_ids": []} if type_ids else {})}
    truncated = 0
    for start in range(0, len(examples), TOKENIZE_BATCH):
        batch = examples[start : start + TOKENIZE_BATCH]
        texts = [e.text for e in batch]
        pairs = [e.text_pair for e in batch] if pair else None
        options = {"return_attention_mask": False, "return_token_type_ids": type_ids, "verbose": False}
        enc = tok(texts, pairs, truncation=False, **options)
        long = [i for i, ids in enumerate(enc["input_ids"]) if len(ids) > max_length]
        if long:
            cut = tok(
                [texts[i] for i in long],
                [pairs[i] for i in long] if pairs else None,
                truncation=True,
                max_length=max_length,
                **options,
            )
            for j, i in enumerate(long):
                for name in columns:
                    enc[name][i] = cut[name][j]
        truncated += len(long)
        for name in columns:
            columns[name] += enc[name]
    return columns, truncated


def preprocess_cls(output: str, config: PreprocessClsConfig, tokenizer: str) -> dict:
    """Read, check, dedupe, split, downsample and tokenize; write a dataset artifact to ``output``."""
    import datasets

    started = time.monotonic()
    check_position_limit(tokenizer, sequence_length_fields(config, prefix="preprocess_cls."))
    columns = Columns(config.text_column, config.label_column, config.text_pair_column)
    source = load_cls_source(config.source, columns, config.validation_source, config.test_source, config.hf_config)
    labels = name_labels(source.splits, config.labels or source.labels, config.source)
    counts: dict[str, dict] = {}
    removed = 0
    if config.dedupe:
        source.splits["train"], removed = dedupe(source.splits["train"])
    splits = split_examples(source.splits, labels, config)
    if config.dedupe:
        # a text both trained on and tested on inflates the score
        train_keys = {(e.text, e.text_pair) for e in splits["train"]}
        for name in splits.keys() - {"train"}:
            splits[name], dropped = dedupe(splits[name], set(train_keys))
            counts[name] = {"dropped_overlap_with_train": dropped}
    splits = {name: downsample(examples, labels, config.max_examples, config.seed) for name, examples in splits.items()}

    tok = load_tokenizer(tokenizer)
    pair = config.text_pair_column is not None
    built = {}
    for name, examples in sorted(splits.items()):
        if not examples:
            log.warning("preprocess-cls: %s: no examples left; the split is left out", name)
            continue
        encoded, truncated = tokenize(tok, examples, pair, config.max_length)
        unknown = UnknownTokens(tok)
        unknown.add_batch(encoded["input_ids"])
        built[name] = datasets.Dataset.from_dict(
            {
                "id": [f"{name}-{i:06d}" for i in range(len(examples))],
                "text": [e.text for e in examples],
                **({"text_pair": [e.text_pair for e in examples]} if pair else {}),
                "labels": class_ids(examples, labels).tolist(),
                **encoded,
                "length": [len(ids) for ids in encoded["input_ids"]],
            }
        )
        per_class = Counter(e.label for e in examples)
        counts[name] = {
            "examples": len(examples),
            "per_class": {label: per_class[label] for label in labels},
            "truncated": truncated,
            **counts.get(name, {}),
            **unknown.facts("preprocess-cls", name),
        }
        if truncated:
            log.warning(
                "preprocess-cls: %s: %d examples longer than %d sub-tokens were truncated",
                name,
                truncated,
                config.max_length,
            )
        missing = [label for label in labels if not per_class[label]]
        if missing:
            log.warning("preprocess-cls: %s: no examples of %s", name, ", ".join(missing))
        log.info("preprocess-cls: %s: %d examples, %s", name, len(examples), dict(per_class))
    counts["train"]["duplicates_removed"] = removed

    tok_fp = tokenizer_fingerprint(tok)
    return write_labelled_dataset(
        output,
        built,
        tok,
        labels,
        (text for e in splits["train"] for text in (e.text, e.text_pair) if text),
        started,
        task="cls",
        fingerprint=fingerprint(source.origin, asdict(config), tok_fp),
        tokenizer=tokenizer,
        tokenizer_fingerprint=tok_fp,
        labels=labels,
        splits=sorted(built),
        text_pair=pair,
        config=asdict(config),
        counts=counts,
    )


STAGE = Stage(
    name="preprocess-cls",
    config=PreprocessClsConfig,
    function=preprocess_cls,
    help="read labelled texts, dedupe, split them stratified, tokenize them for sequence classification",
    inputs=(
        Input("output", "text-classification dataset artifact directory to write", required=True),
        Input(
            "tokenizer",
            "model whose tokenizer to use (Hub id, path or builtin:splade-tiny)",
            default="builtin:splade-tiny",
            kind="model",
        ),
    ),
    example="max_examples=1000",
    hub=True,
)
