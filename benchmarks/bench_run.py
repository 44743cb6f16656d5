"""Benchmark ``kfnlp run mlm-adapt --local`` end to end against the plain course recipe doing the same work.

Each side is one fresh process, timed from start to exit, so both pay their imports, model loads
and process starts:

  kfnlp   ``kfnlp run mlm-adapt --local --output DIR --set train_mlm.max_steps=N`` on the embedded
          defaults (the demo's data: 4,000 IMDB reviews, builtin:splade-tiny), every stage in its
          own process under kfp.local, with the base and adapted evaluations, register and promote
          (into a scratch registry, created before the first timed run as on a user's second run)
  recipe  this script with ``--recipe DIR``: the Hugging Face course's masked-LM chapter (chapter 7,
          section 3) in one process on the same reviews and model: tokenize, group_texts (its linear
          form), a seeded 10% held-out split of the chunks, DataCollatorForLanguageModeling, Trainer
          with the demo's settings (lr 5e-4, weight decay 0.01, batch 32, N steps, a checkpoint at
          the last step), perplexity before and after on 500 held-out chunks masked once (the course's
          insert_random_mask), fill-mask on the demo's prompts, the model saved
  recipe + allocator
          the same recipe with the one process-level setting every kfnlp stage process makes
          (kfnlp.launch.allocator: glibc keeps freed memory for the next allocation); it shows how
          much of kfnlp's lead is that setting, which a recipe user could make too

Rounds alternate the sides, the one going first rotating (CPU speed on shared machines drifts);
the table gives each side's median, the ratio of the medians and the range of per-round ratios,
then kfnlp's median time per stage (from its summary.json).

Usage: python benchmarks/bench_run.py [--rounds 3] [--steps 100] [--no-allocator-side]
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

from common import log

MODEL = "builtin:splade-tiny"
CORPUS = "builtin:imdb"
DOCUMENTS = 4000  # the demo's preprocess.max_documents
TEST_SIZE = 0.1
CHUNK_SIZE = 128
EVAL_CHUNKS = 500  # the demo's mask_eval.max_chunks
BATCH_SIZE = 32  # the demo's train_mlm.batch_size
EVAL_BATCH_SIZE = 64  # the demo's evaluate.batch_size
LEARNING_RATE = 5e-4  # the demo's
MLM_PROBABILITY = 0.15
PROMPTS = ["This is a great [MASK].", "The acting in this movie was [MASK]."]
SEED = 42
KFNLP = Path(sys.executable).with_name("kfnlp")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="rounds, each running both sides (median reported)")
    parser.add_argument("--steps", type=int, default=100, help="optimizer steps on both sides")
    parser.add_argument(
        "--before",
        metavar="SRC",
        help="also time kfnlp from another source tree (its src/ directory, e.g. `git archive` of an earlier commit)",
    )
    parser.add_argument("--json", metavar="PATH", help="also write every round's times and results here")
    parser.add_argument(
        "--no-allocator-side", action="store_true", help="skip the recipe run with kfnlp's allocator setting"
    )
    parser.add_argument("--recipe", metavar="DIR", help=argparse.SUPPRESS)  # internal: run the recipe side here
    parser.add_argument("--keep-freed-memory", action="store_true", help=argparse.SUPPRESS)  # internal
    return parser.parse_args(argv)


# -- the recipe side (its own process) ----------------------------------------


def recipe(output: Path, steps: int) -> dict:
    """The course recipe on the demo's data; returns its perplexities and part times."""
    started = time.perf_counter()
    import datasets
    import torch
    import transformers
    from transformers import (
        AutoModelForMaskedLM,
        AutoTokenizer,
        DataCollatorForLanguageModeling,
        Trainer,
        TrainingArguments,
        default_data_collator,
        pipeline,
    )

    from kfnlp.data.corpus import load_corpus
    from kfnlp.modeling import model_dir

    transformers.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    parts = {"imports": time.perf_counter() - started}
    mark = time.perf_counter()

    path = model_dir(MODEL)  # the embedded model's directory: what the recipe's from_pretrained takes
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForMaskedLM.from_pretrained(path)
    raw = datasets.Dataset.from_dict({"text": load_corpus(CORPUS).documents})
    raw = raw.shuffle(seed=SEED).select(range(DOCUMENTS))

    def tokenize_function(examples):
        result = tokenizer(examples["text"])
        if tokenizer.is_fast:
            result["word_ids"] = [result.word_ids(i) for i in range(len(result["input_ids"]))]
        return result

    def group_texts(examples):
        concatenated = {k: [t for row in examples[k] for t in row] for k in examples}
        total_length = len(concatenated["input_ids"]) // CHUNK_SIZE * CHUNK_SIZE
        result = {
            k: [t[i : i + CHUNK_SIZE] for i in range(0, total_length, CHUNK_SIZE)] for k, t in concatenated.items()
        }
        result["labels"] = result["input_ids"].copy()
        return result

    tokenized = raw.map(tokenize_function, batched=True, remove_columns=["text"])
    chunks = tokenized.map(group_texts, batched=True).remove_columns(["word_ids"])
    split = chunks.train_test_split(test_size=TEST_SIZE, seed=SEED)
    collator = DataCollatorForLanguageModeling(tokenizer=tokenizer, mlm_probability=MLM_PROBABILITY)

    def insert_random_mask(batch):
        features = [dict(zip(batch, t, strict=True)) for t in zip(*batch.values(), strict=True)]
        masked = collator(features)
        return {"masked_" + k: v.numpy() for k, v in masked.items()}

    torch.manual_seed(SEED)
    test = split["test"].select(range(min(EVAL_CHUNKS, len(split["test"]))))
    eval_set = test.map(insert_random_mask, batched=True, remove_columns=test.column_names)
    eval_set = eval_set.rename_columns(
        {"masked_input_ids": "input_ids", "masked_attention_mask": "attention_mask", "masked_labels": "labels"}
    ).with_format("torch")
    parts["data"] = time.perf_counter() - mark

    def perplexity() -> float:
        loader = torch.utils.data.DataLoader(eval_set, batch_size=EVAL_BATCH_SIZE, collate_fn=default_data_collator)
        model.eval()
        losses = []
        for batch in loader:
            with torch.no_grad():
                loss = model(**batch).loss
            losses.append(loss.repeat(len(batch["input_ids"])))
        return math.exp(torch.mean(torch.cat(losses)))

    mark = time.perf_counter()
    before = perplexity()
    parts["evaluate base"] = time.perf_counter() - mark

    mark = time.perf_counter()
    args = TrainingArguments(
        output_dir=str(output / "checkpoints"),
        learning_rate=LEARNING_RATE,
        weight_decay=0.01,
        per_device_train_batch_size=BATCH_SIZE,
        max_steps=steps,
        eval_strategy="no",
        logging_steps=25,
        save_steps=100,
        seed=SEED,
        report_to="none",
        disable_tqdm=True,
    )
    trainer = Trainer(
        model=model, args=args, train_dataset=split["train"], data_collator=collator, processing_class=tokenizer
    )
    trainer.train()
    trainer.save_model(str(output / "model"))
    parts["train"] = time.perf_counter() - mark

    mark = time.perf_counter()
    after = perplexity()
    unmasker = pipeline("fill-mask", model=model, tokenizer=tokenizer)
    examples = [unmasker(prompt.replace("[MASK]", tokenizer.mask_token), top_k=5) for prompt in PROMPTS]
    parts["evaluate adapted"] = time.perf_counter() - mark
    return {
        "perplexity_base": before,
        "perplexity_adapted": after,
        "fill_mask": [[p["token_str"] for p in found] for found in examples],
        "parts_s": {k: round(v, 2) for k, v in parts.items()},
    }


