"""The E4 aggregation backends agree with the reference (the literal math of Eq. 12) in outputs and gradients; the
backend contract: each backend's declaration, the dispatcher's choice and fallback (decided there, never inside an
implementation), a backend failing at run time marked unusable once, ``use_backend`` and ``set_backend``."""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import warnings

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from e4net import backends
from e4net.backends import aggregate, dispatch, get_backend, resolve_backend, transform_kernel, use_backend
from e4net.backends._geometry import kernel_side
from e4net.backends.dispatch import last_backend_run
from e4net.groups import P4, P4M
from e4net.nn import E4Conv, set_backend

GROUPS = [P4, P4M]


def _cannot_run_here(name: str) -> str | None:
    """Why backend ``name`` would not itself run on this process's CPU float64 tensors with gradients (the
    dispatcher would run the fallback instead), or None if it runs."""
    v = torch.zeros(1, 1, 4, 3, 3, dtype=torch.float64, requires_grad=True)
    kern = torch.zeros(1, 1, 9, 4, 3, 3, dtype=torch.float64, requires_grad=True)
    ran = resolve_backend(name, v, kern)
    if ran == name:
        return None
    hint = " (Triton runs on CUDA, or on CPU under TRITON_INTERPRET=1)" if name == "triton" else ""
    return f"the {name!r} backend cannot run on CPU float64 tensors here{hint}: the dispatcher would run {ran!r}"


# Every available backend but the reference, each skipped (with the reason) where it cannot run, never replaced by the
# fallback: a case that ran "shift" under another name would test shift twice and the named backend not at all.
FAST = [
    pytest.param(name, marks=pytest.mark.skipif(bool(why := _cannot_run_here(name)), reason=why or ""))
    for name in backends.available_backends()
    if name not in ("auto", "reference")
]


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
    assert last_backend_run() == backend  # the named implementation ran, not the fallback
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
    assert last_backend_run() == backend


def test_unknown_backend():
    with pytest.raises(ValueError, match="unknown aggregation backend 'fastest'"):
        backends.check_backend("fastest")


def test_auto_resolves_on_cpu():
    assert backends.resolve_backend("auto", torch.device("cpu")) in backends.available_backends()


# ---- the contract: declarations, the dispatcher's choice and fallback, use_backend, set_backend ----------------------
HAS_NUMBA = importlib.util.find_spec("numba") is not None
HAS_TRITON = importlib.util.find_spec("triton") is not None
needs_numba = pytest.mark.skipif(not HAS_NUMBA, reason="numba is not installed")
needs_triton = pytest.mark.skipif(not HAS_TRITON, reason="triton is not installed")


@pytest.fixture
def registry(monkeypatch):
    """A scratch copy of the dispatcher's state (declarations and the unusable set), restored after the test."""
    state = dispatch._State()
    state.backends.update(dispatch._state.backends)
    monkeypatch.setattr(dispatch, "_state", state)
    return state


@pytest.fixture
def no_interpreter(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)


def _small(dtype=torch.float32, device="cpu", kernel_dtype=None):
    v = torch.randn(1, 2, 4, 5, 5, dtype=dtype, device=device)
    kern = torch.randn(1, 2, 9, 4, 5, 5, dtype=kernel_dtype or dtype, device=device)
    return v, kern, P4.relative_position_index(3)


def _raising(name):
    def fn(*args, **kwargs):
        raise AssertionError(f"the dispatcher called the {name} implementation")

    return fn


def test_declarations():
    shift, ref = get_backend("shift"), get_backend("reference")
    assert shift.devices is None and shift.dtypes is None and dict(shift.auto_priority) == {"cpu": 0, "cuda": 0}
    assert ref.devices is None and not ref.auto_priority and not ref.fuses_bias
    assert all(get_backend(n).autograd for n in backends.available_backends() if n != "auto")
    if HAS_NUMBA:
        numba = get_backend("numba")
        assert numba.devices == {"cpu"} and numba.dtypes == {torch.float32, torch.float64}
        assert numba.fuses_bias and dict(numba.auto_priority) == {"cpu": 10} and numba.requires == ("numba",)
        assert not numba.recover_on
    if HAS_TRITON:
        triton = get_backend("triton")
        assert triton.devices == {"cuda", "cpu"} and not triton.fuses_bias
        assert triton.dtypes == {torch.float16, torch.bfloat16, torch.float32, torch.float64}
        assert dict(triton.auto_priority) == {"cuda": 10} and triton.recover_on == {"cuda"}
    with pytest.raises(ValueError, match="'auto' is a choice"):
        get_backend("auto")
    with pytest.raises(ValueError, match="auto_priority names devices it does not declare"):
        backends.Backend("x", lambda: None, devices={"cpu"}, auto_priority={"cuda": 1})
    with pytest.raises(TypeError, match="expects a Backend"):
        backends.register_backend(lambda *a: None)


