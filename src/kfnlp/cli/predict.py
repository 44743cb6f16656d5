"""``kfnlp predict fill-mask``, ``ner``, ``text-classification`` and ``generate``: a model on text (:mod:`kfnlp.predict`)."""

from __future__ import annotations

import argparse
import json
import os

from kfnlp.errors import ConfigError


def add_parser(sub) -> None:
    predict = sub.add_parser("predict", help="use a model", description="Run a trained model on text.")
    predict_sub = predict.add_subparsers(dest="task", metavar="TASK", required=True)
    fm = predict_sub.add_parser(
        "fill-mask",
        help="predict the masked word",
        description="Top-k predictions for [MASK] in each text (written as [MASK] whatever the model's mask token is).",
    )
    fm.add_argument(
        "--model",
        required=True,
        help="model directory, kfnlp model artifact (local or s3://), Hub id, builtin:NAME or models:/NAME@ALIAS",
    )
    fm.add_argument("--top-k", type=int, default=5, help="predictions per text (default: 5)")
    fm.add_argument("--json", action="store_true", help="print JSON instead of a table")
    fm.add_argument("texts", nargs="+", metavar="TEXT", help="text containing [MASK]")
    _add_endpoint_options(fm)
    ner = predict_sub.add_parser(
        "ner",
        help="tag named entities (or each word, for a model of plain tags)",
        description="Named entities in each text, sub-tokens grouped into entities (aggregation_strategy simple); "
        "a model trained with tag_scheme plain (part-of-speech, ...) tags each whitespace-separated word.",
    )
    ner.add_argument(
        "--model",
        required=True,
        help="NER model directory, kfnlp model artifact (local or s3://), Hub id or models:/NAME@champion",
    )
    ner.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ner.add_argument("texts", nargs="+", metavar="TEXT", help="text to tag")
    _add_endpoint_options(ner)
    cls = predict_sub.add_parser(
        "text-classification",
        help="classify text",
        description="The top-k labels of each text with their probabilities (softmax over the model's labels).",
    )
    cls.add_argument(
        "--model",
        required=True,
        help="text-classification model directory, kfnlp model artifact (local or s3://), Hub id or "
        "models:/NAME@champion",
    )
    cls.add_argument("--top-k", type=int, default=5, help="labels per text (default: 5, at most the model's)")
    cls.add_argument("--json", action="store_true", help="print JSON instead of a table")
    cls.add_argument("texts", nargs="+", metavar="TEXT", help="text to classify")
    _add_endpoint_options(cls)
    _add_generate_parser(predict_sub)


def _add_endpoint_options(parser) -> None:
    """Ask a model deployed on KServe's Hugging Face runtime instead of running it here (:mod:`kfnlp.serving.client`)."""
    parser.add_argument(
        "--endpoint",
        metavar="URL",
        help="send the texts to this InferenceService (its base URL, http[s]://HOST[:PORT]) on KServe's Hugging "
        "Face runtime, and turn its label ids and tokens into the same answer as locally with --model's "
        "config and tokenizer (default: run --model here)",
    )
    parser.add_argument(
        "--protocol", choices=["v1", "v2"], default="v1", help="with --endpoint: KServe v1 or Open Inference v2"
    )
    parser.add_argument(
        "--name",
        help="with --endpoint: the model name in the URL, the InferenceService's (default: from --model, as "
        "kfnlp deploy names it)",
    )
    parser.add_argument(
        "--lower-case",
        action="store_true",
        help="with --endpoint: the runtime lower-cases the input (deployed without --disable_lower_case, not by "
        "kfnlp deploy, for a cased model)",
    )


