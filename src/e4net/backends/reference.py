"""Reference E4 aggregation: the literal math of Eq. 12 via ``unfold`` (materialises a k^2-fold copy of ``v``)."""

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
