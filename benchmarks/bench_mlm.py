"""Benchmark kfnlp's masked-LM path against the plain Hugging Face course recipe.

Everything runs in this process on the same reviews and the same chunks, in rounds
whose order rotates (CPU speed on shared VMs drifts); each figure is the median over
the rounds, with the range of the per-round ratios beside it. Parts:

  preprocess  reviews -> the trainable dataset the Trainer consumes (input_ids,
              attention_mask, word_ids, labels), on both sides:
              recipe:         Dataset.map(tokenize_function) + Dataset.map(group_texts),
                              group_texts verbatim from the course (quadratic sum(list, []))
              recipe, linear: the same with group_texts concatenating by itertools.chain
              kfnlp:          chunking.tokenize + chunking.chunk + chunking.to_dataset
              (checked to give the same chunks, row for row)
  training    recipe: stock *ForMaskedLM + DataCollatorForLanguageModeling + Trainer
              kfnlp:  MaskingCollator + enable_sparse_mlm_loss + Trainer
  evaluation  perplexity on a once-masked eval set, stock vs sparse forward
  overhead    the train_mlm stage's time outside trainer.train(), as a share of training

Training and evaluation run on two models, and every figure names its model:
  splade-tiny       the embedded builtin:splade-tiny (2 layers, hidden 128, 4.4M
                    parameters), whose vocabulary projection is most of its FLOPs
  bert-base-shaped  a randomly initialised BertForMaskedLM of BERT-base's shape (12
                    layers, hidden 768, 12 heads, the same vocabulary), where the
                    encoder dominates and the sparse head gains much less

On a GPU the recipe side trains in fp16, as the course sets it, and the table gains each side's
peak GPU memory in training; --precision and --compile set kfnlp's side (benchmarks/gpu.sh).

Usage: python benchmarks/bench_mlm.py [--docs N] [--steps N] [--rounds N] [--bert-steps N] [--quick]
       [--precision auto|no|fp16|bf16] [--compile]
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import math
import os
import platform
import statistics
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")

import numpy as np  # noqa: E402
from common import add_speed_flags, device_fact, log, timed  # noqa: E402

MODEL = "builtin:splade-tiny"
CORPUS = "builtin:imdb"
CHUNK_SIZE = 128  # the recipe's chunk_size
GROUP_SIZE = 1000  # the recipe's Dataset.map batch size
BATCH_SIZE = 32
EVAL_BATCH_SIZE = 64  # the recipe's
MLM_PROBABILITY = 0.15  # the recipe's
SEED = 42
PRECISION, COMPILE = "no", False  # kfnlp's side: --precision (resolved), --compile
VERBATIM, LINEAR = "recipe (verbatim group_texts)", "recipe (linear group_texts)"  # the preprocessing baselines
MODELS = {
    "splade-tiny": "builtin:splade-tiny: 2 layers, hidden 128",
    "bert-base-shaped": "random-init BertForMaskedLM: 12 layers, hidden 768, 12 heads",
}


@dataclass
class Row:
    """One compared figure: each side's value in every round (higher is better)."""

    part: str
    model: str
    metric: str
    baseline_name: str
    baseline: list[float]
    kfnlp: list[float]

    @property
    def ratio(self) -> float:
        return statistics.median(self.kfnlp) / statistics.median(self.baseline)

    @property
    def round_ratios(self) -> list[float]:
        return [k / b for k, b in zip(self.kfnlp, self.baseline, strict=True)]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=None, help="reviews to preprocess (default: all 25,000)")
    parser.add_argument("--steps", type=int, default=60, help="optimizer steps per splade-tiny training run")
    parser.add_argument("--eval-chunks", type=int, default=1000, help="chunks in the splade-tiny eval set")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per comparison (median reported)")
    parser.add_argument("--bert-steps", type=int, default=3, help="steps per bert-base-shaped run (0: skip the model)")
    parser.add_argument("--bert-batch", type=int, default=8, help="bert-base-shaped training batch size")
    parser.add_argument("--bert-eval-chunks", type=int, default=64, help="chunks in the bert-base-shaped eval set")
    parser.add_argument("--quick", action="store_true", help="small sizes, one round: a smoke test (no ratios)")
    add_speed_flags(parser)
    args = parser.parse_args(argv)
    if args.quick:
        args.docs, args.steps, args.eval_chunks, args.rounds = args.docs or 1000, min(args.steps, 4), 64, 1
        args.bert_steps, args.bert_eval_chunks = min(args.bert_steps, 1), 8
    return args


