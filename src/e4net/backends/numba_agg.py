"""Fused CPU E4 aggregation: numba-compiled forward and backward behind one autograd Function.

Computes exactly the formula of :mod:`e4net.backends` (last step of Eq. 12), with the optional kernel bias,

    out[b, c, a, y, x] = sum_u  (kernel[b, c % s, index[a, u], a, y, x] + bias[c % s, index[a, u]])
                                * v_pad[b, c, a, s*y + u_row, s*x + u_col],

without the k^2-fold unfold, without the transformed copy of the kernel (the relative-position table ``index`` is
read inside the loop) and without padding ``v`` (the valid output range of each offset is computed instead). The
work is split over ``(batch, slice, group element)`` so every generated k x k kernel plane stays in cache while it
is reused by the ``C / s`` channels of its slice, and the backward pass writes ``grad_v`` and ``grad_kernel`` of one
split without atomics. Memory: the output (forward) and the two gradients (backward), nothing else. At stride 1
with at most 16 channels per slice (E4-Net's layers) both passes run the register-blocked loops of
:mod:`e4net.backends._numba_stored2d` instead.

Runs on float32 and float64 CPU tensors, all of one dtype: that is what its declaration in :mod:`e4net.backends`
says, and the dispatcher sends it nothing else (other tensors go to the ``shift`` fallback there). Compiled on first
use per dtype (``cache=True`` keeps the machine code in ``__pycache__``).
"""

from __future__ import annotations

import numpy as np
import torch
from numba import njit, prange

from .. import _memory
from .._numba import follow_torch
from . import _numba_blocked as _blocked
from . import _numba_stored2d as _stored
from ._custom_ops import index_array, register_backward
from ._geometry import kernel_side, output_size

# Implementation notes. Inner loops run over slices (views) with indices from ``range(0, n)``: an index like
# ``i + off`` would make numba emit a negative-index wraparound branch that blocks SIMD vectorisation (7x slower).
# Stride 1 (the common case) uses the "wide row" layout: planes stored with the padded width ``wp = w + 2p``,
# so every offset ``u`` is one constant shift and the inner loop covers the whole plane (long SIMD loops even on
# 7x7 or 4x4 maps); the ``wp - wo`` extra columns are scratch that is never written back. Stride > 1 uses one
# loop per output row.


@njit(cache=True, fastmath=True)
def _load_kernels(kf, kbias, index, b, j, a, na, ho, wo, rw, kx):  # pragma: no cover - compiled
    """Rows ``u`` of ``kx``: the generated kernel plane ``index[a, u]`` of (batch b, slice j, slot a) plus its bias,
    laid out with row pitch ``rw`` (the transform by ``a`` is this choice of plane)."""
    kk = kx.shape[0]
    ns = kbias.shape[0]
    oplane = ho * wo
    for u in range(kk):
        kb = (((b * ns + j) * kk + index[a, u]) * na + a) * oplane
        kbu = kbias[j, index[a, u]]
        for y in range(ho):
            src = kf[kb + y * wo : kb + (y + 1) * wo]
            dst = kx[u, y * rw : y * rw + wo]
            for x in range(wo):  # an explicit loop: `src + kbu` would allocate a temporary array
                dst[x] = src[x] + kbu


