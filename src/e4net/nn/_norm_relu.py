"""``ReLU(norm(x))`` for the group norms in one pass over memory each way: numba kernels for float CPU tensors.

torch runs a batch norm followed by a ReLU as five passes over the feature map forward and backward (statistics,
normalise, ReLU; the ReLU's mask, the norm's two backward passes) and keeps two maps (the norm's input and the
ReLU's output) for the backward pass. Here, for statistics over ``(B, C, R)`` per field (batch norm: over ``B`` and
``R``; instance norm: over ``R`` per example):

* forward: one pass for the per-(example, field) sums (shifted by the row's first value, combined in float64 as
  Chan et al.'s parallel variance), one pass ``y = max(x * scale + shift, 0)``;
* backward: one pass for ``sum gz`` and ``sum gz (x - mean)`` with ``gz = g [x * scale + shift > 0]`` (the mask
  is recomputed from ``x``, so ``y`` is not kept), one pass ``gx = k1 gz + k2 x + k0`` (the closed-form norm
  gradient, per field or per example and field).

Measured (2 threads, float32, ``(32, 8, 24, 8, 8, 8)``, e4net3d's block): 4.2 ms -> 2.2 ms forward+backward. Results
equal torch's up to float rounding (the statistics are accumulated in float64). Used by
:func:`e4net.nn.norm.norm_relu` when :func:`applies`.
"""

from __future__ import annotations

import numpy as np
import torch

from .._numba import NUMBA, empty_stored, follow_torch, njit, prange, storage_order

_FAST = {"reassoc", "contract", "arcp"}  # vectorised sums; NaN / inf kept as IEEE (no "nnan" / "ninf")


def applies(x: torch.Tensor) -> bool:
    """numba installed, eager mode (traced graphs keep the plain ops), CPU, float32 / float64, at least one entry per
    field."""
    return (
        NUMBA
        and not torch.compiler.is_compiling()
        and x.device.type == "cpu"
        and x.dtype in (torch.float32, torch.float64)
        and x.dim() >= 3
        and x.numel() > 0
    )


# The kernels see x as rows (b, c), each made of ``na`` contiguous chunks of ``r`` entries at ``b sb + c sc + a sa``
# (:func:`_rows`): one chunk per row for a contiguous map, ``|A|`` chunks for a map stored as ``(C, |A|, B, ...)``.
# Outputs and incoming gradients are contiguous, chunk ``(b, c, a)`` at ``((b nc + c) na + a) r``.


@njit(parallel=True, fastmath=_FAST, cache=True)
def _sums(xf, nb, nc, na, r, sb, sc, sa, first, s1, s2):  # pragma: no cover - compiled
    """Per row ``(b, c)``: ``first`` = its first value, ``s1 = sum(x - first)``, ``s2 = sum((x - first)^2)``, in
    float64."""
    for t in prange(nb * nc):
        b, c = t // nc, t % nc
        s = np.float64(xf[b * sb + c * sc])
        a1 = 0.0
        a2 = 0.0
        for a in range(na):
            at = b * sb + c * sc + a * sa
            row = xf[at : at + r]
            for i in range(r):
                v = np.float64(row[i]) - s
                a1 += v
                a2 += v * v
        first[b, c] = s
        s1[b, c] = a1
        s2[b, c] = a2


@njit(parallel=True, fastmath=_FAST, cache=True)
def _affine_relu(xf, nb, nc, na, r, sb, sc, sa, scale, shift, yf):  # pragma: no cover - compiled
    """``y = max(x * scale + shift, 0)`` with ``scale``, ``shift`` per row ``(b, c)``; ``y`` contiguous."""
    for t in prange(nb * nc):
        b, c = t // nc, t % nc
        sc_, sh = scale[b, c], shift[b, c]
        for a in range(na):
            at = b * sb + c * sc + a * sa
            xr = xf[at : at + r]
            yr = yf[(t * na + a) * r : (t * na + a + 1) * r]
            for i in range(r):
                yr[i] = max(xr[i] * sc_ + sh, 0)


@njit(inline="always")
def _row_grad_sums(gf, gb_, gc, ga, xf, b, c, na, r, sb, sc, sa, sc_, sh, mu):  # pragma: no cover - compiled
    """``(sum gz, sum gz (x - mean))`` of row ``(b, c)``, ``gz = g`` where ``x * scale + shift > 0``."""
    zero = xf[0] * 0  # float64 (numba types float32 * int as float64): the sums run in float64; a float32 zero
    # (xf.dtype.type(0)) measured no faster (ninth session), and float64 keeps them exact for long rows
    a1 = zero
    a2 = zero
    for a in range(na):
        at = b * sb + c * sc + a * sa
        gat = b * gb_ + c * gc + a * ga
        xr, gr = xf[at : at + r], gf[gat : gat + r]
        for i in range(r):
            xv = xr[i]
            gz = gr[i] if xv * sc_ + sh > 0 else zero
            a1 += gz
            a2 += gz * (xv - mu)
    return a1, a2


