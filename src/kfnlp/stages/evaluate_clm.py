"""evaluate-clm: a causal LM's perplexity on the held-out chunks of a preprocessed dataset, and
generation samples.

The held-out set is the first ``max_chunks`` chunks of a split, in stored order: no masking and no
sampling, so the same data gives the same set, and a model scored before and after adaptation is
scored on identical tokens. Perplexity is exp of the stock model's mean loss over every predicted
position of that set (labels = input ids, shifted inside the model), token-weighted across batches:
what one forward of the whole set with ``labels=input_ids`` returns. The samples are continuations of
a few prompts, greedy and sampled with a fixed seed, to read beside the number.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass

from kfnlp.artifacts import open_dataset, write_evaluation
from kfnlp.config import FieldError, check_at_least, check_seed, option
from kfnlp.errors import ConfigError, InputError
from kfnlp.metrics import perplexity
from kfnlp.stages.entry import Input, Stage
from kfnlp.storage import fingerprint

log = logging.getLogger(__name__)

DEFAULT_PROMPTS = ["This movie was", "The acting"]
SAMPLING = {"do_sample": True, "top_k": 50, "top_p": 1.0, "temperature": 1.0}  # transformers' sampling defaults
# the metrics in result["metrics"] a sweep may select on, and which way is better
METRICS = {"perplexity": "minimize", "eval_loss": "minimize"}


@dataclass
class EvaluateClmConfig:
    split: str = option("test", "split of the preprocess dataset to score (its held-out documents)")
    max_chunks: int | None = option(500, "score the first N chunks of the split (fixed, deterministic); null: all")
    batch_size: int = option(32, "evaluation batch size (chunks)")
    prompts: list[str] = option(
        default_factory=lambda: list(DEFAULT_PROMPTS), help="texts to continue in the generation samples"
    )
    max_new_tokens: int = option(30, "tokens generated per sample")
    samples_seed: int = option(42, "seed of each prompt's sampled continuation (top-k 50, temperature 1)")

    def __post_init__(self):
        check_at_least(self.batch_size, 1, "batch_size")
        check_at_least(self.max_chunks, 1, "max_chunks")
        check_at_least(self.max_new_tokens, 1, "max_new_tokens")
        check_seed(self.samples_seed, "samples_seed")
        for i, prompt in enumerate(self.prompts):
            if not prompt.strip():
                raise FieldError("prompts", f"prompt {i} is empty; the model needs text to continue")


def causal_lm_loss_sum(model, data, batch_size: int) -> tuple[float, int]:
    """Sum of the stock model's loss over every predicted position (labels = input ids; padding, if any,
    -100), and the number of those positions, on the device the model is on. Each batch's mean loss is
    weighted by its positions, so the total does not depend on the batch size."""
    import torch
    from tqdm.auto import tqdm

    model.eval()
    device = model.device
    total, count = 0.0, 0
    with torch.inference_mode():
        for start in tqdm(range(0, len(data), batch_size), desc="evaluate", unit="batch", mininterval=2):
            batch = data[start : start + batch_size]
            input_ids = batch["input_ids"].long()
            attention_mask = batch["attention_mask"].long()
            labels = input_ids.masked_fill(attention_mask == 0, -100)
            n = int((labels[:, 1:] != -100).sum())  # the model predicts position i+1 from positions <= i
            if n == 0:
                continue
            out = model(
                input_ids=input_ids.to(device),
                attention_mask=attention_mask.to(device),
                labels=labels.to(device),
                use_cache=False,
            )
            total += float(out.loss) * n
            count += n
    return total, count


def context_limit(model) -> int | None:
    """The most positions ``model`` takes (GPT-2's n_positions, max_position_embeddings), or None."""
    limit = getattr(model.config, "max_position_embeddings", None) or getattr(model.config, "n_positions", None)
    return limit if isinstance(limit, int) and limit > 0 else None


def generation_samples(model, tokenizer, prompts: list[str], max_new_tokens: int, seed: int) -> list[dict]:
    """For each prompt its greedy continuation and one sampled with ``seed`` (reset before each prompt, so
    a prompt's sample does not depend on the prompts before it): the generated text only, without the prompt."""
    import torch
    from transformers import set_seed

    limit = context_limit(model)
    samples = []
    for i, prompt in enumerate(prompts):
        encoded = tokenizer(prompt, return_tensors="pt")
        length = encoded["input_ids"].shape[1]
        if limit is not None and length + max_new_tokens > limit:
            raise ConfigError(
                f"evaluate_clm.prompts[{i}]: {length} tokens + max_new_tokens {max_new_tokens} is more than the "
                f"model's context of {limit} tokens; shorten the prompt or lower max_new_tokens",
                "evaluate_clm.prompts",
            )
        inputs = {k: v.to(model.device) for k, v in encoded.items()}
        common = {"max_new_tokens": max_new_tokens, "pad_token_id": tokenizer.pad_token_id}
        with torch.inference_mode():
            greedy = model.generate(**inputs, do_sample=False, num_beams=1, **common)
            set_seed(seed)
            sampled = model.generate(**inputs, **SAMPLING, **common)
        samples.append(
            {
                "prompt": prompt,
                "greedy": tokenizer.decode(greedy[0, length:], skip_special_tokens=True),
                "sampled": tokenizer.decode(sampled[0, length:], skip_special_tokens=True),
            }
        )
    return samples


def held_out(dataset: str, config: EvaluateClmConfig):
    """The opened dataset and the first ``max_chunks`` chunks of its split, refusing data that is not chunked text."""
    source = open_dataset(dataset)
    task = source.manifest.get("task")
    if task != "mlm":  # "mlm": preprocess's chunks of running text (the same chunks serve masked and causal LMs)
        raise InputError(f"{dataset}: a {task} dataset, not chunked text; run preprocess on the corpus")
    counts = source.manifest.get("counts") or {}
    if counts.get(config.split, {}).get("chunks", 1) == 0:  # before loading: datasets cannot reload an empty split
        raise InputError(f"{dataset}: the {config.split} split has no chunks to score")
    splits = source.splits()
    if config.split not in splits:
        raise InputError(f"{dataset}: no {config.split} split (has {', '.join(splits)})")
    data = splits[config.split]
    if len(data) == 0:
        raise InputError(f"{dataset}: the {config.split} split has no chunks to score")
    if config.max_chunks is not None and config.max_chunks < len(data):
        data = data.select(range(config.max_chunks))
    return source, data.select_columns(["input_ids", "attention_mask"]).with_format("torch")


def evaluate_clm(model: str, dataset: str, output: str, config: EvaluateClmConfig, label: str = "model") -> dict:
    """Score the causal LM ``model`` on the held-out chunks of the preprocess ``dataset`` and generate its
    samples; write the evaluation artifact to ``output``; return its result."""
    from kfnlp.modeling import check_causal_tokenizer, inference_device, load_causal_lm, load_tokenizer
    from kfnlp.reports import clm_evaluation_html, clm_evaluation_markdown

    started = time.monotonic()
    source, data = held_out(dataset, config)
    net = load_causal_lm(model)  # first: "a masked LM, not a causal LM" says more than its tokenizer's faults
    tokenizer = check_causal_tokenizer(load_tokenizer(model), model)
    source.check_vocabulary(tokenizer)
    net = net.to(inference_device())
    limit, chunk = context_limit(net), data[0]["input_ids"].shape[0]
    if limit is not None and chunk > limit:
        raise InputError(
            f"{dataset}: chunks of {chunk} tokens are longer than {model}'s context of {limit}; "
            f"preprocess with chunk_size at most {limit}"
        )
    total, count = causal_lm_loss_sum(net, data, config.batch_size)
    if count == 0:
        raise InputError(f"{dataset}: the {config.split} split has no token to predict (chunks of one token)")
    seconds = time.monotonic() - started
    samples = generation_samples(net, tokenizer, config.prompts, config.max_new_tokens, config.samples_seed)
    metrics = {
        "perplexity": perplexity(total, count),
        "eval_loss": total / count,
        "tokens": count,
        "eval_chunks": len(data),
        "eval_seconds": round(seconds, 3),
        "eval_samples_per_second": round(len(data) / seconds, 2) if seconds > 0 else None,
    }
    log.info("evaluate %s: perplexity %.3f over %d predicted tokens", label, metrics["perplexity"], count)
    eval_set = fingerprint(source.fingerprint, config.split, len(data))  # the held-out chunks, whatever asked for them
    result = {
        "task": "clm",
        "label": label,
        "model": model,
        "split": config.split,
        "dataset_fingerprint": source.fingerprint,
        "eval_set_fingerprint": eval_set,
        "metrics": metrics,
        "samples": samples,
        "config": asdict(config),
    }
    write_evaluation(
        output,
        result,
        clm_evaluation_markdown(result),
        clm_evaluation_html(result),
        task="clm",
        eval_set_fingerprint=eval_set,
        dataset_fingerprint=source.fingerprint,
        metrics=metrics,
        label=label,
    )
    return result


STAGE = Stage(
    name="evaluate-clm",
    config=EvaluateClmConfig,
    function=evaluate_clm,
    help="causal-LM perplexity on the held-out chunks plus greedy and sampled generations",
    inputs=(
        Input(
            "model",
            "causal LM to score (train-clm artifact, path, Hub id or builtin:gpt2-imdb)",
            required=True,
            kind="model",
        ),
        Input(
            "dataset",
            "dataset artifact from preprocess (tokenized with the model's tokenizer)",
            required=True,
            kind="artifact",
        ),
        Input("output", "evaluation directory to write", required=True),
        Input("label", "name for this model in reports", default="model"),
    ),
    example="max_chunks=100",
    hub=True,
)
