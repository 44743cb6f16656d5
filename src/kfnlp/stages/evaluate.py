"""evaluate (MLM): perplexity on the stored masked eval set, and fill-mask examples."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass

from kfnlp.artifacts import open_eval_set, write_evaluation
from kfnlp.config import option
from kfnlp.errors import InputError
from kfnlp.metrics import perplexity
from kfnlp.stages.entry import Input, Stage

log = logging.getLogger(__name__)

DEFAULT_PROMPTS = ["This is a great [MASK].", "The acting in this movie was [MASK]."]
# the metrics in result["metrics"] a sweep may select on, and which way is better
METRICS = {"perplexity": "minimize", "eval_loss": "minimize"}


@dataclass
class EvaluateConfig:
    batch_size: int = option(64, "evaluation batch size")
    prompts: list[str] = option(default_factory=lambda: list(DEFAULT_PROMPTS), help="[MASK] = the mask token")
    top_k: int = option(5, "fill-mask predictions shown per prompt")
    sparse_head: bool = option(True, "MLM head and loss only at masked positions (same perplexity, faster)")

    def __post_init__(self):
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")


def masked_lm_loss_sum(model, eval_data, batch_size: int) -> tuple[float, int]:
    """Sum of the cross-entropy over all labelled tokens, and their count, on the device the model is on."""
    import torch
    from tqdm.auto import tqdm

    model.eval()
    device = model.device
    total, count = 0.0, 0
    with torch.inference_mode():
        for start in tqdm(range(0, len(eval_data), batch_size), desc="evaluate", unit="batch", mininterval=2):
            batch = eval_data[start : start + batch_size]
            labels = batch["labels"].long()
            n = int((labels != -100).sum())
            if n == 0:
                continue
            out = model(
                input_ids=batch["input_ids"].long().to(device),
                attention_mask=batch["attention_mask"].long().to(device),
                labels=labels.to(device),
            )
            total += float(out.loss) * n
            count += n
    return total, count


def fill_mask(model, tokenizer, prompts: list[str], top_k: int) -> list[dict]:
    from transformers import pipeline

    unmasker = pipeline("fill-mask", model=model, tokenizer=tokenizer, device=model.device)
    results = []
    for prompt in prompts:
        text = prompt.replace("[MASK]", tokenizer.mask_token)
        if tokenizer.mask_token not in text:
            results.append({"prompt": prompt, "error": "no [MASK] in prompt"})
            continue
        preds = unmasker(text, top_k=top_k)
        results.append(
            {"prompt": prompt, "predictions": [{"token": p["token_str"], "score": p["score"]} for p in preds]}
        )
    return results


def evaluate_mlm(model: str, eval_set: str, output: str, config: EvaluateConfig, label: str = "model") -> dict:
    from kfnlp.modeling import (
        disable_sparse_mlm_loss,
        enable_sparse_mlm_loss,
        inference_device,
        load_masked_lm,
        load_tokenizer,
    )
    from kfnlp.reports import evaluation_html, evaluation_markdown

    started = time.monotonic()
    masked = open_eval_set(eval_set)
    tokenizer = load_tokenizer(model)
    masked.check_vocabulary(tokenizer)
    net = load_masked_lm(model).to(inference_device())
    sparse = config.sparse_head and enable_sparse_mlm_loss(net)
    data = masked.data().with_format("torch")
    total, count = masked_lm_loss_sum(net, data, config.batch_size)
    if count == 0:
        raise InputError(
            f"{eval_set}: the eval set has no masked tokens to score; run mask-eval again with a higher "
            "probability or more chunks"
        )
    seconds = time.monotonic() - started
    disable_sparse_mlm_loss(net)
    examples = fill_mask(net, tokenizer, config.prompts, config.top_k)
    metrics = {
        "perplexity": perplexity(total, count),
        "eval_loss": total / count,
        "masked_tokens": count,
        "eval_chunks": len(data),
        "eval_seconds": round(seconds, 3),
        "eval_samples_per_second": round(len(data) / seconds, 2) if seconds > 0 else None,
    }
    log.info("evaluate %s: perplexity %.3f over %d masked tokens", label, metrics["perplexity"], count)
    result = {
        "task": "mlm",
        "label": label,
        "model": model,
        "eval_set_fingerprint": masked.fingerprint,
        "metrics": metrics,
        "fill_mask": examples,
        "sparse_head": sparse,
        "config": asdict(config),
    }
    write_evaluation(
        output,
        result,
        evaluation_markdown(result),
        evaluation_html(result),
        task="mlm",
        eval_set_fingerprint=masked.fingerprint,
        metrics=metrics,
        label=label,
    )
    return result


STAGE = Stage(
    name="evaluate",
    config=EvaluateConfig,
    function=evaluate_mlm,
    help="perplexity on the masked eval set plus fill-mask examples",
    inputs=(
        Input(
            "model",
            "model to score (artifact, path, Hub id or builtin:splade-tiny)",
            required=True,
            kind="model",
        ),
        Input("eval_set", "eval-set artifact from mask-eval", required=True, kind="artifact"),
        Input("output", "evaluation directory to write", required=True),
        Input("label", "name for this model in reports", default="model"),
    ),
    example="batch_size=32",
    hub=True,
)
