"""Benchmark kfnlp's causal-LM path (preprocess -> train-clm -> evaluate-clm) against the Hugging Face
course's causal-LM recipe (chapter 7, section 6, "Training a causal language model from scratch"), on
the same text, the same model, the same steps, batch size and seed.

The text is what clm-adapt trains on: the Rotten Tomatoes reviews (builtin:rotten-tomatoes), split
into train and held-out documents by preprocess's seeded split (both sides read the same documents).
The model is builtin:gpt2-imdb when it was made on this machine (`kfnlp builtin make gpt2-imdb`);
otherwise a seeded random-init GPT-2 of its shape, with a byte-level BPE tokenizer trained by
kfnlp.data.bpe on the benchmark's training text. Every side starts from the same saved weights. Sides:

  recipe    the course as written: tokenize(truncation=True, max_length=context_length,
            return_overflowing_tokens=True, return_length=True) through Dataset.map, keeping the chunks
            of exactly context_length; tokenizer.pad_token = tokenizer.eos_token;
            DataCollatorForLanguageModeling(tokenizer, mlm=False); TrainingArguments + Trainer.
            Rotten Tomatoes reviews are one sentence (about 26 tokens): at context_length 128 not one
            chunk is left, so this side has nothing to train on and the table says so (it trains when
            --context-length leaves it at least one batch)
  recipe + eos join
            the course's own fix, its "Try it out!" under tokenize(): no truncation, the tokenized
            documents of each Dataset.map batch joined with eos_token_id (one after each document)
            and the concatenation cut into context_length chunks; the rest of the recipe unchanged
            (checked to give kfnlp's chunks, row for row)
  kfnlp     preprocess (source builtin:rotten-tomatoes, chunk_size context_length) -> train_clm on its
            train split -> evaluate_clm

All sides train with the course's settings (lr 5e-4, weight decay 0.1, batch 32) for --steps optimizer
steps, seed 42, no evaluation or checkpoints during training, and one schedule: train-clm's (linear
decay after a warmup of 10% of the steps). The course's schedule is made for its 65k-step GPU run
(cosine, 1,000 warmup steps, which a few dozen steps would never leave; gradient accumulation 8, a step
of 256 chunks, a sixth of the whole Rotten Tomatoes training text); train-clm has no cosine option, and a
schedule shared by all sides leaves only the method to differ. The two API renames of transformers 5
are applied to the course's code: eval_strategy, processing_class.

Scores: perplexity on the same held-out chunks (the first --eval-chunks chunks of the dataset's test
split) before training and after each run, by evaluate_clm for every side (token-weighted exp of the
stock model's mean loss), and by the course's own evaluate() (exp of the mean of its batch losses)
for comparison. Runs alternate (each repeat trains every side once, the first side rotating) because
CPU speed on shared VMs drifts; each figure is the median over the repeats (3 by default) with the
range beside it, and each ratio the ratio of the medians with the range of the per-repeat ratios.

Usage: python benchmarks/bench_clm.py [--steps N] [--rounds N] [--eval-chunks N] [--context-length N]
       [--model auto|made|shaped] [--docs N] [--json FILE]
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
from bench_mlm import flat  # noqa: E402
from bench_ner import fmt, ratio_spread, spread  # noqa: E402
from common import device_fact, log, timed  # noqa: E402

MODEL = "builtin:gpt2-imdb"
CORPUS = "builtin:rotten-tomatoes"
CONTEXT_LENGTH = 128  # the course's context_length, clm-adapt's chunk_size
GROUP_SIZE = 1000  # Dataset.map's batch size: the documents joined before cutting (preprocess's group_size)
TEST_SIZE = 0.1  # preprocess's held-out share of the documents
LEARNING_RATE = 5e-4  # the course's
WEIGHT_DECAY = 0.1  # the course's
BATCH_SIZE = 32  # the course's per_device_train_batch_size
EVAL_BATCH_SIZE = 32  # the course's per_device_eval_batch_size and evaluate() data loader
SCHEDULER = "linear"  # train-clm's (the Trainer's default); the course's is cosine
SEED = 42
SIDES = {"recipe": "recipe (as written)", "recipe-eos": "recipe + eos join", "kfnlp": "kfnlp"}
BASELINE = "recipe-eos"  # what kfnlp is measured against: the recipe that has data to train on


@dataclass
class Run:
    side: str
    train_seconds: float  # trainer.train()'s train_runtime
    wall_seconds: float  # model load -> trained model saved
    samples: int  # chunks trained on (steps x batch)
    steps: int
    train_loss: float
    model_dir: str
    perplexity: float = math.nan  # evaluate_clm on the held-out chunks
    course_perplexity: float = math.nan  # the course's evaluate() on the same chunks
    load: float = field(default_factory=lambda: os.getloadavg()[0])  # 1-minute load average at the end

    @property
    def samples_per_second(self) -> float:
        return self.samples / self.train_seconds


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=50, help="optimizer steps per training run (50: about an epoch)")
    parser.add_argument("--rounds", type=int, default=3, help="training runs per side, alternating (median reported)")
    parser.add_argument("--eval-chunks", type=int, default=500, help="held-out chunks scored (evaluate-clm's 500)")
    parser.add_argument(
        "--context-length", type=int, default=CONTEXT_LENGTH, help="tokens per chunk (the course's 128)"
    )
    parser.add_argument(
        "--model",
        choices=("auto", "made", "shaped"),
        default="auto",
        help="made: builtin:gpt2-imdb (made on this machine); shaped: a random-init GPT-2 of its shape; auto: made "
        "when it exists",
    )
    parser.add_argument("--docs", type=int, default=None, help="seeded sample of the reviews (default: all 8,530)")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    return parser.parse_args(argv)


# -- data -------------------------------------------------------------------------


def preprocess_config(context_length: int, docs: int | None):
    """preprocess's settings here: clm-adapt's source, the course's context length, the default split."""
    from kfnlp.stages.preprocess import PreprocessConfig

    return PreprocessConfig(
        source=CORPUS,
        chunk_size=context_length,
        group_size=GROUP_SIZE,
        max_documents=docs,
        test_size=TEST_SIZE,
        seed=SEED,
    )


