"""``kfnlp predict fill-mask``, ``ner`` and ``text-classification``: a model on text (:mod:`kfnlp.predict`)."""

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


def run(args: argparse.Namespace) -> int:
    from kfnlp.refs import check_model_ref

    check_model_ref(args.model, "--model")
    if not args.debug:  # a weight-loading bar is noise here, and would precede an error line
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if args.task == "ner":
        return _ner(args)
    if args.task == "text-classification":
        return _classify(args)
    return _fill_mask(args)


def _ner(args: argparse.Namespace) -> int:
    from kfnlp.predict import entities

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
            print(f"  {e['score']:7.4f}  {e['entity_group']:<14} {e['word']!r} [{e['start']}:{e['end']}]")
        if not item["entities"]:
            print("  (no entities)")
    return 0


def _classify(args: argparse.Namespace) -> int:
    from kfnlp.predict import classify

    if args.top_k < 1:
        raise ConfigError(f"--top-k: expected an integer >= 1, got {args.top_k}")
    results = classify(args.model, args.texts, args.top_k)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for item in results:
        print(item["text"])
        for p in item["labels"]:
            print(f"  {p['score']:7.4f}  {p['label']}")
    return 0


def _fill_mask(args: argparse.Namespace) -> int:
    from kfnlp.predict import fill_mask

    if args.top_k < 1:
        raise ConfigError(f"--top-k: expected an integer >= 1, got {args.top_k}")
    results = fill_mask(args.model, args.texts, args.top_k)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for item in results:
        print(item["text"])
        for p in item["predictions"]:
            print(f"  {p['score']:7.4f}  {p['token']}")
    return 0
