#!/usr/bin/env bash
# GPU check for issue 16 (run on a machine with one CUDA GPU; about 8 minutes in all).
#   1. embed img/s for a ViT-B/32-sized tower at fp16 (the CUDA default) with 1 vs 2 vs all-core decode workers
#      (224-px JPEGs on disk; pinned memory, non-blocking copies), against the model-only forward rate;
#   2. bf16/fp16 vs fp32 speed and worst cosine for the built-in model and the ViT-B/32-sized tower;
#   3. training steps/s, peak memory and zero-shot accuracy, cliplab vs open_clip_train, same weights and data
#      (needs a Python with open_clip_train: OC_PYTHON, default /work/venv-oc/bin/python; skipped without it).
# Usage: PYTHON=python OC_PYTHON=/path/to/venv-oc/bin/python bash benchmarks/gpu_check.sh [OUT_DIR]
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
OC=${OC_PYTHON:-/work/venv-oc/bin/python}
OUT=${1:-${OUT:-gpu-check}}
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
echo "cores: $(nproc)  load: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT/gpu.txt"

echo "== 1. embed (ViT-B/32-sized, fp16, workers) =="
timeout 200 "$PY" benchmarks/embed.py --setting jpg224 --n 16384 --batch-size 256 --device cuda 2>&1 | tee "$OUT/embed.txt"

echo "== 2. precision =="
timeout 120 "$PY" benchmarks/precision.py --device cuda --n 4096 --batch-size 256 2>&1 | tee "$OUT/precision.txt"

echo "== 3. training: cliplab vs open_clip_train =="
if "$OC" -c "import open_clip_train" 2>/dev/null; then
  timeout 240 "$OC" benchmarks/open_clip_train.py --device cuda --precision bf16 --steps 100 --batch-size 256 \
    --workers "$(nproc)" --repeats 1 2>&1 | tee "$OUT/open_clip_train.txt"
else
  echo "skipped: $OC cannot import open_clip_train" | tee "$OUT/open_clip_train.txt"
fi
