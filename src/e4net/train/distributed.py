"""Multi-GPU / multi-node training through ``torchrun`` and DistributedDataParallel.

``torchrun --nproc_per_node=G -m e4net train ...`` (or ``--nnodes``/``--rdzv-endpoint`` for several nodes) sets
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``; :func:`setup` then joins the process group (NCCL on CUDA, gloo on CPU).
``--batch-size`` stays the *global* batch: every rank takes its chunk of each global batch (see
:class:`~e4net.data.loader.BatchLoader`), gradients are averaged by DDP, so the recipe does not depend on the
number of processes. Rank 0 alone writes files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    initialized_here: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        from ..errors import E4NetError

        raise E4NetError("--device cuda: no CUDA GPU is available (use --device cpu or auto)")
    if name not in ("cpu", "cuda"):
        from ..errors import E4NetError

        raise E4NetError(f"--device must be auto, cpu or cuda, got {name!r}")
    return torch.device(name)


def setup(device: str = "auto") -> DistContext:
    """Join the process group if launched by torchrun (``WORLD_SIZE > 1``), else a single-process context."""
    dev = resolve_device(device)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext(device=dev)
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if dev.type == "cuda":
        torch.cuda.set_device(local)
        dev = torch.device("cuda", local)
    here = False
    if not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", rank=rank, world_size=world)
        here = True
    return DistContext(rank, world, local, dev, here)


def all_reduce_sum(values: list[float], ctx: DistContext) -> list[float]:
    """Sum a few numbers over the ranks (float64)."""
    if not ctx.distributed:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=ctx.device)
    dist.all_reduce(t)
    return t.tolist()


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.barrier()


def teardown(ctx: DistContext, synchronize: bool = False) -> None:
    """Leave the process group joined by :func:`setup`; with ``synchronize``, after all ranks have arrived."""
    if ctx.initialized_here and dist.is_initialized():
        if synchronize:
            dist.barrier()
        dist.destroy_process_group()
