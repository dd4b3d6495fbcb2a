"""Fused CPU E4 aggregation: numba-compiled forward and backward behind one autograd Function.

Computes exactly the formula of :mod:`e4net.backends` (last step of Eq. 12),

    out[b, c, a, y, x] = sum_u  kernel[b, c % s, perm[a, u], a, y, x] * v_pad[b, c, a, s*y + u_row, s*x + u_col],

without the k^2-fold unfold, without the transformed copy of the kernel (``perm`` is indexed inside the loop)
and without padding ``v`` (the valid output range of each offset is computed instead). The work is split over
``(batch, slice, group element)`` so every generated k x k kernel plane stays in cache while it is reused by
the ``C / s`` channels of its slice, and the backward pass writes ``grad_v`` and ``grad_kernel`` of one split
without atomics. Memory: the output (forward) and the two gradients (backward), nothing else.

Supports float32 and float64 CPU tensors (other dtypes and devices fall back to the ``shift`` backend).
Compiled on first use per dtype (``cache=True`` keeps the machine code in ``__pycache__``).
"""

from __future__ import annotations

import numba
import numpy as np
import torch
from numba import njit, prange

_DTYPES = (torch.float32, torch.float64)


@njit(parallel=True, cache=True, fastmath=True)
def _forward(v, ker, perm, k, stride, out):  # pragma: no cover - compiled
    nb, nc, na, h, w = v.shape
    ns, kk = ker.shape[1], ker.shape[2]
    ho, wo = out.shape[3], out.shape[4]
    p = k // 2
    wp = w + 2 * p
    plane, oplane = h * w, ho * wo
    vf, kf, of = v.reshape(-1), ker.reshape(-1), out.reshape(-1)
    for t in prange(nb * ns * na):
        b = t // (ns * na)
        j = (t // na) % ns
        a = t % na
        vp = np.zeros((h + 2 * p) * wp, dtype=v.dtype)  # zero-padded copy of one v plane, border stays 0
        acc = np.empty(oplane, dtype=v.dtype)
        for c in range(j, nc, ns):
            vb = ((b * nc + c) * na + a) * plane
            for y in range(h):
                for x in range(w):
                    vp[(y + p) * wp + x + p] = vf[vb + y * w + x]
            acc[:] = 0
            for u in range(kk):
                dy = u // k
                dx = u % k
                kb = (((b * ns + j) * kk + perm[a, u]) * na + a) * oplane
                for y in range(ho):
                    rv = (y * stride + dy) * wp + dx
                    rk = kb + y * wo
                    ra = y * wo
                    if stride == 1:
                        for x in range(wo):
                            acc[ra + x] += kf[rk + x] * vp[rv + x]
                    else:
                        for x in range(wo):
                            acc[ra + x] += kf[rk + x] * vp[rv + x * stride]
            ob = ((b * nc + c) * na + a) * oplane
            of[ob : ob + oplane] = acc


@njit(parallel=True, cache=True, fastmath=True)
def _backward(v, ker, perm, k, stride, go, gv, gk):  # pragma: no cover - compiled
    nb, nc, na, h, w = v.shape
    ns, kk = ker.shape[1], ker.shape[2]
    ho, wo = go.shape[3], go.shape[4]
    p = k // 2
    wp = w + 2 * p
    np_ = (h + 2 * p) * wp
    plane, oplane = h * w, ho * wo
    vf, kf, gof, gvf, gkf = v.reshape(-1), ker.reshape(-1), go.reshape(-1), gv.reshape(-1), gk.reshape(-1)
    for t in prange(nb * ns * na):
        b = t // (ns * na)
        j = (t // na) % ns
        a = t % na
        vp = np.zeros(np_, dtype=v.dtype)
        gvp = np.empty(np_, dtype=v.dtype)
        gkl = np.zeros((kk, oplane), dtype=v.dtype)  # grad of the kernel of slot a, in the frame of a
        for c in range(j, nc, ns):
            vb = ((b * nc + c) * na + a) * plane
            gb = ((b * nc + c) * na + a) * oplane
            for y in range(h):
                for x in range(w):
                    vp[(y + p) * wp + x + p] = vf[vb + y * w + x]
            gvp[:] = 0
            for u in range(kk):
                dy = u // k
                dx = u % k
                kb = (((b * ns + j) * kk + perm[a, u]) * na + a) * oplane
                gku = gkl[u]
                for y in range(ho):
                    rv = (y * stride + dy) * wp + dx
                    rk = kb + y * wo
                    rg = gb + y * wo
                    ra = y * wo
                    if stride == 1:
                        for x in range(wo):
                            gg = gof[rg + x]
                            gvp[rv + x] += kf[rk + x] * gg
                            gku[ra + x] += gg * vp[rv + x]
                    else:
                        for x in range(wo):
                            gg = gof[rg + x]
                            gvp[rv + x * stride] += kf[rk + x] * gg
                            gku[ra + x] += gg * vp[rv + x * stride]
            for y in range(h):
                for x in range(w):
                    gvf[vb + y * w + x] = gvp[(y + p) * wp + x + p]
        for u in range(kk):
            kb = (((b * ns + j) * kk + perm[a, u]) * na + a) * oplane
            gkf[kb : kb + oplane] = gkl[u]


def _set_threads() -> None:
    numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))


def _kernel_size(kernel: torch.Tensor) -> int:
    return int(round(kernel.shape[2] ** 0.5))


class NumbaAggregate(torch.autograd.Function):
    """Autograd Function of the fused aggregation: saves ``v`` and ``kernel`` (no extra buffers)."""

    @staticmethod
    def forward(ctx, v: torch.Tensor, kernel: torch.Tensor, perm: torch.Tensor, stride: int) -> torch.Tensor:  # type: ignore[override]
        from . import output_size

        v = v.detach().contiguous()
        kernel = kernel.detach().contiguous()
        perm_np = np.ascontiguousarray(perm.detach().cpu().numpy().astype(np.int64))
        k = _kernel_size(kernel)
        b, c, n, h, w = v.shape
        out = torch.empty((b, c, n, output_size(h, k, stride), output_size(w, k, stride)), dtype=v.dtype)
        _set_threads()
        _forward(v.numpy(), kernel.numpy(), perm_np, k, stride, out.numpy())
        ctx.save_for_backward(v, kernel)
        ctx.perm_np = perm_np
        ctx.stride = stride
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: torch.Tensor):  # type: ignore[override]
        v, kernel = ctx.saved_tensors
        go = grad_out.detach().contiguous()
        gv = torch.empty_like(v)
        gk = torch.empty_like(kernel)
        _set_threads()
        _backward(
            v.numpy(), kernel.numpy(), ctx.perm_np, _kernel_size(kernel), ctx.stride, go.numpy(), gv.numpy(), gk.numpy()
        )
        return (
            gv if ctx.needs_input_grad[0] else None,
            gk if ctx.needs_input_grad[1] else None,
            None,
            None,
        )


def aggregate_numba(v: torch.Tensor, kernel: torch.Tensor, perm: torch.Tensor, stride: int = 1) -> torch.Tensor:
    """The fused CPU aggregation; other devices / dtypes (or mixed dtypes) go to the ``shift`` backend."""
    if v.device.type != "cpu" or kernel.device.type != "cpu" or v.dtype not in _DTYPES or kernel.dtype != v.dtype:
        from .shift import aggregate_shift

        return aggregate_shift(v, kernel, perm, stride)
    return NumbaAggregate.apply(v, kernel, perm, stride)
