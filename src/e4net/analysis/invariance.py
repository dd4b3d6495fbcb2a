"""Measuring the invariance of a classifier's predictions: Eq. (1) with the trivial action on the output.

A model built from equivariant layers (Sec. 3-4) followed by a global max group pooling "to ensure the predictions
invariant to rotations" (Sec. 5.1) satisfies ``f(T_g x) = f(x)`` for every element ``g`` of its group acting on
the image (:meth:`e4net.groups.Group.act_on_signal`). The invariance error is the largest change of a predicted
class probability over the transformed test images,

    ``max_{g, x, c} |softmax(f(T_g x))_c - softmax(f(x))_c|``,

float round-off for an exactly invariant model, a large value (up to 1) for a plain CNN.
"""

from __future__ import annotations

import torch

from ..groups import Group, resolve


@torch.no_grad()
def invariance_error(
    model: torch.nn.Module, x: torch.Tensor, group: str | Group, batch_size: int = 256
) -> dict[str, float]:
    """``{element name: max over images and classes of |p(T_g x) - p(x)|}`` for every element ``g`` of ``group``.

    ``x``: model inputs ``(N, C, H, W)`` (normalised as the model expects), evaluated in batches of
    ``batch_size``; ``p`` is the softmax of the model's logits, computed in float32. The model is put in eval
    mode (batch norms use their running statistics).
    """
    group = resolve(group)
    model.eval()
    out = {group.element_name(g): 0.0 for g in group.elements()}
    for i in range(0, len(x), batch_size):
        xb = x[i : i + batch_size]
        p0 = model(xb).float().softmax(-1)
        for g in group.elements():
            pg = model(group.act_on_signal(xb, g)).float().softmax(-1)
            name = group.element_name(g)
            out[name] = max(out[name], float((pg - p0).abs().max()))
    return out


def max_invariance_error(model: torch.nn.Module, x: torch.Tensor, group: str | Group, batch_size: int = 256) -> float:
    """The largest :func:`invariance_error` over the elements of ``group``."""
    return max(invariance_error(model, x, group, batch_size).values())
