"""What the numba custom ops (:mod:`e4net.backends.numba_agg`, :mod:`e4net.backends.numba_agg3d`) share: the
relative-position table as the kernels read it, and the autograd registration of an op by its backward op."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch


def index_array(index: torch.Tensor) -> np.ndarray:
    """The relative-position table as a contiguous int64 NumPy array on the CPU (what the compiled kernels index)."""
    return index.detach().to(device="cpu", dtype=torch.int64).contiguous().numpy()


def register_backward(op: torch.library.CustomOpDef, backward_op: Callable[..., tuple[torch.Tensor, ...]]) -> None:
    """Make ``op(*tensors, *ints)`` differentiable through ``backward_op(grad_out, *tensors, *ints)``, which returns
    the gradients of the first of ``op``'s inputs (the others -- the relative-position table, the stride -- get
    ``None``, as do inputs that need no gradient). The tensors are saved for the backward pass, the ints kept."""

    def setup_context(ctx, inputs, output) -> None:  # noqa: ANN001 - torch.library's signature
        ctx.save_for_backward(*(t for t in inputs if isinstance(t, torch.Tensor)))
        ctx.constants = tuple(t for t in inputs if not isinstance(t, torch.Tensor))
        ctx.inputs = len(inputs)

    def backward(ctx, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # noqa: ANN001 - torch.library's
        grads = backward_op(grad_out, *ctx.saved_tensors, *ctx.constants)
        needed = (g if need else None for g, need in zip(grads, ctx.needs_input_grad))
        return (*needed, *(None,) * (ctx.inputs - len(grads)))

    op.register_autograd(backward, setup_context=setup_context)