def alternate(rounds: int, sides: dict[str, Callable[[], tuple]]) -> dict[str, tuple]:
    """Run every side once per round, rotating which goes first so drifting machine
    speed hits all alike. Each callable returns (result, seconds); the answer maps each
    side to (its last result, its seconds in round order).
    """
    names = list(sides)
    out: dict[str, tuple] = {name: (None, []) for name in names}
    for round_ in range(rounds):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            result, seconds = sides[name]()
            log(f"  round {round_ + 1} {name}: {seconds:.2f} s")
            out[name] = (result, [*out[name][1], seconds])
    return out


# -- preprocess ---------------------------------------------------------------


def group_texts_verbatim(examples):
    """The course's group_texts (chapter 7, section 3) as printed, its global chunk_size spelled CHUNK_SIZE."""
    # Concatenate all texts
    concatenated_examples = {k: sum(examples[k], []) for k in examples.keys()}  # noqa: SIM118 (verbatim)
    # Compute length of concatenated texts
    total_length = len(concatenated_examples[list(examples.keys())[0]])
    # We drop the last chunk if it's smaller than chunk_size
    total_length = (total_length // CHUNK_SIZE) * CHUNK_SIZE
    # Split by chunks of max_len
    result = {
        k: [t[i : i + CHUNK_SIZE] for i in range(0, total_length, CHUNK_SIZE)] for k, t in concatenated_examples.items()
    }
    # Create a new labels column
    result["labels"] = result["input_ids"].copy()
    return result


def group_texts_linear(examples):
    """The recipe's group_texts with its obvious fix: sum(list, []) copies the growing
    list once per document (quadratic in the batch); itertools.chain is linear."""
    concatenated_examples = {k: list(itertools.chain.from_iterable(examples[k])) for k in examples}
    total_length = len(concatenated_examples["input_ids"]) // CHUNK_SIZE * CHUNK_SIZE
    result = {
        k: [t[i : i + CHUNK_SIZE] for i in range(0, total_length, CHUNK_SIZE)] for k, t in concatenated_examples.items()
    }
    result["labels"] = result["input_ids"].copy()
    return result


def recipe_preprocess(tokenizer, docs: list[str], group_texts: Callable[[dict], dict]):
    """The course recipe through Dataset.map: its result is what its Trainer consumes."""
    import datasets

    def tokenize_function(examples):
        result = tokenizer(examples["text"])
        if tokenizer.is_fast:
            result["word_ids"] = [result.word_ids(i) for i in range(len(result["input_ids"]))]
        return result

    raw = datasets.Dataset.from_dict({"text": docs})
    tokenized = raw.map(tokenize_function, batched=True, remove_columns=["text"])
    return tokenized.map(group_texts, batched=True)


def kfnlp_preprocess(tokenizer, docs: list[str]):
    """kfnlp's chunking up to the same trainable dataset; returns (token stream, dataset)."""
    from kfnlp.data import chunking

    stream = chunking.tokenize(tokenizer, docs)
    return stream, chunking.to_dataset(chunking.chunk(stream, CHUNK_SIZE, GROUP_SIZE))


def flat(dataset, column: str) -> np.ndarray:
    return dataset.data.column(column).combine_chunks().flatten().to_numpy(zero_copy_only=False)


def same_chunks(recipe, ours) -> bool:
    """Same rows of token ids and labels, and special tokens (word id None / -1) in the same places."""
    special = recipe.data.column("word_ids").combine_chunks().flatten().is_null().to_numpy(zero_copy_only=False)
    return (
        len(recipe) == len(ours)
        and all(np.array_equal(flat(recipe, c), flat(ours, c)) for c in ("input_ids", "labels"))
        and np.array_equal(special, flat(ours, "word_ids") < 0)
    )


def bench_preprocess(tokenizer, docs: list[str], rounds: int):
    import datasets

    datasets.disable_progress_bars()
    log(f"preprocess: {len(docs)} reviews")
    out = alternate(
        rounds,
        {
            VERBATIM: lambda: timed(recipe_preprocess, tokenizer, docs, group_texts_verbatim),
            LINEAR: lambda: timed(recipe_preprocess, tokenizer, docs, group_texts_linear),
            "kfnlp": lambda: timed(kfnlp_preprocess, tokenizer, docs),
        },
    )
    recipe, linear, (stream, ours) = (out[name][0] for name in out)
    tokens = int(stream.doc_lengths.sum())
    throughput = {name: [tokens / s for s in seconds] for name, (_, seconds) in out.items()}
    identical = same_chunks(recipe, ours) and recipe.data.table.equals(linear.data.table)
    facts = {
        "preprocess": f"{tokens:,} tokens -> {len(ours):,} chunks of {CHUNK_SIZE} (the trainable dataset, "
        "both sides); median s: "
        + ", ".join(f"{name} {statistics.median(seconds):.2f}" for name, (_, seconds) in out.items()),
        "identical chunks on all three sides": "yes" if identical else "NO",
    }
    rows = [
        Row("preprocess", "splade-tiny tokenizer", "tokens/s", name, throughput[name], throughput["kfnlp"])
        for name in (VERBATIM, LINEAR)
    ]
    return recipe, ours, rows, facts


# -- models -------------------------------------------------------------------


def make_model(name: str, tokenizer):
    """A fresh model: the embedded one, or BERT-base's shape with seeded random weights."""
    import torch
    from transformers import BertConfig, BertForMaskedLM

    from kfnlp.modeling import load_masked_lm

    if name == "splade-tiny":
        return load_masked_lm(MODEL)
    torch.manual_seed(SEED)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
    )
    return BertForMaskedLM(config)