def split_texts(config) -> tuple[list[str], list[str]]:
    """The train and held-out documents, in corpus order, exactly as preprocess splits them."""
    from kfnlp.data.corpus import load_corpus
    from kfnlp.stages.preprocess import split_documents

    documents = load_corpus(config.source).documents
    train, test = split_documents(len(documents), config)
    return [documents[i] for i in train], [documents[i] for i in test]


def recipe_tokenize(tokenizer, texts: list[str], context_length: int):
    """The course's tokenize() through Dataset.map, as written: each document truncated into chunks of
    context_length (return_overflowing_tokens), the shorter last chunk of each dropped."""
    import datasets

    def tokenize(element):
        outputs = tokenizer(
            element["content"],
            truncation=True,
            max_length=context_length,
            return_overflowing_tokens=True,
            return_length=True,
        )
        input_batch = []
        for length, input_ids in zip(outputs["length"], outputs["input_ids"], strict=True):
            if length == context_length:
                input_batch.append(input_ids)
        return {"input_ids": input_batch}

    raw = datasets.Dataset.from_dict({"content": texts})
    return raw.map(tokenize, batched=True, remove_columns=raw.column_names)


def recipe_tokenize_joined(tokenizer, texts: list[str], context_length: int):
    """The course's "Try it out!" fix: truncation off and the other tokenizer arguments removed, the
    documents of each Dataset.map batch joined with eos_token_id and the concatenation cut into chunks
    of context_length (the batch's shorter rest dropped). The eos goes after every document, so that
    documents of neighbouring batches stay apart too."""
    import datasets

    def tokenize(element):
        outputs = tokenizer(element["content"])
        concatenated = []
        for input_ids in outputs["input_ids"]:
            concatenated.extend([*input_ids, tokenizer.eos_token_id])
        usable = len(concatenated) // context_length * context_length
        return {"input_ids": [concatenated[i : i + context_length] for i in range(0, usable, context_length)]}

    raw = datasets.Dataset.from_dict({"content": texts})
    return raw.map(tokenize, batched=True, batch_size=GROUP_SIZE, remove_columns=raw.column_names)


def same_chunks(recipe, ours) -> bool:
    """The same rows of token ids, in the same order."""
    return len(recipe) == len(ours) and np.array_equal(flat(recipe, "input_ids"), flat(ours, "input_ids"))


