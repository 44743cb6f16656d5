"""Benchmark the model registry: register, promote and load ``@champion``, embedded vs server.

Each mode gets a fresh store: the embedded sqlite file under a temporary kfnlp home, and
a real ``mlflow server`` on loopback (sqlite store, artifacts proxied through the server;
from the server venv that ``make test`` / ``make bench-registry`` install). The model is a
real token classifier (``builtin:splade-tiny`` with a 3-label head, 18 MB) unless
``--model-dir`` names another model directory. Parts, all timed in this process except
the last:

  server start      ``mlflow server`` launched until ``/health`` answers
  open store        Registry() and its first call (embedded: creates the sqlite schema)
  register (first)  the first version: creates the experiment and the registered model
  register          each later version (median): a run, metrics, tags, the upload, a version
  promote (first)   the first champion
  promote           the gate against the champion and the alias moves (median)
  load @champion    resolve + download to the kfnlp cache + transformers.pipeline() from it
  load (cached)     the same once the version is in the cache
  CLI promote       ``kfnlp registry promote`` as a process: imports included

Usage: python benchmarks/bench_registry.py [--versions N] [--model-dir DIR] [--modes embedded,server]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import log, timed

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # tests.mlflow_server starts the server

MODEL = "builtin:splade-tiny"
LABELS = ["O", "B-X", "I-X"]
ORDER = [
    "server start",
    "open store",
    "register (first)",
    "register",
    "promote (first)",
    "promote",
    "load @champion",
    "load (cached)",
    "CLI promote",
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--versions", type=int, default=4, help="versions registered and promoted per mode")
    parser.add_argument("--model-dir", type=Path, help="a saved token-classification model (default: tiny)")
    parser.add_argument("--modes", default="embedded,server")
    return parser.parse_args(argv)


def tiny_model(out: Path) -> Path:
    from kfnlp.modeling import load_token_classifier, load_tokenizer

    load_token_classifier(MODEL, LABELS).save_pretrained(out)
    load_tokenizer(MODEL).save_pretrained(out)
    return out


def register(registry, name: str, model: Path, f1: float):
    return registry.register(
        name,
        model,
        metrics={"f1": f1, "precision": f1, "recall": f1},
        params={"learning_rate": 5e-5},
        tags={
            "kfnlp.task": "token-classification",
            "kfnlp.eval_set_fingerprint": "bench",
            "kfnlp.primary_metric": "f1",
        },
        files={},
    )


def run_mode(mode: str, model: Path, versions: int, work: Path) -> dict[str, float]:
    from transformers import pipeline

    from kfnlp.registry import Registry
    from kfnlp.registry.promotion import PromoteConfig, promote
    from kfnlp.registry.store import default_tracking_uri

    home = work / mode / "home"
    home.mkdir(parents=True)
    os.environ["KFNLP_HOME"] = str(home)
    figures: dict[str, float] = {}
    server = None
    if mode == "server":
        from tests.mlflow_server import MlflowServer

        server = MlflowServer(work / mode / "server")
        log("starting mlflow server")
        _, figures["server start"] = timed(server.start)
        uri = server.uri
    else:
        uri = default_tracking_uri()
    try:
        started = time.perf_counter()
        registry = Registry(uri)
        registry.models()
        figures["open store"] = time.perf_counter() - started
        name = f"bench-{mode}"
        gate = PromoteConfig()
        registers, promotes = [], []
        for number in range(1, versions + 1):
            log(f"{mode}: register and promote v{number}")
            _, seconds = timed(register, registry, name, model, 0.5 + number / 100)
            registers.append(seconds)
            decision, seconds = timed(promote, registry, name, number, gate)
            assert decision.outcome == "promoted", decision.line()
            promotes.append(seconds)
        figures["register (first)"] = registers[0]
        figures["register"] = statistics.median(registers[1:]) if versions > 1 else registers[0]
        figures["promote (first)"] = promotes[0]
        figures["promote"] = statistics.median(promotes[1:]) if versions > 1 else promotes[0]

        def load():
            local = Registry(uri).download(f"models:/{name}@champion")
            return pipeline("token-classification", model=str(local), device="cpu")

        log(f"{mode}: load @champion")
        _, figures["load @champion"] = timed(load)
        _, figures["load (cached)"] = timed(load)

        log(f"{mode}: kfnlp registry promote (process)")
        register(registry, name, model, 0.99)
        started = time.perf_counter()
        result = subprocess.run(
            [sys.executable, "-m", "kfnlp", "registry", "--tracking-uri", uri, "promote", name, str(versions + 1)],
            capture_output=True,
            text=True,
            env={**os.environ},
            timeout=600,
        )
        figures["CLI promote"] = time.perf_counter() - started
        if result.returncode != 0:
            raise SystemExit(f"kfnlp registry promote failed: {result.stderr.strip()}")
    finally:
        if server is not None:
            server.stop()
    return figures


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import mlflow

    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    with tempfile.TemporaryDirectory(prefix="bench-registry-") as tmp:
        work = Path(tmp)
        model = args.model_dir or tiny_model(work / "model")
        size = sum(p.stat().st_size for p in Path(model).rglob("*") if p.is_file())
        results = {mode: run_mode(mode, Path(model), args.versions, work) for mode in modes}
    parts = [part for part in ORDER if any(part in figures for figures in results.values())]
    print(
        f"Registry benchmark: mlflow {mlflow.__version__} client, model {size / 2**20:.1f} MiB, "
        f"{args.versions + 1} versions per mode; {platform.python_version()}, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.2f}\n"
    )
    print("| step | " + " | ".join(modes) + " |")
    print("|---|" + "---:|" * len(modes))
    for part in parts:
        cells = [f"{results[m][part]:.2f} s" if part in results[m] else "-" for m in modes]
        print(f"| {part} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
