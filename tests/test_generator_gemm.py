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