@needs_numba
@pytest.mark.parametrize(
    "dtype,kernel_dtype,device,expected",
    [
        (torch.float32, None, "cpu", "numba"),
        (torch.float64, None, "cpu", "numba"),
        (torch.bfloat16, None, "cpu", "shift"),
        (torch.float16, None, "cpu", "shift"),
        (torch.float32, torch.float64, "cpu", "shift"),  # mixed dtypes: numba declares one dtype for all
        (torch.float32, None, "meta", "shift"),  # no backend declares meta for auto: the fallback
    ],
)
def test_auto_choice(dtype, kernel_dtype, device, expected, no_interpreter):
    v, kern, _ = _small(dtype, device, kernel_dtype)
    assert resolve_backend("auto", v, kern) == expected
    assert resolve_backend("numba", v, kern) == expected  # numba, or the fallback where it does not declare it


@needs_numba
def test_choice_for_a_device_and_a_bias():
    assert resolve_backend("auto", torch.device("cpu")) == "numba"  # the default dtype, float32
    assert resolve_backend("auto", "meta") == "shift"
    v, kern, _ = _small(torch.float32)
    assert resolve_backend("numba", v, kern, torch.zeros(2, 9, dtype=torch.float64)) == "shift"
    assert resolve_backend("reference", v, kern) == "reference"


IMPLEMENTATIONS = {  # backend -> (module, function) of its implementation
    "reference": ("e4net.backends.reference", "aggregate_reference"),
    "shift": ("e4net.backends.shift", "aggregate_shift"),
    "numba": ("e4net.backends.numba_agg", "aggregate_numba"),
    "triton": ("e4net.backends.triton_agg", "aggregate_triton"),
}


@pytest.fixture
def ran(monkeypatch) -> list[str]:
    """The implementations called, in order, recorded by wrapping each installed implementation function."""
    calls: list[str] = []
    for name, (module, attr) in IMPLEMENTATIONS.items():
        if name not in backends.available_backends():
            continue
        mod = importlib.import_module(module)
        fn = getattr(mod, attr)
        monkeypatch.setattr(mod, attr, lambda *a, _fn=fn, _name=name, **kw: calls.append(_name) or _fn(*a, **kw))
    return calls


def test_the_implementation_that_ran_is_recorded(ran, no_interpreter):
    """``last_backend_run`` names the implementation that actually ran (checked against the implementations' own
    calls): the named backend where it runs, the fallback where it cannot, the ``use_backend`` override."""
    v64, kern64, perm = _small(torch.float64)
    vbf, kernbf, _ = _small(torch.bfloat16)
    cases = [("reference", v64, kern64, "reference"), ("shift", v64, kern64, "shift"), ("auto", vbf, kernbf, "shift")]
    if HAS_NUMBA:
        cases += [("numba", v64, kern64, "numba"), ("auto", v64, kern64, "numba"), ("numba", vbf, kernbf, "shift")]
    if HAS_TRITON:
        cases += [("triton", v64, kern64, "shift")]  # CPU without the interpreter: the fallback, recorded as such
    for asked, v, kern, expected in cases:
        ran.clear()
        aggregate(v, kern, perm, 1, asked)
        assert ran == [expected] and last_backend_run() == expected, (asked, v.dtype, ran)
    with use_backend("reference"):
        ran.clear()
        aggregate(v64, kern64, perm, 1, "shift")
        assert ran == ["reference"] and last_backend_run() == "reference"


def test_last_backend_run_is_per_context():
    """The record lives in a context variable: a fresh context has no record, and its calls do not leak out."""
    import contextvars

    v, kern, perm = _small(torch.float64)
    aggregate(v, kern, perm, 1, "reference")
    ctx = contextvars.Context()
    assert ctx.run(last_backend_run) is None
    ctx.run(aggregate, v, kern, perm, 1, "shift")
    assert ctx.run(last_backend_run) == "shift" and last_backend_run() == "reference"