@njit(inline="always")
def _row_grad_input(gf, gb_, gc, ga, xf, b, c, na, r, sb, sc, sa, sc_, sh, a1, a2, a0, gxf):  # pragma: no cover
    """``gx = k1 gz + k2 x + k0`` on row ``(b, c)``, ``gx`` in ``x``'s layout."""
    zero = xf[0] * 0
    for a in range(na):
        at = b * sb + c * sc + a * sa
        gat = b * gb_ + c * gc + a * ga
        xr, o, gr = xf[at : at + r], gxf[at : at + r], gf[gat : gat + r]
        for i in range(r):
            xv = xr[i]
            gz = gr[i] if xv * sc_ + sh > 0 else zero
            o[i] = a1 * gz + a2 * xv + a0


@njit(parallel=True, fastmath=_FAST, cache=True)
def _grad_sums(gf, gstr, xf, nb, nc, na, r, sb, sc, sa, scale, shift, mean, s1, s2):  # pragma: no cover - compiled
    """Per row: ``s1 = sum gz``, ``s2 = sum gz (x - mean)`` (``g`` at ``gstr`` = its ``(sb, sc, sa)``)."""
    for t in prange(nb * nc):
        b, c = t // nc, t % nc
        u1, u2 = _row_grad_sums(
            gf, gstr[0], gstr[1], gstr[2], xf, b, c, na, r, sb, sc, sa, scale[b, c], shift[b, c], mean[b, c]
        )
        s1[b, c] = u1
        s2[b, c] = u2


@njit(parallel=True, fastmath=_FAST, cache=True)
def _grad_input(gf, gstr, xf, nb, nc, na, r, sb, sc, sa, scale, shift, k1, k2, k0, gxf):  # pragma: no cover - compiled
    """``gx = k1 gz + k2 x + k0`` per row, ``gz`` as in :func:`_grad_sums`; ``gx`` in ``x``'s layout."""
    for t in prange(nb * nc):
        b, c = t // nc, t % nc
        _row_grad_input(
            gf, gstr[0], gstr[1], gstr[2], xf, b, c, na, r, sb, sc, sa, scale[b, c], shift[b, c], k1[b, c], k2[b, c],
            k0[b, c], gxf,
        )  # fmt: skip


@njit(parallel=True, fastmath=_FAST, cache=True)
def _grad_per_example(
    gf, gstr, xf, nb, nc, na, r, sb, sc, sa, scale, shift, mean, rstd, s1, s2, gxf
):  # pragma: no cover
    """Both passes of a per-example norm row by row (the row's second read comes from cache): the sums, then ``gx``
    with the statistics' gradient of that row alone."""
    n = na * r
    for t in prange(nb * nc):
        b, c = t // nc, t % nc
        sc_, sh, mu, rs = scale[b, c], shift[b, c], mean[b, c], rstd[b, c]
        u1, u2 = _row_grad_sums(gf, gstr[0], gstr[1], gstr[2], xf, b, c, na, r, sb, sc, sa, sc_, sh, mu)
        s1[b, c] = u1
        s2[b, c] = u2
        k2 = -np.float64(sc_) * rs * rs * u2 / n
        k0 = -np.float64(sc_) * u1 / n - k2 * mu
        one = xf[0] * 0 + 1
        _row_grad_input(
            gf, gstr[0], gstr[1], gstr[2], xf, b, c, na, r, sb, sc, sa, sc_, sh, sc_ * one, k2 * one, k0 * one, gxf
        )


def _rows(x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...], tuple[int, ...]]:
    """``x (B, C, ...)`` as the kernels read it: a flat buffer, ``(nb, nc, na, r, sb, sc, sa)`` and the order of its
    dims in memory (:func:`e4net._numba.storage_order`). A contiguous map is one chunk per row; a group map stored as
    ``(C, |A|, B, *grid)`` is read in place, ``|A|`` chunks per row; anything else is copied first."""
    order = storage_order(x)
    if order is None:
        x, order = x.contiguous(), tuple(range(x.dim()))
    b, c = x.shape[:2]
    if order[0] == 0:
        r = x[0, 0].numel()
        return x.reshape(-1), (b, c, 1, r, c * r, r, 0), order
    a, r = x.shape[2], x[0, 0, 0].numel()
    return x.permute(order).reshape(-1), (b, c, a, r, r, a * b * r, b * r), order