def kept_share(lengths: list[int], context_length: int) -> float:
    """The share of tokens the course's tokenize() keeps: each document's whole chunks of context_length."""
    total = sum(lengths)
    return sum(n // context_length * context_length for n in lengths) / total if total else 0.0


# -- the model ----------------------------------------------------------------------


def made_model() -> str | None:
    """builtin:gpt2-imdb's directory, or None when it was not made on this machine."""
    from kfnlp.assets import resolve_model_ref
    from kfnlp.errors import ConfigError

    try:
        return resolve_model_ref(MODEL)
    except ConfigError:
        return None


def shaped_model(directory: str, texts: list[str], context_length: int) -> str:
    """A seeded random-init GPT-2 of builtin:gpt2-imdb's shape (its recipe's BPE settings and train-clm
    scratch_* fields, through train-clm's own scratch_model) with a BPE tokenizer trained on ``texts``, saved
    as a model directory (safetensors + tokenizer)."""
    from transformers import set_seed

    from kfnlp.assets import MADE_MODELS
    from kfnlp.data.bpe import train_bpe
    from kfnlp.stages.train_clm import TrainClmConfig, scratch_model

    recipe = MADE_MODELS[MODEL.split(":", 1)[1]].recipe
    bpe = recipe["tokenizer"]
    tokenizer = train_bpe(
        texts, vocab_size=bpe["vocab_size"], min_frequency=bpe["min_frequency"], model_max_length=context_length
    )
    set_seed(SEED)
    scratch_model(TrainClmConfig(**recipe["train_clm"]), tokenizer, context_length).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def describe_model(directory: str) -> str:
    from transformers import AutoConfig

    from kfnlp.modeling import load_causal_lm

    config = AutoConfig.from_pretrained(directory)
    parameters = sum(p.numel() for p in load_causal_lm(directory).parameters())
    return (
        f"{config.n_layer} layers, hidden {config.n_embd}, {config.n_head} heads, vocabulary {config.vocab_size:,}, "
        f"context {config.n_positions}, {parameters / 1e6:.1f}M parameters"
    )


# -- training -----------------------------------------------------------------------


def kfnlp_config(steps: int):
    """train-clm's config here: the course's lr, weight decay and batch (its defaults too), ``steps`` steps,
    no evaluation during training (the course's eval_steps=5,000 never comes in these runs)."""
    from kfnlp.stages.train_clm import TrainClmConfig

    return TrainClmConfig(
        learning_rate=LEARNING_RATE,
        weight_decay=WEIGHT_DECAY,
        batch_size=BATCH_SIZE,
        max_steps=steps,
        seed=SEED,
        eval_strategy="no",
        logging_steps=steps,
    )


def recipe_train(side: str, chunks, model_dir: str, tokenizer, steps: int, warmup: float, workdir: str) -> Run:
    """The course's collator, TrainingArguments and Trainer on ``chunks``, from the saved model."""
    import torch
    from transformers import (
        AutoModelForCausalLM,
        DataCollatorForLanguageModeling,
        Trainer,
        TrainingArguments,
        set_seed,
    )

    set_seed(SEED)
    started = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(model_dir, use_safetensors=True)
    data_collator = DataCollatorForLanguageModeling(tokenizer, mlm=False)
    args = TrainingArguments(
        output_dir=os.path.join(workdir, f"{side}-checkpoints"),
        per_device_train_batch_size=BATCH_SIZE,
        per_device_eval_batch_size=EVAL_BATCH_SIZE,
        eval_strategy="no",  # the course: every 5,000 steps
        logging_steps=steps,
        gradient_accumulation_steps=1,  # the course: 8
        max_steps=steps,  # the course: num_train_epochs=1
        weight_decay=WEIGHT_DECAY,
        warmup_steps=warmup,  # the course: 1_000 (train-clm's warmup_ratio: a float < 1 is a share of the steps)
        lr_scheduler_type=SCHEDULER,  # the course: "cosine"
        learning_rate=LEARNING_RATE,
        save_strategy="no",  # the course: every 5,000 steps
        fp16=torch.cuda.is_available(),  # the course sets fp16=True, which needs a GPU
        seed=SEED,
        report_to="none",
        disable_tqdm=True,
    )
    trainer = Trainer(
        model=model,
        processing_class=tokenizer,
        args=args,
        data_collator=data_collator,
        train_dataset=chunks,
    )
    result = trainer.train()
    saved = os.path.join(workdir, f"{side}-model")
    trainer.save_model(saved)
    wall = time.perf_counter() - started
    return Run(
        side,
        result.metrics["train_runtime"],
        wall,
        trainer.state.global_step * BATCH_SIZE,
        trainer.state.global_step,
        result.training_loss,
        saved,
    )


def kfnlp_train(dataset: str, model_dir: str, steps: int, workdir: str) -> Run:
    """The train_clm stage, timed whole (it reads the dataset artifact and writes a model artifact)."""
    from kfnlp.stages.train_clm import train_clm

    output = os.path.join(workdir, "kfnlp-model")
    manifest, wall = timed(train_clm, dataset, output, kfnlp_config(steps), model_dir)
    training = manifest["training"]
    steps_done = training["global_step"]
    samples = steps_done * training["global_batch_size"]
    return Run("kfnlp", training["train_runtime_s"], wall, samples, steps_done, training["train_loss"], output)


# -- scores -------------------------------------------------------------------------


def kfnlp_perplexity(model: str, dataset: str, args, workdir: str, label: str) -> dict:
    """evaluate_clm's metrics for ``model`` on the held-out chunks (its samples shortened to fit a short context)."""
    from kfnlp.stages.evaluate_clm import EvaluateClmConfig, evaluate_clm

    output = os.path.join(workdir, f"evaluation-{label}")
    new_tokens = min(EvaluateClmConfig().max_new_tokens, args.context_length // 2)
    config = EvaluateClmConfig(max_chunks=args.eval_chunks, batch_size=EVAL_BATCH_SIZE, max_new_tokens=new_tokens)
    return evaluate_clm(model, dataset, output, config, label=label)["metrics"]


def course_perplexity(model_dir: str, eval_chunks) -> float:
    """The course's evaluate(), without Accelerate: exp of the mean of the batch losses of the stock forward
    with labels=input_ids."""
    import torch
    from torch.utils.data.dataloader import DataLoader
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, use_safetensors=True)
    eval_dataloader = DataLoader(eval_chunks.with_format("torch"), batch_size=EVAL_BATCH_SIZE)
    model.eval()
    losses = []
    for batch in eval_dataloader:
        with torch.no_grad():
            outputs = model(batch["input_ids"], labels=batch["input_ids"])
        losses.append(outputs.loss.reshape(1))
    loss = torch.mean(torch.cat(losses))
    try:
        return float(torch.exp(loss))
    except OverflowError:
        return float("inf")


def first_batch_labels(chunks, collator):
    """The labels a collator makes of the first batch of ``chunks``."""
    return collator([{"input_ids": chunks[i]["input_ids"]} for i in range(min(BATCH_SIZE, len(chunks)))])["labels"]


def labelled_positions(chunks, collator) -> float:
    """Mean positions per chunk whose label a collator keeps (not -100), over the first batch."""
    return float((first_batch_labels(chunks, collator) != -100).sum(dim=1).float().mean())


def loss_scale_fact(tokenizer, chunks) -> str:
    """Why the recipe's logged training loss reads low: the Trainer divides GPT-2's summed loss over the
    predicted positions (labels[:, 1:]) by the count of every label, position 0 included."""
    from transformers import DataCollatorForLanguageModeling

    labels = first_batch_labels(chunks, DataCollatorForLanguageModeling(tokenizer, mlm=False))
    scale = float((labels[:, 1:] != -100).sum() / (labels != -100).sum())
    return (
        f"the recipe's reads ×{scale:.4f} of its mean loss (first batch): transformers' Trainer counts GPT-2's "
        "labels unshifted (its config names no loss_type), position 0 included, and divides the loss summed over "
        "the predicted positions by that count; train-clm's collator sets each row's first label to -100, so its "
        "count is the predicted positions. Perplexity is scored alike on every side"
    )


def labels_fact(tokenizer, chunks, context_length: int) -> str:
    """Which targets each side's collator keeps: the course's drops every pad token's, and pad = eos."""
    from transformers import DataCollatorForLanguageModeling

    from kfnlp.stages.train_clm import CausalCollator

    course = labelled_positions(chunks, DataCollatorForLanguageModeling(tokenizer, mlm=False))
    ours = labelled_positions(chunks, CausalCollator(tokenizer.pad_token_id))
    eos = float(np.mean(flat(chunks, "input_ids") == tokenizer.eos_token_id)) * context_length
    return (
        f"recipe {course:.1f}, kfnlp {ours:.1f} of {context_length} positions per chunk (first batch); "
        f"DataCollatorForLanguageModeling(mlm=False) sets the label of every pad token to -100, and the course's "
        f"pad_token = eos_token, so the recipe never learns the {eos:.1f} eos per chunk (the ends of reviews); "
        "train-clm's collator reads padding from the attention mask (its -100 at each row's first position, "
        "which no position predicts, changes no loss)"
    )


# -- report -------------------------------------------------------------------------


def by_side(runs: list[Run]) -> dict[str, list[Run]]:
    grouped = {side: [run for run in runs if run.side == side] for side in SIDES}
    return {side: side_runs for side, side_runs in grouped.items() if side_runs}


def result_table(sides: dict[str, list[Run]], data: dict[str, dict], before: dict[str, float]) -> list[str]:
    """Rows of metrics, a column per side (median and range over the repeats), then kfnlp against the recipe
    that trains (the eos join)."""
    names = [side for side in SIDES if side in data]
    header = ["metric", *(SIDES[s] for s in names), f"kfnlp / {SIDES[BASELINE]}"]
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]

    def row(metric: str, cells: list[str], versus: str = "-") -> None:
        lines.append("| " + " | ".join([metric, *cells, versus]) + " |")

    row(
        "training chunks (share of the training tokens)",
        [f"{data[s]['chunks']:,} ({100 * data[s]['kept']:.1f}%)" for s in names],
    )
    timing = [
        ("training samples/s", lambda r: r.samples_per_second),
        ("trainer.train() s", lambda r: r.train_seconds),
        ("wall s (load model → trained model saved)", lambda r: r.wall_seconds),
        ("s per optimizer step", lambda r: r.train_seconds / r.steps),
    ]
    for metric, get in timing:
        values = {side: [get(run) for run in side_runs] for side, side_runs in sides.items()}
        cells = [spread(values[s]) if s in values else "- (no chunk to train on)" for s in names]
        versus = ratio_spread(values["kfnlp"], values[BASELINE]) if {"kfnlp", BASELINE} <= set(values) else "-"
        row(metric, cells, versus)
    losses = {side: [run.train_loss for run in side_runs] for side, side_runs in sides.items()}
    row("training loss as logged (mean over the run)", [spread(losses[s]) if s in losses else "-" for s in names])
    row("held-out perplexity before (evaluate_clm)", [fmt(before["kfnlp"])] * len(names))
    for metric, get in (
        ("held-out perplexity after (evaluate_clm; lower is better)", lambda r: r.perplexity),
        ("held-out perplexity after (the course's evaluate())", lambda r: r.course_perplexity),
    ):
        values = {side: [get(run) for run in side_runs] for side, side_runs in sides.items()}
        cells = [spread(values[s]) if s in values else "-" for s in names]
        versus = ratio_spread(values["kfnlp"], values[BASELINE]) if {"kfnlp", BASELINE} <= set(values) else "-"
        row(metric, cells, versus)
    return lines