# -- the driver ---------------------------------------------------------------


def _run(command: list[str], env: dict[str, str], log_path: Path) -> float:
    """Wall seconds of one side's process; its output goes to ``log_path``."""
    started = time.perf_counter()
    with open(log_path, "w", encoding="utf-8") as out:
        code = subprocess.run(command, env=env, stdout=out, stderr=subprocess.STDOUT, check=False).returncode
    seconds = time.perf_counter() - started
    if code != 0:
        raise SystemExit(f"bench_run: {command[0]} exited with {code}; see {log_path}")
    return seconds


def task_seconds(pipeline_log: Path) -> dict[str, float]:
    """Each task's wall time under kfp.local, from its process start to its exit (kfp.local's log lines)."""
    started, seconds = {}, {}
    for line in pipeline_log.read_text(encoding="utf-8").splitlines():
        found = re.match(r"(\d\d:\d\d:\d\d\.\d+) - INFO - (Executing task|Task) \S*'([\w-]+)'", line)
        if found:
            at = datetime.datetime.strptime(found.group(1), "%H:%M:%S.%f")
            if found.group(2) == "Executing task":
                started[found.group(3)] = at
            elif found.group(3) in started and "finished" in line:
                seconds[found.group(3)] = (at - started[found.group(3)]).total_seconds() % 86400
    return seconds


