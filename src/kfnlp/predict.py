"""Inference with trained models, through plain transformers pipelines (on the GPU when there is one)."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from itertools import accumulate

from kfnlp.config import SEED_MAX, bounded, shown
from kfnlp.errors import ConfigError, InputError


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
    return [ner_answer(text, tagger(text, aggregation_strategy="simple")) for text in texts]


def ner_answer(text: str, found: list[dict], scored: bool = True) -> dict:
    """One text's answer as ``kfnlp predict ner`` gives it (and kfnlp serve, and the client of a deployed model):
    the token-classification pipeline's grouped entities (``found``), with their scores unless ``scored`` is off."""
    return {
        "text": text,
        "entities": [
            {
                "entity_group": e["entity_group"],
                "word": e["word"],
                "start": int(e["start"]),
                "end": int(e["end"]),
                "score": round(float(e["score"]), 6) if scored else None,
            }
            for e in found
        ],
    }


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


@dataclass(frozen=True)
class Decoding:
    """How :func:`generate` picks each next token: transformers' generation options, named in errors as the
    ``kfnlp predict generate`` options they come from. None leaves an option to the model's
    generation_config.json, else to transformers' default (temperature 1.0, top_k 50, top_p 1.0,
    repetition_penalty 1.0, no_repeat_ngram_size 0: all off)."""

    max_new_tokens: int = 50
    num_beams: int = 1
    do_sample: bool = False
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    repetition_penalty: float | None = None
    no_repeat_ngram_size: int | None = None
    seed: int = 42

    def check(self) -> None:
        """Refuse, in one line naming the option, what transformers would refuse deep inside ``generate``
        with a raw ValueError, or (a sampling option without ``do_sample``) ignore after a warning that
        kfnlp's quiet log hides: transformers then decodes greedily as if the option were not there."""
        if self.max_new_tokens < 1:
            raise ConfigError(f"--max-new-tokens: expected an integer >= 1, got {self.max_new_tokens}")
        if self.num_beams < 1:
            raise ConfigError(f"--num-beams: expected an integer >= 1, got {self.num_beams}")
        if self.temperature is not None and not (math.isfinite(self.temperature) and self.temperature > 0):
            raise ConfigError(
                f"--temperature: expected a number > 0, got {self.temperature} (for the most likely token every "
                "time, leave out --do-sample: greedy decoding)"
            )
        if self.top_k is not None and self.top_k < 0:
            raise ConfigError(f"--top-k: expected an integer >= 0 (0: no top-k limit), got {self.top_k}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ConfigError(f"--top-p: expected a number in (0, 1] (1: no nucleus limit), got {self.top_p}")
        if self.repetition_penalty is not None and not (
            math.isfinite(self.repetition_penalty) and self.repetition_penalty > 0
        ):
            raise ConfigError(
                f"--repetition-penalty: expected a number > 0 (1.0: none, above 1 discourages repeats), "
                f"got {self.repetition_penalty}"
            )
        if self.no_repeat_ngram_size is not None and self.no_repeat_ngram_size < 0:
            raise ConfigError(
                f"--no-repeat-ngram-size: expected an integer >= 0 (0: off), got {self.no_repeat_ngram_size}"
            )
        if not 0 <= self.seed <= SEED_MAX:
            raise ConfigError(f"--seed: expected an integer from 0 to {SEED_MAX}, got {self.seed}")
        sampling = [
            flag
            for flag, value in (("--temperature", self.temperature), ("--top-k", self.top_k), ("--top-p", self.top_p))
            if value is not None
        ]
        if sampling and not self.do_sample:
            raise ConfigError(
                f"{', '.join(sampling)} only apply with --do-sample (without it decoding is greedy or beam search, "
                "and transformers would ignore them); add --do-sample or drop them"
            )

    def generate_kwargs(self) -> dict:
        """The keyword arguments of ``model.generate`` (and of the text-generation pipeline)."""
        kwargs = {"max_new_tokens": self.max_new_tokens, "num_beams": self.num_beams, "do_sample": self.do_sample}
        for name in ("temperature", "top_k", "top_p", "repetition_penalty", "no_repeat_ngram_size"):
            if getattr(self, name) is not None:
                kwargs[name] = getattr(self, name)
        return kwargs


def generate(
    model: str,
    prompts: list[str],
    decoding: Decoding | None = None,
    *,
    chat: bool = False,
    on_text: Callable[[int, str], None] | None = None,
) -> list[dict]:
    """Each prompt continued by ``model``'s causal LM through ``model.generate``: greedy by default, beam search,
    or sampling seeded with ``decoding.seed`` before each prompt (the same seed and prompt give the same text,
    whatever the other prompts). ``chat``: the prompt is a user message rendered by the tokenizer's chat
    template, and the completion is the model's reply. ``on_text(index, piece)`` streams through transformers'
    ``TextStreamer``: called with ``""`` when prompt ``index`` starts, then with each piece of decoded text as
    it comes; the pieces join into that prompt's ``completion``. Every prompt is checked before any is run.

    Returns ``{"prompt", "completion", "tokens" (new tokens, end-of-text included), "stopped" ("eos" or
    "max_new_tokens")}`` per prompt."""
    import torch
    from transformers import set_seed

    from kfnlp.modeling import check_causal_tokenizer, inference_device, load_causal_lm, load_tokenizer, merge_adapter

    decoding = decoding or Decoding()
    decoding.check()
    if on_text is not None and decoding.num_beams > 1:
        raise ConfigError("--stream works with one beam only (transformers streams no beam search); drop one of them")
    net = merge_adapter(load_causal_lm(model))  # a LoRA adapter added into its base: the same text, faster
    tokenizer = load_tokenizer(model)
    check_causal_tokenizer(tokenizer, model)
    if chat and not tokenizer.chat_template:
        raise ConfigError(f"{model}'s tokenizer has no chat template; drop --chat")
    encoded = [_prompt_ids(tokenizer, prompt, chat, model) for prompt in prompts]
    _check_context(net.config, encoded, prompts, decoding.max_new_tokens, model)
    device = inference_device()
    net.to(device).eval()
    eos = _eos_ids(net, tokenizer)
    results = []
    for index, (prompt, ids) in enumerate(zip(prompts, encoded, strict=True)):
        streamer = None
        if on_text is not None:
            on_text(index, "")
            streamer = _streamer(tokenizer, lambda piece, index=index: on_text(index, piece))
        input_ids = torch.tensor([ids], device=device)
        set_seed(decoding.seed)
        with torch.inference_mode():
            output = net.generate(
                input_ids=input_ids,
                attention_mask=torch.ones_like(input_ids),
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=sorted(eos),  # the model's own, or the tokenizer's when its generation config has none
                streamer=streamer,
                **decoding.generate_kwargs(),
            )
        new = output[0, len(ids) :].tolist()
        results.append(
            {
                "prompt": prompt,
                "completion": tokenizer.decode(new, skip_special_tokens=True),
                "tokens": len(new),
                "stopped": "eos" if new and new[-1] in eos else "max_new_tokens",
            }
        )
    return results


def _prompt_ids(tokenizer, prompt: str, chat: bool, model: str) -> list[int]:
    """The token ids ``generate`` starts from: the prompt as the tokenizer reads text (with the special tokens
    it adds, as the text-generation pipeline does), or, with ``chat``, the chat template's rendering of the
    prompt as a user message, ending in the cue for the assistant's reply."""
    if chat:
        from jinja2 import TemplateError

        try:
            text = tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
            )
        except TemplateError as exc:
            raise ConfigError(f"{model}'s chat template failed on {shown(prompt)}: {bounded(str(exc))}") from None
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]  # the template writes its special tokens
    else:
        ids = tokenizer(prompt)["input_ids"]
    if not ids:
        raise InputError(f"prompt {shown(prompt)} has no tokens; give some text to continue")
    return ids