def markdown(sides, data: dict[str, dict], before: dict[str, float], facts: dict[str, str]) -> str:
    lines = result_table(sides, data, before)
    lines += ["", "| fact | value |", "|---|---|"]
    lines += [f"| {key} | {value} |" for key, value in facts.items()]
    return "\n".join(lines)


def config_facts(steps: int) -> str:
    """TrainClmConfig fields passed here that differ from its defaults."""
    from kfnlp.stages.train_clm import TrainClmConfig

    defaults, passed = asdict(TrainClmConfig()), asdict(kfnlp_config(steps))
    changed = [f"{key} {defaults[key]} → {value}" for key, value in passed.items() if defaults[key] != value]
    return "; ".join(changed) or "all defaults"


def machine_facts() -> dict[str, str]:
    import torch
    import transformers

    return {
        "machine": f"{os.cpu_count()} CPUs, torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"transformers {transformers.__version__}, Python {platform.python_version()}",
        "GPU": device_fact(),
    }


def run_side(side: str, chunks: dict, dataset: str, model_dir: str, tokenizer, args, warmup: float, workdir: str):
    if side == "kfnlp":
        run = kfnlp_train(dataset, model_dir, args.steps, workdir)
    else:
        run = recipe_train(side, chunks[side], model_dir, tokenizer, args.steps, warmup, workdir)
    run.perplexity = kfnlp_perplexity(run.model_dir, dataset, args, workdir, side)["perplexity"]
    run.course_perplexity = course_perplexity(run.model_dir, chunks["eval"])
    return run


