"""Copies between torch's contiguous voxel volumes and the numba 3-D kernels' padded flat buffers (compiled helpers
shared by :mod:`e4net.backends.numba_agg3d` and the generated kernels of :mod:`e4net.backends._numba_blocked`).

A volume ``(d, h, w)`` is stored "wide": slab pitch ``rs``, row pitch ``rw`` (``(h + 2p)(w + 2p)`` and ``w + 2p``
at stride 1 in the generic kernels; ``(h + p)(w + p)`` and ``w + p`` with shared padding in the blocked ones), so
that each offset of a k x k x k neighbourhood is one constant shift of a flat array.
"""

from __future__ import annotations

from numba import njit


@njit(cache=True, fastmath=True)
def from_volume(src, sbase, d, h, w, dst, doff, rs, rw):  # pragma: no cover - compiled
    """The contiguous volume ``src[sbase : sbase + d h w]`` into ``dst[doff + z rs + y rw + x]``."""
    for z in range(d):
        for y in range(h):
            s = src[sbase + (z * h + y) * w : sbase + (z * h + y + 1) * w]
            o = doff + z * rs + y * rw
            t = dst[o : o + w]
            for x in range(w):
                t[x] = s[x]


@njit(cache=True, fastmath=True)
def to_volume(src, soff, rs, rw, dst, dbase, d, h, w):  # pragma: no cover - compiled
    """The inverse of :func:`from_volume`: ``src[soff + z rs + y rw + x]`` into the contiguous volume at
    ``dst[dbase:]``."""
    for z in range(d):
        for y in range(h):
            o = soff + z * rs + y * rw
            s = src[o : o + w]
            t = dst[dbase + (z * h + y) * w : dbase + (z * h + y + 1) * w]
            for x in range(w):
                t[x] = s[x]


@njit(cache=True, fastmath=True)
def load_padded(vf, base, d, h, w, p, vp):  # pragma: no cover - compiled
    """The volume at ``vf[base:]`` into the zero-padded flat buffer ``vp`` (pitches ``(h + 2p)(w + 2p)``, ``w + 2p``)."""
    hp, wp = h + 2 * p, w + 2 * p
    from_volume(vf, base, d, h, w, vp, (p * hp + p) * wp + p, hp * wp, wp)


@njit(cache=True, fastmath=True)
def load_shared_padding(vf, base, d, h, w, p, vp):  # pragma: no cover - compiled
    """The volume at ``vf[base:]`` into the zero-padded flat buffer ``vp`` with *shared* padding: pitches ``(h + p)(w
    + p)`` and ``w + p``, voxel ``(z, y, x)`` at ``((z + p)(h + p) + y + p)(w + p) + p``. The ``p`` zeros after a row
    are both its right padding and the next row's left padding (and likewise for the ``p`` zero rows between slabs),
    so a ``k``-neighbourhood read ``x + dx``, ``-p <= dx <= p``, stays in zeros; only the interiors are written."""
    hp, wp = h + p, w + p
    from_volume(vf, base, d, h, w, vp, (p * hp + p) * wp + p, hp * wp, wp)


@njit(cache=True, fastmath=True)
def load_hidden(hf, b, a, na, nh, grid, rs, rw, hx):  # pragma: no cover - compiled
    """Hidden features ``h[b, :, a]`` into rows of ``hx`` with the accumulator pitches (scratch stays 0)."""
    do, ho, wo = grid[0], grid[1], grid[2]
    ovol = do * ho * wo
    for q in range(nh):
        from_volume(hf, ((b * nh + q) * na + a) * ovol, do, ho, wo, hx[q], 0, rs, rw)
