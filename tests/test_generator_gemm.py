"""The E4 generator / encoder run as single batched GEMMs (issue 5): GroupConv k=1 and SlotwiseLinear take a
``bmm`` fast path; it must compute exactly the 1x1 convolution of their filter bank (Eq. 5 with k=1), with the
same gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from e4net.nn import GroupConv, _gemm
from e4net.nn.linear import SlotwiseLinear


@pytest.mark.parametrize("group,cin,cout", [("p4", 3, 5), ("p4m", 4, 2)])
def test_groupconv_1x1_fast_path_is_the_conv(group, cin, cout):
    torch.manual_seed(0)
    layer = GroupConv(cin, cout, 1, group, bias=True).double()
    x = torch.randn(3, cin, layer.group.order, 5, 6, dtype=torch.float64, requires_grad=True)
    y = layer(x)
    b, c, n, h, w = x.shape
    ref = F.conv2d(x.reshape(b, c * n, h, w), layer.filter_bank()).view(b, cout, n, h, w) + layer.bias.view(
        1, -1, 1, 1, 1
    )
    torch.testing.assert_close(y, ref)
    g = torch.randn_like(y)
    got = torch.autograd.grad(y, (x, layer.weight, layer.bias), g)
    exp = torch.autograd.grad(ref, (x, layer.weight, layer.bias), g)
    for a, e in zip(got, exp):
        torch.testing.assert_close(a, e)


def test_slotwise_linear_fast_path_is_the_conv():
    torch.manual_seed(1)
    layer = SlotwiseLinear(3, 7, bias=True).double()
    torch.nn.init.normal_(layer.bias)
    x = torch.randn(2, 3, 8, 4, 5, dtype=torch.float64, requires_grad=True)
    y = layer(x)
    b, c, n, h, w = x.shape
    ref = F.conv2d(x.reshape(b, c, n * h, w), layer.weight[:, :, None, None], layer.bias).view(b, 7, n, h, w)
    torch.testing.assert_close(y, ref)
    assert torch.autograd.gradcheck(layer, (x,), fast_mode=True)
    g = torch.randn_like(y)
    for a, e in zip(
        torch.autograd.grad(y, (x, layer.weight, layer.bias), g),
        torch.autograd.grad(ref, (x, layer.weight, layer.bias), g),
    ):
        torch.testing.assert_close(a, e)


def test_fast_path_accepts_non_contiguous_input():
    layer = GroupConv(2, 2, 1, "p4")
    x = torch.randn(2, 2, 4, 9, 9)[..., ::2, ::2]  # the strided view E4Conv's generator receives
    ref = F.conv2d(x.reshape(2, 8, 5, 5), layer.filter_bank()).view(2, 2, 4, 5, 5)
    torch.testing.assert_close(layer(x), ref)


@pytest.mark.parametrize("b,m,k,n", [(3, 4, 5, 6), (5, 32, 24, 3)])  # bmm + sum / one GEMM over (B N)
def test_shared_weight_bmm_gradcheck(b, m, k, n):
    """The shared-weight GEMM's custom backward (both weight-gradient paths) is the derivative of its forward."""
    from e4net.nn._gemm import shared_weight_bmm

    torch.manual_seed(2)
    w = torch.randn(m, k, dtype=torch.float64, requires_grad=True)
    x = torch.randn(b, k, n, dtype=torch.float64, requires_grad=True)
    torch.testing.assert_close(shared_weight_bmm(w, x), torch.einsum("mk,bkn->bmn", w, x))
    assert torch.autograd.gradcheck(shared_weight_bmm, (w, x), fast_mode=True)
    g = torch.randn(b, m, n, dtype=torch.float64)
    got = torch.autograd.grad(shared_weight_bmm(w, x), (w, x), g)
    exp = torch.autograd.grad(torch.einsum("mk,bkn->bmn", w, x), (w, x), g)
    for a, e in zip(got, exp):
        torch.testing.assert_close(a, e)


