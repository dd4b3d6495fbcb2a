"""Fused CPU E4 aggregation on voxel grids (groups O, Oh): numba-compiled forward and backward, as custom ops.

Computes the formula of :mod:`e4net.backends` over a k x k x k neighbourhood (last step of Eq. 12 in 3-D),

    out[b, c, a, z, y, x] = sum_u  (kernel[b, c % s, index[a, u], a, z, y, x] + bias[c % s, index[a, u]])
                                   * v_pad[b, c, a, s z + u_d, s y + u_h, s x + u_w],

without the k^3-fold neighbourhood copy and without a transformed copy of the kernels (the relative-position table
``index`` picks the plane each offset reads). The work is split over ``(batch, slice j, group element a)``: the
``k^3`` generated kernel volumes of one split are loaded once (with the bias) and reused by the ``C / s`` channels
of its slice; the backward pass writes ``grad_v`` and ``grad_kernel`` of one split without atomics.

Stride 1 uses the "wide" layout of the 2-D kernel in three dimensions: every volume is stored with the padded row
pitch ``W + 2p`` and slab pitch ``(H + 2p)(W + 2p)``, so each offset ``u`` is one constant shift of a flat array and
the inner loop runs over the whole volume (long SIMD loops); the padding columns and rows are scratch, never written
back. Stride > 1 loops over the output voxels.

Declared (in :mod:`e4net.backends.builtin`, ``NUMBA.load_3d``) for float32 / float64 CPU tensors of one dtype; the
dispatcher sends it nothing else. Compiled on first use per dtype (``cache=True``).

Both aggregations run as ``torch.library`` custom ops with fake implementations and registered autograd, like the
2-D ops of :mod:`e4net.backends.numba_agg`: ``torch.export`` and ``torch.compile`` trace them as one node each
(``torch.ops.e4net.numba_aggregate_3d``, ``torch.ops.e4net.numba_aggregate_generated_3d``; importing this module
registers them) instead of failing on ``.numpy()`` of a fake tensor.
"""

from __future__ import annotations

import numpy as np
import torch
from numba import njit, prange

from .._numba import empty_stored, follow_torch
from . import _numba_blocked as _blocked
from ._custom_ops import index_array, register_backward
from ._geometry import kernel_side
from ._numba_voxels import from_volume as _from_volume
from ._numba_voxels import load_hidden as _load_hidden
from ._numba_voxels import load_padded as _load_padded
from ._numba_voxels import to_volume as _to_volume

__all__ = ["aggregate_numba_3d", "aggregate_generated_numba_3d"]


@njit(cache=True, fastmath=True)
def _load_kernels(kf, kbias, index, b, j, a, na, grid, rs, rw, kx):  # pragma: no cover - compiled
    """Rows ``u`` of ``kx``: kernel volume ``index[a, u]`` of (batch b, slice j, slot a) plus its bias, laid out with
    slab pitch ``rs`` and row pitch ``rw``."""
    kk = kx.shape[0]
    ns = kbias.shape[0]
    do, ho, wo = grid[0], grid[1], grid[2]
    ovol = do * ho * wo
    for u in range(kk):
        q = index[a, u]
        kb = (((b * ns + j) * kk + q) * na + a) * ovol
        kbu = kbias[j, q]
        row = kx[u]
        for z in range(do):
            for y in range(ho):
                src = kf[kb + (z * ho + y) * wo : kb + (z * ho + y + 1) * wo]
                dst = row[z * rs + y * rw : z * rs + y * rw + wo]
                for x in range(wo):
                    dst[x] = src[x] + kbu


