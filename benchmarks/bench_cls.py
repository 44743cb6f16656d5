"""Benchmark kfnlp's train-cls against the seeds' text-classification recipe (the transformers
overview: a Yelp review classifier fine-tuned with the Trainer and an accuracy metric).

Both sides train on one split: preprocess_cls writes a dataset artifact from builtin:imdb (a
seeded stratified sample of --train-examples per split, --max-length sub-tokens); every side
trains on its train split (kfnlp on the artifact itself, the recipe on its ``text`` and
``labels`` columns) and is scored on the same --test-examples of its test split, picked as
the seed picks its evaluation rows (``shuffle(seed=42).select(range(N))``). Training runs
alternate (each repeat runs every side once, the first side rotating) because CPU speed on
shared VMs drifts; each figure is the median over the repeats (3 by default), with the range
beside it. Sides:

  recipe   Dataset.map(tokenize_function) with padding="max_length", truncation=True (at the
           artifact's max_length, so both sides see the same sub-tokens)
           + AutoModelForSequenceClassification + Trainer with the default collator
           (random batches of max_length rows)
  recipe + dynamic padding
           the recipe's obvious fix: tokenize without padding, DataCollatorWithPadding pads
           each batch to its longest row (still random batches)
  kfnlp    train_cls on the dataset artifact (dynamic padding and length-grouped batches)
  scores   test accuracy of every saved model by one function: evaluate-cls's own
           predict_probabilities (softmax, batched by length), then scikit-learn's accuracy_score
  time     tokens run per epoch at max_length padding, with random batches padded to
           their longest row, with length-grouped and fully sorted batches (from the lengths and
           the samplers alone, no training); each side's time per optimizer step; the time of one
           parameter update, which no batching changes; tokenization time of each side

All sides train with the same settings: the seed's batch 16 and lr 1e-4 (the tutorial's
TrainingArguments), weight decay 0 (TrainingArguments' default, which the seed keeps), seed 42,
the same epochs, so the same number of optimizer steps; no evaluation or checkpoints during
training (the seed evaluates only after training).

Usage: python benchmarks/bench_cls.py [--epochs N] [--repeats N] [--train-examples N]
       [--test-examples N] [--max-length N] [--model splade-tiny|minilm] [--json FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")

import numpy as np  # noqa: E402
from bench_ner import fmt, padding_analysis, ratio_spread, spread  # noqa: E402
from common import log, timed  # noqa: E402

MODELS = {"splade-tiny": "builtin:splade-tiny", "minilm": "builtin:minilm"}
MODEL = MODELS["splade-tiny"]  # --model
CORPUS = "builtin:imdb"
LEARNING_RATE = 1e-4  # the seed's
BATCH_SIZE = 16  # the seed's
WEIGHT_DECAY = 0.0  # TrainingArguments' default, which the seed keeps
SEED = 42
SIDES = {"recipe": "recipe", "recipe-dynamic": "recipe + dynamic padding", "kfnlp": "kfnlp"}


@dataclass
class Run:
    side: str
    train_seconds: float  # trainer.train()'s train_runtime
    wall_seconds: float  # model load -> trained model saved
    samples: int  # examples x epochs
    steps: int
    accuracy: float = 0.0
    load: float = field(default_factory=lambda: os.getloadavg()[0])  # 1-minute load average at the end

    @property
    def samples_per_second(self) -> float:
        return self.samples / self.train_seconds


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=float, default=3.0, help="training epochs (TrainingArguments' 3)")
    parser.add_argument("--repeats", type=int, default=3, help="training runs per side, alternating (median reported)")
    parser.add_argument("--train-examples", type=int, default=1000, help="training examples (the seed's 1,000)")
    parser.add_argument("--test-examples", type=int, default=500, help="test examples scored (the seed's 500)")
    parser.add_argument("--max-length", type=int, default=256, help="sub-tokens per example (preprocess-cls' 256)")
    parser.add_argument("--model", choices=tuple(MODELS), default="splade-tiny", help="the embedded encoder to train")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    return parser.parse_args(argv)


# -- data -----------------------------------------------------------------------


def kfnlp_preprocess(workdir: str, examples: int, max_length: int) -> str:
    """The dataset artifact every side trains on: builtin:imdb, a seeded stratified sample per split."""
    from kfnlp.stages.preprocess_cls import PreprocessClsConfig, preprocess_cls

    dataset = os.path.join(workdir, "kfnlp-dataset")
    preprocess_cls(dataset, PreprocessClsConfig(max_examples=examples, max_length=max_length, seed=SEED), MODEL)
    return dataset


def load_splits(dataset: str, test_examples: int):
    """The artifact's train split, and the scored test rows picked as the seed picks them."""
    from kfnlp.artifacts import open_cls_dataset

    splits = open_cls_dataset(dataset).splits()
    test = splits["test"].shuffle(seed=SEED).select(range(min(test_examples, len(splits["test"]))))
    return splits["train"], test


