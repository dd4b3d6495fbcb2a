"""Register-blocked fused aggregation on pixel grids with *stored* kernels (E4-Net's training path), stride 1.

The generic kernels of :mod:`e4net.backends.numba_agg` walk the plane once per channel and offset: ``acc[i] +=
K_u[i] v(i + s_u)`` reads the accumulator, the kernel row and the value row and writes the accumulator back for each
multiply-add (three loads and a store), and their backward pass does the same for ``grad_v`` and ``grad_K`` at once.
Here the ``C / s`` channels of one slice are handled together, their running sums kept in vector registers, one row
of ``k`` offsets at a time; the loop bodies are written out for each ``(channels per slice, k)`` (the register tile
must be a constant of the compiled code) and loaded like the 3-D blocked kernels
(:func:`e4net.backends._numba_blocked.load_module`: saved under the cache folder, compiled once per machine):

* forward, task ``(b, j, a)``: the ``k^2`` kernel planes of slot ``a`` (plus their bias, transformed by the choice of
  plane ``index[a, u]``) and the slice's value planes in the wide layout (row pitch ``w + 2p``), then per row ``dy``:
  ``t_c += K_u[i] v_c[i + dy wp + dx]`` over ``dx`` for every channel ``c`` of the slice;
* backward: ``grad_K_u[i] = sum_c g_c[i] v_c[i + s_u]`` (grad_out in registers), and ``grad_v`` gathered rather than
  scattered, ``grad_v_c[j] = sum_u K_u[j - s_u] g_c[j - s_u]``, with ``K`` and ``g`` stored after ``(k - 1)(wp + 1) +
  1`` zeros so that no read leaves the buffers: every output is written once, no read-modify-write of shifted rows.

Measured (one E4-Net E4 layer, batch 128, 2 threads, called directly against the generic kernels): 28x28 forward
12.6 -> 11.5 ms, backward 27.6 -> 20.2 ms; 14x14 4.8 -> 4.2 / 12.3 -> 7.8; 7x7 2.4 -> 1.7 / 7.0 -> 3.8. Copying the
short rows with explicit loops instead of numba's slice assignment then took 28x28 to 10.3 / 19.5 ms and 7x7 to
1.5 / 2.9. At 28x28 most of what remains is moving the 80 MB kernel tensor and its gradient. Results equal the generic
kernels' up to float rounding (tests/test_backend_numba.py).
"""

from __future__ import annotations

import functools
from types import SimpleNamespace

import numba

from ._numba_blocked import load_module

MAX_CHANNELS = 16
"""Most channels per slice written out (their sums stay in vector registers; beyond that the generic kernels)."""

MAX_SIDE = 7
"""Largest kernel side written out."""

ENABLED = True
"""Whether :func:`e4net.backends.numba_agg.aggregate_numba` takes these kernels where they apply (``False`` keeps the
generic ones, for comparisons)."""


def applies(stride: int, channels: int, slices: int, k: int) -> bool:
    """:data:`ENABLED`, stride 1, the channels split evenly over the slices, at most :data:`MAX_CHANNELS` per slice
    and ``k <= MAX_SIDE``."""
    return (
        ENABLED
        and stride == 1
        and slices >= 1
        and channels % slices == 0
        and 1 <= channels // slices <= MAX_CHANNELS
        and 1 <= k <= MAX_SIDE
    )


def _forward_rows(cs: int, k: int) -> list[str]:
    lines = ["def forward_rows(kx, vps, acc, wp, n):"]
    lines += [f"    a{c} = acc[{c}, 0:n]" for c in range(cs)] + [f"    a{c}[:] = 0" for c in range(cs)]
    lines += [f"    for r in range({k}):", "        o = r * wp"]
    lines += [f"        k{d} = kx[r * {k} + {d}, 0:n]" for d in range(k)]
    lines += [f"        v{c} = vps[{c}, o:o + n + {k - 1}]" for c in range(cs)]
    lines += ["        for i in range(n):"] + [f"            t{c} = a{c}[i]" for c in range(cs)]
    for d in range(k):
        lines += [f"            kv = k{d}[i]"] + [f"            t{c} += kv * v{c}[i + {d}]" for c in range(cs)]
    return lines + [f"            a{c}[i] = t{c}" for c in range(cs)]


