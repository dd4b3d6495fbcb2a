"""The fused CPU aggregation (``numba`` backend) computes exactly the reference (unfold) aggregation of Eq. 12.

Outputs and both gradients against ``reference`` over random shapes (hypothesis), float64 gradcheck of the
custom autograd Function, the automatic CPU selection with its plain-PyTorch fallback, and a planted bug.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from e4net.backends import aggregate, output_size, resolve_backend
from e4net.backends.dispatch import last_backend_run
from e4net.groups import P4, P4M, Group
from e4net.nn import E4Conv

pytest.importorskip("numba", reason="numba is not installed: the fused CPU backend is not registered")

from e4net.backends import _numba_blocked, _numba_stored2d, numba_agg  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _inputs(group: Group, b: int, c: int, s: int, k: int, h: int, w: int, stride: int, dtype: torch.dtype, seed: int):
    gen = torch.Generator().manual_seed(seed)
    n = group.order
    v = torch.randn(b, c, n, h, w, dtype=dtype, generator=gen).requires_grad_()
    ho, wo = output_size(h, k, stride), output_size(w, k, stride)
    ker = torch.randn(b, s, k * k, n, ho, wo, dtype=dtype, generator=gen).requires_grad_()
    return v, ker, group.relative_position_index(k)


def _out_and_grads(backend: str, v, ker, perm, stride, grad_out=None):
    out = aggregate(v, ker, perm, stride, backend)
    assert last_backend_run() == backend  # the named implementation ran, not the fallback
    if grad_out is None:
        grad_out = torch.randn_like(out)
    gv, gk = torch.autograd.grad(out, (v, ker), grad_out)
    return out, gv, gk, grad_out


@given(
    group=st.sampled_from([P4, P4M]),
    b=st.integers(1, 2),
    s=st.sampled_from([1, 2, 3]),
    mult=st.integers(1, 3),
    k=st.sampled_from([1, 3, 5]),
    h=st.integers(1, 9),
    w=st.integers(1, 9),
    stride=st.sampled_from([1, 2]),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    seed=st.integers(0, 2**16),
)
def test_matches_reference(group, b, s, mult, k, h, w, stride, dtype, seed):
    """Same output and same grad wrt v and wrt the (untransformed) kernel as the unfold reference."""
    v, ker, perm = _inputs(group, b, s * mult, s, k, h, w, stride, dtype, seed)
    ref = _out_and_grads("reference", v, ker, perm, stride)
    got = _out_and_grads("numba", v, ker, perm, stride, grad_out=ref[3])
    tol = {"atol": 1e-5, "rtol": 1e-5} if dtype == torch.float32 else {"atol": 1e-12, "rtol": 1e-12}
    for name, x, y in zip(("out", "grad_v", "grad_kernel"), got[:3], ref[:3]):
        assert x.dtype == dtype
        torch.testing.assert_close(x, y, **tol, msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.parametrize(
    "group,c,s,stride,h,w,fast",
    [(P4, 1, 1, 1, 3, 2, False), (P4M, 1, 1, 2, 3, 3, False), (P4, 4, 2, 1, 6, 5, True), (P4M, 3, 3, 2, 5, 6, True)],
)
def test_gradcheck_float64(group, c, s, stride, h, w, fast):
    """The custom autograd Function's backward is the derivative of its forward (numerical check, float64).

    Full Jacobians on tiny shapes; ``fast_mode`` (random projections of the Jacobian) on larger ones.
    """
    v, ker, perm = _inputs(group, 1, c, s, 3, h, w, stride, torch.float64, seed=3)
    bias = torch.randn(s, 9, dtype=torch.float64, requires_grad=True)
    fn = lambda a, bb, kb: numba_agg.numba_aggregate(a, bb, kb, perm, stride)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (v, ker, bias), fast_mode=fast)


@pytest.mark.parametrize("group,c,s,k,size", [(P4, 16, 2, 5, 9), (P4M, 6, 3, 3, 7), (P4, 17, 1, 3, 5)])
def test_blocked_stored_kernel_loops_equal_the_generic_ones(monkeypatch, group, c, s, k, size):
    """Stride 1 with at most 16 channels per slice (E4-Net's layers: 16 channels, 2 slices, k = 5) runs the
    register-blocked loops of ``_numba_stored2d``; their output and the gradients of v, the kernels and the bias equal
    the generic kernels' (17 channels in one slice: the generic kernels, which must not call them)."""
    v, ker, perm = _inputs(group, 2, c, s, k, size, size, 1, torch.float32, seed=7)
    bias = torch.randn(s, k * k, requires_grad=True)
    calls = []
    real = _numba_stored2d.kernels
    monkeypatch.setattr(_numba_stored2d, "kernels", lambda *a: calls.append(a) or real(*a))
    results = []
    for enabled in (True, False):
        monkeypatch.setattr(_numba_stored2d, "ENABLED", enabled)
        out = numba_agg.numba_aggregate(v, ker, bias, perm, 1)
        results.append((out, *torch.autograd.grad(out, (v, ker, bias), torch.ones_like(out))))
    assert calls == ([(c // s, k)] * 2 if c // s <= _numba_stored2d.MAX_CHANNELS else [])
    for name, x, y in zip(("out", "grad_v", "grad_kernel", "grad_bias"), *results):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-4, msg=lambda m, n=name: f"{n}: {m}")


@settings(max_examples=25, deadline=None)
@given(
    gi=st.sampled_from([0, 1]),
    s=st.sampled_from([1, 2, 3]),
    m=st.integers(1, 2),
    k=st.sampled_from([1, 3, 5]),
    h=st.integers(1, 8),
    w=st.integers(1, 8),
    stride=st.sampled_from([1, 2]),
    seed=st.integers(0, 1000),
)
def test_fused_kernel_bias_matches_adding_it_first(gi, s, m, k, h, w, stride, seed):
    """``kernel_bias`` fused into the numba kernels == adding it to the kernels, then the reference: outputs and
    the gradients of v, kernels and bias (the bias gradient is summed inside the numba backward)."""
    group = (P4, P4M)[gi]
    v, ker, perm = _inputs(group, 2, s * m, s, k, h, w, stride, torch.float64, seed=seed)
    bias = torch.randn(s, k * k, dtype=torch.float64, generator=torch.Generator().manual_seed(seed), requires_grad=True)
    outs = [aggregate(v, ker, perm, stride, b, kernel_bias=bias) for b in ("numba", "reference")]
    torch.testing.assert_close(outs[0], outs[1])
    g = torch.randn_like(outs[0])
    grads = [torch.autograd.grad(o, (v, ker, bias), g) for o in outs]
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="kernel_bias must have shape"):
        aggregate(v, ker, perm, stride, "reference", kernel_bias=bias[:, :1] if k > 1 else bias.repeat(1, 2))


def test_non_contiguous_inputs_and_single_grad():
    """Views (transposed / sliced) are accepted; asking for only one gradient gives that gradient."""
    v, ker, perm = _inputs(P4M, 2, 4, 2, 3, 6, 7, 1, torch.float64, seed=5)
    vt = v.detach().transpose(3, 4).contiguous().transpose(3, 4).requires_grad_()  # non-contiguous, same values
    assert not vt.is_contiguous()
    out = aggregate(vt, ker, perm, 1, "numba")
    torch.testing.assert_close(out, aggregate(v, ker, perm, 1, "reference"))
    (gk,) = torch.autograd.grad(aggregate(v.detach(), ker, perm, 1, "numba").sum(), (ker,))
    (gk_ref,) = torch.autograd.grad(aggregate(v.detach(), ker, perm, 1, "reference").sum(), (ker,))
    torch.testing.assert_close(gk, gk_ref)


def test_planted_transform_bug_is_detected():
    """Applying the wrong group element's transform (a planted bug) changes the output: the comparison can fail."""
    v, ker, perm = _inputs(P4, 1, 2, 1, 3, 5, 5, 1, torch.float64, seed=7)
    wrong = perm[[1, 2, 3, 0]]
    with pytest.raises(AssertionError):
        torch.testing.assert_close(aggregate(v, ker, wrong, 1, "numba"), aggregate(v, ker, perm, 1, "reference"))


def test_e4conv_defaults_to_numba_on_cpu(monkeypatch):
    """``backend="auto"`` on CPU runs the fused kernel, and the layer's output/param grads match the reference."""
    assert resolve_backend("auto", torch.device("cpu")) == "numba"
    calls = []
    orig = numba_agg.numba_aggregate
    monkeypatch.setattr(numba_agg, "numba_aggregate", lambda *a: calls.append(1) or orig(*a))
    torch.manual_seed(0)
    layer = E4Conv(4, 4, 3, "p4m", reduction=2, slices=2).double()
    x = torch.randn(2, 4, 8, 7, 7, dtype=torch.float64)
    y = layer(x)
    assert calls, "E4Conv(backend='auto') did not use the numba backend on CPU"
    grads = torch.autograd.grad(y.square().sum(), list(layer.parameters()))
    layer.backend = "reference"
    y_ref = layer(x)
    grads_ref = torch.autograd.grad(y_ref.square().sum(), list(layer.parameters()))
    torch.testing.assert_close(y, y_ref)
    for g, gr in zip(grads, grads_ref):
        torch.testing.assert_close(g, gr)


def test_falls_back_to_plain_pytorch_without_numba_and_triton():
    """Without numba / triton installed, ``auto`` is the plain-PyTorch ``shift`` backend and E4Conv (with its
    generator's norm) and the pooling layers still work."""
    code = (
        "import sys; sys.modules['numba'] = None; sys.modules['triton'] = None\n"
        "import torch\n"
        "from e4net.backends import available_backends, resolve_backend\n"
        "from e4net.nn import E4Conv\n"
        "assert 'numba' not in available_backends() and 'triton' not in available_backends(), available_backends()\n"
        "print(resolve_backend('auto', torch.device('cpu')), resolve_backend('auto', torch.device('cuda')))\n"
        "print(tuple(E4Conv(2, 2, 3, 'p4')(torch.randn(1, 2, 4, 5, 5)).shape))\n"
        "from e4net.nn import SpatialMaxPool3d\n"  # the numba pooling and norm kernels are optional too
        "print(tuple(SpatialMaxPool3d(2)(torch.randn(1, 2, 24, 4, 4, 4)).shape))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.path.join(REPO, "src")}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["shift", "shift", "(1,", "2,", "4,", "5,", "5)", "(1,", "2,", "24,", "2,", "2,", "2)"]


def test_auto_picks_triton_on_cuda_when_installed():
    pytest.importorskip("triton", reason="triton is not installed")
    assert resolve_backend("auto", torch.device("cuda")) == "triton"


def test_custom_op_passes_torch_library_opcheck():
    """``torch.ops.e4net.numba_aggregate`` is a well-formed custom op: schema, fake (meta) implementation, autograd
    registration and their agreement with the real kernels (``torch.library.opcheck``)."""
    v, ker, perm = _inputs(P4M, 2, 4, 2, 3, 6, 5, 1, torch.float64, seed=11)
    bias = torch.randn(2, 9, dtype=torch.float64, requires_grad=True)
    torch.library.opcheck(torch.ops.e4net.numba_aggregate.default, (v, ker, bias, perm, 1))
    v2, ker2, perm2 = _inputs(P4, 1, 2, 1, 3, 7, 7, 2, torch.float32, seed=12)
    torch.library.opcheck(torch.ops.e4net.numba_aggregate.default, (v2, ker2, torch.zeros(1, 9), perm2, 2))


def test_default_model_exports_with_the_fused_kernel_in_the_graph():
    """``torch.export`` of E4-Net with the default backend traces the fused kernel as one custom op (no ``.numpy()``
    on fake tensors), and the exported program computes what the model computes."""
    from e4net.models import create_model

    torch.manual_seed(0)
    model = create_model("e4net").eval()
    x = torch.randn(2, 1, 28, 28)
    program = torch.export.export(model, (x,))
    targets = {str(n.target) for n in program.graph.nodes if n.op == "call_function"}
    assert "e4net.numba_aggregate.default" in targets, sorted(targets)
    torch.testing.assert_close(program.module()(x), model(x))


def _spy(op, name: str, calls: list):  # noqa: ANN001, ANN202
    return lambda *a: calls.append(name) or op(*a)


@settings(max_examples=20, deadline=None)
@given(
    gi=st.sampled_from([0, 1]),
    s=st.sampled_from([1, 2, 3]),
    m=st.integers(1, 2),
    ch=st.integers(1, 4),
    k=st.sampled_from([1, 3, 5]),
    h=st.integers(1, 8),
    w=st.integers(1, 8),
    stride=st.sampled_from([1, 2]),
    bias=st.booleans(),
    seed=st.integers(0, 1000),
)
def test_kernels_generated_inside_the_aggregation_equal_the_stored_ones(gi, s, m, ch, k, h, w, stride, bias, seed):
    """In inference the numba backend generates each kernel ``W2 h + b`` inside the aggregation: the result equals
    the reference aggregation of the stored kernel tensor (float64, random shapes, both groups, stride 1 and 2)."""
    from e4net.backends import aggregate_generated, output_size

    group = (P4, P4M)[gi]
    gen = torch.Generator().manual_seed(seed)
    n, ho, wo = group.order, output_size(h, k, stride), output_size(w, k, stride)
    v = torch.randn(2, s * m, n, h, w, dtype=torch.float64, generator=gen)
    hidden = torch.randn(2, ch, n, ho, wo, dtype=torch.float64, generator=gen)
    weight = torch.randn(s * k * k, ch, dtype=torch.float64, generator=gen)
    kb = torch.randn(s, k * k, dtype=torch.float64, generator=gen) if bias else None
    index = group.relative_position_index(k)
    kernel = torch.einsum("oc,bcnyx->bonyx", weight, hidden).reshape(2, s, k * k, n, ho, wo)
    calls = []
    with pytest.MonkeyPatch.context() as mp:
        for name in ("numba_aggregate_generated", "numba_aggregate_generated_blocked"):  # generic / register-blocked
            mp.setattr(numba_agg, name, _spy(getattr(numba_agg, name), name, calls))
        flat = kb.reshape(-1) if kb is not None else None
        got = aggregate_generated(v, hidden, weight, flat, index, stride, "numba")
    blocked = stride == 1 and _numba_blocked.supported(ch, m, k)
    assert calls == ["numba_aggregate_generated_blocked" if blocked else "numba_aggregate_generated"], calls
    torch.testing.assert_close(got, aggregate(v, kernel, index, stride, "reference", kernel_bias=kb))


def test_e4conv_inference_generates_kernels_in_place_and_training_stores_them(monkeypatch):
    """E4Conv under no_grad takes the generating kernel, register-blocked or generic (same output as the reference
    backend); with gradients it stores the kernels and takes the differentiable op."""
    torch.manual_seed(0)
    layer = E4Conv(4, 4, 3, "p4m", reduction=2, slices=2).double().eval()
    x = torch.randn(2, 4, 8, 7, 7, dtype=torch.float64)
    used = []
    for name in ("numba_aggregate_generated", "numba_aggregate_generated_blocked", "numba_aggregate"):
        orig = getattr(numba_agg, name)
        monkeypatch.setattr(numba_agg, name, lambda *a, _o=orig, _n=name: used.append(_n) or _o(*a))
    with torch.no_grad():
        y = layer(x)
    assert used == ["numba_aggregate_generated_blocked"]  # stride 1, the register tile fits
    used.clear()
    monkeypatch.setattr(_numba_blocked, "ENABLED", False)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), y)
    assert used == ["numba_aggregate_generated"]  # the generic generating kernel
    used.clear()
    y_grad = layer(x)
    assert used == ["numba_aggregate"]
    layer.backend = "reference"
    with torch.no_grad():
        torch.testing.assert_close(y, layer(x))
    torch.testing.assert_close(y_grad, y)


def test_a_hook_on_the_generator_sees_it_run_and_counts_stay_the_same():
    """A forward hook on W2's module (``span``), e.g. ``e4net.count``'s, keeps W2 a module call in inference: the
    hook runs and the MAC count of E4-Net is the same as with the kernels stored (training)."""
    import e4net
    from e4net.models import create_model

    layer = E4Conv(4, 4, 3, "p4").eval()
    seen = []
    handle = layer.span.register_forward_hook(lambda *a: seen.append(1))
    with torch.no_grad():
        layer(torch.randn(1, 4, 4, 5, 5))
    handle.remove()
    assert seen
    counted = e4net.count(create_model("e4net"), (1, 28, 28))  # numba: could fuse W2, but the hooks see it
    stored = e4net.count(create_model("e4net", backend="reference"), (1, 28, 28))  # never fuses
    assert counted.macs == stored.macs and counted.by_module == stored.by_module
    assert any(k.endswith("span") for k in counted.by_module)


def test_numba_kernels_keep_torchs_thread_count():
    """numba's threads follow ``torch.set_num_threads`` (e4net._numba): after E4 layers (2-D and 3-D), the fused
    norm and the pooling ran forward and backward, torch still has the count the user set, and numba uses it.
    Without this, starting numba's OpenMP pool reset torch to all cores (a fresh process: nothing started before)."""
    code = (
        "import torch\n"
        "torch.set_num_threads(1)\n"
        "import numba, e4net\n"
        "from e4net import nn as enn\n"
        "x = torch.randn(2, 4, 24, 4, 4, 4, requires_grad=True)\n"
        "y = enn.SpatialMaxPool3d(2)(enn.norm_relu(enn.GroupBatchNorm(4, 'O'), enn.E4Conv(4, 4, 3, 'O')(x)))\n"
        "y.sum().backward()\n"
        "enn.E4Conv(2, 2, 3, 'p4')(torch.randn(1, 2, 4, 5, 5)).sum().backward()\n"
        "print(torch.get_num_threads(), numba.get_num_threads())\n"
    )
    env = {**os.environ, "PYTHONPATH": os.path.join(REPO, "src")}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["1", "1"]