@pytest.mark.skipif(_gemm._onednn_linear is None, reason="this torch build has no oneDNN linear op")
@pytest.mark.parametrize("b,m,k,n", [(3, 8, 6, 10), (2, 5, 16, 33)])
def test_shared_weight_bmm_onednn_way(b, m, k, n, monkeypatch):
    """The oneDNN way (float32 CPU, from ``ONEDNN_MIN_MACS`` multiply-adds per example; lowered here so that small
    shapes take it) computes the same product and gradients as ``einsum``, also on a non-contiguous input, and
    neither way is taken in float64 or below the threshold."""
    monkeypatch.setattr(_gemm, "ONEDNN_MIN_MACS", m * k * n)
    monkeypatch.setattr(_gemm, "ONEDNN_MIN_K", k)
    torch.manual_seed(3)
    w = torch.randn(m, k, requires_grad=True)
    x_full = torch.randn(b, k, 2 * n, requires_grad=True)
    x = x_full[..., ::2]  # a strided view, as E4Conv's generator may pass
    assert _gemm._use_onednn(w, x)
    assert not _gemm._use_onednn(w.double(), x.double())
    assert not _gemm._use_onednn(w, x[..., :-1])  # one multiply-add per example short of the threshold
    with monkeypatch.context() as patch:
        patch.setattr(_gemm, "ONEDNN_MIN_MACS", 0)
        assert not _gemm._use_onednn(w[:, 1:], x[:, 1:])  # one input channel short
    y = _gemm.shared_weight_bmm(w, x)
    ref = torch.einsum("mk,bkn->bmn", w, x)
    torch.testing.assert_close(y, ref)
    g = torch.randn_like(y)
    for a, e in zip(torch.autograd.grad(y, (w, x_full), g), torch.autograd.grad(ref, (w, x_full), g), strict=True):
        torch.testing.assert_close(a, e)


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="this torch build has no oneDNN")
@pytest.mark.parametrize("b,m,k,n", [(3, 40, 32, 7), (2, 5, 48, 256)])
def test_shared_weight_bmm_conv_way(b, m, k, n):
    """Small maps (float32 CPU, at most ``CONV_MAX_N`` pixels, ``ONEDNN_MIN_K`` input channels) run as one oneDNN
    ``conv1d``: the same product and gradients as ``einsum``, also on a strided input; one pixel more, one input
    channel fewer, float64 or autocast take the other ways."""
    torch.manual_seed(4)
    w = torch.randn(m, k, requires_grad=True)
    x_full = torch.randn(b, k, 2 * n, requires_grad=True)
    x = x_full[..., ::2]
    assert _gemm._use_onednn_conv(w, x)
    assert not _gemm._use_onednn_conv(w.double(), x.double())
    short = _gemm.ONEDNN_MIN_K - 1
    assert not _gemm._use_onednn_conv(torch.randn(m, short), torch.randn(b, short, n))
    assert not _gemm._use_onednn_conv(w, torch.randn(b, k, _gemm.CONV_MAX_N + 1))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not _gemm._use_onednn_conv(w, x)
    y = _gemm.shared_weight_bmm(w, x)
    assert y.grad_fn is not None and "Convolution" in type(y.grad_fn).__name__
    ref = torch.einsum("mk,bkn->bmn", w, x)
    torch.testing.assert_close(y, ref)
    g = torch.randn_like(y)
    for a, e in zip(torch.autograd.grad(y, (w, x_full), g), torch.autograd.grad(ref, (w, x_full), g), strict=True):
        torch.testing.assert_close(a, e)


# ---- E4's V and W1 as one GEMM over the batch (shared_input_pair) --------------------------------------------------


@pytest.mark.skipif(not _gemm.pair_applies(torch.zeros(1)), reason="needs torch's oneDNN matmul on the CPU")
@pytest.mark.parametrize("b, k, n, ma, mb", [(3, 48, 7, 40, 24), (1, 32, 64, 8, 16), (5, 96, 27, 96, 96)])
def test_shared_input_pair_is_two_shared_weight_maps(b, k, n, ma, mb):
    """Values and the three gradients equal those of two separate maps; the results are stored as (M, B, N); a map
    whose result is unused gets no gradient."""
    gen = torch.Generator().manual_seed(b * k + n)
    x = torch.randn(b, k, n, generator=gen, requires_grad=True)
    wa = torch.randn(ma, k, generator=gen, requires_grad=True)
    wb = torch.randn(mb, k, generator=gen, requires_grad=True)
    a, c = _gemm.shared_input_pair(x, wa, wb)
    ea, ec = torch.einsum("mk,bkn->bmn", wa, x), torch.einsum("mk,bkn->bmn", wb, x)
    torch.testing.assert_close(a, ea, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(c, ec, rtol=1e-4, atol=1e-4)
    assert a.permute(1, 0, 2).is_contiguous() and c.permute(1, 0, 2).is_contiguous()
    ga, gc = torch.randn(a.shape, generator=gen), torch.randn(c.shape, generator=gen)
    got = torch.autograd.grad((a, c), (x, wa, wb), (ga, gc))
    exp = torch.autograd.grad((ea, ec), (x, wa, wb), (ga, gc))
    for u, e in zip(got, exp):
        torch.testing.assert_close(u, e, rtol=1e-4, atol=1e-3)
    a, c = _gemm.shared_input_pair(x, wa, wb)
    gx, gwa, gwb = torch.autograd.grad(a, (x, wa, wb), ga, allow_unused=True)
    assert gwb is None
    torch.testing.assert_close(gx, torch.einsum("mk,bmn->bkn", wa, ga), rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("group, size", [("O", 3), ("p4m", 5)])
def test_e4_with_the_shared_gemm_is_the_e4_layer(group, size, monkeypatch):
    """E4Conv's output and gradients (input and every parameter) are those of its modules run one by one, with random
    parameters; forward hooks on V or W1 make the layer run them as modules."""
    from e4net.analysis import randomize_
    from e4net.nn import E4Conv
    from e4net.nn import e4 as e4_module

    torch.manual_seed(0)
    layer = randomize_(E4Conv(4, 4, 3, group, reduction=2, slices=2))
    d = layer.group.spatial_dims
    x = torch.randn(3, 4, layer.group.order, *(size,) * d, requires_grad=True)
    calls = []
    real = e4_module.shared_input_pair
    monkeypatch.setattr(e4_module, "shared_input_pair", lambda *a: calls.append(1) or real(*a))
    y = layer(x)
    assert calls == [1]
    params = [x, *layer.parameters()]
    g = torch.randn_like(y)
    got = torch.autograd.grad(y, params, g)
    monkeypatch.setattr(e4_module, "pair_applies", lambda x: False)
    ref = layer(x)
    torch.testing.assert_close(y, ref, rtol=1e-4, atol=1e-5)
    for u, e in zip(got, torch.autograd.grad(ref, params, g)):
        torch.testing.assert_close(u, e, rtol=1e-3, atol=1e-4)
    monkeypatch.setattr(e4_module, "pair_applies", _gemm.pair_applies)
    calls.clear()
    handle = layer.reduce.register_forward_hook(lambda *a: None)
    layer(x)
    handle.remove()
    assert not calls
    layer.value = torch.nn.Sequential(layer.value)  # a module put in V's place (a wrapper): run as modules
    torch.testing.assert_close(layer(x), ref, rtol=1e-4, atol=1e-5)
    assert not calls