def _in_chunks(rows: tuple[int, ...], a: int) -> tuple[int, ...]:
    """A one-chunk row description of a group map as ``a`` chunks (to pair it with a map stored otherwise)."""
    nb, nc, na, r, sb, sc, _ = rows
    return rows if na == a else (nb, nc, a, r // a, sb, sc, r // a)


def moments(x: torch.Tensor, per_example: bool) -> tuple[np.ndarray, np.ndarray, int]:
    """Mean and biased variance (float64) of ``x (B, C, ...)`` per field ``(C,)`` or per example and field ``(B,
    C)``, and the number of entries each is taken over."""
    flat, (nb, nc, na, r, sb, sc, sa), _ = _rows(x.detach())
    first, s1, s2 = (np.empty((nb, nc)) for _ in range(3))
    follow_torch()
    _sums(flat.numpy(), nb, nc, na, r, sb, sc, sa, first, s1, s2)
    count = na * r
    row_mean = first + s1 / count
    row_m2 = np.maximum(s2 - s1 * s1 / count, 0.0)
    if per_example:
        return row_mean, row_m2 / count, count
    n = nb * count
    mean = row_mean.mean(0)
    m2 = row_m2.sum(0) + count * ((row_mean - mean) ** 2).sum(0)
    return mean, m2 / n, n


class _NormReLU(torch.autograd.Function):
    """``relu((x - mean) rstd weight + bias)`` with ``mean``, ``rstd`` per row ``(B, C)`` (float64 arrays, given).
    ``from_x``: the statistics are ``x``'s own (over all examples when ``per_example`` is False), so the backward
    pass differentiates through them; else they are constants (running statistics). The output is contiguous, the
    input's gradient in the input's layout (:func:`_rows`)."""

    @staticmethod
    def forward(ctx, x, weight, bias, mean, rstd, from_x, per_example):  # type: ignore[override]  # noqa: ANN001
        c = x.shape[1]
        flat, rows, order = _rows(x.detach())
        w = np.ones(c) if weight is None else weight.detach().double().numpy()
        beta = np.zeros(c) if bias is None else bias.detach().double().numpy()
        scale = w * rstd
        shift = beta - mean * scale
        dt = flat.numpy().dtype
        y = torch.empty(x.shape, dtype=x.dtype)
        follow_torch()
        _affine_relu(flat.numpy(), *rows, scale.astype(dt), shift.astype(dt), y.view(-1).numpy())
        ctx.save_for_backward(flat)
        ctx.layout = (rows, order, x.shape)
        ctx.stats = (mean, rstd, scale, shift, from_x, per_example, weight is not None, bias is not None)
        return y

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]  # noqa: ANN001
        (flat,) = ctx.saved_tensors
        rows, order, shape = ctx.layout
        mean, rstd, scale, shift, from_x, per_example, has_w, has_b = ctx.stats
        gflat, grows, _ = _rows(grad)  # read in place in either layout (E4's GEMM hands it back stored (C, |A|, B))
        if grows[2] != rows[2]:
            rows, grows = _in_chunks(rows, shape[2]), _in_chunks(grows, shape[2])
        nb, nc, na, r = rows[:4]
        g, gstr, xf = gflat.numpy(), np.array(grows[4:]), flat.numpy()
        dt = xf.dtype
        sc, sh = scale.astype(dt), shift.astype(dt)
        s1, s2 = np.empty((nb, nc)), np.empty((nb, nc))
        gx = None
        follow_torch()
        if ctx.needs_input_grad[0]:
            gx, gxf = empty_stored(shape, order, flat.dtype)  # x's layout
        if ctx.needs_input_grad[0] and per_example:  # (per-example statistics are always x's own)
            _grad_per_example(g, gstr, xf, *rows, sc, sh, mean.astype(dt), rstd, s1, s2, gxf.numpy())
        else:
            _grad_sums(g, gstr, xf, *rows, sc, sh, mean.astype(dt), s1, s2)
        if ctx.needs_input_grad[0] and not per_example:
            if from_x:
                n = nb * na * r
                k2 = np.broadcast_to(-scale * rstd * rstd * s2.sum(0) / n, (nb, nc))
                k0 = np.broadcast_to(-scale * s1.sum(0) / n, (nb, nc)) - k2 * mean
            else:
                k2 = k0 = np.zeros((nb, nc))
            k1 = np.broadcast_to(scale, (nb, nc))
            _grad_input(g, gstr, xf, *rows, sc, sh, k1.astype(dt), k2.astype(dt), k0.astype(dt), gxf.numpy())
        gw = torch.from_numpy((s2 * rstd).sum(0)).to(grad.dtype) if has_w else None
        gb = torch.from_numpy(s1.sum(0)).to(grad.dtype) if has_b else None
        return gx, gw, gb, None, None, None, None


def norm_relu(
    x: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    mean: np.ndarray,
    var: np.ndarray,
    eps: float,
    from_x: bool,
    per_example: bool,
) -> torch.Tensor:
    """``relu(weight (x - mean) / sqrt(var + eps) + bias)`` of ``x (B, C, ...)``, ``mean`` / ``var`` float64 per
    field ``(C,)`` or per example and field ``(B, C)`` (:func:`moments` when ``from_x``); differentiable in ``x``,
    ``weight`` and ``bias``."""
    b, c = x.shape[:2]
    mean = np.broadcast_to(mean, (b, c))
    rstd = np.broadcast_to(1.0 / np.sqrt(var + eps), (b, c))
    return _NormReLU.apply(x, weight, bias, mean, rstd, from_x, per_example)
