"""Token labels and their alignment to sub-tokens.

Two tag schemes. ``iob2``: entity tags ``O``, ``B-TYPE``, ``I-TYPE``. An ``I-`` tag that does
not continue an entity of its type (after ``O``, at sentence start, or after another type) is
the IOB1 way of starting an entity; with ``repair_iob`` it becomes ``B-`` (what conlleval and
seqeval's default mode read it as anyway), otherwise it is kept as written. ``plain``: any tag
strings (part-of-speech tags such as ``NN``, ``VB``), each word's own, with no structure.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from kfnlp.data.chunking import IGNORE_INDEX
from kfnlp.data.conll import Sentence
from kfnlp.errors import InputError

TagScheme = Literal["iob2", "plain"]
NO_TAG = "_"  # a plain-scheme word the model never saw (cut by truncation): CoNLL-U's mark for no value


def entity_type(tag: str) -> str | None:
    return None if tag == "O" else tag[2:]


def check_tag(tag: str, where: str, scheme: TagScheme = "iob2") -> None:
    if scheme == "iob2" and tag != "O" and not (len(tag) > 2 and tag[:2] in ("B-", "I-")):
        raise InputError(
            f"{where}: tag {tag!r} is not IOB2 (expected O, B-TYPE or I-TYPE); "
            "for other tags (part-of-speech, ...) set preprocess_ner.tag_scheme: plain"
        )
    if not tag:
        raise InputError(f"{where}: empty tag")
    # a trailing no-break or zero-width space would silently make "PER\u00a0" a new entity type
    hidden = next((c for c in tag if c.isspace() or unicodedata.category(c) in ("Cc", "Cf")), None)
    if hidden is not None:
        name = unicodedata.name(hidden, "a control character")
        what = "a tag is O, B-TYPE or I-TYPE" if scheme == "iob2" else "a tag holds no spaces or control characters"
        raise InputError(f"{where}: tag {tag!r} holds U+{ord(hidden):04X} ({name}); {what}")


def label_list(sentences: Sequence[Sentence], scheme: TagScheme = "iob2") -> list[str]:
    """iob2: ``O`` then ``B-``/``I-`` for every entity type seen, types sorted: both forms are
    always present so that a continuation sub-token of a ``B-`` word has a label.
    plain: the distinct tags, sorted."""
    seen = set()
    for sentence in sentences:
        for i, tag in enumerate(sentence.tags):
            check_tag(tag, sentence.where(i), scheme)
            seen.add(tag)
    if scheme == "plain":
        return sorted(seen)
    labels = ["O"]
    for name in sorted({tag[2:] for tag in seen if tag != "O"}):
        labels += [f"B-{name}", f"I-{name}"]
    return labels


def check_labels(labels: Sequence[str], where: str = "labels", scheme: TagScheme = "iob2") -> None:
    if len(set(labels)) != len(labels):
        raise InputError(f"{where}: duplicate labels in {list(labels)}")
    for tag in labels:
        check_tag(tag, where, scheme)
    if scheme == "plain":
        return
    missing = [f"I-{t[2:]}" for t in labels if t.startswith("B-") and f"I-{t[2:]}" not in labels]
    if missing:
        raise InputError(f"{where}: {', '.join(missing)} missing; every B- label needs its I- form")


def repair_iob(tags: list[str]) -> tuple[list[str], int]:
    """Turn I- tags that start an entity into B-; return the tags and the count."""
    fixed, previous, count = [], "O", 0
    for tag in tags:
        if tag.startswith("I-") and entity_type(previous) != tag[2:]:
            tag = "B-" + tag[2:]
            count += 1
        fixed.append(tag)
        previous = tag
    return fixed, count


def continuation_ids(labels: Sequence[str], scheme: TagScheme = "iob2") -> np.ndarray:
    """Label id -> the id a continuation sub-token gets (iob2: B-X -> I-X, others unchanged;
    plain: the word's own tag).

    By name, not the recipe's ``label % 2`` trick, which only holds for CoNLL's order."""
    if scheme == "plain":
        return np.arange(len(labels))
    index = {name: i for i, name in enumerate(labels)}
    return np.array([index.get("I-" + name[2:], i) if name.startswith("B-") else i for i, name in enumerate(labels)])


def align_labels(word_labels: Sequence[int], word_ids: Sequence[int | None], to_inside, label_all: bool) -> list[int]:
    """Sub-token labels for one sentence, as in the recipe's ``align_labels_with_tokens``:
    -100 on special tokens, the word's label on its first sub-token and, on the others,
    ``to_inside`` of it (the I- form; ``label_all``) or -100."""
    aligned, previous = [], None
    for word in word_ids:
        if word is None or word < 0:
            aligned.append(IGNORE_INDEX)
        elif word != previous:
            aligned.append(int(word_labels[word]))
        else:
            aligned.append(int(to_inside[word_labels[word]]) if label_all else IGNORE_INDEX)
        previous = word
    return aligned


@dataclass
class Encoded:
    input_ids: list[list[int]]
    labels: list[list[int]]
    word_ids: list[list[int]]  # -1 on special tokens
    truncated: int  # sentences cut at max_length
    empty_words: int  # words the tokenizer turned into nothing (encoded as the unknown token)


def visible_words(tokenizer, sentences: Sequence[Sequence[str]]) -> tuple[list[list[str]], int]:
    """The sentences' words, those that tokenize to nothing (zero-width characters, stray
    control bytes) replaced by the tokenizer's unknown token: such a word would vanish and
    leave its label without a position. Also returns how many were replaced."""
    words = [list(s) for s in sentences]
    unique = sorted({w for s in words for w in s})
    encoded = tokenizer(unique, add_special_tokens=False)["input_ids"] if unique else []
    vanished = {word for word, ids in zip(unique, encoded, strict=True) if not ids}
    replaced = 0
    for sentence in words:
        for i, word in enumerate(sentence):
            if word in vanished:
                sentence[i] = tokenizer.unk_token
                replaced += 1
    return words, replaced


def encode(
    tokenizer,
    sentences: Sequence[Sentence],
    tag_ids: list[list[int]],
    labels: Sequence[str],
    max_length: int,
    label_all_subtokens: bool = True,
    scheme: TagScheme = "iob2",
) -> Encoded:
    """Tokenize pre-split sentences and align their labels (:func:`visible_words` first)."""
    words, empty = visible_words(tokenizer, [s.tokens for s in sentences])
    batch = tokenizer(words, is_split_into_words=True, truncation=True, max_length=max_length)
    to_inside = continuation_ids(labels, scheme)
    out = Encoded([], [], [], 0, empty)
    for i, ids in enumerate(batch["input_ids"]):
        word_ids = batch.word_ids(i)
        out.truncated += bool(batch.encodings[i].overflowing)
        out.input_ids.append(list(ids))
        out.labels.append(align_labels(tag_ids[i], word_ids, to_inside, label_all_subtokens))
        out.word_ids.append([-1 if w is None else w for w in word_ids])
    return out


def word_predictions(pred_ids: Sequence[int], word_ids: Sequence[int], n_words: int) -> list[int | None]:
    """The prediction of each word's first sub-token; None for words cut by truncation."""
    out: list[int | None] = [None] * n_words
    previous = -1
    for pred, word in zip(pred_ids, word_ids, strict=True):
        if word >= 0 and word != previous:
            out[word] = int(pred)
        previous = word
    return out
