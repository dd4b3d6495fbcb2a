"""Reference E4 aggregation: the literal math of Eq. 12 via ``unfold`` (materialises a k^2-fold copy of ``v``);
:func:`aggregate_reference_3d` the same over a k x k x k neighbourhood of voxel grids (O, Oh)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._geometry import kernel_side, output_size, transform_kernel


def aggregate_reference(v: torch.Tensor, kernel: torch.Tensor, index: torch.Tensor, stride: int = 1) -> torch.Tensor:
    b, c, n, h, w = v.shape
    s, kk = kernel.shape[1], kernel.shape[2]
    k = kernel_side(kk)
    ho, wo = output_size(h, k, stride), output_size(w, k, stride)
    kt = transform_kernel(kernel, index)  # (B, s, k*k, |A|, H', W')
    cols = F.unfold(v.reshape(b, c * n, h, w), k, padding=k // 2, stride=stride)  # (B, C |A| k^2, H' W')
    cols = cols.view(b, c // s, s, n, kk, ho, wo)
    out = (cols * kt.permute(0, 1, 3, 2, 4, 5).unsqueeze(1)).sum(4)
    return out.reshape(b, c, n, ho, wo)


def aggregate_reference_3d(v: torch.Tensor, kernel: torch.Tensor, index: torch.Tensor, stride: int = 1) -> torch.Tensor:
    """Eq. 12's aggregation on voxel grids, literally: ``v (B, C, |A|, D, H, W)``, ``kernel (B, s, k^3, |A|, D', H',
    W')`` (Omega = the k^3 grid flattened D-major), ``index (|A|, k^3)``:

        out[b, c, a, z, y, x] = sum_u  kernel[b, c % s, index[a, u], a, z, y, x]
                                       * v_pad[b, c, a, s z + u_d, s y + u_h, s x + u_w]

    with zero padding ``k // 2``. The neighbourhood is a k^3-fold view of the padded ``v`` (``Tensor.unfold`` on
    the three axes), multiplied with the transformed kernels and summed over ``u``.
    """
    b, c, n = v.shape[:3]
    s, kk = kernel.shape[1], kernel.shape[2]
    k = kernel_side(kk, 3)
    p = k // 2
    out_grid = kernel.shape[4:]
    kt = transform_kernel(kernel, index)  # (B, s, k^3, |A|, D', H', W')
    vp = F.pad(v, (p,) * 6)
    cols = vp.unfold(3, k, stride).unfold(4, k, stride).unfold(5, k, stride)  # (B, C, |A|, D', H', W', k, k, k)
    cols = cols.reshape(b, c // s, s, n, *out_grid, kk)
    out = (cols * kt.permute(0, 1, 3, 4, 5, 6, 2).unsqueeze(1)).sum(-1)
    return out.reshape(b, c, n, *out_grid)