@njit(parallel=True, cache=True, fastmath=True)
def _forward(v, ker, kbias, index, k, stride, out):  # pragma: no cover - compiled
    nb, nc, na, d, h, w = v.shape
    ns, kk = ker.shape[1], ker.shape[2]
    do, ho, wo = out.shape[3], out.shape[4], out.shape[5]
    grid = np.array([do, ho, wo])
    p = k // 2
    hp, wp = h + 2 * p, w + 2 * p
    wide = stride == 1
    rw = wp if wide else wo
    rs = hp * wp if wide else ho * wo
    n = do * rs
    vol, ovol = d * h * w, do * ho * wo
    vf, kf, of = v.reshape(-1), ker.reshape(-1), out.reshape(-1)
    for t in prange(nb * ns * na):
        b = t // (ns * na)
        j = (t // na) % ns
        a = t % na
        vp = np.zeros((d + 2 * p) * hp * wp + 2 * p * wp + 2 * p + 1, dtype=v.dtype)
        kx = np.zeros((kk, n), dtype=v.dtype)
        acc = np.empty(n, dtype=v.dtype)
        _load_kernels(kf, kbias, index, b, j, a, na, grid, rs, rw, kx)
        for c in range(j, nc, ns):
            vb = ((b * nc + c) * na + a) * vol
            _load_padded(vf, vb, d, h, w, p, vp)
            acc[:] = 0
            for u in range(kk):
                dz = u // (k * k)
                dy = (u // k) % k
                dx = u % k
                ku = kx[u]
                if wide:
                    sh = (dz * hp + dy) * wp + dx
                    vs = vp[sh : sh + n]
                    for i in range(n):
                        acc[i] += ku[i] * vs[i]
                else:
                    for z in range(do):
                        for y in range(ho):
                            src = ((z * stride + dz) * hp + y * stride + dy) * wp + dx
                            o = z * rs + y * rw
                            for x in range(wo):
                                acc[o + x] += ku[o + x] * vp[src + x * stride]
            _to_volume(acc, 0, rs, rw, of, ((b * nc + c) * na + a) * ovol, do, ho, wo)


@njit(parallel=True, cache=True, fastmath=True)
def _backward(v, ker, kbias, index, k, stride, gout, gv, gk):  # pragma: no cover - compiled
    nb, nc, na, d, h, w = v.shape
    ns, kk = ker.shape[1], ker.shape[2]
    do, ho, wo = gout.shape[3], gout.shape[4], gout.shape[5]
    grid = np.array([do, ho, wo])
    p = k // 2
    hp, wp = h + 2 * p, w + 2 * p
    wide = stride == 1
    rw = wp if wide else wo
    rs = hp * wp if wide else ho * wo
    n = do * rs
    vol, ovol = d * h * w, do * ho * wo
    padded = (d + 2 * p) * hp * wp + 2 * p * wp + 2 * p + 1
    vf, kf, gof, gvf, gkf = v.reshape(-1), ker.reshape(-1), gout.reshape(-1), gv.reshape(-1), gk.reshape(-1)
    for t in prange(nb * ns * na):
        b = t // (ns * na)
        j = (t // na) % ns
        a = t % na
        vp = np.zeros(padded, dtype=v.dtype)
        gvp = np.zeros(padded, dtype=v.dtype)
        kx = np.zeros((kk, n), dtype=v.dtype)
        gkx = np.zeros((kk, n), dtype=v.dtype)
        g = np.zeros(n, dtype=v.dtype)  # grad_out of one channel in the accumulator layout (scratch stays 0)
        _load_kernels(kf, kbias, index, b, j, a, na, grid, rs, rw, kx)
        for c in range(j, nc, ns):
            vb = ((b * nc + c) * na + a) * vol
            ob = ((b * nc + c) * na + a) * ovol
            _load_padded(vf, vb, d, h, w, p, vp)
            _from_volume(gof, ob, do, ho, wo, g, 0, rs, rw)
            gvp[:] = 0
            for u in range(kk):
                dz = u // (k * k)
                dy = (u // k) % k
                dx = u % k
                ku, gku = kx[u], gkx[u]
                if wide:
                    sh = (dz * hp + dy) * wp + dx
                    vs = vp[sh : sh + n]
                    gs = gvp[sh : sh + n]
                    for i in range(n):  # two loops: each vectorises (no possible aliasing between the outputs)
                        gku[i] += g[i] * vs[i]
                    for i in range(n):
                        gs[i] += ku[i] * g[i]
                else:
                    for z in range(do):
                        for y in range(ho):
                            src = ((z * stride + dz) * hp + y * stride + dy) * wp + dx
                            o = z * rs + y * rw
                            for x in range(wo):
                                gku[o + x] += g[o + x] * vp[src + x * stride]
                                gvp[src + x * stride] += ku[o + x] * g[o + x]
            _to_volume(gvp, (p * hp + p) * wp + p, hp * wp, wp, gvf, vb, d, h, w)
        for u in range(kk):
            kb = (((b * ns + j) * kk + index[a, u]) * na + a) * ovol
            _to_volume(gkx[u], 0, rs, rw, gkf, kb, do, ho, wo)


# ---- torch.library custom ops: visible to torch.export / torch.compile (fake tensors), differentiable -------------
# The op bodies run the compiled kernels on real CPU tensors; the fake implementations give only the output's shape and
# dtype, so tracing never calls ``.numpy()`` (the 2-D ops of numba_agg do the same).


@torch.library.custom_op("e4net::numba_aggregate_3d", mutates_args=(), device_types="cpu")
def numba_aggregate_3d(
    v: torch.Tensor, kernel: torch.Tensor, kernel_bias: torch.Tensor, index: torch.Tensor, stride: int
) -> torch.Tensor:
    """``v (B, C, |A|, D, H, W)``, ``kernel (B, s, k^3, |A|, D', H', W')``, ``kernel_bias (s, k^3)``, ``index (|A|,
    k^3)`` -> ``(B, C, |A|, D', H', W')``, the bias added to every generated kernel while it is loaded."""
    v, kernel, kbias = v.contiguous(), kernel.contiguous(), kernel_bias.contiguous()
    out = torch.empty(*v.shape[:3], *kernel.shape[4:], dtype=v.dtype)
    k = kernel_side(kernel.shape[2], 3)
    follow_torch()
    _forward(v.numpy(), kernel.numpy(), kbias.numpy(), index_array(index), k, stride, out.numpy())
    return out


@numba_aggregate_3d.register_fake
def _(v, kernel, kernel_bias, index, stride):  # noqa: ANN001, ANN202 - the op's signature
    return v.new_empty((*v.shape[:3], *kernel.shape[4:]))


@torch.library.custom_op("e4net::numba_aggregate_3d_backward", mutates_args=(), device_types="cpu")
def numba_aggregate_3d_backward(
    grad_out: torch.Tensor, v: torch.Tensor, kernel: torch.Tensor, kernel_bias: torch.Tensor, index: torch.Tensor,
    stride: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    """Gradients of :func:`numba_aggregate_3d` with respect to ``v``, ``kernel`` and ``kernel_bias``."""
    v, kernel, kbias, go = v.contiguous(), kernel.contiguous(), kernel_bias.contiguous(), grad_out.contiguous()
    gv, gk = torch.empty_like(v), torch.empty_like(kernel)
    k = kernel_side(kernel.shape[2], 3)
    follow_torch()
    _backward(
        v.numpy(), kernel.numpy(), kbias.numpy(), index_array(index), k, stride, go.numpy(), gv.numpy(), gk.numpy()
    )
    # the bias is added to every generated kernel volume: its gradient is grad_kernel summed over the rest
    return gv, gk, gk.sum((0, 3, 4, 5, 6))


@numba_aggregate_3d_backward.register_fake
def _(grad_out, v, kernel, kernel_bias, index, stride):  # noqa: ANN001, ANN202 - the op's signature
    return torch.empty_like(v), torch.empty_like(kernel), torch.empty_like(kernel_bias)


register_backward(numba_aggregate_3d, numba_aggregate_3d_backward)


def aggregate_numba_3d(
    v: torch.Tensor,
    kernel: torch.Tensor,
    index: torch.Tensor,
    stride: int = 1,
    kernel_bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """The fused 3-D aggregation: ``v (B, C, |A|, D, H, W)``, ``kernel (B, s, k^3, |A|, D', H', W')``, ``index
    (|A|, k^3)``, optional ``kernel_bias (s, k^3)``; differentiable in ``v``, ``kernel`` and ``kernel_bias``.
    Runs the custom op ``torch.ops.e4net.numba_aggregate_3d``."""
    if kernel_bias is None:
        kernel_bias = v.new_zeros(kernel.shape[1], kernel.shape[2])
    return numba_aggregate_3d(v, kernel, kernel_bias, index, stride)


# ---- the kernel generator's last linear map fused in (no k^3-fold kernel tensor) ------------------------------------
#
# E4's generator ends with W2 (s k^3 x C_h) applied to the hidden features h (Sec. 4.1): K = W2 h + b2. In 3-D the
# kernel tensor has s k^3 = 54 values per voxel and group element (k = 3, s = 2), 6.75x the 8 fields of v, and
# writing, reading and differentiating it dominates the layer. Here each split (b, j, a) computes its k^3 kernel
# volumes from h in cache, and the backward pass turns grad_kernel into grad_h, grad_W2 and grad_b2 in cache too.


CHUNK = 512  # accumulator entries per tile: the k^3 generated kernel rows of a tile stay in L1/L2


@njit(cache=True, fastmath=True)
def _generate(w2, b2, index, j, a, kk, hx, i0, i1, kx):  # pragma: no cover - compiled
    """``kx[u, :i1-i0] = b2[o] + sum_q W2[o, q] hx[q, i0:i1]`` with ``o = j k^3 + index[a, u]`` (the transform by
    ``a``): the kernels of one tile."""
    nh = hx.shape[0]
    m = i1 - i0
    for u in range(kk):
        bo = b2[j * kk + index[a, u]]
        row = kx[u, 0:m]
        for i in range(m):
            row[i] = bo
    for q in range(nh):  # q outer: each hidden row is read once per tile (measured 1.5x faster than u outer)
        hq = hx[q, i0:i1]
        for u in range(kk):
            wq = w2[j * kk + index[a, u], q]
            row = kx[u, 0:m]
            for i in range(m):
                row[i] += wq * hq[i]


@njit(parallel=True, cache=True, fastmath=True)
def _forward_generated(v, hid, w2, b2, index, k, stride, out):  # pragma: no cover - compiled
    """Split over (b, j, a); each split loads its ``C / s`` value volumes, then walks the accumulator in tiles of
    :data:`CHUNK`: generate the tile's k^3 kernel rows, accumulate every channel of the slice with them."""
    nb, nc, na, d, h, w = v.shape
    nh = hid.shape[1]
    kk = index.shape[1]
    ns = w2.shape[0] // kk
    cs = nc // ns
    do, ho, wo = out.shape[3], out.shape[4], out.shape[5]
    grid = np.array([do, ho, wo])
    p = k // 2
    hp, wp = h + 2 * p, w + 2 * p
    wide = stride == 1
    rw = wp if wide else wo
    rs = hp * wp if wide else ho * wo
    n = do * rs
    vol, ovol = d * h * w, do * ho * wo
    padded = (d + 2 * p) * hp * wp + 2 * p * wp + 2 * p + 1
    vf, hf, of = v.reshape(-1), hid.reshape(-1), out.reshape(-1)
    for t in prange(nb * ns * na):
        b = t // (ns * na)
        j = (t // na) % ns
        a = t % na
        vps = np.zeros((cs, padded), dtype=v.dtype)
        hx = np.zeros((nh, n), dtype=v.dtype)
        kx = np.empty((kk, CHUNK), dtype=v.dtype)
        acc = np.zeros((cs, n), dtype=v.dtype)
        _load_hidden(hf, b, a, na, nh, grid, rs, rw, hx)
        for ci in range(cs):
            _load_padded(vf, ((b * nc + j + ci * ns) * na + a) * vol, d, h, w, p, vps[ci])
        if wide:
            for i0 in range(0, n, CHUNK):
                i1 = min(i0 + CHUNK, n)
                m = i1 - i0
                _generate(w2, b2, index, j, a, kk, hx, i0, i1, kx)
                for ci in range(cs):
                    ac = acc[ci, i0:i1]
                    for u in range(kk):
                        sh = ((u // (k * k)) * hp + (u // k) % k) * wp + u % k + i0
                        vs = vps[ci, sh : sh + m]
                        ku = kx[u, 0:m]
                        for i in range(m):
                            ac[i] += ku[i] * vs[i]
        else:
            for i0 in range(0, n, CHUNK):
                i1 = min(i0 + CHUNK, n)
                _generate(w2, b2, index, j, a, kk, hx, i0, i1, kx)
                for ci in range(cs):
                    for u in range(kk):
                        dz = u // (k * k)
                        dy = (u // k) % k
                        dx = u % k
                        for i in range(i0, i1):
                            z = i // rs
                            y = (i // rw) % ho
                            x = i % rw
                            src = ((z * stride + dz) * hp + y * stride + dy) * wp + dx + x * stride
                            acc[ci, i] += kx[u, i - i0] * vps[ci, src]
        for ci in range(cs):
            _to_volume(acc[ci], 0, rs, rw, of, ((b * nc + j + ci * ns) * na + a) * ovol, do, ho, wo)


@njit(parallel=True, cache=True, fastmath=True)
def _backward_generated(v, hid, w2, b2, index, k, stride, gout, gv, gh, gw, gb):  # pragma: no cover - compiled
    """Split over (b, a); the slices j run inside, so ``gh[b, :, a]`` has one writer. ``gw`` / ``gb`` are per-split
    partial sums ``(nb na, s k^3, C_h)`` / ``(nb na, s k^3)``, reduced by the caller. Tiles as the forward pass:
    per tile, the kernels are generated, their gradient accumulated over the slice's channels (and grad_v with
    them), then turned into grad_b2, grad_W2 and grad_h while still in cache."""
    nb, nc, na, d, h, w = v.shape
    nh = hid.shape[1]
    kk = index.shape[1]
    ns = w2.shape[0] // kk
    cs = nc // ns
    do, ho, wo = gout.shape[3], gout.shape[4], gout.shape[5]
    grid = np.array([do, ho, wo])
    p = k // 2
    hp, wp = h + 2 * p, w + 2 * p
    wide = stride == 1
    rw = wp if wide else wo
    rs = hp * wp if wide else ho * wo
    n = do * rs
    vol, ovol = d * h * w, do * ho * wo
    padded = (d + 2 * p) * hp * wp + 2 * p * wp + 2 * p + 1
    vf, hf, gof, gvf, ghf = v.reshape(-1), hid.reshape(-1), gout.reshape(-1), gv.reshape(-1), gh.reshape(-1)
    for t in prange(nb * na):
        b = t // na
        a = t % na
        vps = np.zeros((cs, padded), dtype=v.dtype)
        gvps = np.zeros((cs, padded), dtype=v.dtype)
        hx = np.zeros((nh, n), dtype=v.dtype)
        ghx = np.zeros((nh, n), dtype=v.dtype)
        gx = np.zeros((cs, n), dtype=v.dtype)  # grad_out of the slice's channels, accumulator layout (scratch 0)
        kx = np.empty((kk, CHUNK), dtype=v.dtype)
        gkx = np.empty((kk, CHUNK), dtype=v.dtype)
        _load_hidden(hf, b, a, na, nh, grid, rs, rw, hx)
        for j in range(ns):
            for ci in range(cs):
                c = j + ci * ns
                _load_padded(vf, ((b * nc + c) * na + a) * vol, d, h, w, p, vps[ci])
                _from_volume(gof, ((b * nc + c) * na + a) * ovol, do, ho, wo, gx[ci], 0, rs, rw)
            gvps[:] = 0
            for i0 in range(0, n, CHUNK):
                i1 = min(i0 + CHUNK, n)
                m = i1 - i0
                _generate(w2, b2, index, j, a, kk, hx, i0, i1, kx)
                gkx[:] = 0
                for ci in range(cs):
                    gs = gx[ci, i0:i1]
                    for u in range(kk):
                        ku, gku = kx[u, 0:m], gkx[u, 0:m]
                        if wide:
                            sh = ((u // (k * k)) * hp + (u // k) % k) * wp + u % k + i0
                            vs = vps[ci, sh : sh + m]
                            gvs = gvps[ci, sh : sh + m]
                            for i in range(m):
                                gku[i] += gs[i] * vs[i]
                            for i in range(m):
                                gvs[i] += ku[i] * gs[i]
                        else:
                            dz = u // (k * k)
                            dy = (u // k) % k
                            dx = u % k
                            for i in range(m):
                                z = (i + i0) // rs
                                y = ((i + i0) // rw) % ho
                                x = (i + i0) % rw
                                src = ((z * stride + dz) * hp + y * stride + dy) * wp + dx + x * stride
                                gku[i] += gs[i] * vps[ci, src]
                                gvps[ci, src] += ku[i] * gs[i]
                for u in range(kk):
                    o = j * kk + index[a, u]
                    row = gkx[u, 0:m]
                    sb = 0.0
                    for i in range(m):
                        sb += row[i]
                    gb[t, o] += sb
                    for q in range(nh):
                        hq = hx[q, i0:i1]
                        sw = 0.0
                        for i in range(m):
                            sw += row[i] * hq[i]
                        gw[t, o, q] += sw
                        wq = w2[o, q]
                        ghq = ghx[q, i0:i1]
                        for i in range(m):
                            ghq[i] += wq * row[i]
            for ci in range(cs):
                vb = ((b * nc + j + ci * ns) * na + a) * vol
                _to_volume(gvps[ci], (p * hp + p) * wp + p, hp * wp, wp, gvf, vb, d, h, w)
        for q in range(nh):
            _to_volume(ghx[q], 0, rs, rw, ghf, ((b * nh + q) * na + a) * ovol, do, ho, wo)


@torch.library.custom_op("e4net::numba_aggregate_generated_3d", mutates_args=(), device_types="cpu")
def numba_aggregate_generated_3d(
    v: torch.Tensor, hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, index: torch.Tensor, stride: int
) -> torch.Tensor:
    """The 3-D aggregation of the kernels ``weight · hidden + bias`` generated in cache: ``hidden (B, C_h, |A|, D',
    H', W')``, ``weight (s k^3, C_h)``, ``bias (s k^3,)`` -> ``(B, C, |A|, D', H', W')``."""
    hidden, weight, b2 = hidden.contiguous(), weight.contiguous(), bias.contiguous()
    out = torch.empty(*v.shape[:3], *hidden.shape[3:], dtype=v.dtype)
    nh, cs, k = _blocked.sizes(v, hidden, weight, index)
    args = (hidden.numpy(), weight.numpy(), b2.numpy(), index_array(index))
    if _blocked.applies(stride, nh, cs, k):  # v read in place, also in the layout of E4's shared 1x1 maps
        vf, vb, vs, _ = _blocked.value_layout(v)
        _blocked.kernels(nh, cs, k).forward(vf.numpy(), vb, vs, *args, out.numpy(), follow_torch())
    else:
        follow_torch()
        _forward_generated(v.contiguous().numpy(), *args, k, stride, out.numpy())
    return out


@numba_aggregate_generated_3d.register_fake
def _(v, hidden, weight, bias, index, stride):  # noqa: ANN001, ANN202 - the op's signature
    return v.new_empty((*v.shape[:3], *hidden.shape[3:]))


@torch.library.custom_op("e4net::numba_aggregate_generated_3d_backward", mutates_args=(), device_types="cpu")
def numba_aggregate_generated_3d_backward(
    grad_out: torch.Tensor, v: torch.Tensor, hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
    index: torch.Tensor, stride: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    """Gradients of :func:`numba_aggregate_generated_3d` with respect to ``v``, ``hidden``, ``weight`` and ``bias``
    (per split ``(b, a)`` partial sums for ``weight`` and ``bias``, added here)."""
    hidden, weight, b2, go = (t.contiguous() for t in (hidden, weight, bias, grad_out))
    splits = v.shape[0] * v.shape[2]
    gh = torch.empty_like(hidden)
    gw = torch.zeros(splits, *weight.shape, dtype=v.dtype)
    gb = torch.zeros(splits, weight.shape[0], dtype=v.dtype)
    nh, cs, k = _blocked.sizes(v, hidden, weight, index)
    args = (hidden.numpy(), weight.numpy(), b2.numpy(), index_array(index))
    if _blocked.applies(stride, nh, cs, k):  # grad_v in v's layout (_blocked.value_layout)
        vf, vb, vs, order = _blocked.value_layout(v)
        gv, gvf = empty_stored(v.shape, order, v.dtype)
        grads = (go.numpy(), gvf.numpy(), gh.numpy(), gw.numpy(), gb.numpy())
        _blocked.kernels(nh, cs, k).backward(vf.numpy(), vb, vs, *args, *grads, follow_torch())
    else:
        v = v.contiguous()
        gv = torch.empty_like(v)
        follow_torch()
        _backward_generated(v.numpy(), *args, k, stride, go.numpy(), gv.numpy(), gh.numpy(), gw.numpy(), gb.numpy())
    return gv, gh, gw.sum(0), gb.sum(0)


@numba_aggregate_generated_3d_backward.register_fake
def _(grad_out, v, hidden, weight, bias, index, stride):  # noqa: ANN001, ANN202 - the op's signature
    return torch.empty_like(v), torch.empty_like(hidden), torch.empty_like(weight), torch.empty_like(bias)


register_backward(numba_aggregate_generated_3d, numba_aggregate_generated_3d_backward)


def aggregate_generated_numba_3d(
    v: torch.Tensor,
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    index: torch.Tensor,
    stride: int = 1,
) -> torch.Tensor:
    """The 3-D aggregation with kernels ``K = weight · hidden + bias`` generated in cache (never stored):
    ``hidden (B, C_h, |A|, D', H', W')`` on the output grid, ``weight (s k^3, C_h)``, ``bias (s k^3,)`` or None;
    differentiable in ``v``, ``hidden``, ``weight`` and ``bias``. Same result as :func:`aggregate_numba_3d` on
    those kernels (:func:`e4net.backends.aggregate_generated`). Runs the custom op
    ``torch.ops.e4net.numba_aggregate_generated_3d``."""
    if bias is None:
        bias = v.new_zeros(weight.shape[0])
    return numba_aggregate_generated_3d(v, hidden, weight, bias, index, stride)