@needs_triton
def test_triton_choice_without_cuda(no_interpreter, monkeypatch):
    """CPU tensors run Triton only under its interpreter; a cuda device picks it (cuda-less: as a declaration)."""
    v, kern, _ = _small(torch.float32)
    assert resolve_backend("triton", v, kern) == "shift"
    assert resolve_backend("auto", torch.device("cuda")) == "triton"
    assert resolve_backend("triton", torch.device("meta")) == "shift"
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert resolve_backend("triton", v, kern) == "triton"
    assert resolve_backend("triton", v, kern.double()) == "shift"  # mixed dtypes


@needs_numba
def test_fallback_is_decided_by_the_dispatcher(monkeypatch, no_interpreter):
    """Tensors a backend does not declare never reach its implementation: they run on shift (same result)."""
    from e4net.backends import numba_agg

    monkeypatch.setattr(numba_agg, "aggregate_numba", _raising("numba"))
    cases = [
        _small(torch.bfloat16),
        _small(torch.float32, kernel_dtype=torch.float64),
        _small(torch.float32, device="meta"),
    ]
    for v, kern, perm in cases:
        for name in ("numba", "auto"):
            out = aggregate(v, kern, perm, 1, name)
            assert out.shape == v.shape and out.dtype == torch.promote_types(v.dtype, kern.dtype)
            if v.device.type != "meta":
                torch.testing.assert_close(out, aggregate(v, kern, perm, 1, "shift"))
    v, kern, perm = _small(torch.float32)
    bias64 = torch.zeros(2, 9, dtype=torch.float64)
    torch.testing.assert_close(aggregate(v, kern, perm, 1, "numba", bias64), aggregate(v, kern.double(), perm))
    with pytest.raises(AssertionError, match="called the numba implementation"):  # the patch is live: f32 reaches it
        aggregate(v, kern, perm, 1, "numba")
    if HAS_TRITON:
        from e4net.backends import triton_agg

        monkeypatch.setattr(triton_agg, "aggregate_triton", _raising("triton"))
        aggregate(v, kern, perm, 1, "triton")  # CPU without the interpreter


def test_autograd_declaration(registry):
    """A forward-only backend (``autograd=False``) runs without gradients and is passed over when one is wanted."""
    calls = []

    def forward_only(v, kernel, index, stride):
        calls.append(1)
        return backends.aggregate(v, kernel, index, stride, "shift").detach()

    backends.register_backend(backends.Backend("fwd", lambda: forward_only, autograd=False, auto_priority={"cpu": 99}))
    v, kern, perm = _small(torch.float64)
    assert resolve_backend("auto", v, kern) == "fwd"
    aggregate(v, kern, perm, 1, "fwd")
    assert calls == [1]
    kern.requires_grad_()
    assert resolve_backend("auto", v, kern) != "fwd" and resolve_backend("fwd", v, kern) == "shift"
    out = aggregate(v, kern, perm, 1, "fwd")
    assert calls == [1] and out.requires_grad
    with torch.no_grad():
        assert resolve_backend("fwd", v, kern) == "fwd"


def test_shapes_are_checked_before_any_backend_runs(registry):
    backends.register_backend(backends.Backend("boom", lambda: _raising("boom")))
    v, kern, perm = _small(torch.float64)
    for bad_kern, bad_perm, stride in ((kern, perm, 2), (kern[:, :, :4], perm, 1), (kern, perm[:2], 1)):
        with pytest.raises(ValueError, match="aggregation"):
            aggregate(v, bad_kern, bad_perm, stride, "boom")
    with pytest.raises(ValueError, match="kernel_bias must have shape"):
        aggregate(v, kern, perm, 1, "boom", kernel_bias=torch.zeros(2, 4, dtype=torch.float64))
    assert kernel_side(25) == 5
    with pytest.raises(ValueError, match="k x k grid"):
        kernel_side(8)


def test_use_backend_nests_and_validates(no_interpreter):
    v, kern, perm = _small(torch.float64)
    with pytest.raises(ValueError, match="unknown aggregation backend 'fastest'"):
        use_backend("fastest")  # validated when called, before the block
    outer = resolve_backend("auto", v, kern)
    with use_backend("reference") as name:
        assert name == "reference"
        assert resolve_backend("shift", v, kern) == "reference" and resolve_backend("auto", v, kern) == "reference"
        with use_backend("shift"):
            assert resolve_backend("reference", v, kern) == "shift"
        assert resolve_backend("shift", v, kern) == "reference"
        with pytest.raises(RuntimeError), use_backend("auto"):
            assert resolve_backend("reference", v, kern) == outer
            raise RuntimeError("leaving the block by an exception restores the outer choice too")
        assert resolve_backend("shift", v, kern) == "reference"
    assert resolve_backend("shift", v, kern) == "shift" and resolve_backend("auto", v, kern) == outer
    if HAS_TRITON:
        with use_backend("triton"):  # still subject to the declarations: CPU without the interpreter -> shift
            assert resolve_backend("reference", v, kern) == "shift"