def _add_generate_parser(predict_sub) -> None:
    gen = predict_sub.add_parser(
        "generate",
        help="continue text with a causal language model",
        description="Each prompt continued by a causal LM (GPT-2, Llama, Qwen...) through transformers' "
        "model.generate. Greedy decoding by default (the most likely token each step); --num-beams N keeps the N "
        "most likely sequences (beam search); --do-sample draws each token at random from the model's "
        "distribution, shaped by --temperature, --top-k and --top-p, seeded with --seed so that the same seed, "
        "model and prompt give the same text. --temperature, --top-k, --top-p, --repetition-penalty and "
        "--no-repeat-ngram-size, when left out, take the model's generation_config.json, else transformers' "
        "defaults. Prints each prompt followed by its continuation (with --chat, the reply alone).",
    )
    gen.add_argument(
        "--model",
        required=True,
        help="causal-LM model directory, kfnlp model artifact (local or s3://; a LoRA adapter loads onto its base), "
        "Hub id, builtin:NAME or models:/NAME@ALIAS",
    )
    gen.add_argument(
        "--max-new-tokens",
        type=int,
        default=50,
        help="most tokens to add to each prompt (default: 50); prompt "
        "and new tokens together must fit the model's context (its position embeddings)",
    )
    gen.add_argument(
        "--num-beams",
        type=int,
        default=1,
        help="beam search over this many sequences; 1 is greedy, or plain sampling with --do-sample (default: 1)",
    )
    gen.add_argument(
        "--do-sample",
        action="store_true",
        help="sample each token from the model's distribution instead of taking the most likely one "
        "(default: off); --temperature, --top-k and --top-p need it",
    )
    gen.add_argument(
        "--temperature",
        type=float,
        help="with --do-sample: divide the logits by this, > 0; below 1 sharper, above 1 flatter "
        "(default: the model's generation config, else 1.0)",
    )
    gen.add_argument(
        "--top-k",
        type=int,
        help="with --do-sample: draw from the K most likely tokens only; 0: no limit "
        "(default: the model's generation config, else 50)",
    )
    gen.add_argument(
        "--top-p",
        type=float,
        help="with --do-sample: draw from the smallest set of most likely tokens whose probabilities add up to P, "
        "in (0, 1]; 1: no limit (default: the model's generation config, else 1.0)",
    )
    gen.add_argument(
        "--repetition-penalty",
        type=float,
        help="lower the score of every token already in the text by this factor, > 0; 1.0 is none, above 1 "
        "discourages repeats, 1.2 a common choice (default: the model's generation config, else 1.0)",
    )
    gen.add_argument(
        "--no-repeat-ngram-size",
        type=int,
        help="never repeat an n-gram of this many tokens; 0: off (default: the model's generation config, else 0)",
    )
    gen.add_argument(
        "--seed",
        type=int,
        default=42,
        help="random seed, set before each prompt: the same seed gives the same sampled text (default: 42)",
    )
    gen.add_argument(
        "--stream",
        action="store_true",
        help="print the text as it is generated, through transformers' TextStreamer (default: off; not with "
        "--num-beams above 1 or --json)",
    )
    gen.add_argument(
        "--chat",
        action="store_true",
        help="send each prompt as a user message through the tokenizer's chat template and print the model's "
        "reply (default: off; the tokenizer must have a chat template)",
    )
    gen.add_argument(
        "--json",
        action="store_true",
        help="print JSON: prompt, completion, tokens (new tokens) and stopped (eos or max_new_tokens) per prompt",
    )
    gen.add_argument("prompts", nargs="+", metavar="PROMPT", help="text to continue (with --chat: a user message)")


def run(args: argparse.Namespace) -> int:
    from kfnlp.refs import check_model_ref

    if not args.debug:  # a weight-loading bar is noise here, and would precede an error line; set before
        # check_model_ref, which may import transformers (it reads the variable once, on import)
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    check_model_ref(args.model, "--model")
    if getattr(args, "endpoint", None):
        return _remote(args)
    if args.task == "ner":
        return _ner(args)
    if args.task == "text-classification":
        return _classify(args)
    if args.task == "generate":
        return _generate(args)
    return _fill_mask(args)


