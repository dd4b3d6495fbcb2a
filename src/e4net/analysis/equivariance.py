"""Measuring equivariance: ``|f(T_g x) - T'_g f(x)|`` with the actions of :mod:`e4net.groups`.

The action is chosen by the tensor's rank: rank 5 ``(B, C, |A|, H, W)`` gets the regular action
(``act_on_features``), rank 3-4 ``(..., H, W)`` the action on images (``act_on_signal``), rank 1-2 (logits,
pooled vectors) the trivial action (invariance). For a group on voxel grids (O, Oh) every rank but the last is one
higher: rank 6 feature maps, rank 4-5 voxel signals.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..groups import Group, resolve


def act(x: torch.Tensor, group: Group, g: int) -> torch.Tensor:
    """Apply ``g`` to ``x`` with the action its rank implies (see the module docstring)."""
    d = group.spatial_dims
    if x.dim() == d + 3:
        return group.act_on_features(x, g)
    if x.dim() in (d + 1, d + 2):
        return group.act_on_signal(x, g)
    if x.dim() in (1, 2):
        return x
    raise ValueError(f"no group action for a tensor of rank {x.dim()} (shape {tuple(x.shape)})")


def equivariance_error(f: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, group: str | Group, g: int) -> float:
    """Relative error ``max |f(T_g x) - T'_g f(x)| / max |f(x)|`` for one group element ``g``."""
    group = resolve(group)
    with torch.no_grad():
        y = f(x)
        y_t = f(act(x, group, g))
    ref = act(y, group, g)
    if y_t.shape != ref.shape:
        raise ValueError(f"output shapes differ: f(T_g x) {tuple(y_t.shape)} vs T_g f(x) {tuple(ref.shape)}")
    scale = ref.abs().max().clamp_min(torch.finfo(ref.dtype).tiny)
    return float((y_t - ref).abs().max() / scale)


def max_equivariance_error(f: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, group: str | Group) -> float:
    """The largest :func:`equivariance_error` over every element of ``group``."""
    group = resolve(group)
    return max(equivariance_error(f, x, group, g) for g in group.elements())


@torch.no_grad()
def randomize_(module: torch.nn.Module, seed: int = 0, scale: float = 1.0) -> torch.nn.Module:
    """Fill every parameter and floating buffer of ``module`` with random values (in place).

    Equivariance must hold for any weights training can reach, not only for the initial ones: a norm whose
    affine weight differs along the group axis is equivariant at init (all ones) and broken after training.
    Running variances are kept positive. Returns ``module``.
    """
    gen = torch.Generator().manual_seed(seed)
    for name, t in list(module.named_parameters()) + list(module.named_buffers()):
        if not t.dtype.is_floating_point:
            continue
        r = torch.randn(t.shape, generator=gen, dtype=torch.float64) * scale
        if name.endswith("running_var"):
            r = r.abs() + 0.5
        t.copy_(r.to(t.dtype))
    return module