def parameters_millions(model) -> float:
    return sum(p.numel() for p in model.parameters()) / 1e6


# -- training -----------------------------------------------------------------


def recipe_arguments(steps: int, batch_size: int) -> dict:
    """The recipe's optimisation settings, shared by both sides so only the method differs."""
    return {
        "learning_rate": 2e-5,
        "weight_decay": 0.01,
        "per_device_train_batch_size": batch_size,
        "max_steps": steps,
        "eval_strategy": "no",
        "save_strategy": "no",
        "logging_steps": steps,
    }


def recipe_trainer(model, tokenizer, train, steps: int, batch_size: int, workdir: str):
    """The recipe's Trainer: stock model, transformers' collator, word_ids dropped by the Trainer."""
    import torch
    from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments

    args = TrainingArguments(
        output_dir=workdir,
        **recipe_arguments(steps, batch_size),
        fp16=torch.cuda.is_available(),  # the course sets fp16=True, which needs a GPU
        report_to="none",
        disable_tqdm=True,
        seed=SEED,
    )
    collator = DataCollatorForLanguageModeling(tokenizer=tokenizer, mlm_probability=MLM_PROBABILITY)
    return Trainer(model=model, args=args, train_dataset=train, data_collator=collator, processing_class=tokenizer)


def kfnlp_trainer(model, tokenizer, train, steps: int, batch_size: int, workdir: str):
    """kfnlp's train_mlm set-up: NumPy masking collator and the sparse MLM head."""
    from transformers import Trainer

    from kfnlp.masking import MaskingCollator, MaskSpec
    from kfnlp.modeling import enable_sparse_mlm_loss
    from kfnlp.training import training_arguments

    assert enable_sparse_mlm_loss(model)
    args = training_arguments(
        workdir,
        precision=PRECISION,
        **recipe_arguments(steps, batch_size),
        torch_compile=COMPILE,
        seed=SEED,
        remove_unused_columns=False,
    )
    collator = MaskingCollator(MaskSpec.for_tokenizer(tokenizer, "token", MLM_PROBABILITY), seed=SEED)
    data = train.select_columns(["input_ids", "attention_mask", "word_ids"]).with_format("numpy")
    return Trainer(model=model, args=args, train_dataset=data, data_collator=collator, processing_class=tokenizer)


def peak_gpu_gib() -> float | None:
    """The most GPU memory torch held since the last reset (None without a GPU)."""
    import torch

    return torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None


def train_run(make_trainer, model_name: str, tokenizer, train, steps: int, batch_size: int):
    """Build a fresh model and trainer, and time trainer.train() alone; returns
    ((samples, peak GPU GiB or None), seconds)."""
    import torch
    from transformers import set_seed

    set_seed(SEED)
    model = make_model(model_name, tokenizer)
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory() as workdir:
        trainer = make_trainer(model, tokenizer, train, steps, batch_size, workdir)
        _, seconds = timed(trainer.train)
        return (trainer.state.global_step * batch_size, peak_gpu_gib()), seconds


