"""Fused CUDA E4 aggregation on voxel grids (groups O, Oh) in Triton: forward and backward kernels, one autograd
Function.

Computes the formula of :mod:`e4net.backends` over a k x k x k neighbourhood (last step of Eq. 12 in 3-D),

    out[b, c, a, z, y, x] = sum_u  kernel[b, c % s, index[a, u], a, z, y, x]
                                   * v_pad[b, c, a, s z + u_d, s y + u_h, s x + u_w],

with the tiling of the 2-D kernels (:mod:`e4net.backends.triton_agg`): one program per ``(batch, slice j, group
element a, block of voxels)`` loads the ``k^3 x BLOCK`` tile of generated kernels once (row ``u`` read from plane
``index[a, u]``: the transform by ``a`` fused in) and reuses it for the ``C / s`` channels of its slice; the
neighbourhood is gathered with masked loads (no padding, no k^3-fold copy). Backward: ``grad_kernel`` per output
block, written to row ``index[a, u]`` (a permutation: no atomics); ``grad_v`` in gather form over input voxels
(``z = (i + p - u_d) / stride`` when integral). Accumulation in float32 (float64 for float64 inputs).

Declared in :mod:`e4net.backends.builtin` (``TRITON.load_3d``): CUDA tensors, or CPU tensors under Triton's
interpreter (``TRITON_INTERPRET=1`` set before this module is imported), which the tests use.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._geometry import kernel_side

__all__ = ["TritonAggregate3d", "aggregate_triton_3d"]


@triton.jit
def _fwd_kernel_3d(
    v_ptr, k_ptr, index_ptr, out_ptr,
    C, S, A, D, H, W, DO, HO, WO,
    STRIDE: tl.constexpr, KS: tl.constexpr, KKP: tl.constexpr, BLOCK: tl.constexpr, ACC: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0)
    a = pid % A
    j = (pid // A) % S
    b = pid // (A * S)
    KK: tl.constexpr = KS * KS * KS
    P: tl.constexpr = KS // 2
    ovol = DO * HO * WO
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    m = offs < ovol
    z = offs // (HO * WO)
    y = (offs // WO) % HO
    x = offs % WO
    u = tl.arange(0, KKP)
    mu = u < KK
    q = tl.load(index_ptr + a * KK + u, mask=mu, other=0)
    kbase = (((b * S + j) * KK + q).to(tl.int64) * A + a) * ovol
    m2 = mu[:, None] & m[None, :]
    kt = tl.load(k_ptr + kbase[:, None] + offs[None, :], mask=m2, other=0.0).to(ACC)
    iz = z[None, :] * STRIDE + (u // (KS * KS))[:, None] - P
    iy = y[None, :] * STRIDE + ((u // KS) % KS)[:, None] - P
    ix = x[None, :] * STRIDE + (u % KS)[:, None] - P
    mv = m2 & (iz >= 0) & (iz < D) & (iy >= 0) & (iy < H) & (ix >= 0) & (ix < W)
    voff = (iz * H + iy) * W + ix
    for c in range(j, C, S):
        plane = (b * C + c).to(tl.int64) * A + a
        vv = tl.load(v_ptr + plane * D * H * W + voff, mask=mv, other=0.0).to(ACC)
        o = tl.sum(vv * kt, axis=0)
        tl.store(out_ptr + plane * ovol + offs, o.to(out_ptr.dtype.element_ty), mask=m)


@triton.jit
def _bwd_kernel_grad_3d(
    v_ptr, go_ptr, index_ptr, gk_ptr,
    C, S, A, D, H, W, DO, HO, WO,
    STRIDE: tl.constexpr, KS: tl.constexpr, KKP: tl.constexpr, BLOCK: tl.constexpr, ACC: tl.constexpr,
):  # fmt: skip
    """grad_kernel[b, j, index[a, u], a, z, y, x] = sum_{c = j mod s} grad_out[b, c, a, z, y, x] v_pad[...]."""
    pid = tl.program_id(0)
    a = pid % A
    j = (pid // A) % S
    b = pid // (A * S)
    KK: tl.constexpr = KS * KS * KS
    P: tl.constexpr = KS // 2
    ovol = DO * HO * WO
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    m = offs < ovol
    z = offs // (HO * WO)
    y = (offs // WO) % HO
    x = offs % WO
    u = tl.arange(0, KKP)
    mu = u < KK
    m2 = mu[:, None] & m[None, :]
    iz = z[None, :] * STRIDE + (u // (KS * KS))[:, None] - P
    iy = y[None, :] * STRIDE + ((u // KS) % KS)[:, None] - P
    ix = x[None, :] * STRIDE + (u % KS)[:, None] - P
    mv = m2 & (iz >= 0) & (iz < D) & (iy >= 0) & (iy < H) & (ix >= 0) & (ix < W)
    voff = (iz * H + iy) * W + ix
    acc = tl.zeros([KKP, BLOCK], dtype=ACC)
    for c in range(j, C, S):
        plane = (b * C + c).to(tl.int64) * A + a
        g = tl.load(go_ptr + plane * ovol + offs, mask=m, other=0.0).to(ACC)
        vv = tl.load(v_ptr + plane * D * H * W + voff, mask=mv, other=0.0).to(ACC)
        acc += vv * g[None, :]
    q = tl.load(index_ptr + a * KK + u, mask=mu, other=0)
    kbase = (((b * S + j) * KK + q).to(tl.int64) * A + a) * ovol
    tl.store(gk_ptr + kbase[:, None] + offs[None, :], acc.to(gk_ptr.dtype.element_ty), mask=m2)


@triton.jit
def _bwd_value_grad_3d(
    k_ptr, go_ptr, index_ptr, gv_ptr,
    C, S, A, D, H, W, DO, HO, WO,
    STRIDE: tl.constexpr, KS: tl.constexpr, KKP: tl.constexpr, BLOCK: tl.constexpr, ACC: tl.constexpr,
):  # fmt: skip
    """grad_v[b, c, a, i] = sum_u kernel[b, j, index[a, u], a, o] grad_out[b, c, a, o] with i = s o + u - p."""
    pid = tl.program_id(0)
    a = pid % A
    j = (pid // A) % S
    b = pid // (A * S)
    KK: tl.constexpr = KS * KS * KS
    P: tl.constexpr = KS // 2
    ovol = DO * HO * WO
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    m = offs < D * H * W
    iz = offs // (H * W)
    iy = (offs // W) % H
    ix = offs % W
    u = tl.arange(0, KKP)
    mu = u < KK
    tz = iz[None, :] + P - (u // (KS * KS))[:, None]
    ty = iy[None, :] + P - ((u // KS) % KS)[:, None]
    tx = ix[None, :] + P - (u % KS)[:, None]
    tzc = tl.maximum(tz, 0)  # avoid division of negatives; masked below
    tyc = tl.maximum(ty, 0)
    txc = tl.maximum(tx, 0)
    z = tzc // STRIDE
    y = tyc // STRIDE
    x = txc // STRIDE
    mg = mu[:, None] & m[None, :] & (tz >= 0) & (ty >= 0) & (tx >= 0) & (z < DO) & (y < HO) & (x < WO)
    if STRIDE > 1:
        mg = mg & (tzc % STRIDE == 0) & (tyc % STRIDE == 0) & (txc % STRIDE == 0)
    goff = (z * HO + y) * WO + x
    q = tl.load(index_ptr + a * KK + u, mask=mu, other=0)
    kbase = (((b * S + j) * KK + q).to(tl.int64) * A + a) * ovol
    kt = tl.load(k_ptr + kbase[:, None] + goff, mask=mg, other=0.0).to(ACC)
    for c in range(j, C, S):
        plane = (b * C + c).to(tl.int64) * A + a
        g = tl.load(go_ptr + plane * ovol + goff, mask=mg, other=0.0).to(ACC)
        o = tl.sum(g * kt, axis=0)
        tl.store(gv_ptr + plane * D * H * W + offs, o.to(gv_ptr.dtype.element_ty), mask=m)


def _meta(kernel: torch.Tensor, dtype: torch.dtype, voxels: int) -> tuple[int, int, int, object]:
    """Kernel size, padded k^3, voxel block (<= 4096 tile elements, no wider than the volume), accumulator dtype."""
    ks = kernel_side(kernel.shape[2], 3)
    kkp = triton.next_power_of_2(ks**3)
    block = max(16, min(256, 4096 // kkp, triton.next_power_of_2(voxels)))
    acc = tl.float64 if dtype == torch.float64 else tl.float32
    return ks, kkp, block, acc


class TritonAggregate3d(torch.autograd.Function):
    """Autograd Function of the fused 3-D aggregation: saves ``v`` and ``kernel`` only."""

    @staticmethod
    def forward(ctx, v: torch.Tensor, kernel: torch.Tensor, index: torch.Tensor, stride: int) -> torch.Tensor:  # type: ignore[override]
        v = v.detach().contiguous()
        kernel = kernel.detach().contiguous()
        index32 = index.detach().to(device=v.device, dtype=torch.int32).contiguous()
        b, c, n, d, h, w = v.shape
        s = kernel.shape[1]
        do, ho, wo = kernel.shape[4:]
        ks, kkp, block, acc = _meta(kernel, v.dtype, do * ho * wo)
        out = torch.empty((b, c, n, do, ho, wo), dtype=v.dtype, device=v.device)
        grid = (b * s * n, triton.cdiv(do * ho * wo, block))
        _fwd_kernel_3d[grid](v, kernel, index32, out, c, s, n, d, h, w, do, ho, wo, stride, ks, kkp, block, acc)
        ctx.save_for_backward(v, kernel, index32)
        ctx.stride = stride
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: torch.Tensor):  # type: ignore[override]
        v, kernel, index32 = ctx.saved_tensors
        go = grad_out.detach().contiguous()
        b, c, n, d, h, w = v.shape
        s = kernel.shape[1]
        do, ho, wo = go.shape[3:]
        sizes = (c, s, n, d, h, w, do, ho, wo, ctx.stride)
        gv = gk = None
        if ctx.needs_input_grad[0]:
            ks, kkp, block, acc = _meta(kernel, v.dtype, d * h * w)
            gv = torch.empty_like(v)
            grid = (b * s * n, triton.cdiv(d * h * w, block))
            _bwd_value_grad_3d[grid](kernel, go, index32, gv, *sizes, ks, kkp, block, acc)
        if ctx.needs_input_grad[1]:
            ks, kkp, block, acc = _meta(kernel, v.dtype, do * ho * wo)
            gk = torch.empty_like(kernel)
            grid = (b * s * n, triton.cdiv(do * ho * wo, block))
            _bwd_kernel_grad_3d[grid](v, go, index32, gk, *sizes, ks, kkp, block, acc)
        return gv, gk, None, None


def aggregate_triton_3d(v: torch.Tensor, kernel: torch.Tensor, index: torch.Tensor, stride: int = 1) -> torch.Tensor:
    """The fused Triton 3-D aggregation (CUDA tensors, or CPU tensors under the interpreter; one floating dtype)."""
    return TritonAggregate3d.apply(v, kernel, index, stride)
