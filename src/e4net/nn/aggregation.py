"""The generalized equivariant aggregation of Sec. 3.4 (Theorem 1, Eq. 9) as one layer interface.

Every equivariant layer of this package computes, at every group element ``g = (x, a)`` of its output,

    f'(g) = sum_{g~ in N(g)}  H~_{g^-1 g~}( f(g), f(g~) )                                          (Eq. 9)

where ``N(g) = {g n : n in N(e)}`` is a local neighbourhood *in the frame of g* and the aggregation operator
``H~`` depends on the pair of positions only through the relative position ``g^-1 g~`` (Theorem 1, Eq. 8). With
``N(e) = Omega`` (the k x k grid, spatial only) or ``N(e) = Omega x A`` (grid times the whole point group), the
relative position of a neighbour ``g~ = (y, b)`` of ``g = (x, a)`` is ``(a^-1 (y - x), a^-1 b)``. In code a
relative-position-indexed object (a kernel, a positional encoding, a per-pixel dynamic kernel) is a tensor whose
last dim enumerates ``N(e)`` (``b``-major, then the k x k grid row-major); the object seen by output slot ``a``
is that tensor *transformed by a*: ``t[..., index[a, n]]`` with the table of :func:`relative_position_index`.
That table, built from :meth:`e4net.groups.Group.act_on_image` / ``act_on_features`` (no rotation is re-implemented
here), is the single place where ``g^-1 g~`` is mapped to an index into shared parameters.

The instances (:class:`GroupAggregation` subclasses) differ only in ``H~``:

* **G-CNN, Eq. 5** -- :class:`~e4net.nn.conv.GroupConv`: ``H~_{g^-1 g~}(f(g), f(g~)) = W(g^-1 g~) f(g~)``, a shared
  linear kernel on ``N(e) = Omega x A`` (``over_group = True``); :class:`~e4net.nn.conv.LiftingConv` is the same on
  the plane (input on ``Z^2``, ``N(e) = Omega``, first layer).
* **Group self-attention, Eq. 6** -- :class:`~e4net.nn.attention.GroupSelfAttention`:
  ``H~_{g^-1 g~}(f(g), f(g~)) = softmax_{g~ in N(g)}[ h_Q(f(g))^T (h_K(f(g~)) + P_{g^-1 g~}) ] h_V(f(g~))`` with a
  relative positional encoding ``P`` indexed by ``g^-1 g~`` (softmax over ``Omega``, or over ``Omega x A`` when
  ``over_group=True``); :class:`~e4net.nn.attention.LiftingSelfAttention` is its lifting layer. The attentive group
  convolution of Romero et al. (:class:`~e4net.nn.attention.AttentiveGroupConv`) is Eq. 5 with the kernel modulated
  by input-dependent attention whose weights are indexed by ``g^-1 g~`` as well.
* **E4, Eq. 11-12** -- :class:`~e4net.nn.e4.E4Conv`: ``H~_{g^-1 g~}(x, y) = K_{g^-1 g~}(x) ⊙ V(y)``. The kernel
  generator produces, at every ``g``, one value per relative position of ``N1(e) = Omega`` (``over_group = False``);
  the kernel of slot ``a`` is transformed with the same table before the depthwise aggregation (the backends of
  :mod:`e4net.backends` apply it as ``perm``). The concatenation ``U_{g' in N2(g)} f(g')`` of Eq. 10/12 is the
  group 1 x 1 convolution inside K and V.

Equivariance of every instance follows from Theorem 1 as long as (i) the neighbourhood is the same set of relative
positions for every ``g`` (a centred k x k grid is symmetric under the point group) and (ii) everything indexed by a
relative position goes through :meth:`GroupAggregation.relative_index`. ``tests/test_attention.py`` plants the bug
(the table replaced by the identity for every slot) and watches equivariance break in all instances.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from ..groups import Group

__all__ = ["GroupAggregation", "relative_position_index", "gather_relative", "neighbourhood_size"]


def neighbourhood_size(group: Group, kernel_size: int, over_group: bool) -> int:
    """``|N(e)|``: ``k^2`` for ``N(e) = Omega``, ``|A| k^2`` for ``N(e) = Omega x A``."""
    return (group.order if over_group else 1) * kernel_size * kernel_size


def relative_position_index(group: Group, kernel_size: int, over_group: bool) -> torch.Tensor:
    """Index table ``(|A|, |N(e)|)`` mapping relative positions to the frame of each output slot.

    ``index[a, n]`` is the flat index (into a tensor whose last dim enumerates ``N(e)``) of the relative position
    that output slot ``a`` sees at neighbour ``n``: for a neighbour ``g~ = (x + u, b)`` of ``g = (x, a)`` it is the
    position ``(a^-1 u, a^-1 b)`` (``(a^-1 u)`` if ``over_group`` is False), i.e. ``t[..., index[a]]`` is
    ``T_a t`` -- the tensor transformed by ``a`` with the group's own actions (``act_on_features`` on ``Omega x A``,
    ``act_on_image`` on ``Omega``). For ``over_group=False`` this equals :meth:`Group.kernel_permutation`; for
    ``over_group=True`` gathering a ``(Cout, Cin, |A| k k)`` weight with it equals :meth:`Group.group_filter_bank`.
    Works for any ``kernel_size >= 1`` (even sizes are exact only for layers without padding).
    """
    if not isinstance(kernel_size, int) or isinstance(kernel_size, bool) or kernel_size < 1:
        raise ValueError(f"relative_position_index: kernel_size must be a positive int, got {kernel_size!r}")
    k = kernel_size
    if over_group:
        grid = torch.arange(group.order * k * k).view(group.order, k, k)
        rows = [group.act_on_features(grid, a).reshape(-1) for a in group.elements()]
    else:
        grid = torch.arange(k * k).view(k, k)
        rows = [group.act_on_image(grid, a).reshape(-1) for a in group.elements()]
    return torch.stack(rows)


def gather_relative(t: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``t (..., |N(e)|) -> (..., |A|, |N(e)|)``: the relative-position-indexed ``t`` as seen by every output slot."""
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
    ``forward`` and use :meth:`relative_index` / :meth:`transform_relative` for everything indexed by ``g^-1 g~``.
    """

    group: Group
    kernel_size: int
    over_group: ClassVar[bool] = False
    lifting: ClassVar[bool] = False

    def relative_index(self, kernel_size: int | None = None, over_group: bool | None = None) -> torch.Tensor:
        """The ``(|A|, |N(e)|)`` table of :func:`relative_position_index` for this layer's neighbourhood.

        ``over_group`` defaults to the layer's neighbourhood; lifting layers (input on the plane) never index
        the group axis of their input. ``kernel_size`` defaults to the layer's k (attention sub-modules with
        their own extent, e.g. the 7 x 7 spatial attention, pass theirs).
        """
        k = self.kernel_size if kernel_size is None else kernel_size
        og = (self.over_group and not self.lifting) if over_group is None else over_group
        return relative_position_index(self.group, k, og)

    def neighbourhood_size(self) -> int:
        """``|N(e)|`` of this layer."""
        return neighbourhood_size(self.group, self.kernel_size, self.over_group and not self.lifting)

    @staticmethod
    def transform_relative(t: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """:func:`gather_relative`: ``t (..., |N(e)|) -> (..., |A|, |N(e)|)``, slot ``a`` holds ``T_a t``."""
        return gather_relative(t, index)