def choose_model(choice: str, train_texts: list[str], context_length: int, workdir: str) -> tuple[str, str]:
    """(model directory, its name for the table): builtin:gpt2-imdb when made (and not --model shaped),
    else the random-init model of its shape."""
    made = made_model() if choice != "shaped" else None
    if made is not None:
        return made, f"{MODEL} (made on this machine: {os.path.basename(made)})"
    if choice == "made":
        raise SystemExit(f"bench_clm: {MODEL} is not made on this machine; run `kfnlp builtin make gpt2-imdb` first")
    log(f"{MODEL} is not made here: a random-init GPT-2 of its shape, BPE trained on the training text")
    directory = shaped_model(os.path.join(workdir, "base-model"), train_texts, context_length)
    return directory, f"random-init GPT-2 of {MODEL}'s shape (BPE tokenizer trained on the {CORPUS} training text)"


def recipe_data(tokenizer, train_texts: list[str], test_texts: list[str], ours: dict, args) -> dict:
    """Every side's training chunks (timed once), the held-out chunks both scorers read, how much of the
    training text each side keeps, and whether the eos-joined recipe cut preprocess's chunks."""
    context = args.context_length
    chunks, seconds = {}, {}
    chunks["recipe"], seconds["recipe"] = timed(recipe_tokenize, tokenizer, train_texts, context)
    chunks["recipe-eos"], seconds["recipe-eos"] = timed(recipe_tokenize_joined, tokenizer, train_texts, context)
    held_out = recipe_tokenize_joined(tokenizer, test_texts, context)
    chunks["eval"] = held_out.select(range(min(args.eval_chunks, len(held_out))))
    lengths = [len(ids) for ids in tokenizer(train_texts)["input_ids"]]
    with_eos = sum(lengths) + len(lengths)
    kept = {
        "recipe": {"chunks": len(chunks["recipe"]), "kept": kept_share(lengths, context)},
        "recipe-eos": {"chunks": len(chunks["recipe-eos"]), "kept": len(chunks["recipe-eos"]) * context / with_eos},
        "kfnlp": {"chunks": len(ours["train"]), "kept": len(ours["train"]) * context / with_eos},
    }
    same = same_chunks(chunks["recipe-eos"], ours["train"]) and same_chunks(held_out, ours["test"])
    return {"chunks": chunks, "tokenize_seconds": seconds, "lengths": lengths, "kept": kept, "same": same}


