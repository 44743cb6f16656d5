"""Benchmark kfnlp's train-ner against the plain Hugging Face course recipe (chapter 7, section 2).

Both sides run in this process on the same sentences: kfnlp's reader loads the
embedded WNUT-16 tweets once and one seeded 10% held-out split
(Dataset.train_test_split) gives both sides their train and test sentences.
Training runs alternate (each repeat runs every side once, the first side rotating)
because CPU speed on shared VMs drifts between runs; each figure is the median over
the repeats (3 by default), with the range beside it. Parts:

  recipe   Dataset.map(tokenize_and_align_labels) + DataCollatorForTokenClassification
           + AutoModelForTokenClassification + Trainer (random batches)
  recipe + group_by_length
           the same with the recipe's obvious fix: length-grouped batches from transformers'
           own sampler, TrainingArguments(train_sampling_strategy="group_by_length")
  kfnlp    the two splits written as CoNLL files -> preprocess_ner -> train_ner
           (length-grouped batches) -> evaluate_ner
  scores   held-out F1 of both models: word level (each word labelled by its first
           sub-token, as evaluate_ner and conlleval count) and sub-token level (the
           recipe's compute_metrics)
  padding  padded vs real tokens per epoch for random and length-grouped batches,
           from the lengths and the samplers alone (no training), and the time of
           one parameter update, which no batching changes

Both sides train with the same hyperparameters (lr 1e-4, batch 8, weight decay 0.01,
seed 42) and with eval_strategy and save_strategy "no": the recipe evaluates and
saves a checkpoint every epoch, but there is no validation split here (the test
split is only scored after training), so both sides do only the training work.

--model bert-base-shaped trains a seeded random-init encoder of BERT-base's shape (12 layers, hidden
768) with MiniLM's vocabulary instead (its F1 says nothing; its speed does). --precision and --compile
set kfnlp's side; on a GPU each run also reports its peak GPU memory (benchmarks/gpu.sh).

Usage: python benchmarks/bench_ner.py [--epochs N] [--repeats N] [--max-sentences N] [--ablate] [--json FILE]
       [--model minilm|bert-base-shaped] [--precision auto|no|fp16|bf16] [--compile]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
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
from common import add_speed_flags, device_fact, log, timed  # noqa: E402

MODEL = "builtin:minilm"
CORPUS = "builtin:wnut16"
LEARNING_RATE = 1e-4  # the platform's measured setting for MiniLM (the recipe's 2e-5 is for BERT-base)
WEIGHT_DECAY = 0.01  # the recipe's
BATCH_SIZE = 8  # the recipe's (TrainingArguments' default)
TEST_SIZE = 0.1
SEED = 42
TRAIN_SEED = SEED  # --train-seed
PRECISION, COMPILE = "auto", False  # kfnlp's side: --precision, --compile
CONLL_TRAIN_SENTENCES = 14_041  # CoNLL-2003's English training split, for the time-to-train estimate
SIDES = {
    "recipe": "recipe",
    "recipe-grouped": "recipe + group_by_length",
    "kfnlp": "kfnlp",
    "kfnlp-random": "kfnlp, random batches",
}


@dataclass
class Run:
    side: str
    train_seconds: float  # trainer.train()'s train_runtime
    wall_seconds: float  # model load -> trained model saved
    samples: int  # sentences x epochs
    steps: int
    scores: dict = field(default_factory=dict)
    load: float = field(default_factory=lambda: os.getloadavg()[0])  # 1-minute load average at the end
    peak_gib: float | None = field(default_factory=lambda: peak_gpu_gib())  # since reset_gpu_peak(); None: no GPU

    @property
    def samples_per_second(self) -> float:
        return self.samples / self.train_seconds


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=float, default=3.0, help="training epochs (the recipe's 3)")
    parser.add_argument("--repeats", type=int, default=3, help="training runs per side, alternating (median reported)")
    parser.add_argument("--max-sentences", type=int, default=None, help="first N sentences only (smoke runs)")
    parser.add_argument("--ablate", action="store_true", help="also train kfnlp with group_by_length off")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument(
        "--train-seed", type=int, default=SEED, help="seed of initialisation and batch order (the split keeps its own)"
    )
    parser.add_argument(
        "--model",
        choices=("minilm", "bert-base-shaped"),
        default="minilm",
        help="the embedded MiniLM, or a random-init encoder of BERT-base's shape",
    )
    add_speed_flags(parser)
    return parser.parse_args(argv)


def peak_gpu_gib() -> float | None:
    """The most GPU memory torch held since the last reset_gpu_peak() (None without a GPU)."""
    import torch

    return torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None


def reset_gpu_peak() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def bert_base_shaped(directory: str) -> str:
    """A seeded random-init encoder of BERT-base's shape with MiniLM's tokenizer, saved as a model
    directory both sides load (no Hub needed)."""
    import torch
    from transformers import BertConfig, BertModel

    from kfnlp.modeling import load_tokenizer

    tokenizer = load_tokenizer(MODEL)
    torch.manual_seed(SEED)
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072
    )
    BertModel(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


# -- data -----------------------------------------------------------------------


def load_data(max_sentences: int | None):
    """WNUT-16 through kfnlp's reader, split once for both sides: a DatasetDict with
    train/test, ``tokens`` and ``ner_tags`` (ClassLabel, as the recipe's Hub data has)."""
    import datasets

    from kfnlp.data.ner_corpus import load_ner_source

    sentences = load_ner_source(CORPUS).splits["train"][:max_sentences]
    # O, then B-/I- of each type sorted by name: the order in which preprocess_ner lists
    # the labels of these sentences, so both heads have the same labels in the same order
    types = sorted({tag[2:] for s in sentences for tag in s.tags if tag != "O"})
    names = ["O"] + [f"{prefix}-{name}" for name in types for prefix in ("B", "I")]
    label2id = {name: i for i, name in enumerate(names)}
    features = datasets.Features(
        {"tokens": datasets.List(datasets.Value("string")), "ner_tags": datasets.List(datasets.ClassLabel(names=names))}
    )
    columns = {"tokens": [s.tokens for s in sentences], "ner_tags": [[label2id[t] for t in s.tags] for s in sentences]}
    raw = datasets.Dataset.from_dict(columns, features=features)
    return raw.train_test_split(test_size=TEST_SIZE, seed=SEED)


def overlap(raw) -> int:
    """Test sentences that also occur in train (WNUT-16 repeats some tweets)."""
    train = {(tuple(t), tuple(g)) for t, g in zip(raw["train"]["tokens"], raw["train"]["ner_tags"], strict=True)}
    return sum(
        (tuple(t), tuple(g)) in train for t, g in zip(raw["test"]["tokens"], raw["test"]["ner_tags"], strict=True)
    )


# -- recipe ---------------------------------------------------------------------


def recipe_preprocess(tokenizer, raw):
    """The recipe's tokenize_and_align_labels through Dataset.map."""
    label_names = raw["train"].features["ner_tags"].feature.names
    # The recipe turns B-X into I-X with `if label % 2 == 1: label += 1`, which holds
    # only when every B- label has an odd id and its I- label the next one (CoNLL-2003's
    # order). Mapped by name here, so the benchmark does not depend on the label order.
    b_to_i = {
        i: label_names.index("I-" + name[2:]) if name.startswith("B-") else i for i, name in enumerate(label_names)
    }

    def align_labels_with_tokens(labels, word_ids):
        new_labels = []
        current_word = None
        for word_id in word_ids:
            if word_id != current_word:
                # Start of a new word!
                current_word = word_id
                label = -100 if word_id is None else labels[word_id]
                new_labels.append(label)
            elif word_id is None:
                # Special token
                new_labels.append(-100)
            else:
                # Same word as previous token
                label = labels[word_id]
                # If the label is B-XXX we change it to I-XXX
                label = b_to_i[label]
                new_labels.append(label)
        return new_labels

    def tokenize_and_align_labels(examples):
        tokenized_inputs = tokenizer(examples["tokens"], truncation=True, is_split_into_words=True)
        all_labels = examples["ner_tags"]
        new_labels = []
        for i, labels in enumerate(all_labels):
            word_ids = tokenized_inputs.word_ids(i)
            new_labels.append(align_labels_with_tokens(labels, word_ids))
        tokenized_inputs["labels"] = new_labels
        return tokenized_inputs

    return raw.map(tokenize_and_align_labels, batched=True, remove_columns=raw["train"].column_names)


def recipe_compute_metrics(label_names: list[str]):
    """The recipe's compute_metrics; seqeval directly instead of evaluate.load("seqeval"),
    whose overall_* figures are these functions' results."""
    from seqeval.metrics import accuracy_score, f1_score, precision_score, recall_score

    def compute_metrics(eval_preds):
        logits, labels = eval_preds
        predictions = np.argmax(logits, axis=-1)

        # Remove ignored index (special tokens) and convert to labels
        true_labels = [[label_names[l] for l in label if l != -100] for label in labels]  # noqa: E741 (verbatim)
        true_predictions = [
            [label_names[p] for (p, l) in zip(prediction, label) if l != -100]  # noqa: B905, E741
            for prediction, label in zip(predictions, labels)  # noqa: B905
        ]
        return {
            "precision": precision_score(true_labels, true_predictions),
            "recall": recall_score(true_labels, true_predictions),
            "f1": f1_score(true_labels, true_predictions),
            "accuracy": accuracy_score(true_labels, true_predictions),
        }

    return compute_metrics


def recipe_train(
    tokenizer, tokenized, label_names: list[str], epochs: float, group_by_length: bool, workdir: str
) -> Run:
    """The recipe's model, arguments and Trainer; the trained model is saved as the recipe does.
    ``group_by_length`` is the recipe's obvious fix: length-grouped batches (transformers' own
    sampler; its TrainingArguments leave the default, random batches)."""
    from transformers import (
        AutoModelForTokenClassification,
        DataCollatorForTokenClassification,
        Trainer,
        TrainingArguments,
        set_seed,
    )

    from kfnlp.assets import resolve_model_ref

    set_seed(TRAIN_SEED)  # as train_ner does before loading: the same fresh head on both sides
    reset_gpu_peak()
    started = time.perf_counter()
    model = AutoModelForTokenClassification.from_pretrained(
        resolve_model_ref(MODEL),
        id2label=dict(enumerate(label_names)),
        label2id={name: i for i, name in enumerate(label_names)},
    )
    args = TrainingArguments(
        os.path.join(workdir, "recipe-checkpoints"),
        eval_strategy="no",  # the recipe: "epoch" (see the module docstring)
        save_strategy="no",  # the recipe: "epoch"
        learning_rate=LEARNING_RATE,
        num_train_epochs=epochs,
        weight_decay=WEIGHT_DECAY,
        per_device_train_batch_size=BATCH_SIZE,
        train_sampling_strategy="group_by_length" if group_by_length else "random",
        seed=TRAIN_SEED,
        report_to="none",
        disable_tqdm=True,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=tokenized["train"],
        data_collator=DataCollatorForTokenClassification(tokenizer=tokenizer),
        compute_metrics=recipe_compute_metrics(label_names),
        processing_class=tokenizer,
    )
    result = trainer.train()
    side = "recipe-grouped" if group_by_length else "recipe"
    trainer.save_model(os.path.join(workdir, f"{side}-model"))
    wall = time.perf_counter() - started
    samples = round(len(tokenized["train"]) * epochs)
    return Run(side, result.metrics["train_runtime"], wall, samples, trainer.state.global_step)


# -- kfnlp ----------------------------------------------------------------------


def kfnlp_preprocess(raw, workdir: str) -> str:
    """The two splits as CoNLL files, then preprocess_ner with no validation split and no
    deduplication, so that it keeps exactly these sentences in this order."""
    from kfnlp.data.conll import write_conll
    from kfnlp.stages.preprocess_ner import NerPreprocessConfig, preprocess_ner

    names = raw["train"].features["ner_tags"].feature.names
    paths = {}
    for split in ("train", "test"):
        paths[split] = os.path.join(workdir, f"{split}.conll")
        rows = ((tokens, [names[t] for t in tags]) for tokens, tags in zip(*raw[split][:].values(), strict=True))
        write_conll(paths[split], rows)
    config = NerPreprocessConfig(
        source=paths["train"], test_source=paths["test"], validation_size=0.0, dedupe=False, seed=SEED
    )
    dataset = os.path.join(workdir, "kfnlp-dataset")
    preprocess_ner(dataset, config, MODEL)
    return dataset


def kfnlp_config(epochs: float, group_by_length: bool):
    from kfnlp.stages.train_ner import TrainNerConfig

    return TrainNerConfig(
        learning_rate=LEARNING_RATE,
        weight_decay=WEIGHT_DECAY,
        batch_size=BATCH_SIZE,
        num_epochs=epochs,
        seed=TRAIN_SEED,
        group_by_length=group_by_length,
        eval_strategy="no",
        save_strategy="no",
        mixed_precision=PRECISION,
        compile=COMPILE,
    )


def kfnlp_train(dataset: str, epochs: float, group_by_length: bool, workdir: str) -> Run:
    """The train_ner stage, timed whole (it reads the dataset artifact and writes a model artifact)."""
    from kfnlp.stages.train_ner import train_ner

    side = "kfnlp" if group_by_length else "kfnlp-random"
    output = os.path.join(workdir, f"{side}-model")
    reset_gpu_peak()
    manifest, wall = timed(train_ner, dataset, output, kfnlp_config(epochs, group_by_length), MODEL)
    training = manifest["training"]
    samples = round(training["config"]["num_epochs"] * training["train_sentences"])
    return Run(side, training["train_runtime_s"], wall, samples, training["global_step"])


# -- scores ---------------------------------------------------------------------


def held_out_scores(model_dir: str, tokenizer, raw_test, tokenized_test, workdir: str) -> dict:
    """Recipe-style scores of a saved model on the test split: the recipe's compute_metrics
    (sub-token level) and, from the same predictions, seqeval over words labelled by their
    first sub-token."""
    from seqeval.metrics import f1_score
    from transformers import (
        AutoModelForTokenClassification,
        DataCollatorForTokenClassification,
        Trainer,
        TrainingArguments,
    )

    label_names = raw_test.features["ner_tags"].feature.names
    model = AutoModelForTokenClassification.from_pretrained(model_dir)
    assert [model.config.id2label[i] for i in range(len(label_names))] == label_names
    trainer = Trainer(
        model=model,
        args=TrainingArguments(os.path.join(workdir, "scoring"), report_to="none", disable_tqdm=True),
        data_collator=DataCollatorForTokenClassification(tokenizer=tokenizer),
        compute_metrics=recipe_compute_metrics(label_names),
        processing_class=tokenizer,
    )
    output = trainer.predict(tokenized_test)
    predictions = output.predictions.argmax(-1)
    test = raw_test.to_dict()
    encoded = tokenizer(test["tokens"], truncation=True, is_split_into_words=True)
    gold, predicted = [], []
    for i, tags in enumerate(test["ner_tags"]):
        words = ["O"] * len(tags)  # a word the tokenizer dropped is predicted O
        previous = None
        for position, word in enumerate(encoded.word_ids(i)):
            if word is not None and word != previous:
                words[word] = label_names[predictions[i][position]]
            previous = word
        gold.append([label_names[t] for t in tags])
        predicted.append(words)
    return {"subtoken_f1": output.metrics["test_f1"], "word_f1": float(f1_score(gold, predicted))}


def kfnlp_scores(run: Run, dataset: str, tokenizer, raw_test, tokenized_test, workdir: str) -> dict:
    """evaluate_ner's word-level F1, plus the recipe-style scores of the same model."""
    from kfnlp.stages.evaluate_ner import EvaluateNerConfig, evaluate_ner

    model = os.path.join(workdir, f"{run.side}-model")
    result = evaluate_ner(model, dataset, os.path.join(workdir, f"{run.side}-eval"), EvaluateNerConfig(split="test"))
    recipe_style = held_out_scores(model, tokenizer, raw_test, tokenized_test, workdir)
    return {"word_f1": result["metrics"]["f1"], "subtoken_f1": recipe_style["subtoken_f1"], "check": recipe_style}


# -- where the time goes --------------------------------------------------------


def padded_tokens(lengths: np.ndarray, order, batch_size: int) -> int:
    """Tokens the model runs on when batches of ``order`` are padded to their longest row."""
    ordered = lengths[np.asarray(order)]
    return sum(len(b) * int(b.max()) for b in np.split(ordered, range(batch_size, len(ordered), batch_size)))


def padding_analysis(lengths: list[int], batch_size: int, epochs: int = 20) -> dict:
    """Real vs padded tokens per epoch under the two samplers, averaged over ``epochs``
    seeded shuffles; sorted-by-length order is the lower bound."""
    import torch
    from transformers.trainer_pt_utils import get_length_grouped_indices

    lengths = np.asarray(lengths)
    random, grouped = [], []
    for epoch in range(epochs):
        generator = torch.Generator().manual_seed(SEED + epoch)
        shuffled = torch.randperm(len(lengths), generator=generator).tolist()
        random.append(padded_tokens(lengths, shuffled, batch_size))
        grouped_order = get_length_grouped_indices(lengths.tolist(), batch_size, generator=generator)
        grouped.append(padded_tokens(lengths, grouped_order, batch_size))
    return {
        "real": int(lengths.sum()),
        "random": float(np.mean(random)),
        "group_by_length": float(np.mean(grouped)),
        "sorted": padded_tokens(lengths, np.argsort(lengths, kind="stable"), batch_size),
    }


def update_seconds(label_names: list[str], workdir: str, steps: int = 20) -> float:
    """Seconds of one parameter update as the Trainer makes it (gradient clipping + its
    default optimizer over all parameters): a fixed cost per step that no batching changes."""
    import torch
    from transformers import AutoModelForTokenClassification, Trainer, TrainingArguments

    from kfnlp.assets import resolve_model_ref

    model = AutoModelForTokenClassification.from_pretrained(resolve_model_ref(MODEL), num_labels=len(label_names))
    args = TrainingArguments(
        os.path.join(workdir, "update"), learning_rate=LEARNING_RATE, weight_decay=WEIGHT_DECAY, report_to="none"
    )
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


# -- report ---------------------------------------------------------------------


def fmt(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"


def by_side(runs: list[Run]) -> dict[str, list[Run]]:
    """Each side's runs in repeat order, sides in SIDES order."""
    grouped = {side: [run for run in runs if run.side == side] for side in SIDES}
    return {side: side_runs for side, side_runs in grouped.items() if side_runs}


def median_run(side_runs: list[Run]) -> Run:
    """The run of median training time (the lower one for an even count): its scores
    and per-step figures stand for the side."""
    return sorted(side_runs, key=lambda run: run.train_seconds)[(len(side_runs) - 1) // 2]


def spread(values: list[float]) -> str:
    """Median with the range, e.g. ``46.0 (44.1–47.3)``; a single value alone."""
    if len(values) == 1:
        return fmt(values[0])
    return f"{fmt(statistics.median(values))} ({fmt(min(values))}–{fmt(max(values))})"


def ratio_spread(values: list[float], baseline: list[float]) -> str:
    """Ratio of the medians, with the range of the per-repeat ratios (runs of one repeat ran back to back)."""
    ratio = statistics.median(values) / statistics.median(baseline)
    if len(values) == 1:
        return f"{ratio:.2f}×"
    pairs = [v / b for v, b in zip(values, baseline, strict=True)]
    return f"{ratio:.2f}× ({min(pairs):.2f}–{max(pairs):.2f}×)"


def result_table(sides: dict[str, list[Run]], prep_seconds: dict[str, float]) -> list[str]:
    """Rows of metrics, a column per side (median and range over the repeats), then each
    other side against the recipe."""
    timing = [
        ("training samples/s", lambda r: r.samples_per_second),
        ("trainer.train() s", lambda r: r.train_seconds),
        ("wall s (load model → trained model saved)", lambda r: r.wall_seconds),
        ("s per optimizer step", lambda r: r.train_seconds / r.steps),
    ]
    if all(run.peak_gib is not None for side_runs in sides.values() for run in side_runs):
        timing.append(("peak GPU GiB in training", lambda r: r.peak_gib))
    scores = [
        ("held-out F1, word level (first sub-token)", "word_f1"),
        ("held-out F1, sub-token level (recipe's compute_metrics)", "subtoken_f1"),
    ]
    names = list(sides)
    header = ["metric", *(SIDES[s] for s in names), *(f"{SIDES[s]} / recipe" for s in names[1:])]
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    for metric, get in timing:
        values = {side: [get(run) for run in side_runs] for side, side_runs in sides.items()}
        versus = [ratio_spread(values[side], values["recipe"]) for side in names[1:]]
        lines.append("| " + " | ".join([metric, *(spread(values[s]) for s in names), *versus]) + " |")
    for metric, key in scores:
        values = {side: statistics.median(run.scores[key] for run in side_runs) for side, side_runs in sides.items()}
        versus = [f"{values[side] - values['recipe']:+.4f}" for side in names[1:]]
        lines.append("| " + " | ".join([metric, *(fmt(values[s]) for s in names), *versus]) + " |")
    prep = [prep_seconds.get(side) for side in names]
    versus = [f"{value / prep[0]:.2f}×" if value is not None else "-" for value in prep[1:]]
    lines.append("| " + " | ".join(["preprocess s (both splits, once)", *(fmt(v) for v in prep), *versus]) + " |")
    return lines


def padding_table(padding: dict, batch_size: int) -> list[str]:
    lines = [
        f"| order of batches (size {batch_size}) | tokens run per epoch | padding share | × real tokens |",
        "|---|---:|---:|---:|",
    ]
    for name in ("random", "group_by_length", "sorted"):
        tokens = padding[name]
        share = 1 - padding["real"] / tokens
        lines.append(f"| {name} | {tokens:,.0f} | {100 * share:.1f}% | {tokens / padding['real']:.3f} |")
    lines.append(f"| (real tokens) | {padding['real']:,} | - | 1 |")
    return lines


def config_facts(epochs: float) -> str:
    """TrainNerConfig fields passed here that differ from its defaults."""
    from kfnlp.stages.train_ner import TrainNerConfig

    defaults, passed = asdict(TrainNerConfig()), asdict(kfnlp_config(epochs, True))
    changed = [f"{key} {defaults[key]} → {value}" for key, value in passed.items() if defaults[key] != value]
    return "; ".join(changed) or "all defaults"


def markdown(sides: dict[str, list[Run]], prep_seconds: dict[str, float], padding: dict, facts: dict[str, str]) -> str:
    lines = result_table(sides, prep_seconds)
    lines += ["", *padding_table(padding, BATCH_SIZE), "", "| fact | value |", "|---|---|"]
    lines += [f"| {key} | {value} |" for key, value in facts.items()]
    return "\n".join(lines)


def setup_facts(args, raw, tokenized, same_data: bool) -> dict[str, str]:
    import torch

    n_train, n_test = len(raw["train"]), len(raw["test"])
    subtokens = sum(len(ids) for ids in tokenized["train"]["input_ids"])
    return {
        "data": f"{CORPUS}, {n_train} train / {n_test} test sentences (seeded {TEST_SIZE:.0%} split), "
        f"{subtokens:,} train sub-tokens; {overlap(raw)} test sentences also occur in train",
        "same training data on both sides": "yes (input ids and labels)" if same_data else "NO",
        "training": f"{MODEL if args.model == 'minilm' else 'random-init bert-base-shaped'}, {args.epochs:g} epochs × batch {BATCH_SIZE}, lr {LEARNING_RATE:g}, "
        f"weight decay {WEIGHT_DECAY}, seed {TRAIN_SEED}, no evaluation or checkpoints during training",
        "TrainNerConfig vs its defaults": config_facts(args.epochs),
        "repeats": f"{args.repeats} per side, alternating; median (range) over the repeats",
        "machine": f"{os.cpu_count()} CPUs, torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"Python {platform.python_version()}",
        "GPU": device_fact(),
        "load average at start": f"{os.getloadavg()[0]:.2f}",
    }


def same_training_data(dataset: str, tokenized) -> bool:
    import datasets

    ours = datasets.load_from_disk(os.path.join(dataset, "data"))["train"][:]
    theirs = tokenized["train"][:]
    return ours["input_ids"] == theirs["input_ids"] and ours["labels"] == theirs["labels"]


def where_time_goes(sides: dict[str, list[Run]], padding: dict, update: float) -> dict[str, str]:
    """Padding saved by length grouping, the fixed per-step update and the time outside training."""
    speed = {side: statistics.median(run.samples_per_second for run in side_runs) for side, side_runs in sides.items()}
    grouped = [side for side in ("recipe-grouped", "kfnlp") if side in speed]
    facts = {
        "padding": f"length-grouped batches run {padding['random'] / padding['group_by_length']:.2f}× fewer tokens "
        "than random ones; median speed-up over the recipe (random batches): "
        + ", ".join(f"{SIDES[side]} {speed[side] / speed['recipe']:.2f}×" for side in grouped)
    }
    if "recipe-grouped" in speed and "kfnlp" in speed:
        facts["where the gain comes from"] = (
            "length-grouped batches: kfnlp vs the recipe + group_by_length "
            f"{speed['kfnlp'] / speed['recipe-grouped']:.2f}×"
        )
    for side, side_runs in sides.items():
        run = median_run(side_runs)
        step = run.train_seconds / run.steps
        facts[f"{SIDES[side]}: parameter update per step"] = (
            f"{1000 * update:.0f} ms of {1000 * step:.0f} ms ({100 * update / step:.0f}%)"
        )
        facts[f"{SIDES[side]}: outside trainer.train()"] = (
            f"{run.wall_seconds - run.train_seconds:.2f} s ({100 * (run.wall_seconds / run.train_seconds - 1):.1f}%)"
        )
    facts["3 epochs of CoNLL-2003 at kfnlp's median speed (estimate)"] = (
        f"{3 * CONLL_TRAIN_SENTENCES / speed['kfnlp']:.0f} s for {CONLL_TRAIN_SENTENCES:,} sentences × 3 "
        "(its sentences are about as long as these tweets)"
    )
    kfnlp = median_run(sides["kfnlp"])
    check = kfnlp.scores["check"]["word_f1"]
    agree = " (equal)" if math.isclose(check, kfnlp.scores["word_f1"], abs_tol=1e-9) else ""
    facts["kfnlp's word F1: evaluate_ner vs the recipe-side scorer"] = (
        f"{kfnlp.scores['word_f1']:.4f} vs {check:.4f}{agree}"
    )
    return facts


def train_and_score(side: str, tokenizer, raw, tokenized, dataset: str, epochs: float, workdir: str) -> Run:
    """One training run of ``side``, then its held-out scores."""
    if side.startswith("recipe"):
        label_names = raw["train"].features["ner_tags"].feature.names
        run = recipe_train(tokenizer, tokenized, label_names, epochs, side == "recipe-grouped", workdir)
        model = os.path.join(workdir, f"{side}-model")
        run.scores = held_out_scores(model, tokenizer, raw["test"], tokenized["test"], workdir)
    else:
        run = kfnlp_train(dataset, epochs, side == "kfnlp", workdir)
        run.scores = kfnlp_scores(run, dataset, tokenizer, raw["test"], tokenized["test"], workdir)
    return run


def main(argv: list[str] | None = None) -> int:
    import datasets
    import transformers

    from kfnlp.modeling import load_tokenizer

    global TRAIN_SEED, PRECISION, COMPILE, MODEL
    args = parse_args(argv)
    TRAIN_SEED, PRECISION, COMPILE = args.train_seed, args.precision, args.compile
    if os.getloadavg()[0] > 0.5:
        log(f"load average {os.getloadavg()[0]:.2f}: other jobs share the machine, timings will be noisy")
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    raw = load_data(args.max_sentences)
    label_names = raw["train"].features["ner_tags"].feature.names
    with tempfile.TemporaryDirectory() as workdir, contextlib.redirect_stdout(sys.stderr):
        if args.model == "bert-base-shaped":
            MODEL = bert_base_shaped(os.path.join(workdir, "bert-base-shaped"))
        tokenizer = load_tokenizer(MODEL)
        tokenized, t_recipe = timed(recipe_preprocess, tokenizer, raw)
        dataset, t_kfnlp = timed(kfnlp_preprocess, raw, workdir)
        prep_seconds = {"recipe": t_recipe, "kfnlp": t_kfnlp}
        facts = setup_facts(args, raw, tokenized, same_training_data(dataset, tokenized))
        log(f"training: {len(raw['train'])} sentences, {args.epochs:g} epochs, {args.repeats} repeats")
        runs: list[Run] = []
        order = ["recipe", "recipe-grouped", "kfnlp", *(["kfnlp-random"] if args.ablate else [])]
        for repeat in range(args.repeats):
            shift = repeat % len(order)  # who goes first rotates, so drifting speed hits all sides alike
            for side in order[shift:] + order[:shift]:
                run = train_and_score(side, tokenizer, raw, tokenized, dataset, args.epochs, workdir)
                log(
                    f"  repeat {repeat + 1} {side}: train {run.train_seconds:.1f} s ({run.samples_per_second:.1f} "
                    f"samples/s), wall {run.wall_seconds:.1f} s, word F1 {run.scores['word_f1']:.4f}, "
                    f"sub-token F1 {run.scores['subtoken_f1']:.4f}, load {run.load:.2f}"
                )
                runs.append(run)
        padding = padding_analysis([len(ids) for ids in tokenized["train"]["input_ids"]], BATCH_SIZE)
        update = update_seconds(label_names, workdir)
    sides = by_side(runs)
    facts.update(where_time_goes(sides, padding, update))
    facts["load average at end"] = f"{os.getloadavg()[0]:.2f}"
    print(markdown(sides, prep_seconds, padding, facts))
    if args.json:
        payload = {
            "args": vars(args),
            "runs": [{**asdict(run), "samples_per_second": run.samples_per_second} for run in runs],
            "preprocess_seconds": prep_seconds,
            "padding_tokens_per_epoch": padding,
            "update_seconds": update,
            "facts": facts,
        }
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(payload, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