def recipe_tokenize(tokenizer, rows, max_length: int, padding: bool | str):
    """The seed's tokenize_function through Dataset.map, on the raw text and label."""

    def tokenize_function(examples):
        return tokenizer(examples["text"], padding=padding, truncation=True, max_length=max_length)

    return rows.select_columns(["text", "labels"]).map(tokenize_function, batched=True)


# -- training -------------------------------------------------------------------


def recipe_train(tokenized, labels: list[str], epochs: float, dynamic: bool, tokenizer, workdir: str) -> Run:
    """The seed's model, TrainingArguments and Trainer (no collator: the default one, which only
    stacks the padded rows); ``dynamic`` is the obvious fix, DataCollatorWithPadding."""
    from transformers import (
        AutoModelForSequenceClassification,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
        set_seed,
    )

    from kfnlp.assets import resolve_model_ref

    side = "recipe-dynamic" if dynamic else "recipe"
    set_seed(SEED)  # as train_cls does before loading: the same fresh head on every side
    started = time.perf_counter()
    model = AutoModelForSequenceClassification.from_pretrained(
        resolve_model_ref(MODEL),
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={name: i for i, name in enumerate(labels)},
    )
    args = TrainingArguments(
        os.path.join(workdir, "recipe-checkpoints"),
        per_device_train_batch_size=BATCH_SIZE,
        learning_rate=LEARNING_RATE,
        weight_decay=WEIGHT_DECAY,
        num_train_epochs=epochs,
        save_strategy="no",  # the seed: every 500 steps, more than these runs take
        seed=SEED,
        report_to="none",
        disable_tqdm=True,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=tokenized,
        data_collator=DataCollatorWithPadding(tokenizer) if dynamic else None,
    )
    result = trainer.train()
    trainer.save_model(os.path.join(workdir, f"{side}-model"))
    wall = time.perf_counter() - started
    return Run(side, result.metrics["train_runtime"], wall, round(len(tokenized) * epochs), trainer.state.global_step)


def kfnlp_config(epochs: float):
    from kfnlp.stages.train_cls import TrainClsConfig

    return TrainClsConfig(
        learning_rate=LEARNING_RATE,
        weight_decay=WEIGHT_DECAY,
        batch_size=BATCH_SIZE,
        num_epochs=epochs,
        seed=SEED,
        eval_strategy="no",
        save_strategy="no",
    )


def kfnlp_train(dataset: str, epochs: float, workdir: str) -> Run:
    """The train_cls stage, timed whole (it reads the dataset artifact and writes a model artifact)."""
    from kfnlp.stages.train_cls import train_cls

    manifest, wall = timed(train_cls, dataset, os.path.join(workdir, "kfnlp-model"), kfnlp_config(epochs), MODEL)
    training = manifest["training"]
    samples = round(training["config"]["num_epochs"] * training["train_examples"])
    return Run("kfnlp", training["train_runtime_s"], wall, samples, training["global_step"])


