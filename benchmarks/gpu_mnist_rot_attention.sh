#!/usr/bin/env bash
# On a CUDA machine: short rot-MNIST trainings of the Table 1 attention baselines (p4-sa, alpha-p4cnn) next to
# e4net and p4cnn, all with the paper's recipe at reduced epochs (milestones rescaled), then their test errors
# beside Table 1 (from e4net.paper). p4-sa keeps ~35 GB of activations at batch 128 (its attention is quadratic in the window).
# Usage: benchmarks/gpu_mnist_rot_attention.sh DATA_ROOT [EPOCHS=5] [OUT=runs/gpu-attention]
set -euo pipefail
DATA=${1:?usage: $0 DATA_ROOT [EPOCHS] [OUT]}
EPOCHS=${2:-5}
OUT=${3:-runs/gpu-attention}
for MODEL in e4net p4cnn alpha-p4cnn p4-sa; do
  python -m e4net train --model "$MODEL" --dataset mnist-rot --data-root "$DATA" --epochs "$EPOCHS" \
    --device cuda --no-progress --eval-every "$EPOCHS" --out "$OUT/$MODEL-e$EPOCHS"
done
python - "$OUT" "$EPOCHS" <<'PY'
import json, sys
from e4net.paper import rows
errors = {r.model: r.test_error for r in rows("table1")}
for m in ("e4net", "p4cnn", "alpha-p4cnn", "p4-sa"):
    p = errors[m]
    s = json.load(open(f"{sys.argv[1]}/{m}-e{sys.argv[2]}/summary.json"))
    print(f"{m:11s} {s['epochs']} epochs: test error {s['test_error']:.2f}% (paper, 200 epochs: {p}%), "
          f"{s['params']:,} params, {s['macs'] / 1e6:.1f}M MACs, {s['seconds']:.0f}s")
PY
