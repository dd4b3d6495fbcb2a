"""Register-blocked fused aggregation with generated kernels (stride 1): numba code generated per shape.

Used by the numba backend on voxel grids (:mod:`e4net.backends.numba_agg3d`, forward and backward) and, for
inference, on pixel grids (:mod:`e4net.backends.numba_agg`): a pixel grid is a volume of depth 1 whose k x k
neighbourhood is the middle slab of the k x k x k one (``dims=2``).

The generic split-level kernels of :mod:`e4net.backends.numba_agg3d` (``_forward_generated`` /
``_backward_generated``) generate each tile's k^3 kernel rows ``K_u = W2[u] h + b2[u]`` into memory and read them
back once per channel: about three loads or stores per multiply-add, a quarter of the core's FMA rate. The loops
here keep the hidden features, the generated kernel values and the channels' accumulators in registers. For that,
the numbers that set the register tile -- ``nh`` hidden features, ``cs`` channels per slice and the side ``k`` (one
row of ``k`` offsets ``dx`` at a time) -- must be constants of the compiled code, so the loop bodies are written out
as Python source for each ``(nh, cs, k)`` (:func:`module_source`), saved to a file under :func:`cache_dir` and
compiled by numba with ``cache=True``: the first use of a shape on a machine compiles (about 7 s), later processes
load the machine code.

Per split ``(b, a)``, slice ``j`` and tile of :data:`CHUNK` accumulator entries:

* forward, for each row ``(dz, dy)`` of the neighbourhood: ``acc_c[i] += sum_dx (b_u + sum_q W_uq h_q[i]) v_c[i +
  shift_u]`` with ``u = (dz, dy, dx)``;
* backward: ``gk_u[i] = sum_c g_c[i] v_c[i + shift_u]`` and ``gh_q[i] += sum_dx W_uq gk_u[i]`` row by row (``gk``
  kept in a tile), then per offset ``u``: ``gv_c[i + shift_u] += K_u[i] g_c[i]`` (the kernel regenerated in
  registers), ``gW_uq += sum_i gk_u[i] h_q[i]`` and ``gb_u += sum_i gk_u[i]``.

The loops read and write several rows of the same buffers at run-time offsets, so LLVM's vectorizer needs more
run-time overlap checks than its default limit (128) allows: :func:`_allow_overlap_checks` raises that limit in
numba's LLVM (process-wide; it only lets more loops vectorize) before these kernels are compiled. Results equal the
generic kernels' up to float rounding (another order of the sums); ``tests/test_backends_3d.py`` compares them.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType, SimpleNamespace

import numba
import torch

from .._numba import storage_order
from ..io import cache_root
from ._geometry import kernel_side

CHUNK = 640
"""Most accumulator entries per tile (the tile's rows of ``h``, ``g``, the accumulators and ``gk`` stay in L1 / L2).
A split's entries are cut into as few tiles as that allows, of equal size (whole vectors of 16): an 8^3 volume
(639 entries with the shared padding) is one tile, a 16^3 one 8 of 576. Measured (2 threads, the layer of
``e4net3d``, 32 x 8^3): 24-30 ms forward+backward against 28-34 with tiles of 512 and a ragged last one of 127;
even at 16^3."""

MAX_REGISTERS = 24
"""Largest ``nh + cs`` written out: the hidden features and the accumulators of one voxel lane are kept in vector
registers (32 on AVX-512); beyond that they would spill, and the bodies take long to compile. Larger layers, and
``k > 5``, use the generic kernels (:func:`supported`)."""


ENABLED = True
"""Whether the numba backend takes these kernels where they apply (:func:`applies`); ``False`` keeps its generic
kernels (for comparisons: tests and benchmarks toggle it)."""


def supported(nh: int, cs: int, k: int) -> bool:
    """Whether the blocked kernels are generated for ``nh`` hidden features, ``cs`` channels per slice, side ``k``."""
    return nh >= 1 and cs >= 1 and nh + cs <= MAX_REGISTERS and 1 <= k <= 5


def sizes(v, hidden, weight, index) -> tuple[int, int, int]:  # noqa: ANN001 - tensors
    """``(nh, cs, k)`` of a fused call: hidden features, channels per slice (``C / s``), kernel side (from ``index
    (|A|, k^d)``, ``d`` = ``v``'s spatial dims)."""
    kk = index.shape[1]
    return hidden.shape[1], v.shape[1] // (weight.shape[0] // kk), kernel_side(kk, v.dim() - 3)


def applies(stride: int, nh: int, cs: int, k: int) -> bool:
    """Whether a call of the numba backend with these sizes runs the blocked kernels: :data:`ENABLED`, stride 1 and
    :func:`supported`."""
    return ENABLED and stride == 1 and supported(nh, cs, k)


@functools.cache
def _allow_overlap_checks() -> None:
    import llvmlite.binding as llvm

    llvm.set_option("", "-vectorize-memory-check-threshold=4096")


def _joined(terms: list[str]) -> str:
    return " + ".join(terms)


def _tile_loop(signature: str, nh: int) -> list[str]:
    """The head of a tile function: its ``def``, the loop over the tiles and the tile's views ``h{q}`` of the hidden
    features."""
    lines = [f"def {signature}:", "    for i0, m in tiles(slabs, pitch, span):"]
    return lines + [f"        h{q} = hx[{q}, i0:i0 + m]" for q in range(nh)]


def _row_loop(nh: int, cs: int, k: int, dims: int, with_bias: bool) -> list[str]:
    """The loop over the neighbourhood's rows ``(dz, dy)`` of a tile: per offset ``dx`` of the row the split's
    weights ``w{dx}_{q}`` (and bias ``b{dx}``) as scalars and the shifted value rows ``v{c}_{dx}`` as views."""
    lines = [f"        for r in range({k ** (dims - 1)}):", f"            u0 = r * {k}"]
    for d in range(k):
        lines += [f"            w{d}_{q} = wsel[u0 + {d}, {q}]" for q in range(nh)]
        lines += [f"            b{d} = bsel[u0 + {d}]"] if with_bias else []
        lines.append(f"            s{d} = shift[u0 + {d}] + i0")
        lines += [f"            v{c}_{d} = vps[{c}, s{d}:s{d} + m]" for c in range(cs)]
    return lines


def forward_source(nh: int, cs: int, k: int, dims: int = 3) -> str:
    """Source of ``forward_tiles(hx, vps, acc, wsel, bsel, shift, slabs, pitch, span)``: ``acc (cs, n)`` of one split
    (accumulator layout: ``slabs`` slabs of ``pitch`` entries, of which the first ``span`` are computed), from ``hx
    (nh, n)``, the padded value rows ``vps (cs, P)``, the split's kernel map ``wsel (k^3, nh)`` / ``bsel (k^3,)`` and
    the offsets' flat shifts ``shift (k^3,)``."""
    ds, qs, cs_ = range(k), range(nh), range(cs)
    body = _tile_loop("forward_tiles(hx, vps, acc, wsel, bsel, shift, slabs, pitch, span)", nh)
    body += [f"        a{c} = acc[{c}, i0:i0 + m]" for c in cs_]
    body += [f"        a{c}[:] = 0" for c in cs_]
    body += _row_loop(nh, cs, k, dims, with_bias=True)
    body.append("            for i in range(m):")
    body += [f"                x{q} = h{q}[i]" for q in qs]
    body += [f"                t{c} = a{c}[i]" for c in cs_]
    for d in ds:
        body.append(f"                kv = b{d} + " + _joined([f"w{d}_{q} * x{q}" for q in qs]))
        body += [f"                t{c} += kv * v{c}_{d}[i]" for c in cs_]
    body += [f"                a{c}[i] = t{c}" for c in cs_]
    return "\n".join(body) + "\n"


def backward_source(nh: int, cs: int, k: int, dims: int = 3) -> str:
    """Source of ``backward_tiles(hx, vps, gx, gvps, ghx, wsel, bsel, shift, slabs, pitch, span, gkt, gw, gb)`` for
    one split ``(b, j, a)`` (layout as :func:`forward_source`): adds to ``gvps (cs, P)`` (padded layout), ``ghx (nh,
    n)``, ``gw (k^3, nh)`` and ``gb (k^3,)``, from ``gx (cs, n)`` (grad_out in the accumulator layout, scratch entries
    0); ``gkt (k^3, CHUNK)`` is scratch."""
    ds, qs, cs_ = range(k), range(nh), range(cs)
    kk = k**dims
    body = _tile_loop("backward_tiles(hx, vps, gx, gvps, ghx, wsel, bsel, shift, slabs, pitch, span, gkt, gw, gb)", nh)
    body += [f"        gh{q} = ghx[{q}, i0:i0 + m]" for q in qs]
    body += [f"        g{c} = gx[{c}, i0:i0 + m]" for c in cs_]
    # rows (dz, dy): the kernels' gradient gk_u = sum_c g_c v_c(shifted), kept in gkt, and grad_h = sum_u W_u^T gk_u
    body += _row_loop(nh, cs, k, dims, with_bias=False)
    body += [f"            k{d} = gkt[u0 + {d}, 0:m]" for d in ds]
    body.append("            for i in range(m):")
    body += [f"                y{c} = g{c}[i]" for c in cs_]
    for d in ds:
        body.append(f"                e{d} = " + _joined([f"y{c} * v{c}_{d}[i]" for c in cs_]))
        body.append(f"                k{d}[i] = e{d}")
    for q in qs:
        body.append(f"                gh{q}[i] += " + _joined([f"w{d}_{q} * e{d}" for d in ds]))
    # offsets u: grad_v (the kernel regenerated in registers), grad_W2 and grad_b2 (reductions over the tile)
    body.append(f"        for u in range({kk}):")
    body += [f"            w_{q} = wsel[u, {q}]" for q in qs]
    body.append("            bu = bsel[u]")
    body.append("            su = shift[u] + i0")
    body += [f"            gv{c} = gvps[{c}, su:su + m]" for c in cs_]
    body.append("            ku = gkt[u, 0:m]")
    # float64 sums (numba types float32 * 0 as float64): the loop then runs at half width, yet a float32 zero
    # measured slower (offset phase 119 against 81 us at 16^3, ninth session)
    body.append("            sb = gb[u] * 0")
    body += [f"            sw{q} = sb" for q in qs]
    body.append("            for i in range(m):")
    body += [f"                x{q} = h{q}[i]" for q in qs]
    body.append("                e = ku[i]")
    body.append("                sb += e")
    body += [f"                sw{q} += e * x{q}" for q in qs]
    body.append("                kv = bu + " + _joined([f"w_{q} * x{q}" for q in qs]))
    body += [f"                gv{c}[i] += kv * g{c}[i]" for c in cs_]
    body.append("            gb[u] += sb")
    body += [f"            gw[u, {q}] += sw{q}" for q in qs]
    return "\n".join(body) + "\n"


_SPLITS = """
@njit(cache=True)
def tiles(slabs, pitch, span):  # (start, length) of the tiles, up to the last slab's first h rows
    end = (slabs - 1) * pitch + span
    size = -(-end // -(-end // CHUNK))  # as many tiles as CHUNK needs, of equal size
    size = min(CHUNK, -(-size // 16) * 16)  # whole vectors
    out = []
    for i0 in range(0, end, size):
        out.append((i0, min(size, end - i0)))
    return out


@njit(parallel=True, fastmath=True, cache=True)
def forward(vf, vb, vs, hid, w2, b2, index, out, threads):  # split over (b, a), the slices inside: h loaded once
    nb, nc, na, d, h, w = out.shape
    kk = index.shape[1]
    ns = w2.shape[0] // kk
    grid = np.array([d, h, w])
    p = K // 2
    hp, wp = h + p, w + p  # shared padding: a row's p right zeros are the next row's left ones (same for slabs)
    n = d * hp * wp
    vol = d * h * w
    padded = (d + 2 * p) * hp * wp + 2 * p * wp + 2 * p + 1
    hf, of = hid.reshape(-1), out.reshape(-1)
    shift = np.empty(kk, dtype=np.int64)
    for u in range(kk):
        shift[u] = ((u // (K * K) if DIMS == 3 else p) * hp + (u // K) % K) * wp + u % K
    splits = nb * na
    workers = max(1, min(threads, splits))
    for worker in prange(workers):  # buffers once per worker: their padding stays 0, only the interiors are loaded
        vps = np.zeros((CS, padded), dtype=vf.dtype)
        hx = np.zeros((NH, n), dtype=vf.dtype)
        acc = np.empty((CS, n), dtype=vf.dtype)
        wsel = np.empty((kk, NH), dtype=vf.dtype)
        bsel = np.empty(kk, dtype=vf.dtype)
        for t in range(worker, splits, workers):
            b = t // na
            a = t % na
            load_hidden(hf, b, a, na, NH, grid, hp * wp, wp, hx)
            for j in range(ns):
                for u in range(kk):
                    o = j * kk + index[a, u]
                    bsel[u] = b2[o]
                    for q in range(NH):
                        wsel[u, q] = w2[o, q]
                for ci in range(CS):
                    load_shared_padding(vf, b * vb + ((j + ci * ns) * na + a) * vs, d, h, w, p, vps[ci])
                forward_tiles(hx, vps, acc, wsel, bsel, shift, d, hp * wp, h * wp)
                for ci in range(CS):
                    to_volume(acc[ci], 0, hp * wp, wp, of, ((b * nc + j + ci * ns) * na + a) * vol, d, h, w)


@njit(parallel=True, fastmath=True, cache=True)
def backward(vf, vb, vs, hid, w2, b2, index, gout, gvf, gh, gw, gb, threads):  # split over (b, a): gh[b, :, a] has
    nb, nc, na, d, h, w = gout.shape  # one writer
    kk = index.shape[1]
    ns = w2.shape[0] // kk
    grid = np.array([d, h, w])
    p = K // 2
    hp, wp = h + p, w + p  # shared padding: a row's p right zeros are the next row's left ones (same for slabs)
    rs = hp * wp
    n = d * rs
    vol = d * h * w
    padded = (d + 2 * p) * hp * wp + 2 * p * wp + 2 * p + 1
    hf, gof, ghf = hid.reshape(-1), gout.reshape(-1), gh.reshape(-1)
    shift = np.empty(kk, dtype=np.int64)
    for u in range(kk):
        shift[u] = ((u // (K * K) if DIMS == 3 else p) * hp + (u // K) % K) * wp + u % K
    splits = nb * na
    workers = max(1, min(threads, splits))
    for worker in prange(workers):
        vps = np.zeros((CS, padded), dtype=vf.dtype)
        gvps = np.empty((CS, padded), dtype=vf.dtype)
        hx = np.zeros((NH, n), dtype=vf.dtype)
        ghx = np.empty((NH, n), dtype=vf.dtype)
        gx = np.zeros((CS, n), dtype=vf.dtype)  # grad_out in the accumulator layout (scratch entries stay 0)
        gkt = np.empty((kk, CHUNK), dtype=vf.dtype)
        wsel = np.empty((kk, NH), dtype=vf.dtype)
        bsel = np.empty(kk, dtype=vf.dtype)
        gws = np.empty((kk, NH), dtype=vf.dtype)
        gbs = np.empty(kk, dtype=vf.dtype)
        for t in range(worker, splits, workers):
            b = t // na
            a = t % na
            load_hidden(hf, b, a, na, NH, grid, rs, wp, hx)
            ghx[:] = 0
            for j in range(ns):
                for u in range(kk):
                    o = j * kk + index[a, u]
                    bsel[u] = b2[o]
                    gbs[u] = 0
                    for q in range(NH):
                        wsel[u, q] = w2[o, q]
                        gws[u, q] = 0
                for ci in range(CS):
                    c = j + ci * ns
                    load_shared_padding(vf, b * vb + (c * na + a) * vs, d, h, w, p, vps[ci])
                    from_volume(gof, ((b * nc + c) * na + a) * vol, d, h, w, gx[ci], 0, rs, wp)
                gvps[:] = 0
                backward_tiles(hx, vps, gx, gvps, ghx, wsel, bsel, shift, d, rs, h * wp, gkt, gws, gbs)
                for u in range(kk):
                    o = j * kk + index[a, u]
                    gb[t, o] += gbs[u]
                    for q in range(NH):
                        gw[t, o, q] += gws[u, q]
                for ci in range(CS):
                    at = b * vb + ((j + ci * ns) * na + a) * vs
                    to_volume(gvps[ci], (p * hp + p) * wp + p, rs, wp, gvf, at, d, h, w)  # from the voxel (0, 0, 0)
            for q in range(NH):
                to_volume(ghx[q], 0, rs, wp, ghf, ((b * NH + q) * na + a) * vol, d, h, w)
"""


def module_source(nh: int, cs: int, k: int, dims: int = 3) -> str:
    """The whole generated module for ``(nh, cs, k)``: the two tile loops and the split-level kernels
    ``forward(vf, vb, vs, hid, w2, b2, index, out, threads)`` / ``backward(vf, vb, vs, hid, w2, b2, index, gout, gvf,
    gh, gw, gb, threads)`` (the arguments of :func:`e4net.backends.numba_agg3d._forward_generated` /
    ``_backward_generated`` at stride 1, 6-D arrays, a pixel grid with depth 1; ``gw`` / ``gb`` per split ``(b, a)``;
    ``threads`` workers), except ``v`` / ``gv``: flat buffers whose volume ``(b, c, a)`` starts at ``b vb + (c |A| +
    a) vs`` (:func:`value_layout`)."""
    jit = "@njit(fastmath=True, cache=True)\n"
    return (
        f"# generated by e4net.backends._numba_blocked for nh={nh}, cs={cs}, k={k}; numba {numba.__version__}\n"
        "import numpy as np\n"
        "from numba import njit, prange\n\n"
        "from e4net.backends._numba_voxels import from_volume, load_hidden, load_shared_padding, to_volume\n\n"
        f"NH, CS, K, DIMS, CHUNK = {nh}, {cs}, {k}, {dims}, {CHUNK}\n\n\n"
        + jit
        + forward_source(nh, cs, k, dims)
        + "\n\n"
        + jit
        + backward_source(nh, cs, k, dims)
        + "\n"
        + _SPLITS
    )


def value_layout(v: torch.Tensor) -> tuple[torch.Tensor, int, int, tuple[int, ...]]:
    """``v (B, C, |A|, *grid)`` as the kernels read it: ``(flat buffer, vb, vs, order)``, volume ``(b, c, a)`` at
    ``b vb + (c |A| + a) vs``, ``order`` that of :func:`e4net._numba.storage_order` (read in place when contiguous or
    stored as ``(C, |A|, B, *grid)``, E4's shared 1x1 maps; otherwise a contiguous copy)."""
    order = storage_order(v)
    if order is None:
        v, order = v.contiguous(), tuple(range(v.dim()))
    vol = math.prod(v.shape[3:])
    if order[0] == 0:
        return v.reshape(-1), v.shape[1] * v.shape[2] * vol, vol, order
    return v.permute(order).reshape(-1), vol, v.shape[0] * vol, order


def cache_dir() -> Path:
    """Where the generated modules (and numba's cache of their machine code, in ``__pycache__``) are kept: the
    ``numba-kernels`` folder of :func:`e4net.io.cache_root` (``$E4NET_CACHE``, else ``~/.cache/e4net``). A module not
    loaded for :data:`STALE_DAYS` is deleted with its machine code (:func:`prune`)."""
    return cache_root() / "numba-kernels"


STALE_DAYS = 30
"""A generated module that no process has loaded for this many days is deleted, with numba's cache of its machine
code. Each change of the kernels' source, of e4net's loaders or of numba's version names new modules
(:func:`_fingerprint`), and each new layer shape adds one; without pruning, the folder only grows (it held 145 MB
after the eighth session's development, on one machine)."""


@functools.cache
def prune(directory: Path | None = None, now: float | None = None) -> list[Path]:
    """Delete the generated modules of ``directory`` (:func:`cache_dir` by default) not loaded for
    :data:`STALE_DAYS` (a load touches its module file), with their machine code in ``__pycache__``; the paths
    deleted. Run once per process, by the first :func:`kernels` call. Files that vanish or resist meanwhile
    (another process, a read-only folder) are left alone."""
    directory = cache_dir() if directory is None else directory
    cutoff = (time.time() if now is None else now) - STALE_DAYS * 86400
    removed: list[Path] = []
    try:
        modules = [p for p in directory.glob("*.py") if p.stat().st_mtime < cutoff]  # all generated by e4net
    except OSError:
        return removed
    for module in modules:
        machine_code = list((directory / "__pycache__").glob(f"{module.stem}.*"))
        for path in [module, *machine_code]:
            try:
                path.unlink()
                removed.append(path)
            except OSError:
                pass
    return removed


def _fingerprint(source: str) -> str:
    """Names the module file after everything its compiled code depends on, so numba's cache is never stale: the
    source, the shared loaders (compiled into it) and numba's version."""
    voxels = Path(__file__).with_name("_numba_voxels.py").read_bytes()
    return hashlib.sha256(source.encode() + voxels).hexdigest()[:20]  # the source names numba's version


def _write(directory: Path, name: str, source: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    if not path.exists() or path.read_text() != source:
        fd, tmp = tempfile.mkstemp(dir=directory, suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            f.write(source)
        os.replace(tmp, path)  # atomic: processes compiling the same kernels at once never see half a file
    return path


@functools.cache
def kernels(nh: int, cs: int, k: int, dims: int = 3) -> SimpleNamespace:
    """The compiled split-level kernels for ``(nh, cs, k)`` (``.forward``, ``.backward``), from the module written
    to :func:`cache_dir` (numba caches their machine code beside it: compiled once per machine, about 7 s; modules
    unused for :data:`STALE_DAYS` are deleted, :func:`prune`). Where that directory is not writable, a temporary one
    is used (compiled once per process)."""
    if not supported(nh, cs, k):
        raise ValueError(f"no blocked kernels for nh={nh}, cs={cs}, k={k} (see supported())")
    module = load_module(f"blocked{dims}d_h{nh}_c{cs}_k{k}", module_source(nh, cs, k, dims))
    return SimpleNamespace(forward=module.forward, backward=module.backward, path=Path(module.__file__))


def load_module(prefix: str, source: str) -> ModuleType:
    """Import generated numba ``source`` as a module written to :func:`cache_dir` as ``{prefix}_{fingerprint}.py``
    (touched at each load: :func:`prune` keeps it), or to a temporary folder where the cache is not writable. Also
    used by :mod:`e4net.backends._numba_stored2d`."""
    _allow_overlap_checks()
    name = f"{prefix}_{_fingerprint(source)}.py"
    try:
        path = _write(cache_dir(), name, source)
    except OSError:
        path = _write(Path(tempfile.mkdtemp(prefix="e4net-numba-")), name, source)
    else:
        try:
            os.utime(path)  # loaded now: not stale (prune)
        except OSError:  # e.g. a shared cache written by another user: used as it is
            pass
        prune(path.parent)
    spec = importlib.util.spec_from_file_location(f"e4net_generated_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # numba's cache of the parallel kernels refers to the module by name
    spec.loader.exec_module(module)
    return module