def held_out_accuracy(model_dir: str, test) -> float:
    """Accuracy of a saved model on the scored rows, by evaluate-cls's own prediction code."""
    from sklearn.metrics import accuracy_score
    from transformers import AutoModelForSequenceClassification

    from kfnlp.stages.evaluate_cls import predict_probabilities

    model = AutoModelForSequenceClassification.from_pretrained(model_dir)
    probabilities, _ = predict_probabilities(model, test.select_columns(["input_ids"]), batch_size=64)
    return float(accuracy_score(test["labels"], probabilities.argmax(axis=-1)))


def train_and_score(side: str, tokenized: dict, labels, dataset: str, test, epochs: float, tokenizer, workdir) -> Run:
    if side == "kfnlp":
        run = kfnlp_train(dataset, epochs, workdir)
    else:
        run = recipe_train(tokenized[side], labels, epochs, side == "recipe-dynamic", tokenizer, workdir)
    run.accuracy = held_out_accuracy(os.path.join(workdir, f"{side}-model"), test)
    return run


# -- where the time goes --------------------------------------------------------


def update_seconds(labels: list[str], workdir: str, steps: int = 20) -> float:
    """Seconds of one parameter update as the Trainer makes it (gradient clipping + its default
    optimizer over all parameters): a fixed cost per step that no padding changes."""
    import torch
    from transformers import AutoModelForSequenceClassification, Trainer, TrainingArguments

    from kfnlp.assets import resolve_model_ref

    model = AutoModelForSequenceClassification.from_pretrained(resolve_model_ref(MODEL), num_labels=len(labels))
    args = TrainingArguments(os.path.join(workdir, "update"), learning_rate=LEARNING_RATE, report_to="none")
    optimizer = Trainer(model=model, args=args).create_optimizer()
    for parameter in model.parameters():
        parameter.grad = torch.randn_like(parameter) * 1e-3
    seconds = []
    for _ in range(steps + 3):
        started = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm)
        optimizer.step()
        seconds.append(time.perf_counter() - started)
    return float(np.median(seconds[3:]))


