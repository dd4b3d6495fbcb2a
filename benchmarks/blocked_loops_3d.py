"""The 3-D blocked aggregation's tile loops against fully unrolled variants with compile-time shifts (ninth session).

What it measures: the inner tile loops of ``e4net.backends._numba_blocked`` (``forward_tiles`` / ``backward_tiles``,
one split ``(b, a)`` and one slice, one thread) on random inputs of the bench layer's shape (``--size`` 16: a 16^3
volume, 8 hidden features, 4 channels per slice, k = 3, the wide layout with shared padding), against two variants
that are not in the package:

* **forward, unrolled**: all k^3 offsets inside the voxel loop, the offsets' flat shifts written into the source as
  constants (so the code is compiled per grid ``(H, W)``), the weights hoisted out of the tile loop;
* **backward, unrolled**: pass 1 computes, for all k^3 offsets at once, the kernels' gradient ``gk_u``, ``grad_h``
  (kept in registers over the offsets) and the regenerated kernel values into two tile buffers allocated inside the
  function (so LLVM knows they alias nothing and vectorises without overlap checks); pass 2 adds ``K_u g_c`` into
  ``grad_v`` offset by offset; pass 3 reduces ``grad_W2`` / ``grad_b2`` two offsets at a time.

Both variants are checked against the package's loops (the relative error is printed), then all are timed
interleaved (median of ``--rounds`` rounds of 20 calls each; the machine is noisy, compare within one run).
``--pitch`` sets the tile buffers' row pitch of the unrolled backward: a pitch of 1024 floats (4096 bytes) puts
every row of those buffers in the same L1 set and was about 1.5x slower than 600 when measured (default 656).

Measured with this script on the 2-core AMD EPYC VM (ninth session, idle): at 16^3 forward 24.5 us against 28.1
(1.15x; another run 1.12x), backward 83.7 against 107.3 (1.28x; with ``--pitch 1024`` 0.79x); at 8^3 (``--size 8``,
e4net3d's layers) 1.17x and 1.14x. In the bench layer (16^3, batch 4, 2 threads, 43-44 ms, of which the tile loops
take about 13 ms) that would save about 2.5 ms; the issue's 5x needs about 6 ms. Not in the package: each grid size
would be compiled separately (about 20 s for the pair), for a gain below the target.

Usage: python benchmarks/blocked_loops_3d.py [--size 16] [--rounds 6] [--pitch 656]
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
from numba import njit

from e4net.backends import _numba_blocked as blocked

NH, CS, K = 8, 4, 3
KK = K**3


def _shifts(hp: int, wp: int) -> list[int]:
    """The offsets' flat shifts in the wide layout (as ``forward`` / ``backward`` of the generated module)."""
    return [((u // (K * K)) * hp + (u // K) % K) * wp + u % K for u in range(KK)]


def _weights() -> list[str]:
    lines = [f"    w{u}_{q} = wsel[{u}, {q}]" for u in range(KK) for q in range(NH)]
    return lines + [f"    b{u} = bsel[{u}]" for u in range(KK)]


def _kernel_value(u: int) -> str:
    return f"b{u} + " + " + ".join(f"w{u}_{q} * x{q}" for q in range(NH))


def forward_unrolled(shifts: list[int]) -> str:
    """``forward_tiles`` with every offset inside the voxel loop and constant shifts."""
    body = ["def forward_tiles(hx, vps, acc, wsel, bsel, shift, slabs, pitch, span):", *_weights()]
    body += ["    for i0, m in tiles(slabs, pitch, span):"]
    body += [f"        h{q} = hx[{q}, i0:i0 + m]" for q in range(NH)]
    body += [f"        a{c} = acc[{c}, i0:i0 + m]" for c in range(CS)]
    body += [f"        v{c} = vps[{c}, i0:i0 + m + {max(shifts)}]" for c in range(CS)]
    body += ["        for i in range(m):"] + [f"            x{q} = h{q}[i]" for q in range(NH)]
    for u in range(KK):
        body.append(f"            kv = {_kernel_value(u)}")
        body += [f"            t{c} {'=' if u == 0 else '+='} kv * v{c}[i + {shifts[u]}]" for c in range(CS)]
    body += [f"            a{c}[i] = t{c}" for c in range(CS)]
    return "\n".join(body) + "\n"


def backward_unrolled(shifts: list[int], pitch: int) -> str:
    """``backward_tiles`` in three passes (see the module docstring), constant shifts, local tile buffers."""
    body = ["def backward_tiles(hx, vps, gx, gvps, ghx, wsel, bsel, shift, slabs, pitch, span, gkt, gw, gb):"]
    body += _weights()
    body += [f"    {name} = np.empty({rows} * {pitch}, dtype=gkt.dtype)" for name, rows in (("kt", KK), ("gk", KK))]
    body += [f"    ght = np.empty({NH} * {pitch}, dtype=gkt.dtype)", "    zero = gkt.dtype.type(0)"]
    body += ["    for i0, m in tiles(slabs, pitch, span):"]
    body += [f"        h{q} = hx[{q}, i0:i0 + m]" for q in range(NH)]
    body += [f"        gh{q} = ghx[{q}, i0:i0 + m]" for q in range(NH)]
    body += [f"        g{c} = gx[{c}, i0:i0 + m]" for c in range(CS)]
    body += [f"        v{c} = vps[{c}, i0:i0 + m + {max(shifts)}]" for c in range(CS)]
    body += ["        for i in range(m):"]  # pass 1
    body += [f"            x{q} = h{q}[i]" for q in range(NH)] + [f"            y{c} = g{c}[i]" for c in range(CS)]
    body += [f"            s{q} = gh{q}[i]" for q in range(NH)]
    for u in range(KK):
        body.append("            e = " + " + ".join(f"y{c} * v{c}[i + {shifts[u]}]" for c in range(CS)))
        body += [f"            gk[{u * pitch} + i] = e", f"            kt[{u * pitch} + i] = {_kernel_value(u)}"]
        body += [f"            s{q} += w{u}_{q} * e" for q in range(NH)]
    body += [f"            ght[{q * pitch} + i] = s{q}" for q in range(NH)]
    body += ["        for i in range(m):"] + [f"            gh{q}[i] = ght[{q * pitch} + i]" for q in range(NH)]
    for u in range(KK):  # pass 2
        body += [f"        gv{c} = gvps[{c}, i0 + {shifts[u]}:i0 + {shifts[u]} + m]" for c in range(CS)]
        body += ["        for i in range(m):", f"            kv = kt[{u * pitch} + i]"]
        body += [f"            gv{c}[i] += kv * g{c}[i]" for c in range(CS)]
    for u0 in range(0, KK, 2):  # pass 3
        us = range(u0, min(KK, u0 + 2))
        body += [f"        r{u} = zero" for u in us] + [f"        r{u}_{q} = zero" for u in us for q in range(NH)]
        body += ["        for i in range(m):"] + [f"            x{q} = h{q}[i]" for q in range(NH)]
        for u in us:
            body += [f"            e{u} = gk[{u * pitch} + i]", f"            r{u} += e{u}"]
            body += [f"            r{u}_{q} += e{u} * x{q}" for q in range(NH)]
        for u in us:
            body += [f"        gb[{u}] += r{u}"] + [f"        gw[{u}, {q}] += r{u}_{q}" for q in range(NH)]
    return "\n".join(body) + "\n"


def _compile(source: str, name: str, tiles):  # noqa: ANN001, ANN202 - numba dispatchers
    namespace = {"np": np, "tiles": tiles}
    exec(compile(source, f"<{name}>", "exec"), namespace)  # noqa: S102 - generated benchmark source
    return njit(fastmath=True)(namespace[name])


def _median_us(fn, make_args, rounds: int) -> float:  # noqa: ANN001
    times = []
    for _ in range(rounds):
        args = make_args()
        fn(*args)
        t = time.perf_counter()
        for _ in range(20):
            fn(*args)
        times.append((time.perf_counter() - t) / 20 * 1e6)
    return float(np.median(times))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=16, help="side of the cubic volume (default 16, the bench layer's)")
    ap.add_argument("--rounds", type=int, default=6, help="interleaved timing rounds of 20 calls (default 6)")
    ap.add_argument("--pitch", type=int, default=656, help="row pitch of the unrolled backward's tile buffers")
    args = ap.parse_args()
    blocked._allow_overlap_checks()
    module = sys.modules[blocked.kernels(NH, CS, K).forward.py_func.__module__]
    tiles = module.tiles
    s, p = args.size, K // 2
    hp = wp = s + p
    n, padded = s * hp * wp, (s + 2 * p) * hp * wp + 2 * p * wp + 2 * p + 1
    if args.pitch < blocked.CHUNK:
        ap.error(f"--pitch must be at least the tile size {blocked.CHUNK}")
    shifts = _shifts(hp, wp)
    shift = np.array(shifts, dtype=np.int64)
    rng = np.random.default_rng(0)
    f32 = np.float32
    hx, vps = rng.random((NH, n), dtype=f32), rng.random((CS, padded), dtype=f32)
    wsel, bsel, gx = rng.random((KK, NH), dtype=f32), rng.random(KK, dtype=f32), rng.random((CS, n), dtype=f32)
    geometry = (s, hp * wp, s * wp)  # slabs, pitch, span: as forward / backward call the tile loops

    def forward_args() -> list:
        return [hx, vps, np.zeros((CS, n), f32), wsel, bsel, shift, *geometry]

    def backward_args() -> list:
        grads = [np.zeros((CS, padded), f32), np.zeros((NH, n), f32)]
        return [hx, vps, gx, *grads, wsel, bsel, shift, *geometry, np.zeros((KK, blocked.CHUNK), f32),
                np.zeros((KK, NH), f32), np.zeros(KK, f32)]  # fmt: skip

    loops = {
        "forward": (forward_args, [2], blocked.forward_source(NH, CS, K), forward_unrolled(shifts), "forward_tiles"),
        "backward": (
            backward_args, [3, 4, 12, 13], blocked.backward_source(NH, CS, K), backward_unrolled(shifts, args.pitch),
            "backward_tiles",
        ),
    }  # fmt: skip
    print(f"{s}^3 volume, one split and slice, one thread; median of {args.rounds} interleaved rounds (us)")
    for what, (make_args, outputs, package_src, unrolled_src, name) in loops.items():
        t0 = time.perf_counter()
        package, unrolled = _compile(package_src, name, tiles), _compile(unrolled_src, name, tiles)
        ref, new = make_args(), make_args()
        package(*ref)
        unrolled(*new)
        err = max(float(np.abs(new[i] - ref[i]).max() / np.abs(ref[i]).max()) for i in outputs)
        compiled = time.perf_counter() - t0
        times = {"package": [], "unrolled": []}
        for _ in range(args.rounds):
            times["package"].append(_median_us(package, make_args, 1))
            times["unrolled"].append(_median_us(unrolled, make_args, 1))
        a, b = float(np.median(times["package"])), float(np.median(times["unrolled"]))
        print(f"{what:9s} package {a:7.1f}  unrolled {b:7.1f}  ratio {a / b:.2f}x  (max rel. error {err:.1e}, "
              f"compiled in {compiled:.0f} s)")  # fmt: skip


if __name__ == "__main__":
    main()
