"""``kfnlp serve`` against a plain ``transformers.pipeline`` loop serving the same requests.

Both sides are HTTP servers on loopback, in a process of their own, answering the same KServe v1 requests
(``{"instances": [one text]}``) with the same model:

- **pipeline loop**: Python's ``http.server`` answering one request at a time with ``pipeline(text)``, the
  model loaded once (what a plain script around ``transformers.pipeline`` does);
- **kfnlp serve**: KServe's model server, concurrent requests gathered into one forward pass
  (``--max-batch-size``, ``--max-latency-ms``).

Clients: ``C`` threads sending back to back (concurrency 1, 8, 32 by default), each request timed from send to
answer. Reported per side and concurrency: requests/s, p50 and p99 latency, the median of ``--repeats`` runs.
The model is named in the output (default: the embedded ``builtin:splade-tiny`` fill-mask model).

    .venv/bin/python benchmarks/bench_serve.py [--requests 200] [--repeats 3] [--concurrency 1 8 32]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.model_server import ServedModel, request  # noqa: E402

MODEL = "builtin:splade-tiny"
SENTENCES = [
    "This movie was a great [MASK].",
    "The acting in this [MASK] was wooden and dull.",
    "I would [MASK] this film to anyone who likes horror.",
    "The plot makes no [MASK] at all, but the music is lovely.",
    "After an hour I [MASK] asleep on the sofa.",
    "Her best [MASK] since the early nineties.",
]


def baseline_main(model: str, port_file: str) -> None:
    """The pipeline loop: one process, the model loaded once, one request at a time (a lock around the pipeline)."""
    from transformers import pipeline

    from kfnlp.modeling import load_masked_lm, load_tokenizer

    tokenizer = load_tokenizer(model)
    unmasker = pipeline("fill-mask", model=load_masked_lm(model), tokenizer=tokenizer)
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):  # noqa: N802 - http.server's name
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            answers = []
            with lock:
                for text in body["instances"]:
                    preds = unmasker(text.replace("[MASK]", tokenizer.mask_token), top_k=5)
                    answers.append(
                        {
                            "text": text,
                            "predictions": [
                                {"token": p["token_str"], "score": round(float(p["score"]), 6)} for p in preds
                            ],
                        }
                    )
            data = json.dumps({"predictions": answers}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    class Server(ThreadingHTTPServer):
        request_queue_size = 256  # http.server's default backlog of 5 resets connections at concurrency 32

    server = Server(("127.0.0.1", 0), Handler)
    Path(port_file).write_text(str(server.server_address[1]))
    server.serve_forever()


class Baseline:
    """The pipeline loop in a subprocess (this script with ``--baseline``)."""

    def __init__(self, model: str, tmp: Path):
        self.model, self.port_file = model, tmp / "baseline.port"

    def __enter__(self):
        import subprocess

        self.process = subprocess.Popen(
            [sys.executable, __file__, "--baseline", "--model", self.model, "--port-file", str(self.port_file)],
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )
        deadline = time.monotonic() + 120
        while not self.port_file.exists() or not self.port_file.read_text():
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError("the baseline server did not start")
            time.sleep(0.1)
        self.url = f"http://127.0.0.1:{self.port_file.read_text()}/v1/models/model:predict"
        return self

    def __exit__(self, *exc):
        self.process.terminate()
        self.process.wait()


def load(url: str, concurrency: int, requests: int) -> dict:
    """``requests`` one-text requests from ``concurrency`` threads; requests/s and latency percentiles (ms)."""
    bodies = [json.dumps({"instances": [SENTENCES[i % len(SENTENCES)]]}).encode() for i in range(requests)]
    headers = {"Content-Type": "application/json"}

    def one(body: bytes) -> float:
        start = time.perf_counter()
        status, _ = request(url, body, headers)
        if status != 200:
            raise RuntimeError(f"{url}: HTTP {status}")
        return time.perf_counter() - start

    for body in bodies[: min(4, requests)]:  # warm up (first forward pass, connection setup)
        one(body)
    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        latencies = sorted(pool.map(one, bodies))
    wall = time.perf_counter() - start
    return {
        "requests_per_s": requests / wall,
        "p50_ms": 1000 * latencies[len(latencies) // 2],
        "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
    }


def median_of(runs: list[dict]) -> dict:
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=MODEL)
    parser.add_argument("--requests", type=int, default=200, help="requests per run (default: 200)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per side and concurrency; the median is shown")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--max-batch-size", default="32")
    parser.add_argument("--max-latency-ms", default="5")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--baseline", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port-file", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.baseline:
        return baseline_main(args.model, args.port_file)
    import tempfile

    import torch

    print(f"model: {args.model} (fill-mask), {args.requests} requests per run, median of {args.repeats} runs")
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}"
    )
    served_args = ["--max-batch-size", args.max_batch_size, "--max-latency-ms", args.max_latency_ms]
    served_args += ["--max-instances", "64"]
    results: dict[str, dict[int, dict]] = {"pipeline loop": {}, "kfnlp serve": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for side in results:
            if side == "pipeline loop":
                server = Baseline(args.model, Path(tmp))
            else:
                server = ServedModel(args.model, *served_args, log=Path(tmp) / "serve.log")
            with server as running:
                url = running.url if side == "pipeline loop" else f"{running.url}/v1/models/{running.name}:predict"
                for concurrency in args.concurrency:
                    runs = [load(url, concurrency, args.requests) for _ in range(args.repeats)]
                    results[side][concurrency] = median_of(runs)
    print("\n| side | concurrency | requests/s | p50 ms | p99 ms |\n|---|---|---|---|---|")
    for concurrency in args.concurrency:
        for side, by_concurrency in results.items():
            r = by_concurrency[concurrency]
            print(f"| {side} | {concurrency} | {r['requests_per_s']:.1f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"model": args.model, "results": results}, indent=2))


if __name__ == "__main__":
    main()