def kfnlp_side(work: Path, name: str, round_: int, steps: int, env: dict[str, str]) -> tuple[float, dict]:
    output = work / f"{name}-{round_}"
    command = [str(KFNLP), "run", "mlm-adapt", "--local", "--output", str(output)]
    command += ["--set", f"train_mlm.max_steps={steps}"]
    seconds = _run(command, env, work / f"{name}-{round_}.log")
    summary = json.loads((output / "summary.json").read_text(encoding="utf-8"))
    stages = {stage["task"]: stage["wall_time_s"] for stage in summary["stages"]}
    tasks = task_seconds(output / "pipeline.log")
    return seconds, {"stages": stages, "tasks": tasks, "metrics": summary["metrics"]}


def recipe_side(
    work: Path, name: str, round_: int, steps: int, env: dict[str, str], allocator: bool = False
) -> tuple[float, dict]:
    output = work / f"{name}-{round_}"
    output.mkdir()
    command = [sys.executable, str(Path(__file__).resolve()), "--recipe", str(output), "--steps", str(steps)]
    if allocator:
        command.append("--keep-freed-memory")
    seconds = _run(command, env, work / f"{name}-{round_}.log")
    return seconds, json.loads((output / "result.json").read_text(encoding="utf-8"))


def is_recipe(side: str) -> bool:
    return side.startswith("recipe")


