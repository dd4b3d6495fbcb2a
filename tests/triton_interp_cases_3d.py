"""Run by tests/test_backends_3d.py in a subprocess with ``TRITON_INTERPRET=1`` (set before triton is imported).

Compares the Triton 3-D aggregation (forward, grad wrt v, grad wrt kernel) with the reference backend on small CPU
voxel grids and prints one JSON object per case. Not collected by pytest (no ``test_`` prefix).
"""

from __future__ import annotations

import json
import os
import sys
import zlib

# (name, group, batch, channels, slices, k, (d, h, w), stride, dtype, planted_bug)
CASES = [
    ("O-k3-s1-f64", "O", 1, 4, 2, 3, (3, 4, 3), 1, "float64", None),
    ("O-k3-stride2-f32", "O", 1, 2, 1, 3, (5, 3, 5), 2, "float32", None),
    ("Oh-k3-s1-f64", "Oh", 1, 2, 2, 3, (2, 3, 4), 1, "float64", None),
    ("O-k5-s1-f32", "O", 1, 2, 1, 5, (3, 3, 4), 1, "float32", None),
    ("O-k1-f64", "O", 2, 2, 2, 1, (2, 2, 3), 1, "float64", None),
    # more voxels than one block (k=3: 128 per block): several programs per volume
    ("O-multiblock-k3-f64", "O", 1, 1, 1, 3, (6, 5, 6), 1, "float64", None),
    # planted bug: the kernel of slot a transformed by the wrong element; the comparison must catch it
    ("planted-wrong-transform", "O", 1, 2, 1, 3, (3, 3, 3), 1, "float64", "wrong_perm"),
]


def run_case(name, group, b, c, s, k, size, stride, dtype, bug) -> dict:
    import torch

    from e4net.backends import aggregate, output_size
    from e4net.backends.triton_agg3d import TritonAggregate3d
    from e4net.groups import get

    g = get(group)
    dt = getattr(torch, dtype)
    gen = torch.Generator().manual_seed(zlib.crc32(name.encode()))
    n = g.order
    v = torch.randn(b, c, n, *size, dtype=dt, generator=gen, requires_grad=True)
    out_size = [output_size(m, k, stride) for m in size]
    ker = torch.randn(b, s, k**3, n, *out_size, dtype=dt, generator=gen, requires_grad=True)
    perm = g.relative_position_index(k)
    perm_used = perm.roll(1, 0) if bug == "wrong_perm" else perm
    out = TritonAggregate3d.apply(v, ker, perm_used, stride)
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
