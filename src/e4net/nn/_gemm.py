"""One weight shared by every example: ``y[b] = W x[b]`` on ``(B, K, N)`` as a batched GEMM without copies.

Used by the 1x1 layers of the E4 generator / encoder (GroupConv k=1, SlotwiseLinear). ``torch.bmm`` with the
weight expanded over the batch avoids the transposed copies of ``matmul`` / a 1x1 ``conv2d`` in the forward pass,
but its autograd backward materialises a per-example weight gradient ``(B, M, K)`` before summing it (537 MB for a
1024-channel layer at batch 128). This Function's backward picks the cheaper of that and one GEMM over the batch
and pixels together (which needs ``(M, B N)`` / ``(K, B N)`` copies of ``grad`` and ``x``), by buffer size.
"""

from __future__ import annotations

import torch

from .. import _memory


class _SharedWeightBmm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(weight, x)
        w = weight.unsqueeze(0).expand(x.shape[0], -1, -1)
        if torch.compiler.is_compiling():  # traced (torch.export / compile): the plain op, no preallocated buffer
            return torch.bmm(w, x)
        out = _memory.empty((x.shape[0], weight.shape[0], x.shape[2]), x.dtype, x.device)  # huge pages if large
        return torch.bmm(w, x, out=out)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        weight, x = ctx.saved_tensors
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


def shared_weight_bmm(weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``(M, K), (B, K, N) -> (B, M, N)``: ``W @ x[b]`` for every ``b`` (differentiable in both)."""
    return _SharedWeightBmm.apply(weight, x)
