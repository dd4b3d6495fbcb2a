"""A fast in-memory batch loader: the whole split is a tensor (on the training device), a batch is one
``index_select``. No worker processes, no per-image Python, so data loading costs a few percent of a step at most.

The order of epoch ``e`` is a permutation drawn from a generator seeded with ``(seed, e)`` alone, so it can be
recomputed on resume (skip the batches already done) and is identical on every rank of a distributed run, where
rank ``r`` of ``W`` takes the ``r``-th of ``W`` near-equal chunks of each global batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch


class BatchLoader:
    """Batches ``(x, y)`` of ``split`` (an object with tensors ``x``, ``y``), prepared by ``prepare(x)``.

    Args:
        batch_size: the *global* batch size (split across ``world_size`` ranks).
        shuffle: a new seeded permutation every epoch; else the stored order.
        limit: at most this many batches per epoch (smoke tests).

    ``data_seconds`` accumulates the seconds spent producing batches (the data wait); set it to 0 to time one
    epoch.
    """

    def __init__(
        self,
        split,
        batch_size: int,
        *,
        shuffle: bool,
        seed: int = 0,
        prepare: Callable[[torch.Tensor], torch.Tensor] | None = None,
        rank: int = 0,
        world_size: int = 1,
        limit: int | None = None,
    ):
        if batch_size < 1:
            raise ValueError(f"batch size must be at least 1, got {batch_size}")
        self.x, self.y = split.x, split.y
        self.n = len(self.y)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.prepare = prepare or (lambda x: x.float())
        self.rank, self.world_size = rank, world_size
        self.limit = limit
        self.data_seconds = 0.0

    def __len__(self) -> int:
        full = -(-self.n // self.batch_size)
        # A last batch smaller than the number of ranks would leave a rank without data: drop it.
        if self.world_size > 1 and self.n % self.batch_size and self.n % self.batch_size < self.world_size:
            full -= 1
        return min(full, self.limit) if self.limit else full

    def order(self, epoch: int) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(self.n)
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.n, generator=g)

    def batches(self, epoch: int, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield this rank's batches ``start, start+1, ...`` of epoch ``epoch``."""
        import time

        order = self.order(epoch).to(self.x.device)
        for i in range(start, len(self)):
            t0 = time.perf_counter()
            idx = order[i * self.batch_size : (i + 1) * self.batch_size]
            if self.world_size > 1:
                idx = torch.tensor_split(idx, self.world_size)[self.rank]
            xb = self.prepare(self.x.index_select(0, idx))
            yb = self.y.index_select(0, idx)
            self.data_seconds += time.perf_counter() - t0
            yield xb, yb
