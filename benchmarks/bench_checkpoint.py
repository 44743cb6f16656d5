"""Benchmark training checkpoints on S3: kfnlp's commit/restore vs plain boto3, and the share of
training time checkpointing costs at the default interval.

Part 1, throughput. A real Trainer checkpoint (MiniLM token classifier after one optimizer step:
weights, AdamW state, scheduler, RNG, trainer state; about 270 MB) is stored and restored against
a loopback S3 server (ministack, from the venv ``make test`` installs), in alternating rounds:

  boto3   ``client.upload_file`` / ``client.download_file`` of each file (default TransferConfig)
  kfnlp   ``CheckpointStore.commit`` (manifest with SHA-256 of every file, versioned upload,
          pointer last, old checkpoints pruned) / ``CheckpointStore.fetch`` (verified download)

Each side's fastest round is reported; goal: kfnlp ≥ 0.9× boto3.

Part 2, overhead. train-mlm on the embedded model and data runs ``--steps`` steps twice, once
without checkpoints and once saving to the S3 server every ``--save-every`` steps; the stage
reports the seconds its commits took. The overhead at the default interval (train-mlm's
``save_steps`` = 500) is the measured cost of one save (Trainer's own save + kfnlp's commit)
divided by the time of 500 steps; goal ≤ 5%.

Usage: python benchmarks/bench_checkpoint.py [--rounds 3] [--steps 60] [--save-every 20]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from common import log

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # tests.s3_server starts the server

DEFAULT_SAVE_STEPS = 500


def make_checkpoint(work: Path) -> Path:
    """One real Trainer checkpoint directory of the MiniLM token classifier."""
    import datasets
    from transformers import Trainer, TrainingArguments

    from kfnlp.modeling import load_token_classifier

    model = load_token_classifier("builtin:minilm", ["O", "B-X", "I-X"])
    data = datasets.Dataset.from_dict({"input_ids": [[101, 2000, 102]] * 8, "labels": [[-100, 1, -100]] * 8})
    args = TrainingArguments(
        output_dir=str(work / "trainer"),
        max_steps=1,
        per_device_train_batch_size=8,
        save_strategy="steps",
        save_steps=1,
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
    )
    Trainer(model=model, args=args, train_dataset=data).train()
    return work / "trainer" / "checkpoint-1"


def throughput(server, checkpoint: Path, rounds: int, work: Path) -> dict:
    from kfnlp.training.checkpoints import CheckpointStore

    client = server.client()
    bucket = server.create_bucket()
    files = sorted(p for p in checkpoint.iterdir() if p.is_file())
    size = sum(p.stat().st_size for p in files)
    best = {"boto3 upload": float("inf"), "boto3 download": float("inf")}
    best.update({"kfnlp commit": float("inf"), "kfnlp restore": float("inf")})
    for r in range(rounds):
        order = ("boto3", "kfnlp") if r % 2 == 0 else ("kfnlp", "boto3")
        for side in order:
            if side == "boto3":
                started = time.perf_counter()
                for f in files:
                    client.upload_file(str(f), bucket, f"plain/{r}/{f.name}")
                best["boto3 upload"] = min(best["boto3 upload"], time.perf_counter() - started)
                dest = work / f"plain-{r}"
                dest.mkdir()
                started = time.perf_counter()
                for f in files:
                    client.download_file(bucket, f"plain/{r}/{f.name}", str(dest / f.name))
                best["boto3 download"] = min(best["boto3 download"], time.perf_counter() - started)
                shutil.rmtree(dest)
            else:
                saved = work / f"saved-{r}"
                shutil.copytree(checkpoint, saved)  # commit moves the Trainer's files
                store = CheckpointStore(f"s3://{bucket}/ckpt/{r}", keep=2)
                started = time.perf_counter()
                store.commit(saved, 1, "bench")
                best["kfnlp commit"] = min(best["kfnlp commit"], time.perf_counter() - started)
                scratch = work / f"restore-{r}"
                scratch.mkdir()
                started = time.perf_counter()
                store.fetch(1, scratch)
                best["kfnlp restore"] = min(best["kfnlp restore"], time.perf_counter() - started)
                shutil.rmtree(scratch)
    return {"bytes": size, "files": len(files), **best}


def overhead(server, steps: int, save_every: int, work: Path) -> dict:
    from kfnlp.stages.mask_eval import MaskEvalConfig, mask_eval
    from kfnlp.stages.preprocess import PreprocessConfig, preprocess
    from kfnlp.stages.train_mlm import TrainMlmConfig, train_mlm

    dataset, eval_set = work / "dataset", work / "eval_set"
    preprocess(str(dataset), PreprocessConfig(max_documents=2000), tokenizer="builtin:splade-tiny")
    mask_eval(str(dataset), str(eval_set), MaskEvalConfig(max_chunks=64))
    bucket = server.create_bucket()
    runs = {}
    for label, save_steps in (("no checkpoints", steps * 10), ("checkpoints", save_every)):
        config = TrainMlmConfig(
            max_steps=steps,
            save_steps=save_steps,
            eval_strategy="no",
            logging_steps=steps,
            checkpoint_dir=f"s3://{bucket}/ckpt",
        )
        started = time.perf_counter()
        summary = train_mlm(str(dataset), str(eval_set), str(work / label), config, "builtin:splade-tiny")["training"]
        runs[label] = {
            "train_runtime_s": summary["train_runtime_s"],
            "wall_s": time.perf_counter() - started,
            "saves": summary["checkpoints_saved"],
            "commit_s": summary["checkpoint_seconds"],
        }
    plain, saving = runs["no checkpoints"], runs["checkpoints"]
    step_s = plain["train_runtime_s"] / steps
    per_save = max(saving["train_runtime_s"] - plain["train_runtime_s"], saving["commit_s"]) / saving["saves"]
    return {
        **runs,
        "step_s": step_s,
        "per_save_s": per_save,
        "share_at_default": per_save / (DEFAULT_SAVE_STEPS * step_s),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--save-every", type=int, default=20)
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from tests.s3_server import S3Server

    with tempfile.TemporaryDirectory(prefix="kfnlp-bench-ckpt-") as tmp, S3Server(Path(tmp) / "server") as server:
        work = Path(tmp)
        os.environ.update(server.env())
        os.environ["KFNLP_HOME"] = str(work / "home")
        log("building a real checkpoint (MiniLM token classifier, one step)")
        t = throughput(server, make_checkpoint(work), args.rounds, work)
        log(f"training {args.steps} steps twice (without / with checkpoints every {args.save_every})")
        o = overhead(server, args.steps, args.save_every, work)
    mb = t["bytes"] / 1e6
    print(f"## Checkpoints on S3 (loopback ministack, {load()})\n")
    print(f"Checkpoint: {t['files']} files, {mb:.0f} MB; fastest of {args.rounds} alternating rounds.\n")
    print("| operation | boto3 | kfnlp | kfnlp / boto3 throughput |")
    print("|---|---:|---:|---:|")
    for what, plain, ours in (
        ("store", "boto3 upload", "kfnlp commit"),
        ("restore", "boto3 download", "kfnlp restore"),
    ):
        print(
            f"| {what} | {t[plain]:.2f} s ({mb / t[plain]:.0f} MB/s) | {t[ours]:.2f} s ({mb / t[ours]:.0f} MB/s) "
            f"| {t[plain] / t[ours]:.2f}x |"
        )
    print(f"\nOverhead (train-mlm, splade-tiny, batch 64, {args.steps} steps):\n")
    print("| run | train runtime | saves | commit seconds |")
    print("|---|---:|---:|---:|")
    for label in ("no checkpoints", "checkpoints"):
        r = o[label]
        print(f"| {label} | {r['train_runtime_s']:.1f} s | {r['saves']} | {r['commit_s']:.2f} s |")
    print(
        f"\nOne save costs {o['per_save_s']:.2f} s; a step {o['step_s'] * 1000:.0f} ms. At the default interval "
        f"({DEFAULT_SAVE_STEPS} steps) checkpointing is {100 * o['share_at_default']:.2f}% of training time."
    )
    return 0


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} / {five:.1f} on {os.cpu_count()} cores"


if __name__ == "__main__":
    sys.exit(main())
