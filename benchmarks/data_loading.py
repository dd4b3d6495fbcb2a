"""How long does an epoch of MNIST-rot (12,000 training images, batch 128) wait for data?

Method: the training loop times every batch fetch (``BatchLoader`` accumulates the seconds spent in index_select +
``prepare``: the time the step waits for its data, as the loader is synchronous) and divides by the epoch's wall
time (``data_wait_frac`` in metrics.jsonl). This script reports, in the same run:

1. the loader alone: one epoch of batches with no model (the absolute cost of the data path);
2. a training epoch of ``--model`` (default e4net; ``--limit-train-batches`` to shorten it) and its data-wait
   fraction, measured by the training loop itself.

Usage: PYTHONPATH=. python benchmarks/data_loading.py --data-root /work/shared/data [--model e4net] [--batches N]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import torch

from e4net.data import BatchLoader, load_dataset
from e4net.train import TrainConfig, train


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-root", required=True)
    ap.add_argument("--model", default="e4net")
    ap.add_argument("--batches", type=int, default=None, help="train only this many batches (default: a full epoch)")
    ap.add_argument("--no-verify", dest="verify", action="store_false")
    args = ap.parse_args()
    t0 = time.perf_counter()
    data = load_dataset("mnist-rot", args.data_root, verify=args.verify)
    print(f"load (cached after the first time): {time.perf_counter() - t0:.2f}s, {len(data.train)} training images")
    loader = BatchLoader(data.train, 128, shuffle=True, seed=0, prepare=data.prepare)
    t0 = time.perf_counter()
    n = sum(len(y) for _, y in loader.batches(0))
    t_loader = time.perf_counter() - t0
    print(f"loader alone: one epoch ({n} images, {len(loader)} batches) in {t_loader * 1e3:.1f} ms "
          f"({n / t_loader:,.0f} images/s)")  # fmt: skip
    with tempfile.TemporaryDirectory() as out:
        train(TrainConfig(model=args.model, dataset="mnist-rot", data_root=args.data_root, epochs=1, out=out,
                          limit_train_batches=args.batches, limit_test_batches=1, verify=args.verify,
                          progress=False, device="cpu"))  # fmt: skip
        line = json.loads(open(f"{out}/metrics.jsonl").read().splitlines()[-1])
    print(f"training epoch of {args.model} ({line['step']} batches): {line['epoch_seconds']:.1f}s, "
          f"{line['images_per_s']:.0f} images/s; waiting for data {line['data_wait_seconds'] * 1e3:.1f} ms "
          f"= {100 * line['data_wait_frac']:.2f}% of the epoch (threads: {torch.get_num_threads()})")  # fmt: skip


if __name__ == "__main__":
    main()