def bench_training(model_name: str, tokenizer, recipe, ours, steps: int, batch_size: int, rounds: int) -> list[Row]:
    """Each side trains on the first steps x batch rows of its own trainable dataset; on a GPU a
    second row compares the peak memory of the last round."""
    rows = range(min(len(ours), steps * batch_size))
    recipe_train, our_train = recipe.select(rows), ours.select(rows)
    log(f"training {model_name}: {steps} steps of {batch_size} chunks")
    out = alternate(
        rounds,
        {
            "recipe": lambda: train_run(recipe_trainer, model_name, tokenizer, recipe_train, steps, batch_size),
            "kfnlp": lambda: train_run(kfnlp_trainer, model_name, tokenizer, our_train, steps, batch_size),
        },
    )
    ((samples, recipe_peak), recipe_s), ((_, kfnlp_peak), kfnlp_s) = out["recipe"], out["kfnlp"]
    rows = [
        Row(
            "training",
            model_name,
            f"samples/s (batch {batch_size})",
            "recipe",
            [samples / s for s in recipe_s],
            [samples / s for s in kfnlp_s],
        )
    ]
    if recipe_peak is not None:
        rows.append(
            Row("training", model_name, "peak GPU GiB (lower is better)", "recipe", [recipe_peak], [kfnlp_peak])
        )
    return rows


# -- evaluation ---------------------------------------------------------------


def masked_eval_set(tokenizer, ours, n: int):
    """The last ``n`` chunks (not trained on), masked once with a fixed seed."""
    import datasets

    from kfnlp.masking import MaskSpec, mask

    spec = MaskSpec.for_tokenizer(tokenizer, "token", MLM_PROBABILITY)
    ids = flat(ours, "input_ids").reshape(-1, CHUNK_SIZE)[-n:]
    words = flat(ours, "word_ids").reshape(-1, CHUNK_SIZE)[-n:]
    masked, labels = mask(ids, words, spec, np.random.default_rng(SEED))
    columns = {"input_ids": masked, "attention_mask": np.ones_like(masked), "labels": labels}
    return datasets.Dataset.from_dict(columns).with_format("torch")


def eval_run(model, data):
    """(perplexity, seconds) with kfnlp's token-weighted evaluation loop."""
    from kfnlp.metrics import perplexity
    from kfnlp.stages.evaluate import masked_lm_loss_sum

    (total, count), seconds = timed(masked_lm_loss_sum, model, data, EVAL_BATCH_SIZE)
    return perplexity(total, count), seconds


def bench_evaluation(model_name: str, tokenizer, ours, n: int, rounds: int):
    from kfnlp.modeling import enable_sparse_mlm_loss

    n = min(n, len(ours))
    data = masked_eval_set(tokenizer, ours, n)
    stock, sparse = make_model(model_name, tokenizer), make_model(model_name, tokenizer)
    assert enable_sparse_mlm_loss(sparse)
    log(f"evaluation {model_name}: {n} masked chunks")
    out = alternate(rounds, {"recipe": lambda: eval_run(stock, data), "kfnlp": lambda: eval_run(sparse, data)})
    (ppl_b, recipe_s), (ppl_k, kfnlp_s) = out["recipe"], out["kfnlp"]
    row = Row("evaluation", model_name, "samples/s", "recipe", [n / s for s in recipe_s], [n / s for s in kfnlp_s])
    agree = math.isclose(ppl_b, ppl_k, rel_tol=1e-5)
    facts = {
        f"{model_name}: parameters": f"{parameters_millions(stock):.1f}M",
        f"{model_name}: perplexity, stock vs sparse forward": f"{ppl_b:,.1f} vs {ppl_k:,.1f} "
        f"({'equal' if agree else 'NOT EQUAL'}; relative difference {abs(ppl_k / ppl_b - 1):.1e})",
    }
    return row, facts


# -- platform overhead --------------------------------------------------------