def test_use_backend_overrides_every_layer(monkeypatch):
    from e4net.backends import reference

    calls = []
    orig = reference.aggregate_reference
    monkeypatch.setattr(reference, "aggregate_reference", lambda *a: calls.append(1) or orig(*a))
    torch.manual_seed(0)
    layer = E4Conv(2, 2, 3, "p4", backend="shift").double()
    x = torch.randn(1, 2, 4, 5, 5, dtype=torch.float64)
    y = layer(x)
    assert not calls
    with use_backend("reference"):
        y_ref = layer(x)
    assert calls == [1] and layer.backend == "shift"
    torch.testing.assert_close(y, y_ref)
    layer(x)
    assert calls == [1]


def test_set_backend_validates():
    model = torch.nn.Sequential(E4Conv(2, 2, 3, "p4"), torch.nn.ReLU(), E4Conv(2, 2, 3, "p4", backend="reference"))
    with pytest.raises(ValueError, match="unknown aggregation backend 'fastest'; available: auto, reference, shift"):
        set_backend(model, "fastest")
    assert [m.backend for m in model if isinstance(m, E4Conv)] == ["auto", "reference"]
    with pytest.raises(ValueError, match="unknown aggregation backend 'fastest'"):
        set_backend(torch.nn.Linear(2, 2), "fastest")  # validated even where there is no E4 layer to set
    assert set_backend(model, "shift") is model
    assert [m.backend for m in model if isinstance(m, E4Conv)] == ["shift", "shift"]
    with pytest.raises(ValueError, match="unknown aggregation backend"):
        model[0].backend = "fastest"  # setting the attribute directly is validated too
    assert model[0].backend == "shift"


@needs_triton
def test_triton_failure_marks_it_unusable_once(registry, monkeypatch):
    """A Triton kernel that fails to compile (planted: the loaded kernel raises) on a device type the declaration
    recovers on marks Triton unusable there: one warning, the call falls back, later calls do not try again."""
    from e4net.backends import triton_agg

    attempts = []

    class Failing:
        def __getitem__(self, grid):
            def launch(*args):
                attempts.append(grid)
                raise RuntimeError("planted: PTX not supported on this GPU")

            return launch

    monkeypatch.setattr(triton_agg, "_fwd_kernel", Failing())
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # Triton may run on CPU tensors; the kernel itself is the planted one
    # Stand-in for a GPU where the kernels do not compile: the same declaration, recovering on "cpu", auto-preferred.
    backends.register_backend(dataclasses.replace(get_backend("triton"), recover_on={"cpu"}, auto_priority={"cpu": 99}))
    v, kern, perm = _small(torch.float64)
    assert resolve_backend("triton", v, kern) == "triton" and resolve_backend("auto", v, kern) == "triton"
    with pytest.warns(RuntimeWarning, match="'triton' aggregation backend failed on cpu .*planted"):
        out = aggregate(v, kern, perm, 1, "triton")
    assert len(attempts) == 1 and registry.unusable == {("triton", "cpu")}
    torch.testing.assert_close(out, aggregate(v, kern, perm, 1, "reference"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        aggregate(v, kern, perm, 1, "triton")
        auto_out = aggregate(v, kern, perm, 1, "auto")
    assert len(attempts) == 1
    assert resolve_backend("triton", v, kern) == "shift"
    assert resolve_backend("auto", v, kern) == ("numba" if HAS_NUMBA else "shift")  # the next one in auto's order
    torch.testing.assert_close(auto_out, out)
    assert resolve_backend("auto", torch.device("cuda")) != "triton"  # as declared: unusable on cpu only
    assert resolve_backend("triton", torch.device("cuda")) == "triton"


@needs_triton
def test_triton_failure_propagates_where_not_declared_recoverable(registry, monkeypatch):
    """On CPU (the interpreter, a test harness) a failing kernel is a bug: it raises and nothing is marked."""
    from e4net.backends import triton_agg

    monkeypatch.setattr(triton_agg, "aggregate_triton", _raising("triton"))
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    v, kern, perm = _small(torch.float32)
    with pytest.raises(AssertionError, match="called the triton implementation"):
        aggregate(v, kern, perm, 1, "triton")
    assert not registry.unusable and resolve_backend("triton", v, kern) == "triton"