@njit(parallel=True, cache=True, fastmath=True)
def _forward(v, ker, kbias, index, k, stride, out, nthreads):  # pragma: no cover - compiled
    nb, nc, na, h, w = v.shape
    ns, kk = ker.shape[1], ker.shape[2]
    ho, wo = out.shape[3], out.shape[4]
    p = k // 2
    wp = w + 2 * p
    n = ho * wp if stride == 1 else ho * wo  # accumulator length (wide rows for stride 1)
    vf, kf, of = v.reshape(-1), ker.reshape(-1), out.reshape(-1)
    ntask = nb * ns * na
    nchunk = max(1, min(ntask, nthreads))
    for chunk in prange(nchunk):  # one contiguous run of tasks per thread, its scratch allocated once
        vp = np.zeros((h + 2 * p) * wp + k, dtype=v.dtype)  # zero-padded v plane (+ slack for the wide rows)
        kx = np.zeros((kk, n), dtype=v.dtype)  # the kernels of slot a, transformed (row u = index[a, u])
        acc = np.empty(n, dtype=v.dtype)
        for t in range(chunk * ntask // nchunk, (chunk + 1) * ntask // nchunk):
            _forward_task(vf, kf, kbias, index, k, stride, t, nb, nc, na, h, w, ho, wo, of, vp, kx, acc)


@njit(cache=True, fastmath=True)
def _forward_task(vf, kf, kbias, index, k, stride, t, nb, nc, na, h, w, ho, wo, of, vp, kx, acc):  # pragma: no cover
    """Task ``t = (b, j, a)`` of the forward pass: the ``C / s`` channels of slice ``j`` at slot ``a``."""
    ns = kbias.shape[0]
    rw = w + 2 * (k // 2) if stride == 1 else wo
    b = t // (ns * na)
    j = (t // na) % ns
    a = t % na
    _load_kernels(kf, kbias, index, b, j, a, na, ho, wo, rw, kx)
    _apply_kernels(vf, k, stride, b, j, a, ns, nc, na, h, w, ho, wo, of, vp, kx, acc)


@njit(cache=True, fastmath=True)
def _apply_kernels(vf, k, stride, b, j, a, ns, nc, na, h, w, ho, wo, of, vp, kx, acc):  # pragma: no cover - compiled
    """The aggregation of task ``(b, j, a)`` with its transformed kernels already in ``kx``."""
    kk = kx.shape[0]
    p = k // 2
    wp = w + 2 * p
    n = acc.shape[0]
    rw = wp if stride == 1 else wo
    plane, oplane = h * w, ho * wo
    for c in range(j, nc, ns):
        vb = ((b * nc + c) * na + a) * plane
        for y in range(h):
            vp[(y + p) * wp + p : (y + p) * wp + p + w] = vf[vb + y * w : vb + (y + 1) * w]
        acc[:] = 0
        for u in range(kk):
            dy = u // k
            dx = u % k
            kr = kx[u]
            if stride == 1:
                vs = vp[dy * wp + dx : dy * wp + dx + n]
                for i in range(n):
                    acc[i] += kr[i] * vs[i]
            else:
                for y in range(ho):
                    r0 = (y * stride + dy) * wp + dx
                    vs = vp[r0 : r0 + (wo - 1) * stride + 1 : stride]
                    ar = acc[y * wo : (y + 1) * wo]
                    krr = kr[y * wo : (y + 1) * wo]
                    for x in range(wo):
                        ar[x] += krr[x] * vs[x]
        ob = ((b * nc + c) * na + a) * oplane
        for y in range(ho):
            of[ob + y * wo : ob + (y + 1) * wo] = acc[y * rw : y * rw + wo]


@njit(cache=True, fastmath=True)
def _generate_kernels(hf, w2, kbias, index, b, j, a, na, nh, ho, wo, rw, kx, tmp):  # pragma: no cover - compiled
    """Rows ``u`` of ``kx``: the kernel plane ``index[a, u]`` of (batch b, slice j, slot a) *generated* here,
    ``W2[j k^2 + index[a, u]] . hidden[b, :, a] + bias`` (Sec. 4.1's ``K~ = W2 h + b``), laid out with row pitch
    ``rw``: the kernel tensor is never written to memory."""
    kk = kx.shape[0]
    oplane = ho * wo
    for u in range(kk):
        row = j * kk + index[a, u]
        tmp[:] = kbias[j, index[a, u]]
        for c in range(nh):
            coef = w2[row, c]
            hb = ((b * nh + c) * na + a) * oplane
            src = hf[hb : hb + oplane]
            for i in range(oplane):
                tmp[i] += coef * src[i]
        for y in range(ho):
            dst = kx[u, y * rw : y * rw + wo]
            srow = tmp[y * wo : (y + 1) * wo]
            for x in range(wo):
                dst[x] = srow[x]


@njit(parallel=True, cache=True, fastmath=True)
def _forward_generated(v, hidden, w2, kbias, index, k, stride, out, nthreads):  # pragma: no cover - compiled
    """The forward pass with the kernels generated inside each task from the generator's hidden features."""
    nb, nc, na, h, w = v.shape
    nh = hidden.shape[1]
    ns, kk = kbias.shape[0], kbias.shape[1]
    ho, wo = out.shape[3], out.shape[4]
    p = k // 2
    wp = w + 2 * p
    n = ho * wp if stride == 1 else ho * wo
    rw = wp if stride == 1 else wo
    vf, hf, of = v.reshape(-1), hidden.reshape(-1), out.reshape(-1)
    ntask = nb * ns * na
    nchunk = max(1, min(ntask, nthreads))
    for chunk in prange(nchunk):
        vp = np.zeros((h + 2 * p) * wp + k, dtype=v.dtype)
        kx = np.zeros((kk, n), dtype=v.dtype)
        acc = np.empty(n, dtype=v.dtype)
        tmp = np.empty(ho * wo, dtype=v.dtype)
        for t in range(chunk * ntask // nchunk, (chunk + 1) * ntask // nchunk):
            b = t // (ns * na)
            j = (t // na) % ns
            a = t % na
            _generate_kernels(hf, w2, kbias, index, b, j, a, na, nh, ho, wo, rw, kx, tmp)
            _apply_kernels(vf, k, stride, b, j, a, ns, nc, na, h, w, ho, wo, of, vp, kx, acc)


@njit(parallel=True, cache=True, fastmath=True)
def _backward(v, ker, kbias, index, k, stride, go, gv, gk, gbias, nthreads):  # pragma: no cover - compiled
    nb, nc, na, h, w = v.shape
    ns, kk = ker.shape[1], ker.shape[2]
    ho, wo = go.shape[3], go.shape[4]
    p = k // 2
    wp = w + 2 * p
    n = ho * wp if stride == 1 else ho * wo  # (wide rows for stride 1)
    npad = (h + 2 * p) * wp + k
    vf, kf, gof, gvf, gkf = v.reshape(-1), ker.reshape(-1), go.reshape(-1), gv.reshape(-1), gk.reshape(-1)
    ntask = nb * ns * na
    nchunk = max(1, min(ntask, nthreads))
    for chunk in prange(nchunk):  # one contiguous run of tasks per thread, its scratch allocated once
        vp = np.zeros(npad, dtype=v.dtype)
        gvp = np.empty(npad, dtype=v.dtype)  # grad of the padded v plane
        gx = np.zeros(n, dtype=v.dtype)  # grad_out plane (wide rows: extra columns stay 0)
        kx = np.zeros((kk, n), dtype=v.dtype)
        gkx = np.empty((kk, n), dtype=v.dtype)  # grad of the transformed kernels of slot a
        for t in range(chunk * ntask // nchunk, (chunk + 1) * ntask // nchunk):
            _backward_task(vf, kf, kbias, index, k, stride, t, nb, nc, na, h, w, ho, wo, gof, gvf, gkf, gbias, vp,
                           gvp, gx, kx, gkx)  # fmt: skip


@njit(cache=True, fastmath=True)
def _backward_task(vf, kf, kbias, index, k, stride, t, nb, nc, na, h, w, ho, wo, gof, gvf, gkf, gbias, vp, gvp, gx, kx,
                   gkx):  # pragma: no cover - compiled  # fmt: skip
    """Task ``t = (b, j, a)`` of the backward pass: ``grad_v`` of the channels of slice ``j`` at slot ``a``, and the
    gradients of the kernels (and of the bias) they share."""
    ns, kk = kbias.shape[0], kx.shape[0]
    p = k // 2
    wp = w + 2 * p
    n = gx.shape[0]
    rw = wp if stride == 1 else wo
    plane, oplane = h * w, ho * wo
    b = t // (ns * na)
    j = (t // na) % ns
    a = t % na
    gkx[:] = 0
    _load_kernels(kf, kbias, index, b, j, a, na, ho, wo, rw, kx)
    for c in range(j, nc, ns):
        vb = ((b * nc + c) * na + a) * plane
        gb = ((b * nc + c) * na + a) * oplane
        for y in range(h):
            vp[(y + p) * wp + p : (y + p) * wp + p + w] = vf[vb + y * w : vb + (y + 1) * w]
        for y in range(ho):
            gx[y * rw : y * rw + wo] = gof[gb + y * wo : gb + (y + 1) * wo]
        gvp[:] = 0
        for u in range(kk):
            dy = u // k
            dx = u % k
            kr = kx[u]
            gr = gkx[u]
            if stride == 1:
                vs = vp[dy * wp + dx : dy * wp + dx + n]
                gs = gvp[dy * wp + dx : dy * wp + dx + n]
                for i in range(n):
                    gs[i] += kr[i] * gx[i]
                    gr[i] += gx[i] * vs[i]
            else:
                for y in range(ho):
                    r0 = (y * stride + dy) * wp + dx
                    vs = vp[r0 : r0 + (wo - 1) * stride + 1 : stride]
                    gs = gvp[r0 : r0 + (wo - 1) * stride + 1 : stride]
                    krr = kr[y * wo : (y + 1) * wo]
                    grr = gr[y * wo : (y + 1) * wo]
                    gxr = gx[y * wo : (y + 1) * wo]
                    for x in range(wo):
                        gs[x] += krr[x] * gxr[x]
                        grr[x] += gxr[x] * vs[x]
        for y in range(h):
            gvf[vb + y * w : vb + (y + 1) * w] = gvp[(y + p) * wp + p : (y + p) * wp + p + w]
    for u in range(kk):
        kb = (((b * ns + j) * kk + index[a, u]) * na + a) * oplane
        for y in range(ho):
            gkf[kb + y * wo : kb + (y + 1) * wo] = gkx[u, y * rw : y * rw + wo]
        gbias[t, index[a, u]] = gkx[u].sum()  # the extra (wide-row) columns of gkx are 0


# ---- torch.library custom ops: visible to torch.compile / torch.export (fake tensors), differentiable ----------------
# The op bodies run the compiled kernels on real CPU tensors; the fake implementations give only the output's shape and
# dtype, so tracing never calls ``.numpy()``. An exported graph holds ``torch.ops.e4net.numba_aggregate`` (importing
# e4net.backends.numba_agg registers it).


@torch.library.custom_op("e4net::numba_aggregate", mutates_args=(), device_types="cpu")
def numba_aggregate(
    v: torch.Tensor, kernel: torch.Tensor, kernel_bias: torch.Tensor, index: torch.Tensor, stride: int
) -> torch.Tensor:
    """The fused aggregation ``(B, C, |A|, H, W), (B, s, k*k, |A|, H', W'), (s, k*k), (|A|, k*k) -> (B, C, |A|, H', W')``
    with the kernel bias added to every generated kernel while it is loaded into cache."""
    v, kernel, kbias = v.contiguous(), kernel.contiguous(), kernel_bias.contiguous()
    k = kernel_side(kernel.shape[2])
    b, c, n, h, w = v.shape
    out = _memory.empty((b, c, n, output_size(h, k, stride), output_size(w, k, stride)), v.dtype)
    args = (v.numpy(), kernel.numpy(), kbias.numpy(), index_array(index))
    if _stored.applies(stride, c, kernel.shape[1], k):  # the slice's channels in registers
        _stored.kernels(c // kernel.shape[1], k).forward(*args, out.numpy(), follow_torch())
    else:
        _forward(*args, k, stride, out.numpy(), follow_torch())
    return out


@numba_aggregate.register_fake
def _(
    v: torch.Tensor, kernel: torch.Tensor, kernel_bias: torch.Tensor, index: torch.Tensor, stride: int
) -> torch.Tensor:
    k = kernel_side(kernel.shape[2])
    b, c, n, h, w = v.shape
    return v.new_empty((b, c, n, output_size(h, k, stride), output_size(w, k, stride)))


@torch.library.custom_op("e4net::numba_aggregate_backward", mutates_args=(), device_types="cpu")
def numba_aggregate_backward(
    grad_out: torch.Tensor, v: torch.Tensor, kernel: torch.Tensor, kernel_bias: torch.Tensor, index: torch.Tensor,
    stride: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    """Gradients of :func:`numba_aggregate` with respect to ``v``, ``kernel`` and ``kernel_bias``, in one pass."""
    v, kernel, kbias, go = v.contiguous(), kernel.contiguous(), kernel_bias.contiguous(), grad_out.contiguous()
    gv = _memory.empty_like(v)
    gk = _memory.empty_like(kernel)
    nb, ns, kk, na = kernel.shape[:4]
    gb = torch.empty((nb * ns * na, kk), dtype=v.dtype)  # per (batch, slice, group element) partial sums
    args, k = (v.numpy(), kernel.numpy(), kbias.numpy(), index_array(index)), kernel_side(kk)
    grads = (go.numpy(), gv.numpy(), gk.numpy(), gb.numpy(), follow_torch())
    if _stored.applies(stride, v.shape[1], ns, k):
        _stored.kernels(v.shape[1] // ns, k).backward(*args, *grads)
    else:
        _backward(*args, k, stride, *grads)
    return gv, gk, gb.view(nb, ns, na, kk).sum((0, 2))


@numba_aggregate_backward.register_fake
def _(grad_out, v, kernel, kernel_bias, index, stride):  # noqa: ANN001, ANN202 - the op's signature
    return torch.empty_like(v), torch.empty_like(kernel), torch.empty_like(kernel_bias)


register_backward(numba_aggregate, numba_aggregate_backward)


def aggregate_numba(
    v: torch.Tensor,
    kernel: torch.Tensor,
    index: torch.Tensor,
    stride: int = 1,
    kernel_bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """The fused CPU aggregation (float32 / float64 CPU tensors of one dtype), the kernel bias fused when given.

    Runs the custom op ``torch.ops.e4net.numba_aggregate`` (differentiable once; traceable by ``torch.export`` and
    ``torch.compile``). Memory: the output (forward) and the gradients (backward), nothing else.
    """
    if kernel_bias is None:
        kernel_bias = v.new_zeros(kernel.shape[1], kernel.shape[2])
    return numba_aggregate(v, kernel, kernel_bias, index, stride)


@torch.library.custom_op("e4net::numba_aggregate_generated", mutates_args=(), device_types="cpu")
def numba_aggregate_generated(
    v: torch.Tensor, hidden: torch.Tensor, weight: torch.Tensor, kernel_bias: torch.Tensor, index: torch.Tensor,
    stride: int,
) -> torch.Tensor:  # fmt: skip
    """The fused aggregation with the kernels ``weight @ hidden + kernel_bias`` generated inside it (inference: no
    autograd). ``hidden (B, Ch, |A|, H', W')``, ``weight (s*k*k, Ch)``, ``kernel_bias (s, k*k)``."""
    v, hidden, weight, kbias = v.contiguous(), hidden.contiguous(), weight.contiguous(), kernel_bias.contiguous()
    k = kernel_side(kbias.shape[1])
    b, c, n, h, w = v.shape
    out = _memory.empty((b, c, n, output_size(h, k, stride), output_size(w, k, stride)), v.dtype)
    _forward_generated(
        v.numpy(), hidden.numpy(), weight.numpy(), kbias.numpy(), index_array(index), k, stride, out.numpy(),
        follow_torch(),
    )  # fmt: skip
    return out


@numba_aggregate_generated.register_fake
def _(v, hidden, weight, kernel_bias, index, stride):  # noqa: ANN001, ANN202 - the op's signature
    k = kernel_side(kernel_bias.shape[1])
    b, c, n, h, w = v.shape
    return v.new_empty((b, c, n, output_size(h, k, stride), output_size(w, k, stride)))


# ---- inference, stride 1, register tile small enough: the blocked kernels of _numba_blocked ------------------------
# A pixel grid runs as a volume of depth 1 whose k x k neighbourhood is the middle slab of the k x k x k one
# (_numba_blocked, dims=2): the 6-D views below cost nothing. Not used in training: there E4-Net's stored kernels
# (W2 by oneDNN / bmm, then the aggregation) measured faster than regenerating them in the backward pass (28x28,
# k = 5, 16 hidden features: 65 ms against 107 ms for the aggregation's backward in one train step).


@torch.library.custom_op("e4net::numba_aggregate_generated_blocked", mutates_args=(), device_types="cpu")
def numba_aggregate_generated_blocked(
    v: torch.Tensor, hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, index: torch.Tensor
) -> torch.Tensor:
    """The fused aggregation (stride 1) of the kernels ``weight @ hidden + bias`` generated in registers, for
    inference (not differentiable): ``hidden (B, Ch, |A|, H, W)``, ``weight (s*k*k, Ch)``, ``bias (s*k*k,)``
    (:mod:`e4net.backends._numba_blocked`)."""
    v, hidden, weight, bias = v.contiguous(), hidden.contiguous(), weight.contiguous(), bias.contiguous()
    out = _memory.empty(v.shape, v.dtype)
    kernels = _blocked.kernels(*_blocked.sizes(v, hidden, weight, index), dims=2)
    vol = v.shape[3] * v.shape[4]
    kernels.forward(
        v.view(-1).numpy(), v.shape[1] * v.shape[2] * vol, vol, hidden.unsqueeze(3).numpy(), weight.numpy(),
        bias.numpy(), index_array(index), out.unsqueeze(3).numpy(), follow_torch(),
    )  # fmt: skip
    return out


@numba_aggregate_generated_blocked.register_fake
def _(v, hidden, weight, bias, index):  # noqa: ANN001, ANN202 - the op's signature
    return torch.empty_like(v)


def aggregate_numba_generated(
    v: torch.Tensor,
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    index: torch.Tensor,
    stride: int = 1,
) -> torch.Tensor:
    """:func:`aggregate_numba` of the kernels ``weight @ hidden (+ bias)`` (``bias``: ``(s*k*k,)``), generated inside
    the kernel (inference only: the result is not differentiable). At stride 1, where the register tile fits, the
    blocked kernels of :mod:`e4net.backends._numba_blocked` (custom op ``e4net::numba_aggregate_generated_blocked``),
    else ``e4net::numba_aggregate_generated``."""
    s, kk = weight.shape[0] // index.shape[1], index.shape[1]
    if _blocked.applies(stride, *_blocked.sizes(v, hidden, weight, index)):
        return numba_aggregate_generated_blocked(
            v, hidden, weight, v.new_zeros(s * kk) if bias is None else bias, index
        )
    kernel_bias = v.new_zeros(s, kk) if bias is None else bias.reshape(s, kk)
    return numba_aggregate_generated(v, hidden, weight, kernel_bias, index, stride)
