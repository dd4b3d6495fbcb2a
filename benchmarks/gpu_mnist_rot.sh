#!/usr/bin/env bash
# On a CUDA machine: train e4net and p4cnn on the MNIST-rot replica with the paper's recipe at reduced epochs
# (milestones rescaled), then print their test errors beside the paper's (Table 1, from e4net.paper).
# Usage: benchmarks/gpu_mnist_rot.sh DATA_ROOT [EPOCHS=20] [OUT=runs/gpu]
set -euo pipefail
DATA=${1:?usage: $0 DATA_ROOT [EPOCHS] [OUT]}
EPOCHS=${2:-20}
OUT=${3:-runs/gpu}
for MODEL in e4net p4cnn; do
  python -m e4net train --model "$MODEL" --dataset mnist-rot --data-root "$DATA" --epochs "$EPOCHS" \
    --device cuda --no-progress --eval-every "$EPOCHS" --out "$OUT/$MODEL-e$EPOCHS"
done
python - "$OUT" "$EPOCHS" <<'PY'
import json, sys
from e4net.paper import rows
errors = {r.model: r.test_error for r in rows("table1")}
for m in ("e4net", "p4cnn"):
    p = errors[m]
    s = json.load(open(f"{sys.argv[1]}/{m}-e{sys.argv[2]}/summary.json"))
    print(f"{m:6s} {s['epochs']} epochs: test error {s['test_error']:.2f}% (paper, 200 epochs: {p}%), "
          f"{s['params']:,} params, {s['macs'] / 1e6:.1f}M MACs, {s['seconds']:.0f}s")
PY
