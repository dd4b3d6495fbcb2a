"""The E4 aggregation on voxel grids (O, Oh): every 3-D backend computes the reference (the literal k^3-neighbourhood
math of Eq. 12) in outputs and gradients; float64 gradcheck; the dispatcher routes by rank; the Triton kernels are
checked in Triton's interpreter (a subprocess, tests/triton_interp_cases_3d.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from e4net.backends import (
    Backend,
    aggregate,
    aggregate_generated,
    get_backend,
    lazy_function,
    output_size,
    resolve_backend,
)
from e4net.backends import dispatch as dispatch_module
from e4net.groups import OH, O

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from triton_interp_cases_3d import CASES  # noqa: E402

GROUPS = {"O": O, "Oh": OH}


def _inputs(G, b, c, s, k, size, stride, dtype, seed=0, bias=True):
    gen = torch.Generator().manual_seed(seed)
    v = torch.randn(b, c, G.order, *size, dtype=dtype, generator=gen, requires_grad=True)
    out = [output_size(m, k, stride) for m in size]
    ker = torch.randn(b, s, k**3, G.order, *out, dtype=dtype, generator=gen, requires_grad=True)
    kb = torch.randn(s, k**3, dtype=dtype, generator=gen, requires_grad=True) if bias else None
    return v, ker, G.relative_position_index(k), kb


def _run(backend, v, ker, index, stride, kb, go):
    out = aggregate(v, ker, index, stride, backend, kernel_bias=kb)
    wrt = (v, ker) if kb is None else (v, ker, kb)
    return (out, *torch.autograd.grad(out, wrt, go))


CASES_CPU = [
    ("O", 2, 4, 2, 3, (3, 4, 5), 1, torch.float64),
    ("O", 1, 3, 3, 3, (5, 3, 5), 2, torch.float64),
    ("Oh", 1, 2, 1, 3, (3, 3, 2), 1, torch.float32),
    ("O", 1, 2, 2, 5, (4, 3, 5), 1, torch.float32),
    ("Oh", 1, 2, 2, 1, (2, 3, 2), 1, torch.float64),
]


@pytest.mark.parametrize("backend", ["shift", "numba"])
@pytest.mark.parametrize("case", CASES_CPU, ids=lambda c: f"{c[0]}-k{c[4]}-stride{c[6]}-{str(c[7])[6:]}")
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_backend_matches_reference_3d(backend, case, bias):
    name, b, c, s, k, size, stride, dtype = case
    v, ker, index, kb = _inputs(GROUPS[name], b, c, s, k, size, stride, dtype, bias=bias)
    go = torch.randn(b, c, GROUPS[name].order, *ker.shape[4:], dtype=dtype)
    ref = _run("reference", v, ker, index, stride, kb, go)
    got = _run(backend, v, ker, index, stride, kb, go)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    for what, r, x in zip(("out", "grad_v", "grad_kernel", "grad_bias"), ref, got):
        assert x.shape == r.shape and x.dtype == r.dtype
        err = float((x - r).detach().abs().max() / r.detach().abs().max().clamp_min(1.0))
        assert err < tol, f"{backend} {what}: {err:.2e}"


@pytest.mark.parametrize("backend", ["reference", "numba"])
@pytest.mark.parametrize("stride", [1, 2])
def test_gradcheck_float64_3d(backend, stride):
    v, ker, index, kb = _inputs(O, 1, 2, 2, 3, (3, 2, 3), stride, torch.float64, seed=3)

    def f(v, ker, kb):
        return aggregate(v, ker, index, stride, backend, kernel_bias=kb)

    assert torch.autograd.gradcheck(f, (v, ker, kb), fast_mode=True)


def _generated_inputs(G, b, c, s, hc, k, size, stride, dtype, seed=0, bias=True):
    gen = torch.Generator().manual_seed(seed)
    v = torch.randn(b, c, G.order, *size, dtype=dtype, generator=gen, requires_grad=True)
    out = [output_size(m, k, stride) for m in size]
    hidden = torch.randn(b, hc, G.order, *out, dtype=dtype, generator=gen, requires_grad=True)
    w = torch.randn(s * k**3, hc, dtype=dtype, generator=gen, requires_grad=True)
    bias_ = torch.randn(s * k**3, dtype=dtype, generator=gen, requires_grad=True) if bias else None
    return v, hidden, w, bias_, G.relative_position_index(k)


@pytest.mark.parametrize(
    "case",
    [("O", 2, 4, 2, 3, 3, (3, 4, 5), 1, True), ("Oh", 1, 2, 1, 2, 3, (3, 2, 3), 1, False),
     ("O", 1, 3, 3, 1, 3, (5, 3, 5), 2, True), ("O", 1, 2, 2, 2, 5, (4, 3, 3), 1, True)],
    ids=["O-k3", "Oh-nobias", "O-stride2", "O-k5"],
)  # fmt: skip
def test_fused_generator_matches_generate_then_aggregate(case):
    """numba's 3-D aggregation with W2 fused in == the kernels generated first, then the reference aggregation."""
    name, b, c, s, hc, k, size, stride, bias = case
    v, hidden, w, bias_, index = _generated_inputs(GROUPS[name], b, c, s, hc, k, size, stride, torch.float64, bias=bias)
    wrt = (v, hidden, w) if bias_ is None else (v, hidden, w, bias_)
    go = None
    results = []
    for backend in ("reference", "numba"):
        out = aggregate_generated(v, hidden, w, bias_, index, stride, backend)
        go = torch.randn(out.shape, dtype=out.dtype, generator=torch.Generator().manual_seed(9)) if go is None else go
        results.append((out, *torch.autograd.grad(out, wrt, go)))
    for what, r, x in zip(("out", "grad_v", "grad_hidden", "grad_weight", "grad_bias"), *results):
        err = float((x - r).abs().max() / r.abs().max().clamp_min(1.0))
        assert err < 1e-12, f"{what}: {err:.2e}"


