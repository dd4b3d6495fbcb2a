"""The generalized equivariant aggregation of Sec. 3.4 (Theorem 1, Eq. 9) as one layer interface.

Every equivariant layer of this package computes, at every group element ``g = (x, a)`` of its output,

    f'(g) = sum_{g~ in N(g)}  H~_{g^-1 g~}( f(g), f(g~) )                                          (Eq. 9)

where ``N(g) = {g n : n in N(e)}`` is a local neighbourhood *in the frame of g* and the aggregation operator
``H~`` depends on the pair of positions only through the relative position ``g^-1 g~`` (Theorem 1, Eq. 8). With
``N(e) = Omega`` (the k x k grid, spatial only) or ``N(e) = Omega x A`` (grid times the whole point group), the
relative position of a neighbour ``g~ = (y, b)`` of ``g = (x, a)`` is ``(a^-1 (y - x), a^-1 b)``. In code a
relative-position-indexed object (a kernel, a positional encoding, a per-pixel dynamic kernel) is a tensor whose
last dim enumerates ``N(e)`` (``b``-major, then the k x k grid row-major); the object seen by output slot ``a``
is that tensor *transformed by a*: ``t[..., index[a, n]]`` (:func:`gather_relative`) with the table of
:meth:`e4net.groups.Group.relative_position_index`. That table, built by the group from its own actions
(``act_on_signal`` / ``act_on_features``; no rotation is re-implemented here), is the single place where ``g^-1 g~``
is mapped to an index into shared parameters. Every layer holds it as the (non-persistent) buffer
``relative_position_index``.

The instances (:class:`GroupAggregation` subclasses) differ only in ``H~``:

* **G-CNN, Eq. 5** -- :class:`~e4net.nn.conv.GroupConv`: ``H~_{g^-1 g~}(f(g), f(g~)) = W(g^-1 g~) f(g~)``, a shared
  linear kernel on ``N(e) = Omega x A`` (``over_group = True``); :class:`~e4net.nn.conv.LiftingConv` is the same on
  the plane (input on ``Z^2``, ``N(e) = Omega``, first layer).
* **Group self-attention, Eq. 6** -- :class:`~e4net.nn.self_attention.GroupSelfAttention`:
  ``H~_{g^-1 g~}(f(g), f(g~)) = softmax_{g~ in N(g)}[ h_Q(f(g))^T (h_K(f(g~)) + P_{g^-1 g~}) ] h_V(f(g~))`` with a
  relative positional encoding ``P`` indexed by ``g^-1 g~`` (softmax over ``Omega``, or over ``Omega x A`` when
  ``over_group=True``); :class:`~e4net.nn.self_attention.LiftingSelfAttention` is its lifting layer. The attentive group
  convolution of Romero et al. (:class:`~e4net.nn.attentive_conv.AttentiveGroupConv`) is Eq. 5 with the kernel modulated
  by input-dependent attention whose weights are indexed by ``g^-1 g~`` as well.
* **E4, Eq. 11-12** -- :class:`~e4net.nn.e4.E4Conv`: ``H~_{g^-1 g~}(x, y) = K_{g^-1 g~}(x) ⊙ V(y)``. The kernel
  generator produces, at every ``g``, one value per relative position of ``N1(e) = Omega`` (``over_group = False``);
  the kernel of slot ``a`` is transformed with the same table before the depthwise aggregation (the backends of
  :mod:`e4net.backends` receive it as their third argument). The concatenation ``U_{g' in N2(g)} f(g')`` of Eq. 10/12 is the
  group 1 x 1 convolution inside K and V.

Equivariance of every instance follows from Theorem 1 as long as (i) the neighbourhood is the same set of relative
positions for every ``g`` (a centred k x k grid is symmetric under the point group) and (ii) everything indexed by a
relative position goes through the group's table. ``tests/test_attention.py`` plants the bug (the table replaced
by the identity for every slot) and watches equivariance break in all instances.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from ..groups import Group

__all__ = ["GroupAggregation", "gather_relative", "neighbourhood_size"]


def neighbourhood_size(group: Group, kernel_size: int, over_group: bool) -> int:
    """``|N(e)|``: ``k^d`` for ``N(e) = Omega``, ``|A| k^d`` for ``N(e) = Omega x A`` (``d = group.spatial_dims``)."""
    return (group.order if over_group else 1) * kernel_size**group.spatial_dims


def gather_relative(t: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``t (..., |N(e)|) -> (..., |A|, |N(e)|)``: the relative-position-indexed ``t`` as seen by every output slot.

    ``index`` is a table of :meth:`e4net.groups.Group.relative_position_index`; slot ``a`` of the result is ``T_a t``.
    """
    if t.shape[-1] != index.shape[-1]:
        raise ValueError(
            f"gather_relative: last dim of t ({t.shape[-1]}) must enumerate the neighbourhood ({index.shape[-1]})"
        )
    return t[..., index.to(t.device)]


class GroupAggregation(nn.Module):
    """Base of every layer ``f'(g) = sum_{g~ in N(g)} H~_{g^-1 g~}(f(g), f(g~))`` (Eq. 9, module docstring).

    Subclasses set ``self.group`` and ``self.kernel_size`` (the spatial extent k of ``Omega``) and declare the
    neighbourhood with ``over_group`` (``N(e) = Omega x A`` if True, ``Omega`` otherwise) and whether the input
    lives on the plane (``lifting``: one input slot, the first layer) or on the group. They implement ``H~`` in
    ``forward``, register the table of their neighbourhood with :meth:`_register_relative_position_index` and gather
    everything indexed by ``g^-1 g~`` with :func:`gather_relative`.
    """

    group: Group
    kernel_size: int
    over_group: ClassVar[bool] = False
    lifting: ClassVar[bool] = False

    def _register_relative_position_index(
        self, name: str = "relative_position_index", kernel_size: int | None = None, over_group: bool | None = None
    ) -> None:
        """Register the group's ``(|A|, |N(e)|)`` table as the non-persistent buffer ``name`` (not in state_dicts).

        ``over_group`` defaults to the layer's neighbourhood; lifting layers (input on the plane) never index the
        group axis of their input. ``kernel_size`` defaults to the layer's k (attention sub-modules with their own
        extent, e.g. the 7 x 7 spatial attention, pass theirs).
        """
        k = self.kernel_size if kernel_size is None else kernel_size
        og = (self.over_group and not self.lifting) if over_group is None else over_group
        self.register_buffer(name, self.group.relative_position_index(k, og), persistent=False)

    def neighbourhood_size(self) -> int:
        """``|N(e)|`` of this layer."""
        return neighbourhood_size(self.group, self.kernel_size, self.over_group and not self.lifting)