def data_facts(prepared: dict, train_texts, test_texts, ours: dict, before: dict, preprocess_seconds: float) -> dict:
    lengths, chunks = prepared["lengths"], prepared["chunks"]
    return {
        "data": f"{CORPUS}: {len(train_texts):,} training and {len(test_texts):,} held-out reviews (preprocess's "
        f"seeded split, test_size {TEST_SIZE}), {sum(lengths):,} training tokens without eos, "
        f"{statistics.mean(lengths):.1f} per review (longest {max(lengths)})",
        "same chunks, recipe + eos join and kfnlp (train and held-out)": "yes" if prepared["same"] else "NO",
        "the course's tokenize() as written keeps": ", ".join(
            f"{100 * kept_share(lengths, n):.1f}% at {n}" for n in (128, 64, 32, 16)
        )
        + " tokens of context (of the training tokens)",
        "held-out chunks scored": f"the first {len(chunks['eval'])} of the test split ({len(ours['test'])} chunks)",
        "held-out perplexity before, the course's evaluate()": fmt(before["course"]),
        "preprocess s (once: read, split, tokenize, chunk, write the artifact)": f"{preprocess_seconds:.1f}",
        "the course's tokenize() s (training text, once)": ", ".join(
            f"{SIDES[side]} {seconds:.2f}" for side, seconds in prepared["tokenize_seconds"].items()
        ),
    }


