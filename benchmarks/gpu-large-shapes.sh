#!/usr/bin/env bash
# Training on a GPU, scoring with onnxruntime on the machine's CPU cores, at the MovieLens-20M
# and -25M shapes: all three models, top-N table only. Then training to convergence (early
# stopping, no budget unless CAP is set) at the 1M and 20M shapes, each model's test RMSE next to
# the planted floor. For a machine with CUDA torch, onnx, onnxscript, onnxruntime, pandas and
# pyarrow installed (no virtual environment is made):
#   OUT=bench/gpu BUDGET=30 bash benchmarks/gpu-large-shapes.sh
# Each run's JSON and log land in $OUT; a smoke run on a small shape goes first.
set -euo pipefail
OUT=${OUT:-bench/gpu}
BUDGET=${BUDGET:-30}
SHAPES=${SHAPES-"ml-20m ml-25m"}
CONVERGE=${CONVERGE-"ml-1m ml-20m"}
CAP=${CAP:-}
WORK=${WORK:-/tmp/recommender-bench}
PYTHON=${PYTHON:-python3}
mkdir -p "$OUT"
export PYTHONPATH="$PWD" PYTHONUNBUFFERED=1
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  nproc
  "$PYTHON" -c "import torch, onnxruntime, onnx; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'onnxruntime', onnxruntime.__version__, 'onnx', onnx.__version__)"
} 2>&1 | tee "$OUT/machine.txt"

run() {  # name, then bench options
  local name=$1; shift
  local started=$SECONDS
  "$PYTHON" -m benchmarks.bench --device "${DEVICE:-cuda}" --tables recommendations --work-dir "$WORK/$name" \
      --out "$OUT/bench-$name.json" "$@" 2>&1 | tee "$OUT/bench-$name.log"
  echo "== $name: $((SECONDS - started)) s" | tee -a "$OUT/times.txt"
}

run smoke --synthetic 3000,800,60000 --time-budget 5 --compare-pairs 20000
for shape in $SHAPES; do
  run "$shape" --synthetic "$shape" --time-budget "$BUDGET" --compare-pairs 200000 \
      --scoring-args --chunk-pairs 4194304
done
for shape in $CONVERGE; do
  run "converge-$shape" --synthetic "$shape" --training-only --force-train ${CAP:+--time-budget "$CAP"}
done