def markdown(times: dict[str, list[float]], results: dict[str, list[dict]], facts: dict[str, str]) -> str:
    """The sides' wall times, each kfnlp side against each recipe side, then per kfnlp stage the task's
    and the stage body's median seconds and per recipe side its parts."""
    lines = ["| side | model | wall s (median) | per round |", "|---|---|---:|---|"]
    for side, seconds in times.items():
        per_round = ", ".join(f"{x:.1f}" for x in seconds)
        lines.append(f"| {side} | {MODEL} | {statistics.median(seconds):.1f} | {per_round} |")
    recipe_sides = [side for side in times if is_recipe(side)]
    lines += ["", "| kfnlp side | against | recipe / kfnlp (medians) | per-round range |", "|---|---|---:|---|"]
    for side in (s for s in times if not is_recipe(s)):
        for against in recipe_sides:
            ratios = [r / k for r, k in zip(times[against], times[side], strict=True)]
            ratio = statistics.median(times[against]) / statistics.median(times[side])
            lines.append(f"| {side} | {against} | {ratio:.2f}× | {min(ratios):.2f}–{max(ratios):.2f}× |")
    kfnlp_sides = [side for side in times if not is_recipe(side)]
    lines += [
        "",
        "Per kfnlp stage, median s: the task under kfp.local (process start to exit) / the stage body (summary.json)",
        "",
        "| stage | " + " | ".join(kfnlp_sides) + " |",
        "|---|" + "---:|" * len(kfnlp_sides),
    ]
    runs = {side: results[side] for side in kfnlp_sides}

    def cell(side: str, task: str | None) -> str:
        if task is None:  # the whole run outside the stage processes
            outside = [t - sum(run["tasks"].values()) for t, run in zip(times[side], runs[side], strict=True)]
            return f"{statistics.median(outside):.1f}"
        task_s = statistics.median(run["tasks"].get(task, math.nan) for run in runs[side])
        body_s = statistics.median(run["stages"].get(task, math.nan) for run in runs[side])
        return f"{task_s:.1f} / {body_s:.1f}"

    for task in runs[kfnlp_sides[0]][0]["stages"]:
        lines.append(f"| {task} | " + " | ".join(cell(side, task) for side in kfnlp_sides) + " |")
    lines.append("| outside the stages (kfnlp run itself) | " + " | ".join(cell(s, None) for s in kfnlp_sides) + " |")
    lines += ["", "| recipe part, wall s (median) | " + " | ".join(recipe_sides) + " |"]
    lines.append("|---|" + "---:|" * len(recipe_sides))
    for part in results["recipe"][0]["parts_s"]:
        cells = [f"{statistics.median(run['parts_s'][part] for run in results[side]):.2f}" for side in recipe_sides]
        lines.append(f"| {part} | " + " | ".join(cells) + " |")
    lines += ["", "| fact | value |", "|---|---|"]
    lines += [f"| {key} | {value} |" for key, value in facts.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    if args.recipe:
        if args.keep_freed_memory:
            from kfnlp.launch.allocator import keep_freed_memory

            if not keep_freed_memory():
                raise SystemExit("bench_run: this platform has no glibc allocator setting to apply")
        result = recipe(Path(args.recipe), args.steps)
        (Path(args.recipe) / "result.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
        return 0
    facts = {
        "model": f"{MODEL} (2 layers, hidden 128, 4.4M parameters)",
        "work": f"{DOCUMENTS:,} reviews of {CORPUS}, {args.steps} steps × batch {BATCH_SIZE}, "
        f"perplexity before and after on {EVAL_CHUNKS} chunks masked once",
        "rounds": f"{args.rounds}, order rotating; medians of the rounds",
        "machine": f"{os.cpu_count()} CPUs, torch {version('torch')}, Python {platform.python_version()}",
        "load average at start": f"{os.getloadavg()[0]:.2f}",
    }
    with tempfile.TemporaryDirectory(prefix="bench-run-") as tmp:
        work = Path(tmp)
        env["KFNLP_HOME"] = str(work / "home")  # a scratch registry, not the user's
        log("creating the scratch registry (untimed)")
        code = [sys.executable, "-c", "from kfnlp.registry import Registry; Registry()"]
        subprocess.run(code, env=env, check=True)
        sides = {"kfnlp": lambda r: kfnlp_side(work, "kfnlp", r, args.steps, env)}
        if args.before:
            before_env = {**env, "PYTHONPATH": str(Path(args.before).resolve())}
            sides["kfnlp before"] = lambda r: kfnlp_side(work, "before", r, args.steps, before_env)
            facts["kfnlp before"] = f"the same command with PYTHONPATH={args.before}"
        sides["recipe"] = lambda r: recipe_side(work, "recipe", r, args.steps, env)
        if not args.no_allocator_side:
            sides["recipe + allocator"] = lambda r: recipe_side(
                work, "recipe-allocator", r, args.steps, env, allocator=True
            )
        times: dict[str, list[float]] = {name: [] for name in sides}
        results: dict[str, list[dict]] = {name: [] for name in sides}
        names = list(sides)
        for round_ in range(args.rounds):
            shift = round_ % len(names)
            for name in names[shift:] + names[:shift]:
                seconds, result = sides[name](round_)
                log(f"round {round_ + 1} {name}: {seconds:.1f} s (load average {os.getloadavg()[0]:.2f})")
                times[name].append(seconds)
                results[name].append(result)
                if args.json:
                    Path(args.json).write_text(json.dumps({"times": times, "results": results}, indent=2), "utf-8")
    kfnlp_metrics = results["kfnlp"][-1]["metrics"]
    recipe_result = results["recipe"][-1]
    facts["perplexity, kfnlp"] = (
        f"{kfnlp_metrics['base']['perplexity']:,.1f} -> {kfnlp_metrics['adapted']['perplexity']:,.1f}"
    )
    facts["perplexity, recipe"] = (
        f"{recipe_result['perplexity_base']:,.1f} -> {recipe_result['perplexity_adapted']:,.1f}"
    )
    facts["load average at end"] = f"{os.getloadavg()[0]:.2f}"
    print(markdown(times, results, facts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
