"""The fused Triton aggregation computes exactly the reference aggregation (Eq. 12), checked on CPU in Triton's
interpreter (``TRITON_INTERPRET=1``): output, grad wrt v and grad wrt the kernel; p4 and p4m, odd and even
sizes, stride 1 and 2, float32 and float64. The interpreter must be switched on before the kernels are
decorated, so the cases run in one subprocess (tests/triton_interp_cases.py) and each is asserted here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("triton", reason="triton is not installed: the Triton backend is not registered")

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from triton_interp_cases import CASES  # noqa: E402

TOL = {"float32": 1e-5, "float64": 1e-12}


@pytest.fixture(scope="module")
def interpreted() -> dict[str, dict]:
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(REPO / "src")}
    script = REPO / "tests" / "triton_interp_cases.py"
    res = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
    assert res.returncode == 0, f"interpreter run failed:\n{res.stderr[-4000:]}"
    rows = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
    return {r["case"]: r for r in rows}


@pytest.mark.parametrize("case", [c for c in CASES if c[-1] is None], ids=lambda c: c[0])
def test_triton_matches_reference(interpreted, case):
    row = interpreted[case[0]]
    for key in ("out", "grad_v", "grad_kernel"):
        assert row[key] <= TOL[row["dtype"]], f"{case[0]}: {key} differs from the reference by {row[key]:.3g}"


def test_planted_bug_is_detected(interpreted):
    """With the kernels transformed by the wrong group elements, the same comparison fails."""
    row = interpreted["planted-wrong-transform"]
    assert row["out"] > 1e-3 and row["grad_kernel"] > 1e-3


def test_not_interpreting_on_cpu_falls_back_to_shift(monkeypatch):
    """Without the interpreter, CPU tensors given to the triton backend run the plain-PyTorch path (same math)."""
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    from e4net.backends import aggregate, triton_agg
    from e4net.groups import P4

    calls = []
    monkeypatch.setattr(triton_agg.TritonAggregate, "apply", lambda *a: calls.append(a))
    v, ker = torch.randn(1, 2, 4, 5, 5), torch.randn(1, 2, 9, 4, 5, 5)
    out = aggregate(v, ker, P4.relative_position_index(3), 1, "triton")
    assert not calls
    torch.testing.assert_close(out, aggregate(v, ker, P4.relative_position_index(3), 1, "reference"))


@pytest.mark.parametrize("kernel", ["_fwd_kernel", "_bwd_kernel_grad", "_bwd_value_grad"])
def test_kernels_compile_for_cuda_sm90_without_a_gpu(kernel, monkeypatch):
    """The real (non-interpreted) kernels lower through Triton's compiler and ptxas to an sm_90 (H100/H200) cubin."""
    monkeypatch.setenv("TRITON_DEFAULT_FP_FUSION", "1")  # Triton 3.9 warns when unset; FMA fusion is what we want
    import triton
    import triton.language as tl
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from e4net.backends import triton_agg

    fn = getattr(triton_agg, kernel)
    for dtype, stride, ks in (("fp32", 2, 5), ("fp64", 1, 3)):
        kkp = triton.next_power_of_2(ks * ks)
        consts = {
            "STRIDE": stride,
            "KS": ks,
            "KKP": kkp,
            "BLOCK": 4096 // kkp,
            "ACC": tl.float64 if dtype == "fp64" else tl.float32,
        }
        names = fn.arg_names
        sig = {names[0]: f"*{dtype}", names[1]: f"*{dtype}", names[2]: "*i32", names[3]: f"*{dtype}"}
        sig.update({n: "i32" for n in names[4:11]})
        sig.update({n: "constexpr" for n in consts})
        try:
            compiled = triton.compile(
                ASTSource(fn=fn, signature=sig, constexprs=consts), target=GPUTarget("cuda", 90, 32)
            )
        except RuntimeError as exc:  # e.g. no ptxas shipped with this triton build
            if "ptxas" in str(exc).lower():
                pytest.skip(f"Triton cannot run ptxas here: {exc}")
            raise
        assert compiled.asm["cubin"], f"{kernel} produced no cubin"