def _grad_kernel_rows(cs: int, k: int) -> list[str]:
    lines = ["def grad_kernel_rows(gxm, m0, vps, gkx, wp, n):"]
    lines += [f"    g{c} = gxm[{c}, m0:m0 + n]" for c in range(cs)]
    lines += [f"    for r in range({k}):", "        o = r * wp"]
    lines += [f"        e{d} = gkx[r * {k} + {d}, 0:n]" for d in range(k)]
    lines += [f"        v{c} = vps[{c}, o:o + n + {k - 1}]" for c in range(cs)]
    lines += ["        for i in range(n):"] + [f"            y{c} = g{c}[i]" for c in range(cs)]
    return lines + [
        f"            e{d}[i] = " + " + ".join(f"y{c} * v{c}[i + {d}]" for c in range(cs)) for d in range(k)
    ]


def _grad_value_rows(cs: int, k: int) -> list[str]:
    # j - s_u = j - r wp - dx = (j + s0) + (k - 1 - dx) with s0 = m0 - r wp - (k - 1) >= 1
    lines = ["def grad_value_rows(kxm, gxm, m0, gvp, wp, npad):"]
    lines += [f"    q{c} = gvp[{c}, 0:npad]" for c in range(cs)] + [f"    q{c}[:] = 0" for c in range(cs)]
    lines += [f"    for r in range({k}):", f"        s0 = m0 - r * wp - {k - 1}"]
    lines += [f"        k{d} = kxm[r * {k} + {d}, s0:s0 + npad + {k - 1}]" for d in range(k)]
    lines += [f"        g{c} = gxm[{c}, s0:s0 + npad + {k - 1}]" for c in range(cs)]
    lines += ["        for j in range(npad):"] + [f"            t{c} = q{c}[j]" for c in range(cs)]
    for d in range(k):
        e = k - 1 - d
        lines += [f"            kv = k{d}[j + {e}]"] + [f"            t{c} += kv * g{c}[j + {e}]" for c in range(cs)]
    return lines + [f"            q{c}[j] = t{c}" for c in range(cs)]