def test_fused_generator_gradcheck_float64():
    v, hidden, w, bias_, index = _generated_inputs(O, 1, 2, 2, 2, 3, (2, 3, 2), 1, torch.float64, seed=4)

    def f(v, hidden, w, bias_):
        return aggregate_generated(v, hidden, w, bias_, index, 1, "numba")

    assert torch.autograd.gradcheck(f, (v, hidden, w, bias_), fast_mode=True)


def test_fused_generator_only_where_declared(monkeypatch):
    """backend='shift' (no fused generator) generates the kernels first; numba's fused function is not called."""
    import e4net.backends.numba_agg3d as numba_agg3d

    calls = []
    real = numba_agg3d.aggregate_generated_numba_3d
    monkeypatch.setattr(numba_agg3d, "aggregate_generated_numba_3d", lambda *a: calls.append(1) or real(*a))
    v, hidden, w, bias_, index = _generated_inputs(O, 1, 2, 2, 2, 3, (3, 3, 3), 1, torch.float32)
    out_shift = aggregate_generated(v, hidden, w, bias_, index, 1, "shift")
    assert not calls
    out_auto = aggregate_generated(v, hidden, w, bias_, index, 1, "auto")
    assert calls == [1]
    torch.testing.assert_close(out_auto, out_shift, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="weight must be"):
        aggregate_generated(v, hidden, w[:, :1], bias_, index)


# The register-blocked kernels (stride 1, generated per (hidden, channels per slice, k)) against the generic numba
# kernels. Grids whose accumulator spans several tiles (at most _numba_blocked.CHUNK each, the last one ragged), k = 3 and 5,
# several slices, float64 and float32; the last case is e4net3d's layer shape.
BLOCKED_CASES = [
    ("O", 2, 4, 2, 3, 3, (9, 7, 11), torch.float64),
    ("Oh", 1, 3, 1, 2, 5, (5, 6, 7), torch.float64),
    ("O", 2, 8, 2, 8, 3, (8, 8, 8), torch.float32),
]