def _remote(args: argparse.Namespace) -> int:
    """The same answer and printout from a deployed model (scores None when the runtime sends label ids only)."""
    from kfnlp.serving.client import Endpoint, predict, service_name

    task = {"ner": "token-classification"}.get(args.task, args.task)
    if task != "token-classification" and args.top_k < 1:
        raise ConfigError(f"--top-k: expected an integer >= 1, got {args.top_k}")
    endpoint = Endpoint(args.endpoint, args.name or service_name(args.model), args.protocol)
    results = predict(
        task, endpoint, args.model, args.texts, top_k=getattr(args, "top_k", 5), lower_case=args.lower_case or None
    )
    printer = {"token-classification": _ner, "text-classification": _classify, "fill-mask": _fill_mask}[task]
    return printer(args, results)


def _score(value) -> str:
    return f"{value:7.4f}" if value is not None else "      -"


def _ner(args: argparse.Namespace, results: list[dict] | None = None) -> int:
    from kfnlp.predict import entities

    if results is None:
        results = entities(args.model, args.texts)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for item in results:
        print(item["text"])
        if "words" in item:  # a model of plain tags: one tag per word
            for w in item["words"]:
                score = "" if w["score"] is None else f"{w['score']:7.4f}"
                print(f"  {score:>7}  {w['tag'] or '(not seen)':<14} {w['word']!r} [{w['start']}:{w['end']}]")
            continue
        for e in item["entities"]:
            print(f"  {_score(e['score'])}  {e['entity_group']:<14} {e['word']!r} [{e['start']}:{e['end']}]")
        if not item["entities"]:
            print("  (no entities)")
    return 0


def _classify(args: argparse.Namespace, results: list[dict] | None = None) -> int:
    from kfnlp.predict import classify

    if args.top_k < 1:
        raise ConfigError(f"--top-k: expected an integer >= 1, got {args.top_k}")
    if results is None:
        results = classify(args.model, args.texts, args.top_k)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for item in results:
        print(item["text"])
        for p in item["labels"]:
            print(f"  {_score(p['score'])}  {p['label']}")
    return 0


def _fill_mask(args: argparse.Namespace, results: list[dict] | None = None) -> int:
    from kfnlp.predict import fill_mask

    if args.top_k < 1:
        raise ConfigError(f"--top-k: expected an integer >= 1, got {args.top_k}")
    if results is None:
        results = fill_mask(args.model, args.texts, args.top_k)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for item in results:
        print(item["text"])
        for p in item["predictions"]:
            print(f"  {_score(p['score'])}  {p['token']}")
    return 0


def _generate(args: argparse.Namespace) -> int:
    from kfnlp.predict import Decoding, generate

    decoding = Decoding(
        max_new_tokens=args.max_new_tokens,
        num_beams=args.num_beams,
        do_sample=args.do_sample,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        repetition_penalty=args.repetition_penalty,
        no_repeat_ngram_size=args.no_repeat_ngram_size,
        seed=args.seed,
    )
    decoding.check()  # before the model loads
    if args.stream and args.json:
        raise ConfigError("--stream prints text as it comes, --json all results at the end; drop one of them")
    if args.stream:
        return _generate_streaming(args, decoding)
    results = generate(args.model, args.prompts, decoding, chat=args.chat)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for index, item in enumerate(results):
        if index:
            print()
        print(item["completion"] if args.chat else item["prompt"] + item["completion"])
    return 0


def _generate_streaming(args: argparse.Namespace, decoding) -> int:
    """The same lines as without --stream, each piece printed as soon as the streamer hands it over."""
    from kfnlp.predict import generate

    def on_text(index: int, piece: str) -> None:
        if not piece:  # prompt ``index`` starts: end the previous one's line, then echo this prompt
            if index:
                print("\n")
            if not args.chat:
                print(args.prompts[index], end="", flush=True)
            return
        print(piece, end="", flush=True)

    generate(args.model, args.prompts, decoding, chat=args.chat, on_text=on_text)
    print()
    return 0