_TASKS = """
@njit(cache=True, fastmath=True)
def load_kernels(kf, kbias, index, b, j, a, na, h, w, wp, kx, off):  # planes index[a, u] + bias, row pitch wp
    kk = kx.shape[0]
    ns = kbias.shape[0]
    plane = h * w
    for u in range(kk):
        kb = (((b * ns + j) * kk + index[a, u]) * na + a) * plane
        kbu = kbias[j, index[a, u]]
        for y in range(h):
            src = kf[kb + y * w : kb + (y + 1) * w]
            dst = kx[u, off + y * wp : off + y * wp + w]
            for x in range(w):
                dst[x] = src[x] + kbu


@njit(cache=True, fastmath=True)
def load_planes(src, b, j, a, nc, ns, na, h, w, wp, dst, off):  # the slice's channel planes, row pitch wp
    plane = h * w
    for ci in range(CS):
        cb = ((b * nc + j + ci * ns) * na + a) * plane
        row = dst[ci]
        for y in range(h):
            d, s = row[off + y * wp : off + y * wp + w], src[cb + y * w : cb + (y + 1) * w]
            for x in range(w):  # explicit loops: numba's slice assignment costs more per (short) row
                d[x] = s[x]


@njit(cache=True, fastmath=True)
def store_planes(buf, off, wp, b, j, a, nc, ns, na, h, w, dst):
    plane = h * w
    for ci in range(CS):
        cb = ((b * nc + j + ci * ns) * na + a) * plane
        row = buf[ci]
        for y in range(h):
            d, s = dst[cb + y * w : cb + (y + 1) * w], row[off + y * wp : off + y * wp + w]
            for x in range(w):
                d[x] = s[x]


@njit(parallel=True, cache=True, fastmath=True)
def forward(v, ker, kbias, index, out, nthreads):
    nb, nc, na, h, w = v.shape
    ns, kk = ker.shape[1], ker.shape[2]
    p = K // 2
    wp = w + 2 * p
    n, npad = h * wp, (h + 2 * p) * wp + K
    vf, kf, of = v.reshape(-1), ker.reshape(-1), out.reshape(-1)
    ntask = nb * ns * na
    nchunk = max(1, min(ntask, nthreads))
    for chunk in prange(nchunk):  # a contiguous run of tasks (b, j, a) per thread, its buffers allocated once
        vps = np.zeros((CS, npad), dtype=v.dtype)  # padding stays 0: only the interiors are loaded
        kx = np.zeros((kk, n), dtype=v.dtype)
        acc = np.empty((CS, n), dtype=v.dtype)
        for t in range(chunk * ntask // nchunk, (chunk + 1) * ntask // nchunk):
            b, j, a = t // (ns * na), (t // na) % ns, t % na
            load_kernels(kf, kbias, index, b, j, a, na, h, w, wp, kx, 0)
            load_planes(vf, b, j, a, nc, ns, na, h, w, wp, vps, p * wp + p)
            forward_rows(kx, vps, acc, wp, n)
            store_planes(acc, 0, wp, b, j, a, nc, ns, na, h, w, of)


@njit(parallel=True, cache=True, fastmath=True)
def backward(v, ker, kbias, index, go, gv, gk, gbias, nthreads):
    nb, nc, na, h, w = v.shape
    ns, kk = ker.shape[1], ker.shape[2]
    p = K // 2
    wp = w + 2 * p
    n, npad = h * wp, (h + 2 * p) * wp + K
    m0 = (K - 1) * (wp + 1) + 1  # zeros before K and grad_out: the gather of grad_v never leaves the buffers
    plane = h * w
    vf, kf, gof, gvf, gkf = v.reshape(-1), ker.reshape(-1), go.reshape(-1), gv.reshape(-1), gk.reshape(-1)
    ntask = nb * ns * na
    nchunk = max(1, min(ntask, nthreads))
    for chunk in prange(nchunk):
        vps = np.zeros((CS, npad), dtype=v.dtype)
        kxm = np.zeros((kk, m0 + npad + K), dtype=v.dtype)  # padding and scratch columns stay 0
        gxm = np.zeros((CS, m0 + npad + K), dtype=v.dtype)
        gkx = np.empty((kk, n), dtype=v.dtype)
        gvp = np.empty((CS, npad), dtype=v.dtype)
        for t in range(chunk * ntask // nchunk, (chunk + 1) * ntask // nchunk):
            b, j, a = t // (ns * na), (t // na) % ns, t % na
            load_kernels(kf, kbias, index, b, j, a, na, h, w, wp, kxm, m0)
            load_planes(vf, b, j, a, nc, ns, na, h, w, wp, vps, p * wp + p)
            load_planes(gof, b, j, a, nc, ns, na, h, w, wp, gxm, m0)
            grad_kernel_rows(gxm, m0, vps, gkx, wp, n)
            grad_value_rows(kxm, gxm, m0, gvp, wp, npad)
            for u in range(kk):
                kb = (((b * ns + j) * kk + index[a, u]) * na + a) * plane
                grow = gkx[u]
                for y in range(h):
                    d, s = gkf[kb + y * w : kb + (y + 1) * w], grow[y * wp : y * wp + w]
                    for x in range(w):
                        d[x] = s[x]
                gbias[t, index[a, u]] = gkx[u].sum()  # scratch columns are 0 (grad_out's are)
            store_planes(gvp, p * wp + p, wp, b, j, a, nc, ns, na, h, w, gvf)
"""


def module_source(cs: int, k: int) -> str:
    """The generated module for ``cs`` channels per slice and side ``k``: the three row loops and the task-level
    kernels ``forward(v, ker, kbias, index, out, nthreads)`` / ``backward(v, ker, kbias, index, go, gv, gk, gbias,
    nthreads)`` (the arguments of :mod:`e4net.backends.numba_agg`'s ``_forward`` / ``_backward`` at stride 1)."""
    jit = "@njit(fastmath=True, cache=True)\n"
    loops = [_forward_rows(cs, k), _grad_kernel_rows(cs, k), _grad_value_rows(cs, k)]
    return (
        f"# generated by e4net.backends._numba_stored2d for cs={cs}, k={k}; numba {numba.__version__}\n"
        "import numpy as np\nfrom numba import njit, prange\n\n"
        f"CS, K = {cs}, {k}\n\n\n" + "\n\n\n".join(jit + "\n".join(body) + "\n" for body in loops) + _TASKS
    )


@functools.cache
def kernels(cs: int, k: int) -> SimpleNamespace:
    """The compiled kernels for ``cs`` channels per slice and side ``k`` (``.forward``, ``.backward``)."""
    if not (1 <= cs <= MAX_CHANNELS and 1 <= k <= MAX_SIDE):
        raise ValueError(f"no blocked stored-kernel aggregation for cs={cs}, k={k}")
    module = load_module(f"stored2d_c{cs}_k{k}", module_source(cs, k))
    return SimpleNamespace(forward=module.forward, backward=module.backward)