def main(argv: list[str] | None = None) -> int:
    import datasets
    import transformers

    from kfnlp.artifacts import open_dataset
    from kfnlp.modeling import load_tokenizer
    from kfnlp.stages.preprocess import preprocess
    from kfnlp.stages.train_clm import TrainClmConfig

    args = parse_args(argv)
    if os.getloadavg()[0] > 0.5:
        log(f"load average {os.getloadavg()[0]:.2f}: other jobs share the machine, timings will be noisy")
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    facts = {"load average at start": f"{os.getloadavg()[0]:.2f}"}
    warmup = TrainClmConfig().warmup_ratio
    with tempfile.TemporaryDirectory(prefix="bench-clm-") as workdir, contextlib.redirect_stdout(sys.stderr):
        config = preprocess_config(args.context_length, args.docs)
        train_texts, test_texts = split_texts(config)
        model_dir, model_name = choose_model(args.model, train_texts, args.context_length, workdir)
        facts["model"] = f"{model_name}: {describe_model(model_dir)}"
        log(f"preprocess: {CORPUS}, {len(train_texts)} + {len(test_texts)} documents, chunks of {args.context_length}")
        dataset = os.path.join(workdir, "dataset")
        _, preprocess_seconds = timed(preprocess, dataset, config, model_dir)
        ours = open_dataset(dataset).splits()
        tokenizer = load_tokenizer(model_dir)
        tokenizer.pad_token = tokenizer.eos_token  # the course's
        prepared = recipe_data(tokenizer, train_texts, test_texts, ours, args)
        chunks = prepared["chunks"]
        trainable = [side for side in ("recipe", "recipe-eos") if len(chunks[side]) >= BATCH_SIZE] + ["kfnlp"]

        log("held-out perplexity before training")
        before = {
            "kfnlp": kfnlp_perplexity(model_dir, dataset, args, workdir, "base")["perplexity"],
            "course": course_perplexity(model_dir, chunks["eval"]),
        }
        log(f"training: {args.steps} steps × batch {BATCH_SIZE}, {args.rounds} rounds, sides {', '.join(trainable)}")
        runs: list[Run] = []
        for round_ in range(args.rounds):
            shift = round_ % len(trainable)  # who goes first rotates, so drifting speed hits all sides alike
            for side in trainable[shift:] + trainable[:shift]:
                run = run_side(side, chunks, dataset, model_dir, tokenizer, args, warmup, workdir)
                log(
                    f"  round {round_ + 1} {side}: train {run.train_seconds:.1f} s ({run.samples_per_second:.1f} "
                    f"samples/s, {run.steps} steps), wall {run.wall_seconds:.1f} s, loss {run.train_loss:.4f}, "
                    f"perplexity {run.perplexity:,.2f}, load {run.load:.2f}"
                )
                runs.append(run)
        facts.update(data_facts(prepared, train_texts, test_texts, ours, before, preprocess_seconds))
        facts["training targets"] = labels_fact(tokenizer, chunks["recipe-eos"], args.context_length)
        facts["training loss as logged"] = loss_scale_fact(tokenizer, chunks["recipe-eos"])
    facts.update(
        {
            "training": f"{args.steps} steps × batch {BATCH_SIZE}, lr {LEARNING_RATE:g}, weight decay "
            f"{WEIGHT_DECAY:g}, {SCHEDULER} schedule after a warmup of {warmup:g} of the steps, seed {SEED}, no "
            "evaluation or checkpoints during training",
            "TrainClmConfig vs its defaults": config_facts(args.steps),
            "rounds": f"{args.rounds} per side, alternating; median (range) over the rounds",
            **machine_facts(),
            "load average at end": f"{os.getloadavg()[0]:.2f}",
        }
    )
    print(markdown(by_side(runs), prepared["kept"], before, facts))
    if args.json:
        payload = {
            "args": vars(args),
            "runs": [{**asdict(run), "samples_per_second": run.samples_per_second} for run in runs],
            "data": prepared["kept"],
            "perplexity_before": before,
            "facts": facts,
        }
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(payload, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
