"""Inference with trained models, through plain transformers pipelines (on the GPU when there is one)."""

from __future__ import annotations

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
    token-classification pipeline (``aggregation_strategy="simple"``)."""
    from transformers import pipeline

    from kfnlp.modeling import inference_device, load_token_classifier, load_tokenizer

    net = load_token_classifier(model)
    if not any(str(label).startswith(("B-", "I-")) for label in net.config.id2label.values()):
        raise InputError(f"{model}: not an NER model (its labels are {list(net.config.id2label.values())[:5]}...)")
    tagger = pipeline(
        "token-classification",
        model=net,
        tokenizer=load_tokenizer(model),
        aggregation_strategy="simple",
        device=inference_device(),
    )
    results = []
    for text in texts:
        found = tagger(text)
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