def bench_overhead(docs: int | None, steps: int, eval_chunks: int) -> dict[str, str]:
    """Run preprocess, mask_eval and train_mlm as the pipeline does; time train_mlm whole."""
    from kfnlp.stages.mask_eval import MaskEvalConfig, mask_eval
    from kfnlp.stages.preprocess import PreprocessConfig, preprocess
    from kfnlp.stages.train_mlm import TrainMlmConfig, train_mlm

    log(f"overhead: train_mlm stage, splade-tiny, {steps} steps")
    with tempfile.TemporaryDirectory() as workdir:
        dataset, eval_set, model = (os.path.join(workdir, name) for name in ("dataset", "eval_set", "model"))
        preprocess(dataset, PreprocessConfig(source=CORPUS, max_documents=docs), tokenizer=MODEL)
        mask_eval(dataset, eval_set, MaskEvalConfig(max_chunks=eval_chunks))
        config = TrainMlmConfig(batch_size=BATCH_SIZE, max_steps=steps, eval_strategy="no", logging_steps=steps)
        manifest, stage_seconds = timed(train_mlm, dataset, eval_set, model, config, MODEL)
    train_seconds = manifest["training"]["train_runtime_s"]
    outside = stage_seconds - train_seconds
    return {
        "train_mlm stage (splade-tiny, one run)": f"{stage_seconds:.2f} s, of which trainer.train() "
        f"{train_seconds:.2f} s; outside it {outside:.2f} s = {100 * outside / train_seconds:.2f}% (goal ≤ 2%)",
    }


# -- report -------------------------------------------------------------------


def fmt(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.4g}"


def markdown(rows: list[Row], facts: dict[str, str]) -> str:
    lines = [
        "| part | model | metric | baseline | baseline (median) | kfnlp (median) | kfnlp / baseline | per-round range |",
        "|---|---|---|---|---:|---:|---:|---|",
    ]
    for row in rows:
        ratios = row.round_ratios
        lines.append(
            f"| {row.part} | {row.model} | {row.metric} | {row.baseline_name} | "
            f"{fmt(statistics.median(row.baseline))} | {fmt(statistics.median(row.kfnlp))} | "
            f"{row.ratio:.2f}× | {min(ratios):.2f}–{max(ratios):.2f}× |"
        )
    lines += ["", "| fact | value |", "|---|---|"]
    lines += [f"| {key} | {value} |" for key, value in facts.items()]
    return "\n".join(lines)


def setup_facts(args, n_docs: int) -> dict[str, str]:
    import torch

    facts = {
        "reviews": str(n_docs),
        "splade-tiny": f"{MODELS['splade-tiny']}; {args.steps} steps × batch {BATCH_SIZE}, chunk {CHUNK_SIZE}",
    }
    if args.bert_steps:
        facts["bert-base-shaped"] = f"{MODELS['bert-base-shaped']}; {args.bert_steps} steps × batch {args.bert_batch}"
    facts.update(
        {
            "rounds": f"{args.rounds}, order rotating; medians of the rounds",
            "precision": f"recipe {'fp16' if torch.cuda.is_available() else 'fp32'}, kfnlp {PRECISION.replace('no', 'fp32')}"
            + (", torch.compile" if COMPILE else ""),
            "machine": f"{os.cpu_count()} CPUs, torch {torch.__version__} ({torch.get_num_threads()} threads), "
            f"Python {platform.python_version()}",
            "GPU": device_fact(),
            "load average at start": f"{os.getloadavg()[0]:.2f}",
        }
    )
    return facts


def main(argv: list[str] | None = None) -> int:
    import transformers

    from kfnlp.data.corpus import load_corpus
    from kfnlp.modeling import load_tokenizer
    from kfnlp.training import resolve_precision

    global PRECISION, COMPILE
    args = parse_args(argv)
    PRECISION, COMPILE = resolve_precision(args.precision), args.compile
    transformers.logging.set_verbosity_error()
    docs = load_corpus(CORPUS).documents[: args.docs]
    tokenizer = load_tokenizer(MODEL)
    facts = setup_facts(args, len(docs))
    runs = [("splade-tiny", args.steps, BATCH_SIZE, args.eval_chunks)]
    if args.bert_steps:
        runs.append(("bert-base-shaped", args.bert_steps, args.bert_batch, args.bert_eval_chunks))
    with contextlib.redirect_stdout(sys.stderr):  # the Trainer prints its logs; stdout is for the table
        recipe, ours, rows, prep_facts = bench_preprocess(tokenizer, docs, args.rounds)
        facts.update(prep_facts)
        for model_name, steps, batch_size, eval_chunks in runs:
            rows += bench_training(model_name, tokenizer, recipe, ours, steps, batch_size, args.rounds)
            eval_row, eval_facts = bench_evaluation(model_name, tokenizer, ours, eval_chunks, args.rounds)
            rows.append(eval_row)
            facts.update(eval_facts)
        facts.update(bench_overhead(args.docs, args.steps, args.eval_chunks))
    facts["load average at end"] = f"{os.getloadavg()[0]:.2f}"
    print(markdown(rows, facts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
