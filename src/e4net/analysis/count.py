"""Parameter and multiply-accumulate (MAC) accounting (the paper's "FLOPs" are MACs).

Every module counts only its *own* work: e4net layers through a ``count_macs(inputs, output)`` method
(:class:`~e4net.nn.E4Conv` counts its dynamic aggregation, its V / W1 / W2 sub-modules count themselves),
``nn.Conv2d`` / ``nn.Conv3d`` / ``nn.Linear`` by their standard formulas. Norms, activations and pooling are not
counted, as in the paper's tables. The e4net layers count in 3-D too (voxel grids of O / Oh: k^3 kernels); the
closed forms of Sec. 4.2 with ``k^2 -> k^3`` beside these live counts: :mod:`e4net.analysis.cost3d`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass
class Count:
    """Result of :func:`count`: ``params`` (learnable parameters) and ``macs`` (one forward pass, one example)."""

    params: int
    macs: int
    by_module: dict[str, int] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"params={self.params:,} macs={self.macs:,}"


def _conv_macs(m: nn.Conv2d | nn.Conv3d, out: torch.Tensor) -> int:
    k = 1
    for side in m.kernel_size:
        k *= side
    return out[0].numel() * (m.in_channels // m.groups) * k


def _linear_macs(m: nn.Linear, out: torch.Tensor) -> int:
    return out[0].numel() * m.in_features


def module_macs(m: nn.Module, inputs: tuple, out: torch.Tensor) -> int | None:
    """MACs of one module's own work for this call (per example), or None if it does no counted work."""
    if hasattr(m, "count_macs"):
        return int(m.count_macs(inputs, out))
    if isinstance(m, (nn.Conv2d, nn.Conv3d)):
        return _conv_macs(m, out)
    if isinstance(m, nn.Linear):
        return _linear_macs(m, out)
    return None


def count(model: nn.Module, input_shape: Sequence[int]) -> Count:
    """Count ``model``'s parameters and MACs for one example of shape ``input_shape`` (no batch dimension).

    Runs one forward pass of a zero input of batch size 1 in eval mode under ``torch.no_grad`` (the model's
    training flag is restored afterwards).
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"count() needs an nn.Module, got {type(model).__name__}")
    shape = tuple(int(s) for s in input_shape)
    if not shape or any(s < 1 for s in shape):
        raise ValueError(f"count(): input_shape must be positive sizes without the batch dim, got {tuple(input_shape)}")
    by_module: dict[str, int] = {}
    names = {m: n for n, m in model.named_modules()}
    hooks = []

    def hook(m: nn.Module, inputs: tuple, out: torch.Tensor) -> None:
        macs = module_macs(m, inputs, out)
        if macs is not None:
            key = names.get(m, type(m).__name__) or type(m).__name__
            by_module[key] = by_module.get(key, 0) + macs

    for m in model.modules():
        hooks.append(m.register_forward_hook(hook))
    was_training = model.training
    try:
        p = next(iter(model.parameters()), None)
        device = p.device if p is not None else torch.device("cpu")
        dtype = p.dtype if p is not None and p.dtype.is_floating_point else torch.float32
        model.eval()
        with torch.no_grad():
            model(torch.zeros((1, *shape), device=device, dtype=dtype))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return Count(params=params, macs=sum(by_module.values()), by_module=by_module)
