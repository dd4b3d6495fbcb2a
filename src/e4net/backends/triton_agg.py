"""Fused CUDA E4 aggregation in Triton: forward and backward kernels behind one autograd Function.

Computes exactly the formula of :mod:`e4net.backends` (last step of Eq. 12),

    out[b, c, a, y, x] = sum_u  kernel[b, c % s, index[a, u], a, y, x] * v_pad[b, c, a, s*y + u_row, s*x + u_col],

fusing the per-group-element kernel transform (the relative-position table ``index`` is read inside the kernel, no
transformed copy), the k x k gather (masked loads, no padding, no unfold), the multiply and the accumulation.

Tiling: one program per ``(batch, slice j, group element a, block of pixels)``. It loads the ``k^2 x BLOCK``
tile of generated kernels **once** into registers and reuses it for the ``C / s`` channels ``c = j, j + s, ...``
of its slice, so every tensor crosses DRAM about once (the ``v`` halo is served by L1/L2):

* forward: reads ``kernel`` and ``v`` once, writes ``out``;
* backward, ``grad_kernel``: per output pixel block, ``sum_c grad_out * v_shift``, written to row ``index[a, u]``
  (a permutation, so no atomics);
* backward, ``grad_v``: the gather form over input pixels (``y = (i + p - u_row) / stride`` when integral), no
  atomics.

Accumulation is float32 (float64 for float64 inputs). On CPU the kernels run only under Triton's interpreter
(``TRITON_INTERPRET=1`` set before this module is imported), which the tests use. Which tensors it is given (CUDA,
or CPU under the interpreter; fp16 / bf16 / fp32 / fp64, all of one dtype) and what happens when the kernels fail to
compile on some GPU (marked unusable, the call falls back to ``shift``) are decided by the dispatcher from the
declaration in :mod:`e4net.backends`, not here.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._geometry import kernel_side


@triton.jit
def _fwd_kernel(
    v_ptr, k_ptr, index_ptr, out_ptr,
    C, S, A, H, W, HO, WO,
    STRIDE: tl.constexpr, KS: tl.constexpr, KKP: tl.constexpr, BLOCK: tl.constexpr, ACC: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0)
    a = pid % A
    j = (pid // A) % S
    b = pid // (A * S)
    KK: tl.constexpr = KS * KS
    P: tl.constexpr = KS // 2
    hwo = HO * WO
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    m = offs < hwo
    y = offs // WO
    x = offs % WO
    u = tl.arange(0, KKP)
    mu = u < KK
    q = tl.load(index_ptr + a * KK + u, mask=mu, other=0)
    kbase = (((b * S + j) * KK + q).to(tl.int64) * A + a) * hwo
    m2 = mu[:, None] & m[None, :]
    kt = tl.load(k_ptr + kbase[:, None] + offs[None, :], mask=m2, other=0.0).to(ACC)
    iy = y[None, :] * STRIDE + (u // KS)[:, None] - P
    ix = x[None, :] * STRIDE + (u % KS)[:, None] - P
    mv = m2 & (iy >= 0) & (iy < H) & (ix >= 0) & (ix < W)
    voff = iy * W + ix
    for c in range(j, C, S):
        plane = (b * C + c).to(tl.int64) * A + a
        vv = tl.load(v_ptr + plane * H * W + voff, mask=mv, other=0.0).to(ACC)
        o = tl.sum(vv * kt, axis=0)
        tl.store(out_ptr + plane * hwo + offs, o.to(out_ptr.dtype.element_ty), mask=m)


@triton.jit
def _bwd_kernel_grad(
    v_ptr, go_ptr, index_ptr, gk_ptr,
    C, S, A, H, W, HO, WO,
    STRIDE: tl.constexpr, KS: tl.constexpr, KKP: tl.constexpr, BLOCK: tl.constexpr, ACC: tl.constexpr,
):  # fmt: skip
    """grad_kernel[b, j, index[a, u], a, y, x] = sum_{c = j mod s} grad_out[b, c, a, y, x] v_pad[b, c, a, ...]."""
    pid = tl.program_id(0)
    a = pid % A
    j = (pid // A) % S
    b = pid // (A * S)
    KK: tl.constexpr = KS * KS
    P: tl.constexpr = KS // 2
    hwo = HO * WO
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    m = offs < hwo
    y = offs // WO
    x = offs % WO
    u = tl.arange(0, KKP)
    mu = u < KK
    m2 = mu[:, None] & m[None, :]
    iy = y[None, :] * STRIDE + (u // KS)[:, None] - P
    ix = x[None, :] * STRIDE + (u % KS)[:, None] - P
    mv = m2 & (iy >= 0) & (iy < H) & (ix >= 0) & (ix < W)
    voff = iy * W + ix
    acc = tl.zeros([KKP, BLOCK], dtype=ACC)
    for c in range(j, C, S):
        plane = (b * C + c).to(tl.int64) * A + a
        g = tl.load(go_ptr + plane * hwo + offs, mask=m, other=0.0).to(ACC)
        vv = tl.load(v_ptr + plane * H * W + voff, mask=mv, other=0.0).to(ACC)
        acc += vv * g[None, :]
    q = tl.load(index_ptr + a * KK + u, mask=mu, other=0)
    kbase = (((b * S + j) * KK + q).to(tl.int64) * A + a) * hwo
    tl.store(gk_ptr + kbase[:, None] + offs[None, :], acc.to(gk_ptr.dtype.element_ty), mask=m2)


@triton.jit
def _bwd_value_grad(
    k_ptr, go_ptr, index_ptr, gv_ptr,
    C, S, A, H, W, HO, WO,
    STRIDE: tl.constexpr, KS: tl.constexpr, KKP: tl.constexpr, BLOCK: tl.constexpr, ACC: tl.constexpr,
):  # fmt: skip
    """grad_v[b, c, a, i, l] = sum_u kernel[b, j, index[a, u], a, y, x] grad_out[b, c, a, y, x], i = s y + u_row - p."""
    pid = tl.program_id(0)
    a = pid % A
    j = (pid // A) % S
    b = pid // (A * S)
    KK: tl.constexpr = KS * KS
    P: tl.constexpr = KS // 2
    hwo = HO * WO
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    m = offs < H * W
    iy = offs // W
    ix = offs % W
    u = tl.arange(0, KKP)
    mu = u < KK
    ty = iy[None, :] + P - (u // KS)[:, None]
    tx = ix[None, :] + P - (u % KS)[:, None]
    tyc = tl.maximum(ty, 0)  # avoid division of negatives; masked below
    txc = tl.maximum(tx, 0)
    y = tyc // STRIDE
    x = txc // STRIDE
    mg = mu[:, None] & m[None, :] & (ty >= 0) & (tx >= 0) & (y < HO) & (x < WO)
    if STRIDE > 1:
        mg = mg & (tyc % STRIDE == 0) & (txc % STRIDE == 0)
    goff = y * WO + x
    q = tl.load(index_ptr + a * KK + u, mask=mu, other=0)
    kbase = (((b * S + j) * KK + q).to(tl.int64) * A + a) * hwo
    kt = tl.load(k_ptr + kbase[:, None] + goff, mask=mg, other=0.0).to(ACC)
    for c in range(j, C, S):
        plane = (b * C + c).to(tl.int64) * A + a
        g = tl.load(go_ptr + plane * hwo + goff, mask=mg, other=0.0).to(ACC)
        o = tl.sum(g * kt, axis=0)
        tl.store(gv_ptr + plane * H * W + offs, o.to(gv_ptr.dtype.element_ty), mask=m)


def _meta(kernel: torch.Tensor, dtype: torch.dtype, pixels: int) -> tuple[int, int, int, object]:
    """Kernel size, padded k^2, pixel block (<= 4096 tile elements, no wider than the plane), accumulator dtype."""
    ks = kernel_side(kernel.shape[2])
    kkp = triton.next_power_of_2(ks * ks)
    block = max(16, min(256, 4096 // kkp, triton.next_power_of_2(pixels)))
    acc = tl.float64 if dtype == torch.float64 else tl.float32
    return ks, kkp, block, acc


class TritonAggregate(torch.autograd.Function):
    """Autograd Function of the fused aggregation: saves ``v`` and ``kernel`` only."""

    @staticmethod
    def forward(ctx, v: torch.Tensor, kernel: torch.Tensor, index: torch.Tensor, stride: int) -> torch.Tensor:  # type: ignore[override]
        v = v.detach().contiguous()
        kernel = kernel.detach().contiguous()
        index32 = index.detach().to(device=v.device, dtype=torch.int32).contiguous()
        b, c, n, h, w = v.shape
        s = kernel.shape[1]
        ho, wo = kernel.shape[4], kernel.shape[5]
        ks, kkp, block, acc = _meta(kernel, v.dtype, ho * wo)
        out = torch.empty((b, c, n, ho, wo), dtype=v.dtype, device=v.device)
        grid = (b * s * n, triton.cdiv(ho * wo, block))
        _fwd_kernel[grid](v, kernel, index32, out, c, s, n, h, w, ho, wo, stride, ks, kkp, block, acc)
        ctx.save_for_backward(v, kernel, index32)
        ctx.stride = stride
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: torch.Tensor):  # type: ignore[override]
        v, kernel, index32 = ctx.saved_tensors
        go = grad_out.detach().contiguous()
        b, c, n, h, w = v.shape
        s = kernel.shape[1]
        ho, wo = go.shape[3], go.shape[4]
        gv = gk = None
        if ctx.needs_input_grad[0]:
            ks, kkp, block, acc = _meta(kernel, v.dtype, h * w)
            gv = torch.empty_like(v)
            grid = (b * s * n, triton.cdiv(h * w, block))
            _bwd_value_grad[grid](kernel, go, index32, gv, c, s, n, h, w, ho, wo, ctx.stride, ks, kkp, block, acc)
        if ctx.needs_input_grad[1]:
            ks, kkp, block, acc = _meta(kernel, v.dtype, ho * wo)
            gk = torch.empty_like(kernel)
            grid = (b * s * n, triton.cdiv(ho * wo, block))
            _bwd_kernel_grad[grid](v, go, index32, gk, c, s, n, h, w, ho, wo, ctx.stride, ks, kkp, block, acc)
        return gv, gk, None, None


def aggregate_triton(v: torch.Tensor, kernel: torch.Tensor, index: torch.Tensor, stride: int = 1) -> torch.Tensor:
    """The fused Triton aggregation (CUDA tensors, or CPU tensors under the interpreter; one floating dtype)."""
    return TritonAggregate.apply(v, kernel, index, stride)