def _check_context(config, encoded: list[list[int]], prompts: list[str], max_new_tokens: int, model: str) -> None:
    """Refuse a prompt that, with ``max_new_tokens`` more, would not fit the model's positions (config
    ``n_positions`` / ``max_position_embeddings``): the model would fail with an index error, or run past
    what it was trained on."""
    limit = getattr(config, "max_position_embeddings", None)
    if not isinstance(limit, int) or isinstance(limit, bool):
        return  # relative positions only: no fixed context
    if max_new_tokens >= limit:
        raise ConfigError(
            f"--max-new-tokens: {max_new_tokens} leaves no room for a prompt in {model}'s context of {limit} "
            f"positions; use at most {limit - 1}"
        )
    for prompt, ids in zip(prompts, encoded, strict=True):
        if len(ids) + max_new_tokens > limit:
            raise InputError(
                f"prompt {shown(prompt)} is {len(ids)} tokens: with --max-new-tokens {max_new_tokens} that is "
                f"{len(ids) + max_new_tokens} positions, more than {model}'s context of {limit}; shorten the "
                f"prompt to at most {limit - max_new_tokens} tokens or lower --max-new-tokens"
            )


def _eos_ids(net, tokenizer) -> set[int]:
    """The token ids that end generation: the model's generation config's (one or a list), else the tokenizer's."""
    configured = getattr(getattr(net, "generation_config", None), "eos_token_id", None)
    if configured is None:
        configured = tokenizer.eos_token_id
    return set(configured) if isinstance(configured, list) else {configured}


def _streamer(tokenizer, on_piece: Callable[[str], None]):
    """A transformers ``TextStreamer`` that hands each finished piece of text to ``on_piece`` instead of
    printing it (the prompt skipped, special tokens left out as in the completion)."""
    from transformers import TextStreamer

    class Streamer(TextStreamer):
        def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
            if text:
                on_piece(text)

    return Streamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
