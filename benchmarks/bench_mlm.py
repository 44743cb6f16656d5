"""Benchmark kfnlp's masked-LM path against the plain Hugging Face course recipe.

Both sides run in this process on the same reviews and the same chunks, in
alternating rounds (baseline first, then kfnlp first, ...), because CPU speed on
shared VMs drifts between runs; each side's best round is reported. Parts:

  preprocess  recipe: Dataset.map(tokenize_function) + Dataset.map(group_texts)
              kfnlp:  chunking.tokenize + chunking.chunk (checked to give the same chunks)
  training    recipe: stock *ForMaskedLM + DataCollatorForLanguageModeling + Trainer
              kfnlp:  MaskingCollator + enable_sparse_mlm_loss + Trainer
  evaluation  perplexity on a once-masked eval set, stock vs sparse forward
  overhead    the train_mlm stage's time outside trainer.train(), as a share of training

Usage: python benchmarks/bench_mlm.py [--docs N] [--steps N] [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import platform
import sys
import tempfile
from dataclasses import dataclass

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")

import numpy as np  # noqa: E402
from common import log, timed  # noqa: E402

MODEL = "builtin:splade-tiny"
CORPUS = "builtin:imdb"
CHUNK_SIZE = 128  # the recipe's chunk_size
GROUP_SIZE = 1000  # the recipe's Dataset.map batch size
BATCH_SIZE = 32
EVAL_BATCH_SIZE = 64  # the recipe's
MLM_PROBABILITY = 0.15  # the recipe's
SEED = 42


@dataclass
class Row:
    part: str
    metric: str
    baseline: float | None
    kfnlp: float | None
    goal: str = ""

    @property
    def ratio(self) -> float | None:
        if self.baseline and self.kfnlp is not None:
            return self.kfnlp / self.baseline
        return None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=None, help="reviews to preprocess (default: all 25,000)")
    parser.add_argument("--steps", type=int, default=60, help="optimizer steps per training run")
    parser.add_argument("--eval-chunks", type=int, default=1000, help="chunks in the once-masked eval set")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds per comparison")
    parser.add_argument("--quick", action="store_true", help="small sizes, one round: a smoke test of about a minute")
    args = parser.parse_args(argv)
    if args.quick:
        args.docs, args.steps, args.eval_chunks, args.rounds = args.docs or 1000, min(args.steps, 4), 64, 1
    return args


def alternate(rounds: int, baseline, candidate) -> tuple[tuple, tuple]:
    """Run both callables ``rounds`` times, swapping which goes first every round so
    drifting machine speed hits both alike. Each callable returns (result, seconds);
    the answer is that pair from each one's fastest round, baseline first.
    """
    best = {"baseline": None, "kfnlp": None}
    runs = {"baseline": baseline, "kfnlp": candidate}
    for round_ in range(rounds):
        order = ["baseline", "kfnlp"] if round_ % 2 == 0 else ["kfnlp", "baseline"]
        for name in order:
            result, seconds = runs[name]()
            log(f"  round {round_ + 1} {name}: {seconds:.2f} s")
            if best[name] is None or seconds < best[name][1]:
                best[name] = (result, seconds)
    return best["baseline"], best["kfnlp"]


# -- preprocess ---------------------------------------------------------------


def recipe_preprocess(tokenizer, docs: list[str]):
    """The course recipe: tokenize_function and group_texts through Dataset.map."""
    import datasets

    def tokenize_function(examples):
        result = tokenizer(examples["text"])
        if tokenizer.is_fast:
            result["word_ids"] = [result.word_ids(i) for i in range(len(result["input_ids"]))]
        return result

    def group_texts(examples):
        concatenated_examples = {k: sum(examples[k], []) for k in examples.keys()}  # noqa: SIM118 (verbatim)
        total_length = len(concatenated_examples[list(examples.keys())[0]])
        total_length = (total_length // CHUNK_SIZE) * CHUNK_SIZE
        result = {
            k: [t[i : i + CHUNK_SIZE] for i in range(0, total_length, CHUNK_SIZE)]
            for k, t in concatenated_examples.items()
        }
        result["labels"] = result["input_ids"].copy()
        return result

    raw = datasets.Dataset.from_dict({"text": docs})
    tokenized = raw.map(tokenize_function, batched=True, remove_columns=["text"])
    return tokenized.map(group_texts, batched=True)


def kfnlp_preprocess(tokenizer, docs: list[str]):
    from kfnlp.data import chunking

    stream = chunking.tokenize(tokenizer, docs)
    return stream, chunking.chunk(stream, CHUNK_SIZE, GROUP_SIZE)


def same_chunks(recipe, chunks) -> bool:
    """Same token ids row by row, and special tokens (word id None / -1) in the same places."""
    ids = recipe.data.column("input_ids").combine_chunks().flatten().to_numpy()
    special = recipe.data.column("word_ids").combine_chunks().flatten().is_null().to_numpy(zero_copy_only=False)
    return (
        len(recipe) == len(chunks)
        and np.array_equal(ids.reshape(-1, CHUNK_SIZE), chunks.input_ids)
        and np.array_equal(special.reshape(-1, CHUNK_SIZE), chunks.word_ids < 0)
    )


def bench_preprocess(tokenizer, docs: list[str], rounds: int):
    import datasets

    datasets.disable_progress_bars()
    log(f"preprocess: {len(docs)} reviews")
    (recipe, t_recipe), ((stream, chunks), t_kfnlp) = alternate(
        rounds, lambda: timed(recipe_preprocess, tokenizer, docs), lambda: timed(kfnlp_preprocess, tokenizer, docs)
    )
    tokens = int(stream.doc_lengths.sum())
    identical = same_chunks(recipe, chunks)
    facts = {
        "preprocess": f"{tokens:,} tokens -> {len(chunks):,} chunks; recipe {t_recipe:.2f} s, kfnlp {t_kfnlp:.2f} s",
        "identical chunks": "yes" if identical else "NO",
    }
    return chunks, [Row("preprocess", "tokens/s", tokens / t_recipe, tokens / t_kfnlp, "≥ 3×")], facts


# -- training -----------------------------------------------------------------


def recipe_arguments(steps: int) -> dict:
    """The recipe's optimisation settings, shared by both sides so only the method differs."""
    return {
        "learning_rate": 2e-5,
        "weight_decay": 0.01,
        "per_device_train_batch_size": BATCH_SIZE,
        "max_steps": steps,
        "eval_strategy": "no",
        "save_strategy": "no",
        "logging_steps": steps,
    }


