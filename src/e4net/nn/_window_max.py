"""Max pooling over non-overlapping k x k (x k) windows on the CPU: numba kernels, forward and backward.

torch's CPU max pooling runs slowly on this project's maps: measured (2 threads, float32, ``(32, 192, 8, 8, 8)``,
the pool of ``e4net3d`` / ``gcnn3d``, 12.6 MB), ``F.max_pool3d`` takes 5.6 ms forward and 6.6 ms forward+backward
(its scan of a window is one chain of dependent compare-and-branch steps). Here a 2 x 2 (x 2) window is reduced as
a tree of branch-free pairwise picks, the argmax is kept as an ``int32`` offset within the volume (torch keeps
``int64``), and the backward pass writes each input gradient once: 1.6 ms forward, 0.3 ms backward on that shape.
Other window sizes scan the window (branch-free, in order).

Same results as torch's CPU kernels, ties and NaNs included: a window's first maximum in ``(d, h, w)`` order gets
the gradient, and a NaN wins over any number (the window's last NaN). The tree gives the same pick as the scan: a
pair takes its later half when that is strictly greater or NaN, which is the scan's rule. Used by
:class:`~e4net.nn.SpatialMaxPool2d` / :class:`~e4net.nn.SpatialMaxPool3d` on float32 / float64 CPU tensors in eager
mode (:func:`applies`); traced graphs (``torch.compile``, ``torch.export``) keep ``F.max_pool*d``.
"""

from __future__ import annotations

import torch

from .._numba import NUMBA, follow_torch, njit, prange


def applies(x: torch.Tensor) -> bool:
    """Whether :func:`window_max` runs ``x``: numba installed, eager, CPU, float32 / float64 (the layers check the
    sizes)."""
    return (
        NUMBA
        and not torch.compiler.is_compiling()
        and x.device.type == "cpu"
        and x.dtype in (torch.float32, torch.float64)
    )


@njit(inline="always")
def _pick(ma, ia, mb, ib):  # pragma: no cover - compiled
    """The scan's rule for two parts of a window, ``b`` after ``a``: ``b`` if strictly greater or NaN."""
    later = (mb > ma) | (mb != mb)
    return (mb if later else ma), (ib if later else ia)


@njit(parallel=True, cache=True)
def _forward_pairs(xf, m, d, h, w, kd, of, af):  # pragma: no cover - compiled
    """2 x 2 windows (``kd = 1``) or 2 x 2 x 2 (``kd = 2``) of ``m`` volumes ``(d, h, w)``, as a tree of picks."""
    do, ho, wo = d // kd, h // 2, w // 2
    hw, vol, ovol = h * w, d * h * w, (d // kd) * (h // 2) * (w // 2)
    for i in prange(m):
        xs = xf[i * vol : (i + 1) * vol]
        for z in range(do):
            for y in range(ho):
                for xo in range(wo):
                    r = (kd * z * h + 2 * y) * w + 2 * xo
                    m0, i0 = _pick(xs[r], r, xs[r + 1], r + 1)
                    m1, i1 = _pick(xs[r + w], r + w, xs[r + w + 1], r + w + 1)
                    m0, i0 = _pick(m0, i0, m1, i1)
                    if kd == 2:
                        s = r + hw
                        m2, i2 = _pick(xs[s], s, xs[s + 1], s + 1)
                        m3, i3 = _pick(xs[s + w], s + w, xs[s + w + 1], s + w + 1)
                        m2, i2 = _pick(m2, i2, m3, i3)
                        m0, i0 = _pick(m0, i0, m2, i2)
                    o = i * ovol + (z * ho + y) * wo + xo
                    of[o] = m0
                    af[o] = i0


@njit(parallel=True, cache=True)
def _forward_scan(xf, m, d, h, w, kd, k, of, af):  # pragma: no cover - compiled
    """Any window ``kd x k x k``: the window scanned in ``(d, h, w)`` order."""
    do, ho, wo = d // kd, h // k, w // k
    vol, ovol = d * h * w, (d // kd) * (h // k) * (w // k)
    for i in prange(m):
        xs = xf[i * vol : (i + 1) * vol]
        for z in range(do):
            for y in range(ho):
                for xo in range(wo):
                    at = (kd * z * h + k * y) * w + k * xo
                    best = xs[at]
                    for dz in range(kd):
                        for dy in range(k):
                            row = ((kd * z + dz) * h + k * y + dy) * w + k * xo
                            for dx in range(k):
                                best, at = _pick(best, at, xs[row + dx], row + dx)
                    o = i * ovol + (z * ho + y) * wo + xo
                    of[o] = best
                    af[o] = at


@njit(parallel=True, cache=True)
def _backward(gf, af, m, vol, ovol, gxf):  # pragma: no cover - compiled
    """``gx`` of ``m`` volumes: each window's gradient at its argmax, zero elsewhere (windows do not overlap)."""
    for i in prange(m):
        gx = gxf[i * vol : (i + 1) * vol]
        gx[:] = 0
        for o in range(i * ovol, (i + 1) * ovol):
            gx[af[o]] = gf[o]


class _WindowMax(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, kd: int, k: int) -> torch.Tensor:  # type: ignore[override]
        x = x.detach().contiguous()
        m, d, h, w = x.shape
        out = x.new_empty(m, d // kd, h // k, w // k)
        arg = torch.empty(out.shape, dtype=torch.int32)
        xf, of, af = x.view(-1).numpy(), out.view(-1).numpy(), arg.view(-1).numpy()
        follow_torch()
        if k == 2 and kd <= 2:
            _forward_pairs(xf, m, d, h, w, kd, of, af)
        else:
            _forward_scan(xf, m, d, h, w, kd, k, of, af)
        ctx.save_for_backward(arg)
        ctx.input_shape = x.shape
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        (arg,) = ctx.saved_tensors
        gx = grad.new_empty(ctx.input_shape)
        m = gx.shape[0]
        g = grad.contiguous().view(-1).numpy()
        follow_torch()
        _backward(g, arg.view(-1).numpy(), m, gx[0].numel(), arg[0].numel(), gx.view(-1).numpy())
        return gx, None, None


def window_max(x: torch.Tensor, kernel_size: int, spatial_dims: int) -> torch.Tensor:
    """``F.max_pool{2,3}d(x, kernel_size)`` of ``x (..., *grid)`` (``spatial_dims`` = 2 or 3 grid axes, each
    divisible by ``kernel_size``), differentiable; the leading axes are kept."""
    grid = x.shape[-spatial_dims:]
    volume = (1, *grid) if spatial_dims == 2 else tuple(grid)
    kd = 1 if spatial_dims == 2 else kernel_size
    y = _WindowMax.apply(x.reshape(-1, *volume), kd, kernel_size)
    return y.view(*x.shape[:-spatial_dims], *y.shape[4 - spatial_dims :])