@pytest.mark.parametrize("case", BLOCKED_CASES, ids=["O-k3-f64", "Oh-k5-f64", "O-e4net3d-f32"])
def test_blocked_kernels_match_generic(case, monkeypatch):
    """Outputs and the gradients of v, hidden, W2 and b2 of the blocked kernels equal the generic ones'."""
    import e4net.backends._numba_blocked as blocked

    name, b, c, s, hc, k, size, dtype = case
    assert blocked.supported(hc, c // s, k)
    used = []
    real = blocked.kernels
    monkeypatch.setattr(blocked, "kernels", lambda *a: used.append(a) or real(*a))
    v, hidden, w, bias_, index = _generated_inputs(GROUPS[name], b, c, s, hc, k, size, 1, dtype, seed=3)
    go = torch.randn(b, c, GROUPS[name].order, *size, dtype=dtype, generator=torch.Generator().manual_seed(5))
    results = []
    for on in (False, True):
        monkeypatch.setattr(blocked, "ENABLED", on)
        out = aggregate_generated(v, hidden, w, bias_, index, 1, "numba")
        results.append((out, *torch.autograd.grad(out, (v, hidden, w, bias_), go)))
    assert used and set(used) == {(hc, c // s, k)}, "the blocked kernels were not used"
    tol = 1e-12 if dtype == torch.float64 else 2e-6
    for what, r, x in zip(("out", "grad_v", "grad_hidden", "grad_weight", "grad_bias"), *results):
        err = float((x - r).abs().max() / r.abs().max())
        assert err < tol, f"{what}: {err:.2e}"


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_blocked_kernels_read_the_batch_inside_layout(dtype):
    """``v`` stored as ``(C, |A|, B, D, H, W)`` (E4's shared 1x1 maps) is read in place: the output and all gradients
    equal those of a contiguous ``v``, and ``grad_v`` comes back in ``v``'s layout."""
    import e4net.backends._numba_blocked as blocked

    v, hidden, w, bias_, index = _generated_inputs(O, 3, 4, 2, 3, 3, (5, 4, 6), 1, dtype, seed=7)
    inside = v.detach().permute(1, 2, 0, 3, 4, 5).contiguous().permute(2, 0, 1, 3, 4, 5).requires_grad_()
    assert not inside.is_contiguous() and blocked.value_layout(inside)[3]
    go = torch.randn(v.shape, dtype=dtype, generator=torch.Generator().manual_seed(8))
    results = []
    for vv in (v, inside):
        out = aggregate_generated(vv, hidden, w, bias_, index, 1, "numba")
        results.append((out, *torch.autograd.grad(out, (vv, hidden, w, bias_), go)))
    for r, x in zip(*results):
        assert torch.equal(r, x)
    assert results[1][1].permute(1, 2, 0, 3, 4, 5).is_contiguous()  # grad_v in the layout of v


def test_blocked_kernels_only_where_generated(monkeypatch):
    """Stride 2, and layers too wide for the register tile, take the generic kernels (and still match the
    reference)."""
    import e4net.backends._numba_blocked as blocked

    assert not blocked.supported(blocked.MAX_REGISTERS, 1, 3) and not blocked.supported(4, 2, 7)
    monkeypatch.setattr(blocked, "kernels", lambda *a: pytest.fail(f"blocked kernels asked for {a}"))
    for hc, stride in ((blocked.MAX_REGISTERS, 1), (2, 2)):
        v, hidden, w, bias_, index = _generated_inputs(O, 1, 2, 2, hc, 3, (3, 5, 3), stride, torch.float64)
        out = aggregate_generated(v, hidden, w, bias_, index, stride, "numba")
        ref = aggregate_generated(v, hidden, w, bias_, index, stride, "reference")
        torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)


def test_blocked_kernel_modules(tmp_path, monkeypatch):
    """The generated module is written once under $E4NET_CACHE, named after its source (never stale); an unusable
    cache directory falls back to a temporary one."""
    import e4net.backends._numba_blocked as blocked

    monkeypatch.setenv("E4NET_CACHE", str(tmp_path))
    first = blocked.kernels.__wrapped__(2, 1, 3)
    assert first.path.parent == tmp_path / "numba-kernels" and first.path.name.startswith("blocked3d_h2_c1_k3_")
    assert blocked.kernels.__wrapped__(2, 1, 3).path == first.path
    assert first.path.read_text() == blocked.module_source(2, 1, 3)
    assert blocked.module_source(2, 1, 3) != blocked.module_source(2, 1, 5)
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("E4NET_CACHE", str(tmp_path / "file"))  # cannot hold a directory
    fallback = blocked.kernels.__wrapped__(2, 1, 3)
    assert tmp_path not in fallback.path.parents and fallback.path.read_text() == first.path.read_text()
    with pytest.raises(ValueError, match="no blocked kernels"):
        blocked.kernels.__wrapped__(blocked.MAX_REGISTERS, 1, 3)


def test_stale_kernel_modules_are_pruned(tmp_path, monkeypatch):
    """A generated module not loaded for STALE_DAYS goes, with numba's cache of its machine code; one loaded since
    (loading touches it) and unrelated files stay."""
    import os
    import time

    import e4net.backends._numba_blocked as blocked

    monkeypatch.setenv("E4NET_CACHE", str(tmp_path))
    folder = tmp_path / "numba-kernels"
    code = folder / "__pycache__"
    code.mkdir(parents=True)
    old = time.time() - (blocked.STALE_DAYS + 1) * 86400
    stale = folder / "blocked3d_h2_c1_k3_0123456789abcdef0123.py"
    machine = [code / f"{stale.stem}.forward-212.py311.nbi", code / f"{stale.stem}.forward-212.py311.1.nbc"]
    kept = [folder / "notes.txt", code / "blocked3d_h2_c1_k3_0123456789abcdef0124.forward-212.py311.nbi"]
    for path in [stale, *machine, *kept]:
        path.write_text("x")
        os.utime(path, (old, old))
    live = blocked.kernels.__wrapped__(2, 1, 3)  # the first load in this folder prunes it
    assert not stale.exists() and not any(p.exists() for p in machine)
    assert all(p.exists() for p in kept) and live.path.exists()
    os.utime(live.path, (old, old))
    blocked.kernels.__wrapped__(2, 1, 3)  # loaded again: touched, fresh
    assert live.path.stat().st_mtime > old + 86400 and blocked.prune.__wrapped__(folder) == []
    later = time.time() + (blocked.STALE_DAYS + 1) * 86400
    assert blocked.prune.__wrapped__(folder, now=later)[0] == live.path and not live.path.exists()
    assert all(p.exists() for p in kept)


def test_dispatcher_routes_by_rank():
    v, ker, index, kb = _inputs(O, 1, 2, 2, 3, (3, 3, 3), 1, torch.float32)
    assert resolve_backend("auto", v, ker, kb) == "numba"  # the fused CPU kernel declares voxel grids too
    assert resolve_backend("auto", v.double(), ker.double(), kb.double()) == "numba"
    assert resolve_backend("auto", v.half(), ker.half()) == "shift"  # numba does not declare fp16: the fallback
    for name in ("reference", "shift", "numba", "triton"):
        assert get_backend(name).load_3d is not None and get_backend(name).loader(3) is get_backend(name).load_3d


def test_backend_without_3d_function_is_not_given_voxels(monkeypatch):
    """A backend that declares only pixel grids is never called with voxel grids: the dispatcher falls back."""
    calls = []

    def only_2d(*args):
        calls.append(args)
        raise AssertionError("called with voxel grids")

    monkeypatch.setitem(
        dispatch_module._state.backends, "only2d", Backend("only2d", lambda: only_2d, auto_priority={"cpu": 99})
    )
    v, ker, index, _ = _inputs(O, 1, 2, 1, 3, (3, 3, 3), 1, torch.float32)
    assert resolve_backend("auto", v, ker) == "numba" and resolve_backend("only2d", v, ker) == "shift"
    out = aggregate(v, ker, index, 1, "only2d")
    assert not calls
    torch.testing.assert_close(out, aggregate(v, ker, index, 1, "reference"))
    assert Backend("x", lazy_function("math", "sqrt")).loader(3) is None


def test_3d_shape_checks():
    v, ker, index, _ = _inputs(O, 1, 2, 1, 3, (3, 3, 3), 1, torch.float32)
    with pytest.raises(ValueError, match="needs kernel"):
        aggregate(v, ker[..., :2], index)
    with pytest.raises(ValueError, match="k x k x k grid"):
        aggregate(v, ker[:, :, :26], index[:, :26])


@pytest.fixture(scope="module")
def interpreted() -> dict[str, dict]:
    pytest.importorskip("triton", reason="triton is not installed")
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(REPO / "src")}
    script = REPO / "tests" / "triton_interp_cases_3d.py"
    res = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
    assert res.returncode == 0, f"interpreter run failed:\n{res.stderr[-4000:]}"
    rows = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
    return {r["case"]: r for r in rows}


TOL = {"float32": 1e-5, "float64": 1e-12}


@pytest.mark.slow
@pytest.mark.parametrize("case", [c for c in CASES if c[-1] is None], ids=lambda c: c[0])
def test_triton_3d_matches_reference(interpreted, case):
    row = interpreted[case[0]]
    for key in ("out", "grad_v", "grad_kernel"):
        assert row[key] <= TOL[row["dtype"]], f"{case[0]}: {key} differs from the reference by {row[key]:.3g}"


@pytest.mark.slow
def test_triton_3d_planted_bug_is_detected(interpreted):
    row = interpreted["planted-wrong-transform"]
    assert row["out"] > 1e-3 and row["grad_kernel"] > 1e-3