def recipe_trainer(tokenizer, train, steps: int, workdir: str):
    """The recipe's Trainer: stock model, transformers' collator, word_ids dropped by the Trainer."""
    from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments

    from kfnlp.modeling import load_masked_lm

    args = TrainingArguments(
        output_dir=workdir,
        **recipe_arguments(steps),
        report_to="none",
        disable_tqdm=True,
        seed=SEED,
    )
    collator = DataCollatorForLanguageModeling(tokenizer=tokenizer, mlm_probability=MLM_PROBABILITY)
    return Trainer(
        model=load_masked_lm(MODEL), args=args, train_dataset=train, data_collator=collator, processing_class=tokenizer
    )


def kfnlp_trainer(tokenizer, train, steps: int, workdir: str):
    """kfnlp's train_mlm set-up: NumPy masking collator and the sparse MLM head."""
    from transformers import Trainer

    from kfnlp.masking import MaskingCollator
    from kfnlp.modeling import enable_sparse_mlm_loss, load_masked_lm
    from kfnlp.stages.mask_eval import mask_spec
    from kfnlp.training import training_arguments

    model = load_masked_lm(MODEL)
    assert enable_sparse_mlm_loss(model)
    args = training_arguments(
        workdir,
        precision="no",
        **recipe_arguments(steps),
        seed=SEED,
        remove_unused_columns=False,
    )
    collator = MaskingCollator(mask_spec(tokenizer, "token", MLM_PROBABILITY), seed=SEED)
    data = train.select_columns(["input_ids", "attention_mask", "word_ids"]).with_format("numpy")
    return Trainer(model=model, args=args, train_dataset=data, data_collator=collator, processing_class=tokenizer)


def train_run(make_trainer, tokenizer, train, steps: int):
    """Build a fresh trainer and time trainer.train() alone; returns (samples, seconds)."""
    from transformers import set_seed

    set_seed(SEED)
    with tempfile.TemporaryDirectory() as workdir:
        trainer = make_trainer(tokenizer, train, steps, workdir)
        _, seconds = timed(trainer.train)
        return trainer.state.global_step * BATCH_SIZE, seconds


def bench_training(tokenizer, chunks, steps: int, rounds: int):
    from kfnlp.data import chunking

    n = min(len(chunks), steps * BATCH_SIZE)
    train = chunking.to_dataset(chunking.Chunks(chunks.input_ids[:n], chunks.word_ids[:n]))
    log(f"training: {steps} steps of {BATCH_SIZE} chunks")
    (samples_b, t_b), (samples_k, t_k) = alternate(
        rounds,
        lambda: train_run(recipe_trainer, tokenizer, train, steps),
        lambda: train_run(kfnlp_trainer, tokenizer, train, steps),
    )
    return [Row("training", "samples/s", samples_b / t_b, samples_k / t_k, "≥ 3×")]


# -- evaluation ---------------------------------------------------------------


def masked_eval_set(tokenizer, chunks, n: int):
    """The last ``n`` chunks (not trained on), masked once with a fixed seed."""
    import datasets

    from kfnlp.masking import mask
    from kfnlp.stages.mask_eval import mask_spec

    spec = mask_spec(tokenizer, "token", MLM_PROBABILITY)
    masked, labels = mask(chunks.input_ids[-n:], chunks.word_ids[-n:], spec, np.random.default_rng(SEED))
    columns = {"input_ids": masked, "attention_mask": np.ones_like(masked), "labels": labels}
    return datasets.Dataset.from_dict(columns).with_format("torch")


