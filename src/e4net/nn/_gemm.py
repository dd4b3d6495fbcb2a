"""One weight shared by every example: ``y[b] = W x[b]`` on ``(B, K, N)`` as batched GEMMs without copies.

Used by the 1x1 layers of the E4 generator / encoder (GroupConv k=1, SlotwiseLinear). Three ways, chosen per call:

* **oneDNN convolution** (CPU, float32, at least :data:`ONEDNN_MIN_K` input channels and at most
  :data:`CONV_MAX_N` pixels per example): ``conv1d`` with a kernel of width 1, one call for the whole batch, forward
  and backward (torch's own). On small maps the per-example calls of the next way cost more (call overheads, a copy
  of each result into the batch) than the product itself.
* **oneDNN matmuls** (CPU, float32, at least :data:`ONEDNN_MIN_K` input channels and :data:`ONEDNN_MIN_MACS`
  multiply-adds per example): one oneDNN matmul per example (``torch.ops.mkldnn._linear_pointwise``, the op
  inductor uses for CPU linear layers), forward and backward. torch's own CPU GEMM (MKL) runs these shapes at a third
  of the speed on this project's AMD EPYC machine: measured, 1 thread, 192x192 times 192x16384: 37 GMAC/s through
  ``torch.mm`` / ``bmm``, 115 through oneDNN (AVX-512). Forward and backward of E4-ResNet-18's 1x1 shapes at batch 32
  (2 threads): 1.1-3.0x faster than ``bmm``, 1.6x in sum; the 3-D E4 layer's 192x192 maps 1.4x. On E4-Net's small
  maps (64 channels, 7x7 or 14x14) and with 16 input channels (memory bound) a call per example costs more than it
  saves, hence the thresholds (the small maps now take the convolution).
* **bmm**: ``torch.bmm`` with the weight expanded over the batch (no transposed copies of ``matmul`` / a 1x1
  ``conv2d``). Its autograd backward would materialise a per-example weight gradient ``(B, M, K)`` before summing it
  (537 MB for a 1024-channel layer at batch 128); this Function's backward picks the cheaper of that and one GEMM
  over the batch and pixels together (which needs ``(M, B N)`` / ``(K, B N)`` copies of ``grad`` and ``x``), by
  buffer size.

Under ``torch.compile`` / ``torch.export`` the plain ``bmm`` is traced. Results of the three ways differ by float32
rounding only (a different order of the sums).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from .. import _memory

ONEDNN_MIN_MACS = 3_000_000
"""Multiply-adds per example (``M K N``) from which the oneDNN way is taken (measured: 64x64x784 even, 64x64x196
loses 1.2x)."""

ONEDNN_MIN_K = 32
"""Input channels from which the oneDNN way is taken (with 16, 144x16x4096 lost 10%: memory bound either way)."""


CONV_MAX_N = 256
"""Pixels (voxels) per example up to which the oneDNN convolution runs the product. Measured on the project's AMD
EPYC machine (2 threads, forward+backward, batch 32 / 128, against the per-example oneDNN matmuls or ``bmm``):
1.1-2.1x faster at 16-256 pixels with 64-1408 input channels (E4-ResNet-18's maps at 16x16 and below, E4-Net's at
7x7 and 14x14, e4net3d's at 4^3); even at 512-1024 pixels; slower with 11-22 input channels (0.5-0.9x)."""


_HAS_ONEDNN = torch.backends.mkldnn.is_available()  # once, at import: dynamo cannot trace the call


def _find_onednn_linear() -> Callable[..., torch.Tensor] | None:
    if not _HAS_ONEDNN:
        return None
    try:
        return torch.ops.mkldnn._linear_pointwise.default
    except (AttributeError, RuntimeError):  # a torch build without the op
        return None


_onednn_linear = _find_onednn_linear()


def _onednn_shape(weight: torch.Tensor, x: torch.Tensor) -> bool:
    """What both oneDNN ways need: eager (traced graphs keep the plain op), float32 CPU, ``ONEDNN_MIN_K`` input
    channels."""
    return (
        not torch.compiler.is_compiling()
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and weight.dtype == torch.float32
        and weight.shape[1] >= ONEDNN_MIN_K
    )


def _use_onednn(weight: torch.Tensor, x: torch.Tensor) -> bool:
    return (
        _onednn_linear is not None
        and _onednn_shape(weight, x)
        and weight.shape[0] * weight.shape[1] * x.shape[2] >= ONEDNN_MIN_MACS
    )


def _use_onednn_conv(weight: torch.Tensor, x: torch.Tensor) -> bool:
    """The convolution way: small maps, not under autocast (which would cast the convolution, unlike the other
    ways)."""
    return (
        _HAS_ONEDNN and _onednn_shape(weight, x) and x.shape[2] <= CONV_MAX_N and not torch.is_autocast_enabled("cpu")
    )


def _times_transposed(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b.T`` by oneDNN (``a`` (M, K) contiguous, ``b`` (N, K), any strides)."""
    return _onednn_linear(a, b, None, "none", [], "")


class _SharedWeightBmm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(weight, x)
        ctx.onednn = _use_onednn(weight, x)
        if torch.compiler.is_compiling():  # traced (torch.export / compile): the plain op, no preallocated buffer
            return torch.bmm(weight.unsqueeze(0).expand(x.shape[0], -1, -1), x)
        out = _memory.empty((x.shape[0], weight.shape[0], x.shape[2]), x.dtype, x.device)  # huge pages if large
        if ctx.onednn:
            w = weight.contiguous()
            for b in range(x.shape[0]):
                out[b] = _times_transposed(w, x[b].t())
            return out
        return torch.bmm(weight.unsqueeze(0).expand(x.shape[0], -1, -1), x, out=out)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        weight, x = ctx.saved_tensors
        if ctx.onednn:
            return _onednn_backward(weight, x, grad.contiguous(), ctx.needs_input_grad)
        gw = gx = None
        if ctx.needs_input_grad[1]:
            gx = _memory.empty_like(x)
            torch.bmm(weight.t().unsqueeze(0).expand(x.shape[0], -1, -1), grad, out=gx)
        if ctx.needs_input_grad[0]:
            (m, k), n = weight.shape, x.shape[2]
            if m * k <= (m + k) * n:  # large maps, few channels: per-example products (B, M, K), then the sum
                gw = torch.bmm(grad, x.transpose(1, 2)).sum(0)
            else:  # many channels, small maps: one GEMM over (B N), after copying grad and x to (M|K, B N)
                gw = torch.mm(grad.transpose(0, 1).reshape(m, -1), x.transpose(0, 1).reshape(k, -1).t())
        return gw, gx


def _onednn_backward(
    weight: torch.Tensor, x: torch.Tensor, grad: torch.Tensor, needs: tuple[bool, ...]
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """``gx[b] = W^T g[b]`` and ``gW = sum_b g[b] x[b]^T``, one oneDNN matmul per example each."""
    gw = gx = None
    if needs[1]:
        gx = _memory.empty_like(x)
        wt = weight.t().contiguous()
        for b in range(x.shape[0]):
            gx[b] = _times_transposed(wt, grad[b].t())
    if needs[0]:
        gw = _times_transposed(grad[0], x[0])
        for b in range(1, x.shape[0]):
            gw += _times_transposed(grad[b], x[b])
    return gw, gx


def shared_weight_bmm(weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``(M, K), (B, K, N) -> (B, M, N)``: ``W @ x[b]`` for every ``b`` (differentiable in both)."""
    if _use_onednn_conv(weight, x):
        return F.conv1d(x, weight.unsqueeze(-1))
    return _SharedWeightBmm.apply(weight, x)


# ---- two 1x1 maps of one input (E4's encoder V and generator W1, Sec. 4.1) as one GEMM over the batch --------------


def pair_applies(x: torch.Tensor) -> bool:
    """Whether :func:`shared_input_pair` takes ``x``: the oneDNN matmul available, eager, float32 CPU."""
    return (
        _onednn_linear is not None
        and not torch.compiler.is_compiling()
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and not torch.is_autocast_enabled("cpu")
    )


def _batch_inside(g: torch.Tensor) -> torch.Tensor:
    """``(B, M, N)`` as the ``(M, B N)`` matrix of its storage ``(M, B, N)`` (copied into that layout if needed)."""
    m = g.shape[1]
    return g.permute(1, 0, 2).contiguous().view(m, -1)


class _SharedInputPair(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, wa: torch.Tensor, wb: torch.Tensor):  # type: ignore[override]
        b, k, n = x.shape
        xm = x.detach().transpose(0, 1).reshape(k, b * n)  # (K, B N): the batch inside the columns
        w = torch.cat([wa.detach(), wb.detach()])
        out = _times_transposed(w.contiguous(), xm.t())  # (Ma + Mb, B N) = W @ X, one oneDNN matmul
        ctx.save_for_backward(xm, wa, wb)
        ctx.set_materialize_grads(False)  # an unused map's gradient stays None (no zero GEMM)
        ctx.batch = b
        ma = wa.shape[0]
        return out[:ma].view(ma, b, n).transpose(0, 1), out[ma:].view(-1, b, n).transpose(0, 1)

    @staticmethod
    def backward(ctx, ga: torch.Tensor | None, gb: torch.Tensor | None):  # type: ignore[override]
        xm, wa, wb = ctx.saved_tensors
        k, b = xm.shape[0], ctx.batch
        gx = None
        mats = [None if g is None else _batch_inside(g) for g in (ga, gb)]  # (M, B N) each
        terms = [(w, m) for w, m in zip((wa, wb), mats) if m is not None]
        if ctx.needs_input_grad[0] and terms:
            gxm = _times_transposed(terms[0][0].t().contiguous(), terms[0][1].t())  # (K, B N) = W^T G
            for w, m in terms[1:]:
                gxm += _times_transposed(w.t().contiguous(), m.t())
            gx = gxm.view(k, b, -1).transpose(0, 1)  # (B, K, N) in the layout of the maps
        gwa, gwb = (  # G @ X^T: the sum over the batch and pixels in one GEMM
            _times_transposed(m, xm) if m is not None and need else None
            for m, need in zip(mats, ctx.needs_input_grad[1:])
        )
        return gx, gwa, gwb


def shared_input_pair(x: torch.Tensor, wa: torch.Tensor, wb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(W_a x[b], W_b x[b])`` for every ``b`` of ``x (B, K, N)``: the two 1x1 maps of one input (E4's ``V`` and
    ``W1``) as one oneDNN matmul ``[W_a; W_b] @ X`` over ``X (K, B N)``, the batch inside the columns (forward; the
    backward pass is three matmuls over ``B N``, with no per-example products or sums).

    The results are ``(B, M, N)`` views of the ``(M_a + M_b, B N)`` product, stored as ``(M, B, N)``: the consumers
    in E4 read that layout in place (the numba aggregation, :func:`e4net.nn.norm_relu`). Measured (2 threads, 192 x
    192 maps, 16384 voxels as 32 x 8^3 or 4 x 16^3): the two maps forward and backward in 17 ms against 21.8-24.5
    ms as per-example products. Differentiable in ``x``, ``W_a``, ``W_b``; only where :func:`pair_applies`."""
    return _SharedInputPair.apply(x, wa, wb)
