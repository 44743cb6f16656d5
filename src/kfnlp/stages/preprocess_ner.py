"""preprocess (NER mode): labelled sentences -> tokenized, label-aligned
train/validation/test datasets, the label maps and the training text (for
task-adaptive masked-LM pretraining)."""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np

from kfnlp.artifacts import tokenizer_fingerprint, write_labelled_dataset
from kfnlp.config import check_seed, option, sequence_length_fields
from kfnlp.data.conll import Sentence
from kfnlp.data.ner import check_labels, encode, label_list, repair_iob
from kfnlp.data.ner_corpus import load_ner_source
from kfnlp.data.unknown_tokens import UnknownTokens
from kfnlp.errors import InputError
from kfnlp.modeling import check_position_limit, load_tokenizer
from kfnlp.stages.entry import Input, Stage
from kfnlp.storage import fingerprint

log = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")


@dataclass
class NerPreprocessConfig:
    """How to turn labelled sentences into token-classification datasets."""

    source: str = option(
        "builtin:wnut16",
        "CoNLL file, hf:DATASET (tokens + ner_tags) or builtin:wnut16",
        kind="ner_source",
    )
    validation_source: str | None = option(None, "CoNLL file; default: a seeded split of source", kind="ner_source")
    test_source: str | None = option(None, "CoNLL file; default: a seeded split of source", kind="ner_source")
    encoding: str = option("utf-8", "of CoNLL files (a UTF-8 BOM is always accepted)")
    hf_config: str | None = option(None, "configuration (subset) name of an hf: dataset")
    tokens_column: str = option("tokens", "column of an hf: dataset holding each sentence's words")
    tags_column: str = option(
        "ner_tags",
        "column of an hf: dataset holding the tags: ClassLabel ids (their names are the labels) or tag strings",
    )
    tag_scheme: Literal["iob2", "plain"] = option(
        "iob2",
        "iob2: entity tags O, B-TYPE, I-TYPE (scored by seqeval); plain: any tag strings, e.g. part-of-speech "
        "(scored by word accuracy and per-tag F1)",
    )
    labels: list[str] | None = option(
        None, "default: O + B-/I- of every type in the data (plain: the tags, sorted; Hub: ClassLabel names)"
    )
    repair_iob: bool = option(True, "an I- tag that starts an entity becomes B- (IOB1 -> IOB2; iob2 only)")
    dedupe: bool = option(True, "drop repeated sentences before splitting, so no test sentence is also trained on")
    validation_size: float = option(0.1, "share held out when the source has no validation split")
    test_size: float = option(0.1, "share held out when the source has no test split")
    max_sentences: int | None = option(None, "seeded downsample of each split")
    max_length: int = option(
        256,
        "sub-tokens per sentence, special tokens included; longer ones are truncated (at most the model's "
        "position limit)",
        sequence_length=True,
    )
    label_all_subtokens: bool = option(
        True, "recipe: continuation sub-tokens get the I- label (plain: the word's tag); false: -100"
    )
    seed: int = option(42, "seed for the validation/test split and the max_sentences downsample")

    def __post_init__(self):
        for name in ("validation_size", "test_size"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.validation_size + self.test_size >= 1.0:
            raise ValueError("validation_size + test_size must leave sentences to train on")
        if self.max_length < 4:
            raise ValueError(f"max_length must be at least 4, got {self.max_length}")
        if self.max_sentences is not None and self.max_sentences < 1:
            raise ValueError(f"max_sentences must be >= 1, got {self.max_sentences}")
        check_seed(self.seed)


def sentence_key(s: Sentence) -> tuple:
    return tuple(s.tokens), tuple(s.tags)


def dedupe(sentences: list[Sentence], seen: set | None = None) -> tuple[list[Sentence], int]:
    """First occurrence of each (tokens, tags) sentence not already in ``seen`` (which grows)."""
    seen, kept = set() if seen is None else seen, []
    for s in sentences:
        key = sentence_key(s)
        if key not in seen:
            seen.add(key)
            kept.append(s)
    return kept, len(sentences) - len(kept)


def split_sentences(splits: dict[str, list[Sentence]], config: NerPreprocessConfig) -> dict[str, list[Sentence]]:
    """Carve the missing validation/test splits out of train with a seeded permutation;
    drop validation/test sentences that also occur in train."""
    train = splits["train"]
    rng = np.random.default_rng(config.seed)
    order = rng.permutation(len(train))
    out = dict(splits)
    start = 0
    for name, share in (("test", config.test_size), ("validation", config.validation_size)):
        if name in splits or share == 0:
            continue
        n = max(1, int(round(len(train) * share)))
        out[name] = [train[i] for i in np.sort(order[start : start + n])]
        start += n
    out["train"] = [train[i] for i in np.sort(order[start:])]
    if not out["train"]:
        raise InputError(f"{config.source}: only {len(train)} sentences, too few to hold out validation/test splits")
    return out


def tag_facts(sentences: list[Sentence], scheme: str) -> dict:
    """iob2: the entity count; plain: the words of each tag."""
    if scheme == "iob2":
        return {"entities": sum(t.startswith("B-") for s in sentences for t in s.tags)}
    return {"tag_counts": dict(sorted(Counter(t for s in sentences for t in s.tags).items()))}


def _downsample(sentences: list[Sentence], limit: int | None, seed: int) -> list[Sentence]:
    if limit is None or limit >= len(sentences):
        return sentences
    keep = np.sort(np.random.default_rng(seed).permutation(len(sentences))[:limit])
    return [sentences[i] for i in keep]


def preprocess_ner(output: str, config: NerPreprocessConfig, tokenizer: str) -> dict:
    """Read, check, split, tokenize and align; write a dataset artifact to ``output``."""
    import datasets

    started = time.monotonic()
    check_position_limit(tokenizer, sequence_length_fields(config, prefix="preprocess_ner."))
    source = load_ner_source(
        config.source,
        config.validation_source,
        config.test_source,
        config.encoding,
        config.hf_config,
        config.tokens_column,
        config.tags_column,
        config.labels,
    )
    counts: dict[str, dict] = {}
    removed = 0
    if config.dedupe:
        source.splits["train"], removed = dedupe(source.splits["train"])
    splits = split_sentences(source.splits, config)
    if config.dedupe:
        # a sentence both trained on and tested on inflates the score
        train_keys = {sentence_key(s) for s in splits["train"]}
        for name in ("validation", "test"):
            if name in splits:
                splits[name], dropped = dedupe(splits[name], set(train_keys))
                counts.setdefault(name, {})["dropped_overlap_with_train"] = dropped
    splits = {name: _downsample(sents, config.max_sentences, config.seed) for name, sents in splits.items() if sents}

    labels = list(config.labels) if config.labels else source.labels
    if labels:
        check_labels(labels, "preprocess_ner.labels" if config.labels else config.source, config.tag_scheme)
    else:
        labels = label_list([s for sents in splits.values() for s in sents], config.tag_scheme)
    label2id = {name: i for i, name in enumerate(labels)}

    tok = load_tokenizer(tokenizer, split_words=True)
    if not getattr(tok, "is_fast", False):
        raise InputError(f"{tokenizer}: NER preprocessing needs a fast tokenizer (word ids of sub-tokens)")
    built = {}
    for name, sentences in splits.items():
        repaired = 0
        tag_ids = []
        for s in sentences:
            tags = s.tags
            if config.repair_iob and config.tag_scheme == "iob2":
                tags, n = repair_iob(tags)
                repaired += n
                s.tags = tags
            try:
                tag_ids.append([label2id[t] for t in tags])
            except KeyError as exc:
                where = s.where(tags.index(exc.args[0]))
                raise InputError(f"{where}: tag {exc.args[0]!r} is not in the label set {labels}") from None
        enc = encode(tok, sentences, tag_ids, labels, config.max_length, config.label_all_subtokens, config.tag_scheme)
        unknown = UnknownTokens(tok)
        unknown.add_batch(enc.input_ids)
        built[name] = datasets.Dataset.from_dict(
            {
                "tokens": [s.tokens for s in sentences],
                "ner_tags": tag_ids,
                "input_ids": enc.input_ids,
                "labels": enc.labels,
                "word_ids": enc.word_ids,
                "length": [len(ids) for ids in enc.input_ids],
            }
        )
        counts[name] = {
            **counts.get(name, {}),
            "sentences": len(sentences),
            "words": sum(len(s.tokens) for s in sentences),
            **unknown.facts("preprocess-ner", name),
            **tag_facts(sentences, config.tag_scheme),
            "truncated_sentences": enc.truncated,
            "empty_words": enc.empty_words,
            **({"iob_repairs": repaired} if config.tag_scheme == "iob2" else {}),
        }
        if enc.truncated:
            log.warning(
                "preprocess-ner: %s: %d sentences longer than %d sub-tokens were truncated",
                name,
                enc.truncated,
                config.max_length,
            )
        log.info("preprocess-ner: %s: %d sentences, %d words", name, len(sentences), counts[name]["words"])
    if "train" not in built:
        raise InputError(f"{config.source}: no training sentences")
    counts["train"]["duplicates_removed"] = removed

    tok_fp = tokenizer_fingerprint(tok)
    return write_labelled_dataset(
        output,
        built,
        tok,
        labels,
        (" ".join(s.tokens) for s in splits["train"]),
        started,
        task="ner",
        tag_scheme=config.tag_scheme,
        fingerprint=fingerprint(source.origin, asdict(config), tok_fp),
        tokenizer=tokenizer,
        tokenizer_fingerprint=tok_fp,
        labels=labels,
        splits=sorted(built),
        config=asdict(config),
        counts=counts,
    )


STAGE = Stage(
    name="preprocess-ner",
    config=NerPreprocessConfig,
    function=preprocess_ner,
    help="NER mode of preprocess: read labelled sentences, split, tokenize, align labels",
    inputs=(
        Input("output", "NER dataset artifact directory to write", required=True),
        Input(
            "tokenizer",
            "model whose tokenizer to use (Hub id, path or builtin:minilm)",
            default="builtin:minilm",
            kind="model",
        ),
    ),
    example="max_sentences=500",
    hub=True,
)
