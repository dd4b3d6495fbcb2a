"""Run by tests/test_backend_triton.py in a subprocess with ``TRITON_INTERPRET=1`` (set before triton is imported).

Compares the Triton aggregation (forward, grad wrt v, grad wrt kernel) with the reference backend on small CPU
shapes and prints one JSON object per case: ``{"case": ..., "out": err, "grad_v": err, "grad_kernel": err}``.
Not collected by pytest (no ``test_`` prefix).
"""

from __future__ import annotations

import json
import os
import sys
import zlib

# (name, group, batch, channels, slices, k, h, w, stride, dtype, planted_bug)
CASES = [
    ("p4-odd-k3-s1-f64", "p4", 2, 4, 2, 3, 5, 5, 1, "float64", None),
    ("p4-even-k5-s1-f32", "p4", 1, 3, 3, 5, 6, 4, 1, "float32", None),
    ("p4-odd-k3-stride2-f64", "p4", 1, 2, 1, 3, 7, 5, 2, "float64", None),
    ("p4m-odd-k5-s1-f64", "p4m", 1, 4, 2, 5, 7, 7, 1, "float64", None),
    ("p4m-even-k3-s1-f32", "p4m", 2, 2, 2, 3, 4, 6, 1, "float32", None),
    ("p4m-odd-k5-stride2-f32", "p4m", 1, 3, 1, 5, 5, 7, 2, "float32", None),
    ("p4m-even-k3-stride2-f64", "p4m", 1, 2, 2, 3, 6, 4, 2, "float64", None),
    ("p4-k1-f64", "p4", 1, 2, 2, 1, 3, 4, 1, "float64", None),
    # Planes wider than one pixel block (k=5: 128 pixels per block; k=3: 256): several programs per plane.
    ("p4-multiblock-k5-f32", "p4", 1, 2, 2, 5, 12, 11, 1, "float32", None),
    ("p4m-multiblock-k3-stride2-f64", "p4m", 1, 2, 1, 3, 17, 17, 2, "float64", None),
    # Planted bug: the kernel of slot a transformed by the wrong element. The comparison must catch it.
    ("planted-wrong-transform", "p4m", 1, 2, 1, 3, 5, 5, 1, "float64", "wrong_perm"),
]


def run_case(name, group, b, c, s, k, h, w, stride, dtype, bug) -> dict:
    import torch

    from e4net.backends import aggregate, output_size
    from e4net.backends.triton_agg import TritonAggregate
    from e4net.groups import get

    g = get(group)
    dt = getattr(torch, dtype)
    gen = torch.Generator().manual_seed(zlib.crc32(name.encode()))
    n = g.order
    v = torch.randn(b, c, n, h, w, dtype=dt, generator=gen, requires_grad=True)
    ho, wo = output_size(h, k, stride), output_size(w, k, stride)
    ker = torch.randn(b, s, k * k, n, ho, wo, dtype=dt, generator=gen, requires_grad=True)
    perm = g.relative_position_index(k)
    perm_used = perm.roll(1, 0) if bug == "wrong_perm" else perm
    out = TritonAggregate.apply(v, ker, perm_used, stride)
    go = torch.randn(out.shape, dtype=dt, generator=gen)
    gv, gk = torch.autograd.grad(out, (v, ker), go)
    ref = aggregate(v, ker, perm, stride, "reference")
    rgv, rgk = torch.autograd.grad(ref, (v, ker), go)
    err = {
        key: (a - r).abs().max().item() / max(1.0, r.abs().max().item())
        for key, a, r in (("out", out, ref), ("grad_v", gv, rgv), ("grad_kernel", gk, rgk))
    }
    return {"case": name, "dtype": dtype, "shape": list(out.shape), **err}


if __name__ == "__main__":
    if os.environ.get("TRITON_INTERPRET") != "1":
        sys.exit("run with TRITON_INTERPRET=1 (Triton reads it when the kernels are decorated)")
    for case in CASES:
        print(json.dumps(run_case(*case)), flush=True)
