"""Benchmark S3 artifact transfers: kfnlp.storage.s3 vs plain boto3, against a loopback S3 server.

A model-sized artifact (by default 3 files of random bytes, 100 MiB in all, plus its
manifest) is uploaded and downloaded with

  boto3   ``client.upload_file`` / ``client.download_file`` per file (default TransferConfig,
          botocore's default CRC32 upload checksums), nothing else
  kfnlp   ``kfnlp.storage.s3.upload.upload_artifact`` (re-hashes the local files against the manifest,
          SHA-256 part checksums, a listing check, the version manifest and the pointer)
          and ``kfnlp.storage.s3.download.download_artifact`` (pointer + version manifest, SHA-256 of every
          file, staging directory renamed into place); once with its default SHA-256 upload
          checksums and once with CRC32 (``KFNLP_S3_CHECKSUM=CRC32``), boto3's own default

against the same ministack server (from the server venv that ``make test`` /
``make bench-s3`` install), in alternating rounds; each side's fastest round is
reported. The server shares the machine's cores with the client, so absolute MB/s are
the server's more than the client's; the ratio is the point (goal ≥ 0.9×).

Usage: python benchmarks/bench_s3.py [--mib 100] [--files 3] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

from common import log

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # tests.s3_server starts the server

MIB = 1 << 20


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mib", type=int, default=100, help="total size of the artifact's files")
    parser.add_argument("--files", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    return parser.parse_args(argv)


def make_artifact(path: Path, total_mib: int, files: int) -> list[Path]:
    """Files of random bytes, the first half the total and the rest shared out (like weights + extras)."""
    from kfnlp.storage import write_artifact

    sizes = (
        [total_mib * MIB // 2] + [total_mib * MIB // 2 // (files - 1)] * (files - 1) if files > 1 else [total_mib * MIB]
    )
    with write_artifact(path, kind="model") as out:
        for i, size in enumerate(sizes):
            with open(out.path / f"part-{i}.bin", "wb") as handle:
                for _ in range(size // MIB):
                    handle.write(os.urandom(MIB))
                handle.write(os.urandom(size % MIB))
    return sorted(path.glob("part-*.bin"))


def boto3_round(client, bucket: str, files: list[Path], dest: Path) -> tuple[float, float]:
    started = time.perf_counter()
    for file in files:
        client.upload_file(str(file), bucket, f"plain/{file.name}")
    upload = time.perf_counter() - started
    dest.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    for file in files:
        client.download_file(bucket, f"plain/{file.name}", str(dest / file.name))
    download = time.perf_counter() - started
    return upload, download


def kfnlp_round(local: Path, uri: str, dest: Path, checksum: str) -> tuple[float, float]:
    from kfnlp.storage.s3.download import download_artifact
    from kfnlp.storage.s3.settings import S3Settings
    from kfnlp.storage.s3.upload import upload_artifact

    settings = S3Settings(checksum=checksum)
    started = time.perf_counter()
    upload_artifact(local, uri, settings=settings)
    upload = time.perf_counter() - started
    started = time.perf_counter()
    download_artifact(uri, dest, settings=settings)
    download = time.perf_counter() - started
    return upload, download


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from tests.s3_server import S3Server

    with tempfile.TemporaryDirectory(prefix="kfnlp-bench-s3-") as tmp:
        tmp = Path(tmp)
        server = S3Server(tmp / "server").start()
        try:
            os.environ.update(server.env())
            bucket = server.create_bucket()
            import boto3

            plain = boto3.client("s3", endpoint_url=server.uri, region_name="us-east-1")
            local = tmp / "artifact"
            files = make_artifact(local, args.mib, args.files)
            total = sum(f.stat().st_size for f in files) / MIB
            log(f"{len(files)} files, {total:.0f} MiB; server {server.uri} started in {server.start_seconds:.2f} s")
            sides = ["boto3", "kfnlp", "kfnlp-crc32"]
            best = {side: [float("inf")] * 2 for side in sides}
            for round_ in range(args.rounds):
                for side in sides if round_ % 2 == 0 else sides[::-1]:
                    dest = tmp / f"dest-{side}"
                    shutil.rmtree(dest, ignore_errors=True)
                    if side == "boto3":
                        up, down = boto3_round(plain, bucket, files, dest)
                    else:
                        checksum = "CRC32" if side == "kfnlp-crc32" else "SHA256"
                        up, down = kfnlp_round(local, f"s3://{bucket}/{side}/model", dest, checksum)
                    for f in files:  # both sides got the same bytes back
                        assert (dest / f.name).stat().st_size == f.stat().st_size
                    best[side] = [min(best[side][0], up), min(best[side][1], down)]
                    log(f"round {round_ + 1} {side}: upload {total / up:.1f} MB/s, download {total / down:.1f} MB/s")
        finally:
            server.stop()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"\nS3 transfers, {len(files)} files / {total:.0f} MiB, best of {args.rounds} rounds")
    print(f"({platform.python_version()}, {os.cpu_count()} cores, load {load:.2f}, ministack on loopback)\n")
    print("| transfer | boto3 MB/s | kfnlp (SHA-256) MB/s | ratio | kfnlp (CRC32) MB/s | ratio | goal |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for i, name in enumerate(("upload", "download")):
        b, k, c = (total / best[side][i] for side in ("boto3", "kfnlp", "kfnlp-crc32"))
        print(f"| {name} | {b:.1f} | {k:.1f} | {k / b:.2f}× | {c:.1f} | {c / b:.2f}× | ≥ 0.9× |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
