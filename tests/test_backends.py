"""The E4 aggregation backends agree with the reference (the literal math of Eq. 12) in outputs and gradients."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from e4net import backends
from e4net.backends import aggregate, transform_kernel
from e4net.groups import P4, P4M

GROUPS = [P4, P4M]
FAST = [b for b in backends.available_backends() if b not in ("auto", "reference")]


def _inputs(G, b, c, s, k, h, w, stride, dtype=torch.float64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    ho, wo = backends.output_size(h, k, stride), backends.output_size(w, k, stride)
    v = torch.randn(b, c, G.order, h, w, generator=gen, dtype=dtype, requires_grad=True)
    kern = torch.randn(b, s, k * k, G.order, ho, wo, generator=gen, dtype=dtype, requires_grad=True)
    return v, kern, G.relative_position_index(k)


def test_reference_is_eq12_pointwise():
    """Check the reference against a direct loop over Eq. 12 on a tiny example (channel c uses slice c % s)."""
    G, k, s = P4M, 3, 2
    v, kern, perm = _inputs(G, 1, 4, s, k, 4, 5, 1)
    out = aggregate(v, kern, perm, 1, "reference")
    kt = transform_kernel(kern, perm)
    vp = torch.nn.functional.pad(v, (1, 1, 1, 1))
    for c in range(4):
        for a in range(G.order):
            for y in range(4):
                for x in range(5):
                    acc = sum(kt[0, c % s, u, a, y, x] * vp[0, c, a, y + u // k, x + u % k] for u in range(k * k))
                    assert torch.allclose(out[0, c, a, y, x], acc)
    # the transform: slot a reads the generated kernel at a^-1 u
    for a in range(G.order):
        grid = kern[0, 0, :, a, 0, 0].view(k, k)
        assert torch.equal(kt[0, 0, :, a, 0, 0].view(k, k), G.act_on_signal(grid, a))


@pytest.mark.parametrize("backend", FAST)
@given(
    gi=st.sampled_from([0, 1]),
    b=st.integers(1, 2),
    groups_=st.integers(1, 3),
    s=st.integers(1, 3),
    k=st.sampled_from([1, 3, 5]),
    h=st.integers(1, 9),
    w=st.integers(1, 9),
    stride=st.sampled_from([1, 2]),
    seed=st.integers(0, 1000),
)
def test_backend_matches_reference(backend, gi, b, groups_, s, k, h, w, stride, seed):
    G = GROUPS[gi]
    v, kern, perm = _inputs(G, b, groups_ * s, s, k, h, w, stride, seed=seed)
    ref = aggregate(v, kern, perm, stride, "reference")
    out = aggregate(v, kern, perm, stride, backend)
    assert torch.allclose(out, ref, rtol=1e-10, atol=1e-10)
    g = torch.randn_like(ref)
    gv_ref, gk_ref = torch.autograd.grad(ref, (v, kern), g)
    gv, gk = torch.autograd.grad(out, (v, kern), g)
    assert torch.allclose(gv, gv_ref, rtol=1e-10, atol=1e-10)
    assert torch.allclose(gk, gk_ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("backend", ["reference", *FAST])
@pytest.mark.parametrize("G", GROUPS, ids=str)
@pytest.mark.parametrize("stride", [1, 2])
def test_gradcheck(backend, G, stride):
    v, kern, perm = _inputs(G, 1, 2, 2, 3, 5, 4, stride)
    assert torch.autograd.gradcheck(lambda a, b: aggregate(a, b, perm, stride, backend), (v, kern))


def test_unknown_backend():
    with pytest.raises(ValueError, match="unknown aggregation backend 'fastest'"):
        backends.check_backend("fastest")


def test_auto_resolves_on_cpu():
    assert backends.resolve_backend("auto", torch.device("cpu")) in backends.available_backends()
