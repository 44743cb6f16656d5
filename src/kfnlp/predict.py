"""Inference with trained models, through plain transformers pipelines."""

from __future__ import annotations

from kfnlp.errors import InputError


def fill_mask(model: str, texts: list[str], top_k: int = 5) -> list[dict]:
    """Top-k fills for ``[MASK]`` in each text (written as [MASK] for any model)."""
    from transformers import pipeline

    from kfnlp.modeling import load_masked_lm, load_tokenizer

    tokenizer = load_tokenizer(model)
    unmasker = pipeline("fill-mask", model=load_masked_lm(model), tokenizer=tokenizer, device=-1)
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
