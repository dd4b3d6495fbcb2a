"""Memory-efficient E4 aggregation in plain PyTorch: shift-and-accumulate over the k^2 offsets, no unfold
(:func:`aggregate_shift_3d`: over the k^3 offsets of a voxel grid).

Each offset reads a strided *view* of the zero-padded ``v`` and multiplies it with one plane of the transformed
kernel, so the extra memory is one output-sized accumulator instead of the k^2-fold unfold. Works on any device and
dtype and under autograd; it is the dispatcher's fallback (:mod:`e4net.backends.dispatch`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._geometry import kernel_side, output_size, transform_kernel


def aggregate_shift(v: torch.Tensor, kernel: torch.Tensor, index: torch.Tensor, stride: int = 1) -> torch.Tensor:
    b, c, n, h, w = v.shape
    s, kk = kernel.shape[1], kernel.shape[2]
    k = kernel_side(kk)
    p = k // 2
    ho, wo = output_size(h, k, stride), output_size(w, k, stride)
    kt = transform_kernel(kernel, index).unsqueeze(1)  # (B, 1, s, k*k, |A|, H', W')
    vp = F.pad(v, (p, p, p, p)).view(b, c // s, s, n, h + 2 * p, w + 2 * p)
    out = None
    for u in range(kk):
        dy, dx = divmod(u, k)
        patch = vp[..., dy : dy + stride * (ho - 1) + 1 : stride, dx : dx + stride * (wo - 1) + 1 : stride]
        term = patch * kt[:, :, :, u]
        out = term if out is None else out.add_(term)
    assert out is not None
    return out.reshape(b, c, n, ho, wo)


def aggregate_shift_3d(v: torch.Tensor, kernel: torch.Tensor, index: torch.Tensor, stride: int = 1) -> torch.Tensor:
    """:func:`aggregate_shift` on voxel grids: ``v (B, C, |A|, D, H, W)``, ``kernel (B, s, k^3, |A|, D', H', W')``."""
    b, c, n, d, h, w = v.shape
    s, kk = kernel.shape[1], kernel.shape[2]
    k = kernel_side(kk, 3)
    p = k // 2
    do, ho, wo = kernel.shape[4:]
    kt = transform_kernel(kernel, index).unsqueeze(1)  # (B, 1, s, k^3, |A|, D', H', W')
    vp = F.pad(v, (p,) * 6).view(b, c // s, s, n, d + 2 * p, h + 2 * p, w + 2 * p)
    out = None
    for u in range(kk):
        dz, rem = divmod(u, k * k)
        dy, dx = divmod(rem, k)
        patch = vp[
            ...,
            dz : dz + stride * (do - 1) + 1 : stride,
            dy : dy + stride * (ho - 1) + 1 : stride,
            dx : dx + stride * (wo - 1) + 1 : stride,
        ]
        term = patch * kt[:, :, :, u]
        out = term if out is None else out.add_(term)
    assert out is not None
    return out.reshape(b, c, n, do, ho, wo)