def eval_run(model, data):
    """(perplexity, seconds) with kfnlp's token-weighted evaluation loop."""
    from kfnlp.metrics import perplexity
    from kfnlp.stages.evaluate import masked_lm_loss_sum

    (total, count), seconds = timed(masked_lm_loss_sum, model, data, EVAL_BATCH_SIZE)
    return perplexity(total, count), seconds


def bench_evaluation(tokenizer, chunks, n: int, rounds: int):
    from kfnlp.modeling import enable_sparse_mlm_loss, load_masked_lm

    n = min(n, len(chunks))
    data = masked_eval_set(tokenizer, chunks, n)
    stock, sparse = load_masked_lm(MODEL), load_masked_lm(MODEL)
    assert enable_sparse_mlm_loss(sparse)
    log(f"evaluation: {n} masked chunks")
    (ppl_b, t_b), (ppl_k, t_k) = alternate(rounds, lambda: eval_run(stock, data), lambda: eval_run(sparse, data))
    rows = [
        Row("evaluation", "samples/s", n / t_b, n / t_k, "≥ 3×"),
        Row("evaluation", "perplexity", ppl_b, ppl_k, "equal"),
    ]
    agree = math.isclose(ppl_b, ppl_k, rel_tol=1e-5)
    return rows, {
        "perplexity agreement": f"{'yes' if agree else 'NO'} (relative difference {abs(ppl_k / ppl_b - 1):.1e})"
    }


# -- platform overhead --------------------------------------------------------


def bench_overhead(docs: int | None, steps: int, eval_chunks: int):
    """Run preprocess, mask_eval and train_mlm as the pipeline does; time train_mlm whole."""
    from kfnlp.stages.mask_eval import MaskEvalConfig, mask_eval
    from kfnlp.stages.preprocess import PreprocessConfig, preprocess
    from kfnlp.stages.train_mlm import TrainMlmConfig, train_mlm

    log(f"overhead: train_mlm stage, {steps} steps")
    with tempfile.TemporaryDirectory() as workdir:
        dataset, eval_set, model = (os.path.join(workdir, name) for name in ("dataset", "eval_set", "model"))
        preprocess(dataset, PreprocessConfig(source=CORPUS, max_documents=docs), tokenizer=MODEL)
        mask_eval(dataset, eval_set, MaskEvalConfig(max_chunks=eval_chunks))
        config = TrainMlmConfig(batch_size=BATCH_SIZE, max_steps=steps, eval_strategy="no", logging_steps=steps)
        manifest, stage_seconds = timed(train_mlm, dataset, eval_set, model, config, MODEL)
    train_seconds = manifest["training"]["train_runtime_s"]
    outside = stage_seconds - train_seconds
    share = outside / train_seconds
    facts = {
        "train_mlm stage": f"{stage_seconds:.2f} s, of which trainer.train() {train_seconds:.2f} s",
        "overhead share": f"{100 * share:.2f}% of training time ({outside:.2f} s; goal ≤ 2%)",
    }
    return facts


# -- report -------------------------------------------------------------------


def fmt(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.4g}"


def markdown(rows: list[Row], facts: dict[str, str]) -> str:
    lines = [
        "| part | metric | recipe | kfnlp | kfnlp / recipe | goal |",
        "|---|---|---:|---:|---:|---|",
    ]
    for row in rows:
        ratio = f"{row.ratio:.2f}×" if row.ratio is not None else "-"
        lines.append(f"| {row.part} | {row.metric} | {fmt(row.baseline)} | {fmt(row.kfnlp)} | {ratio} | {row.goal} |")
    lines += ["", "| fact | value |", "|---|---|"]
    lines += [f"| {key} | {value} |" for key, value in facts.items()]
    return "\n".join(lines)


def setup_facts(args, n_docs: int) -> dict[str, str]:
    import torch

    return {
        "reviews": str(n_docs),
        "training": f"{args.steps} steps × batch {BATCH_SIZE}, chunk {CHUNK_SIZE}",
        "rounds": f"{args.rounds} alternating, best of each side",
        "machine": f"{os.cpu_count()} CPUs, torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"Python {platform.python_version()}",
        "load average at start": f"{os.getloadavg()[0]:.2f}",
    }


def main(argv: list[str] | None = None) -> int:
    import transformers

    from kfnlp.data.corpus import load_corpus
    from kfnlp.modeling import load_tokenizer

    args = parse_args(argv)
    transformers.logging.set_verbosity_error()
    docs = load_corpus(CORPUS).documents[: args.docs]
    tokenizer = load_tokenizer(MODEL)
    facts = setup_facts(args, len(docs))
    with contextlib.redirect_stdout(sys.stderr):  # the Trainer prints its logs; stdout is for the table
        chunks, rows, prep_facts = bench_preprocess(tokenizer, docs, args.rounds)
        rows += bench_training(tokenizer, chunks, args.steps, args.rounds)
        eval_rows, eval_facts = bench_evaluation(tokenizer, chunks, args.eval_chunks, args.rounds)
        facts.update(prep_facts, **eval_facts, **bench_overhead(args.docs, args.steps, args.eval_chunks))
    facts["load average at end"] = f"{os.getloadavg()[0]:.2f}"
    print(markdown(rows + eval_rows, facts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