def padding_table(padding: dict, max_length: int, examples: int) -> list[str]:
    """Tokens run per epoch by each batching, against the real ones."""
    rows = [
        ("padded to max_length (recipe)", examples * max_length),
        ("random batches, dynamic padding (recipe + dynamic padding)", padding["random"]),
        ("length-grouped batches, dynamic padding (kfnlp)", padding["group_by_length"]),
        ("sorted by length (lower bound)", padding["sorted"]),
    ]
    lines = [
        f"| batching (size {BATCH_SIZE}) | tokens run per epoch | mean padded length | padding share | × real tokens |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, tokens in rows:
        share = 1 - padding["real"] / tokens
        lines.append(
            f"| {name} | {tokens:,.0f} | {tokens / examples:.1f} | {100 * share:.1f}% | {tokens / padding['real']:.3f} |"
        )
    lines.append(f"| (real tokens) | {padding['real']:,} | {padding['real'] / examples:.1f} | - | 1 |")
    return lines


# -- report ---------------------------------------------------------------------


def by_side(runs: list[Run]) -> dict[str, list[Run]]:
    grouped = {side: [run for run in runs if run.side == side] for side in SIDES}
    return {side: side_runs for side, side_runs in grouped.items() if side_runs}


def result_table(sides: dict[str, list[Run]], tokenize_seconds: dict[str, float]) -> list[str]:
    """Rows of metrics, a column per side (median and range over the repeats), then each other side
    against the recipe."""
    timing = [
        ("training samples/s", lambda r: r.samples_per_second),
        ("trainer.train() s", lambda r: r.train_seconds),
        ("wall s (load model → trained model saved)", lambda r: r.wall_seconds),
        ("s per optimizer step", lambda r: r.train_seconds / r.steps),
    ]
    names = list(sides)
    header = ["metric", *(SIDES[s] for s in names), *(f"{SIDES[s]} / recipe" for s in names[1:])]
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    for metric, get in timing:
        values = {side: [get(run) for run in side_runs] for side, side_runs in sides.items()}
        versus = [ratio_spread(values[side], values["recipe"]) for side in names[1:]]
        lines.append("| " + " | ".join([metric, *(spread(values[s]) for s in names), *versus]) + " |")
    accuracy = {side: statistics.median(run.accuracy for run in side_runs) for side, side_runs in sides.items()}
    versus = [f"{accuracy[side] - accuracy['recipe']:+.4f}" for side in names[1:]]
    lines.append("| " + " | ".join(["test accuracy", *(f"{accuracy[s]:.4f}" for s in names), *versus]) + " |")
    prep = [tokenize_seconds.get(side) for side in names]
    versus = [f"{value / prep[0]:.2f}×" if value is not None else "-" for value in prep[1:]]
    lines.append("| " + " | ".join(["tokenize s (train + scored test, once)", *(fmt(v) for v in prep), *versus]) + " |")
    return lines


def where_time_goes(sides: dict[str, list[Run]], padding: dict, update: float, max_length: int) -> dict[str, str]:
    """Tokens each batching runs against the speed each side got, the fixed per-step update."""
    speed = {side: statistics.median(run.samples_per_second for run in side_runs) for side, side_runs in sides.items()}
    examples_tokens = {
        "recipe": padding["examples"] * max_length,
        "recipe-dynamic": padding["random"],
        "kfnlp": padding["group_by_length"],
    }
    facts = {
        "tokens run vs speed": "; ".join(
            f"{SIDES[side]}: {examples_tokens['recipe'] / examples_tokens[side]:.2f}× fewer tokens than the recipe, "
            f"{speed[side] / speed['recipe']:.2f}× its samples/s"
            for side in speed
            if side != "recipe"
        )
    }
    if "recipe-dynamic" in speed and "kfnlp" in speed:
        facts["kfnlp vs recipe + dynamic padding"] = f"{speed['kfnlp'] / speed['recipe-dynamic']:.2f}× samples/s"
    for side, side_runs in sides.items():
        step = statistics.median(run.train_seconds / run.steps for run in side_runs)
        outside = statistics.median(run.wall_seconds - run.train_seconds for run in side_runs)
        facts[f"{SIDES[side]}: parameter update per step"] = (
            f"{1000 * update:.0f} ms of {1000 * step:.0f} ms ({100 * update / step:.0f}%)"
        )
        facts[f"{SIDES[side]}: outside trainer.train()"] = f"{outside:.2f} s (median)"
    return facts


def config_facts(epochs: float) -> str:
    """TrainClsConfig fields passed here that differ from its defaults."""
    from kfnlp.stages.train_cls import TrainClsConfig

    defaults, passed = asdict(TrainClsConfig()), asdict(kfnlp_config(epochs))
    changed = [f"{key} {defaults[key]} → {value}" for key, value in passed.items() if defaults[key] != value]
    return "; ".join(changed) or "all defaults"


def setup_facts(args, train, test, same_data: bool, preprocess_seconds: float) -> dict[str, str]:
    import torch

    return {
        "data": f"{CORPUS} through preprocess_cls (max_examples {args.train_examples}, max_length {args.max_length}, "
        f"seed {SEED}): {len(train)} train examples, {sum(train['length']):,} train sub-tokens, "
        f"{sum(n >= args.max_length for n in train['length'])} truncated; {len(test)} test examples scored",
        "same training data on every side": "yes (input ids and labels)" if same_data else "NO",
        "training": f"{MODEL}, {args.epochs:g} epochs × batch {BATCH_SIZE}, lr {LEARNING_RATE:g}, weight decay "
        f"{WEIGHT_DECAY:g}, seed {SEED}, no evaluation or checkpoints during training",
        "TrainClsConfig vs its defaults": config_facts(args.epochs),
        "preprocess_cls s (once: read, dedupe, split and tokenize every split, write the artifact)": (
            f"{preprocess_seconds:.1f}"
        ),
        "repeats": f"{args.repeats} per side, alternating; median (range) over the repeats",
        "machine": f"{os.cpu_count()} CPUs, torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"Python {platform.python_version()}",
        "load average at start": f"{os.getloadavg()[0]:.2f}",
    }


def same_training_data(train, tokenized: dict) -> bool:
    """Every side trains on the artifact's sub-tokens and labels (the recipe's padding stripped)."""
    ours = train.select_columns(["input_ids", "labels"])[:]
    for rows in tokenized.values():
        theirs = rows.select_columns(["input_ids", "attention_mask", "labels"])[:]
        unpadded = [
            [t for t, m in zip(ids, mask, strict=True) if m]
            for ids, mask in zip(theirs["input_ids"], theirs["attention_mask"], strict=True)
        ]
        if unpadded != ours["input_ids"] or theirs["labels"] != ours["labels"]:
            return False
    return True


def markdown(sides, tokenize_seconds: dict, padding: dict, max_length: int, facts: dict[str, str]) -> str:
    lines = result_table(sides, tokenize_seconds)
    lines += ["", *padding_table(padding, max_length, padding["examples"]), "", "| fact | value |", "|---|---|"]
    lines += [f"| {key} | {value} |" for key, value in facts.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    import datasets
    import transformers

    from kfnlp.artifacts import open_cls_dataset
    from kfnlp.modeling import load_tokenizer

    global MODEL
    args = parse_args(argv)
    MODEL = MODELS[args.model]
    if os.getloadavg()[0] > 0.5:
        log(f"load average {os.getloadavg()[0]:.2f}: other jobs share the machine, timings will be noisy")
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    with tempfile.TemporaryDirectory() as workdir, contextlib.redirect_stdout(sys.stderr):
        dataset, preprocess_seconds = timed(kfnlp_preprocess, workdir, args.train_examples, args.max_length)
        labels = open_cls_dataset(dataset).labels()
        train, test = load_splits(dataset, args.test_examples)
        tokenizer = load_tokenizer(MODEL)
        tokenized, tokenize_seconds = {}, {}
        for side, padding in (("recipe", "max_length"), ("recipe-dynamic", False)):
            started = time.perf_counter()
            tokenized[side] = recipe_tokenize(tokenizer, train, args.max_length, padding)
            recipe_tokenize(tokenizer, test, args.max_length, padding)  # the seed tokenizes its eval rows too
            tokenize_seconds[side] = time.perf_counter() - started
        facts = setup_facts(args, train, test, same_training_data(train, tokenized), preprocess_seconds)
        log(f"training: {len(train)} examples, {args.epochs:g} epochs, {args.repeats} repeats, {MODEL}")
        runs: list[Run] = []
        order = list(SIDES)
        for repeat in range(args.repeats):
            shift = repeat % len(order)  # who goes first rotates, so drifting speed hits all sides alike
            for side in order[shift:] + order[:shift]:
                run = train_and_score(side, tokenized, labels, dataset, test, args.epochs, tokenizer, workdir)
                log(
                    f"  repeat {repeat + 1} {side}: train {run.train_seconds:.1f} s ({run.samples_per_second:.1f} "
                    f"samples/s, {run.steps} steps), wall {run.wall_seconds:.1f} s, accuracy {run.accuracy:.4f}, "
                    f"load {run.load:.2f}"
                )
                runs.append(run)
        padding = {**padding_analysis(train["length"], BATCH_SIZE), "examples": len(train)}
        update = update_seconds(labels, workdir)
    sides = by_side(runs)
    facts.update(where_time_goes(sides, padding, update, args.max_length))
    facts["load average at end"] = f"{os.getloadavg()[0]:.2f}"
    print(markdown(sides, tokenize_seconds, padding, args.max_length, facts))
    if args.json:
        payload = {
            "args": vars(args),
            "runs": [{**asdict(run), "samples_per_second": run.samples_per_second} for run in runs],
            "tokenize_seconds": tokenize_seconds,
            "padding_tokens_per_epoch": padding,
            "update_seconds": update,
            "facts": facts,
        }
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(payload, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
