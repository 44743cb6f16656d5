"""Inference with trained models, through plain transformers pipelines (on the GPU when there is one)."""

from __future__ import annotations

import re
from itertools import accumulate

from kfnlp.errors import InputError


def fill_mask(model: str, texts: list[str], top_k: int = 5) -> list[dict]:
    """Top-k fills for ``[MASK]`` in each text (written as [MASK] for any model)."""
    from transformers import pipeline

    from kfnlp.modeling import inference_device, load_masked_lm, load_tokenizer

    tokenizer = load_tokenizer(model)
    unmasker = pipeline("fill-mask", model=load_masked_lm(model), tokenizer=tokenizer, device=inference_device())
    results = []
    for text in texts:
        prepared = text.replace("[MASK]", tokenizer.mask_token)
        count = prepared.count(tokenizer.mask_token)
        if count != 1:
            raise InputError(f"{text!r}: expected exactly one [MASK], found {count}")
        preds = unmasker(prepared, top_k=top_k)
        results.append(
            {
                "text": text,
                "predictions": [{"token": p["token_str"], "score": round(float(p["score"]), 6)} for p in preds],
            }
        )
    return results


def entities(model: str, texts: list[str]) -> list[dict]:
    """Named entities in each text: sub-token predictions grouped into entities by the
    token-classification pipeline (``aggregation_strategy="simple"``). A model of plain tags
    (trained with ``tag_scheme: plain``, e.g. part-of-speech) gives each word its tag instead
    (:func:`word_tags`): ``{"text", "words": [{"word", "tag", "score", "start", "end"}]}``."""
    from transformers import pipeline

    from kfnlp.modeling import inference_device, load_token_classifier, load_tokenizer

    net = load_token_classifier(model)
    labels = list(net.config.id2label.values())
    scheme = getattr(net.config, "tag_scheme", None)  # train-ner writes it; other NER models have B-/I- labels
    if scheme is None and any(str(label).startswith(("B-", "I-")) for label in labels):
        scheme = "iob2"
    if scheme not in ("iob2", "plain"):
        raise InputError(f"{model}: not an NER model (its labels are {labels[:5]}...)")
    tagger = pipeline("token-classification", model=net, tokenizer=load_tokenizer(model), device=inference_device())
    if scheme == "plain":
        return [{"text": text, "words": word_tags(tagger, text)} for text in texts]
    results = []
    for text in texts:
        found = tagger(text, aggregation_strategy="simple")
        results.append(
            {
                "text": text,
                "entities": [
                    {
                        "entity_group": e["entity_group"],
                        "word": e["word"],
                        "start": int(e["start"]),
                        "end": int(e["end"]),
                        "score": round(float(e["score"]), 6),
                    }
                    for e in found
                ],
            }
        )
    return results


def word_tags(tagger, text: str) -> list[dict]:
    """The tag of each whitespace-separated word of ``text``: its first sub-token's prediction, the
    words tokenized one by one, as preprocess-ner tokenized, train-ner labelled and evaluate-ner scored them.

    The pipeline runs with ``aggregation_strategy="none"`` on the pre-split words and the first
    sub-token of each word is picked here: every other strategy ends in the pipeline's
    ``group_entities``, which merges adjacent words of one tag into a single group ("New York",
    NNP NNP, becomes one NNP), and ``first``/``average``/``max`` find word ends by a heuristic on the
    text rather than from the words. A word cut off by the model's length limit gets tag None."""
    from bisect import bisect_right

    from kfnlp.data.ner import visible_words

    spans = [(m.start(), m.end()) for m in re.finditer(r"\S+", text)]
    if not spans:
        return []
    [words], _ = visible_words(tagger.tokenizer, [[text[a:b] for a, b in spans]])
    [tokens] = tagger([words], is_split_into_words=True, aggregation_strategy="none", ignore_labels=[])
    starts = list(accumulate((len(w) + 1 for w in words[:-1]), initial=0))  # in the words joined by spaces
    first: dict[int, dict] = {}
    for token in tokens:
        first.setdefault(bisect_right(starts, int(token["start"])) - 1, token)
    return [
        {
            "word": text[a:b],
            "tag": first[i]["entity"] if i in first else None,
            "score": round(float(first[i]["score"]), 6) if i in first else None,
            "start": a,
            "end": b,
        }
        for i, (a, b) in enumerate(spans)
    ]


def classify(model: str, texts: list[str], top_k: int = 5) -> list[dict]:
    """The ``top_k`` most likely labels of each text, with their probabilities (the
    text-classification pipeline's softmax over the model's labels)."""
    from transformers import pipeline

    from kfnlp.modeling import inference_device, load_sequence_classifier, load_tokenizer

    net = load_sequence_classifier(model)
    architectures = net.config.architectures or []
    if not any(name.endswith("ForSequenceClassification") for name in architectures):
        raise InputError(f"{model}: not a text-classification model (its architecture is {', '.join(architectures)})")
    classifier = pipeline("text-classification", model=net, tokenizer=load_tokenizer(model), device=inference_device())
    results = []
    for text in texts:
        ranked = classifier(text, top_k=min(top_k, net.config.num_labels), truncation=True)
        results.append(
            {"text": text, "labels": [{"label": p["label"], "score": round(float(p["score"]), 6)} for p in ranked]}
        )
    return results
