#!/usr/bin/env bash
# One command for a GPU check: on a machine with one CUDA GPU, run the masked-LM and NER benchmarks
# against the seed recipes with BERT-base-shaped random-init models (no Hub needed) and kfnlp's GPU
# settings on (bf16 or fp16, torch.compile, fused AdamW, SDPA attention), and print samples/s, peak GPU
# memory and the kfnlp / recipe ratios. Designed to finish in under 10 minutes on an H100-class GPU.
#
# Usage: benchmarks/gpu.sh [RESULTS_DIR]   (default: gpu-results; PYTHON=... picks the interpreter)
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
results=${1:-gpu-results}
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x "$repo/.venv/bin/python" ]]; then PYTHON="$repo/.venv/bin/python"; else PYTHON=python3; fi
fi

# refuse in one line before any work: without a GPU these figures mean nothing
"$PYTHON" -W ignore - <<'EOF' || exit 1
import sys

import torch

if not torch.cuda.is_available():
    build = "a CPU-only build" if torch.version.cuda is None else f"CUDA {torch.version.cuda}, but no device or driver"
    sys.exit(f"benchmarks/gpu.sh: no GPU: torch {torch.__version__} ({build}); run it on a machine with a CUDA GPU")
EOF

export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
mkdir -p "$results"
"$PYTHON" -c 'import torch; p = torch.cuda.get_device_properties(0); print(f"GPU: {p.name}, {p.total_memory / 2**30:.0f} GiB, torch {torch.__version__}")'

echo "== masked LM (train-mlm vs the course recipe, fp16 as the course sets it) =="
"$PYTHON" "$repo/benchmarks/bench_mlm.py" --docs 5000 --steps 100 --eval-chunks 1000 \
    --bert-steps 100 --bert-batch 32 --bert-eval-chunks 512 --rounds 3 --precision auto --compile \
    >"$results/mlm.md" 2>"$results/mlm.log"
cat "$results/mlm.md"

echo
echo "== NER (train-ner vs the course recipe, 3 epochs, batch 8, bert-base-shaped) =="
"$PYTHON" "$repo/benchmarks/bench_ner.py" --model bert-base-shaped --epochs 3 --repeats 1 --precision auto \
    --compile --json "$results/ner.json" >"$results/ner.md" 2>"$results/ner.log"
cat "$results/ner.md"

echo
echo "gpu.sh: done in ${SECONDS} s; tables, logs and JSON in $results/"
