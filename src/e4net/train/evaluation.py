"""Evaluation of a model on a split: mean cross-entropy and error (percent), sharded over the ranks of a
distributed run. The trainer calls it after every ``--eval-every`` epochs, ``e4net eval`` on a loaded checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from ..data import Split
from ..data.loader import BatchLoader
from . import distributed as D


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    split: Split,
    *,
    prepare: Callable[[torch.Tensor], torch.Tensor],
    batch_size: int,
    device: torch.device,
    ctx: D.DistContext | None = None,
    limit: int | None = None,
    amp: bool = False,
    channels_last: bool = False,
) -> dict[str, float]:
    """Mean cross-entropy ``loss``, ``error`` (percent) and the number ``n`` of images evaluated on ``split``.

    ``prepare`` turns a batch of stored images into model inputs: the normalisation the model was trained with
    (:meth:`e4net.data.DataSet.prepare`, or :meth:`TrainedModel.prepare_for <e4net.train.TrainedModel.prepare_for>`
    for a loaded model). ``limit`` evaluates the first ``limit`` batches only. In a distributed run every rank takes its chunk of each batch and
    the sums are all-reduced, so every rank returns the same numbers. The model's train/eval mode is restored.
    """
    ctx = ctx or D.DistContext(device=device)
    was = model.training
    model.eval()
    loader = BatchLoader(
        split, batch_size, shuffle=False, prepare=prepare, rank=ctx.rank, world_size=ctx.world_size, limit=limit
    )
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    wrong = torch.zeros((), dtype=torch.float64, device=device)
    seen = 0
    for x, y in loader.batches(0):
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            out = model(x)
        out = out.float()
        loss_sum += F.cross_entropy(out, y, reduction="sum").double()
        wrong += (out.argmax(1) != y).sum().double()
        seen += len(y)
    model.train(was)
    loss_total, wrong_total, n = D.all_reduce_sum([loss_sum.item(), wrong.item(), float(seen)], ctx)
    n = max(n, 1.0)
    return {"loss": loss_total / n, "error": 100.0 * wrong_total / n, "n": int(n)}
