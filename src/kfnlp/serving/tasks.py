"""One runner per task a kfnlp model serves: the model loaded once, the texts of a batch checked, then run in one
forward pass, each answer shaped as ``kfnlp predict`` shapes it (label names, NER tokens grouped into entities).

KServe's Hugging Face runtime answers with label ids and ungrouped tokens and lower-cases its input; these
runners are what ``kfnlp serve`` answers with instead, so a client gets the same JSON from the server as
from ``kfnlp predict`` on the same text.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from pathlib import Path

from kfnlp.config import shown
from kfnlp.errors import ConfigError, InputError

log = logging.getLogger(__name__)

TASKS = ("fill-mask", "token-classification", "text-classification", "text-generation")
# config.json architectures -> the task their head answers (the suffix of the class name)
HEAD_TASKS = {
    "ForMaskedLM": "fill-mask",
    "ForTokenClassification": "token-classification",
    "ForSequenceClassification": "text-classification",
    "ForCausalLM": "text-generation",
    "LMHeadModel": "text-generation",
}


def task_of(location: str, ref: str) -> str:
    """The task of the model directory ``location`` (of reference ``ref``): its head's, from config.json's
    ``architectures``; a LoRA adapter (adapter_config.json) is a causal LM's."""
    from kfnlp.modeling import is_adapter

    path = Path(location)
    if is_adapter(path):
        return "text-generation"
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{ref}: no readable config.json to tell the model's task ({exc}); give --task") from None
    architectures = config.get("architectures") if isinstance(config, dict) else None
    for name in architectures or []:
        for suffix, task in HEAD_TASKS.items():
            if isinstance(name, str) and name.endswith(suffix):
                return task
    raise ConfigError(
        f"{ref}: cannot tell the task from config.json architectures {architectures}; give --task ({', '.join(TASKS)})"
    )


class Runner:
    """A loaded model for one task. ``check`` refuses a text before it joins a batch (:class:`InputError`, a 400
    for the server); ``run`` answers a batch of checked texts with one forward pass (generation: one per text)."""

    task = ""

    def __init__(self, ref: str, location: str, *, max_length: int = 0, top_k: int = 5, max_new_tokens: int = 50):
        self.ref = ref
        self.location = location  # the local model directory (a models:/ or s3:// model downloaded and verified)
        self.top_k = top_k
        self.max_new_tokens = max_new_tokens
        self.forward_batches: list[int] = []  # the batch size of each forward pass, for the metrics and tests
        self.on_forward: Callable[[int], None] | None = None
        self._lock = threading.Lock()
        self.load()
        limit = self.position_limit()
        if max_length and limit and max_length > limit:
            raise ConfigError(f"--max-length: {max_length} tokens is more than {ref}'s position limit of {limit}")
        self.max_length = max_length or limit or 0
        self.model.register_forward_pre_hook(self._count, with_kwargs=True)

    def load(self) -> None:
        raise NotImplementedError

    def position_limit(self) -> int | None:
        from kfnlp.modeling import position_limit

        return position_limit(self.location)

    def _count(self, _module, args, kwargs) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        self._record(int(ids.shape[0]) if ids is not None else 0)

    def _record(self, size: int) -> None:
        self.forward_batches.append(size)
        if self.on_forward is not None:
            self.on_forward(size)

    def tokens(self, text: str) -> int:
        return len(self.tokenizer(text)["input_ids"])

    def check(self, text: str) -> None:
        """Refuse ``text`` with an InputError naming what is wrong with it."""
        if not isinstance(text, str):
            raise InputError(f"expected each instance to be a string, got {type(text).__name__} {shown(text)}")
        if not text.strip():
            raise InputError("an instance is empty; give some text")
        count = self.tokens(text)
        if self.max_length and count > self.max_length:
            raise InputError(
                f"text {shown(text)} is {count} tokens, more than the limit of {self.max_length} (--max-length, "
                f"at most the model's positions); shorten it"
            )

    def run(self, texts: list[str]) -> list[dict]:
        with self._lock:  # one forward pass at a time: torch runs its own threads within it
            return self._run(texts)

    def _run(self, texts: list[str]) -> list[dict]:
        raise NotImplementedError


class FillMask(Runner):
    task = "fill-mask"

    def load(self) -> None:
        from transformers import pipeline

        from kfnlp.modeling import inference_device, load_masked_lm, load_tokenizer

        self.tokenizer = load_tokenizer(self.location)
        self.model = load_masked_lm(self.location).eval()
        self.pipe = pipeline("fill-mask", model=self.model, tokenizer=self.tokenizer, device=inference_device())

    def check(self, text: str) -> None:
        super().check(text)
        count = text.replace("[MASK]", self.tokenizer.mask_token).count(self.tokenizer.mask_token)
        if count != 1:
            raise InputError(
                f"{shown(text)}: expected exactly one [MASK] (whatever the model's mask token), found {count}"
            )

    def _run(self, texts: list[str]) -> list[dict]:
        prepared = [text.replace("[MASK]", self.tokenizer.mask_token) for text in texts]
        found = self.pipe(prepared, top_k=self.top_k, batch_size=len(texts))
        if len(texts) == 1:  # the pipeline unwraps a list of one
            found = [found]
        return [
            {
                "text": text,
                "predictions": [{"token": p["token_str"], "score": round(float(p["score"]), 6)} for p in preds],
            }
            for text, preds in zip(texts, found, strict=True)
        ]


