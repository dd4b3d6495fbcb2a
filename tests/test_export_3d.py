"""Deployment of the 3-D models (cube groups O / Oh on voxel grids), beside the "every registered model" loops of
tests/test_export.py that cover e4net3d, gcnn3d and cnn3d: ``torch.export`` of the original model with the default
(numba) backend through the 3-D custom ops; an Oh network's ONNX file invariant to all 48 elements in onnxruntime;
``e4net export`` from a 3-D run folder; ``e4net predict`` refusing a 3-D model with one clear error."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import e4net
from e4net.backends import output_size
from e4net.groups import OH, O
from e4net.models import create_model
from e4net.nn import E4Conv, GlobalMaxPool, GroupBatchNorm, GroupMaxPool, LiftingConv

# ---- torch.export of the original model: the fused 3-D numba kernels as custom ops -----------------------------------


@pytest.mark.parametrize("group, size, stride", [(O, (3, 4, 5), 1), (OH, (3, 2, 3), 2)], ids=["O", "Oh-stride2"])
def test_3d_custom_ops_pass_torch_library_opcheck(group, size, stride):
    """``torch.ops.e4net.numba_aggregate_3d`` and ``numba_aggregate_generated_3d`` are well-formed custom ops:
    schema, fake implementation, autograd registration and their agreement with the compiled kernels."""
    import e4net.backends.numba_agg3d  # noqa: F401 - registers the ops

    gen = torch.Generator().manual_seed(0)
    k, n = 3, group.order
    out = [output_size(m, k, stride) for m in size]

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, dtype=torch.float64, generator=gen, requires_grad=True)

    v, index = randn(1, 2, n, *size), group.relative_position_index(k)
    torch.library.opcheck(
        torch.ops.e4net.numba_aggregate_3d.default, (v, randn(1, 2, k**3, n, *out), randn(2, k**3), index, stride)
    )
    hidden, weight, bias = randn(1, 3, n, *out), randn(2 * k**3, 3), randn(2 * k**3)
    torch.library.opcheck(torch.ops.e4net.numba_aggregate_generated_3d.default, (v, hidden, weight, bias, index, stride))


def test_default_3d_model_exports_with_the_fused_kernel_in_the_graph():
    """``torch.export`` of e4net3d in eval mode with the default backend (numba on CPU) traces each E4 layer's fused
    aggregation as one custom op (no ``.numpy()`` on fake tensors), with a dynamic batch, and computes what the model
    computes."""
    from e4net.backends import resolve_backend

    assert resolve_backend("auto", torch.device("cpu")) == "numba"
    torch.manual_seed(0)
    model = create_model("e4net3d", fields=2).eval()
    x = torch.randn(2, 1, 16, 16, 16)
    program = torch.export.export(model, (x,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    targets = [str(n.target) for n in program.graph.nodes if n.op == "call_function"]
    assert targets.count("e4net.numba_aggregate_generated_3d.default") == 3, sorted(set(targets))
    x3 = torch.randn(3, 1, 16, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(program.module()(x3), model(x3))