class TokenClassification(Runner):
    """NER models (B-/I- labels) get entities grouped as ``kfnlp predict ner`` groups them (aggregation
    ``simple``); a model of plain tags gets each word's tag (:func:`kfnlp.predict.word_tags`, a pass per text)."""

    task = "token-classification"

    def load(self) -> None:
        from transformers import pipeline

        from kfnlp.modeling import inference_device, load_token_classifier, load_tokenizer

        self.model = load_token_classifier(self.location).eval()
        labels = list(self.model.config.id2label.values())
        scheme = getattr(self.model.config, "tag_scheme", None)
        if scheme is None and any(str(label).startswith(("B-", "I-")) for label in labels):
            scheme = "iob2"
        if scheme not in ("iob2", "plain"):
            raise ConfigError(f"{self.ref}: not an NER model (its labels are {labels[:5]}...)")
        self.scheme = scheme
        self.tokenizer = load_tokenizer(self.location)
        self.pipe = pipeline(
            "token-classification", model=self.model, tokenizer=self.tokenizer, device=inference_device()
        )

    def _run(self, texts: list[str]) -> list[dict]:
        from kfnlp.predict import ner_answer, word_tags

        if self.scheme == "plain":
            return [{"text": text, "words": word_tags(self.pipe, text)} for text in texts]
        found = self.pipe(texts, aggregation_strategy="simple", batch_size=len(texts))
        return [ner_answer(text, entities) for text, entities in zip(texts, found, strict=True)]


class TextClassification(Runner):
    task = "text-classification"

    def load(self) -> None:
        from transformers import pipeline

        from kfnlp.modeling import inference_device, load_sequence_classifier, load_tokenizer

        self.model = load_sequence_classifier(self.location).eval()
        self.tokenizer = load_tokenizer(self.location)
        self.pipe = pipeline(
            "text-classification", model=self.model, tokenizer=self.tokenizer, device=inference_device()
        )

    def _run(self, texts: list[str]) -> list[dict]:
        top_k = min(self.top_k, self.model.config.num_labels)
        found = self.pipe(texts, top_k=top_k, truncation=True, batch_size=len(texts))
        return [
            {"text": text, "labels": [{"label": p["label"], "score": round(float(p["score"]), 6)} for p in ranked]}
            for text, ranked in zip(texts, found, strict=True)
        ]


class TextGeneration(Runner):
    """Greedy continuation of each prompt, as ``kfnlp predict generate`` makes it with its defaults. The prompts
    of a batch run one by one: left padding would let batched greedy decoding drift from the single prompt's text."""

    task = "text-generation"

    def load(self) -> None:
        from kfnlp.modeling import (
            check_causal_tokenizer,
            inference_device,
            load_causal_lm,
            load_tokenizer,
            merge_adapter,
        )
        from kfnlp.predict import _eos_ids

        self.device = inference_device()
        self.model = merge_adapter(load_causal_lm(self.location)).to(self.device).eval()
        self.tokenizer = load_tokenizer(self.location)
        check_causal_tokenizer(self.tokenizer, self.ref)
        self.eos = _eos_ids(self.model, self.tokenizer)

    def position_limit(self) -> int | None:
        limit = getattr(self.model.config, "max_position_embeddings", None)
        if not isinstance(limit, int) or isinstance(limit, bool):
            return None
        if self.max_new_tokens >= limit:
            raise ConfigError(f"--max-new-tokens: {self.max_new_tokens} leaves no room in {limit} positions")
        return limit - self.max_new_tokens  # the prompt and its continuation must fit

    def _count(self, _module, args, kwargs) -> None:
        pass  # a forward per new token: _run records one pass of batch size 1 per prompt instead

    def _run(self, texts: list[str]) -> list[dict]:
        import torch
        from transformers import set_seed

        from kfnlp.predict import Decoding

        kwargs = Decoding(max_new_tokens=self.max_new_tokens).generate_kwargs()
        results = []
        for prompt in texts:
            ids = self.tokenizer(prompt)["input_ids"]
            input_ids = torch.tensor([ids], device=self.device)
            self._record(1)
            set_seed(Decoding.seed)
            with torch.inference_mode():
                output = self.model.generate(
                    input_ids=input_ids,
                    attention_mask=torch.ones_like(input_ids),
                    pad_token_id=self.tokenizer.pad_token_id,
                    eos_token_id=sorted(self.eos),
                    **kwargs,
                )
            new = output[0, len(ids) :].tolist()
            results.append(
                {
                    "prompt": prompt,
                    "completion": self.tokenizer.decode(new, skip_special_tokens=True),
                    "tokens": len(new),
                    "stopped": "eos" if new and new[-1] in self.eos else "max_new_tokens",
                }
            )
        return results


RUNNERS: dict[str, type[Runner]] = {
    runner.task: runner for runner in (FillMask, TokenClassification, TextClassification, TextGeneration)
}


def load_runner(ref: str, task: str = "", **options) -> Runner:
    """``ref``'s model loaded for ``task`` (default: the task of its head)."""
    from kfnlp.modeling import model_dir

    if task and task not in RUNNERS:
        raise ConfigError(f"--task: expected one of {', '.join(TASKS)}, got {shown(task)}")
    location = model_dir(ref)
    task = task or task_of(location, ref)
    log.info("serving %s as %s", ref, task)
    return RUNNERS[task](ref, location, **options)
