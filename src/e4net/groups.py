"""The groups p4 and p4m and their actions: the one source of truth for every layer and test.

Conventions (stated once, used everywhere)
-----------------------------------------
* ``p4 = Z^2 ⋊ C4`` and ``p4m = Z^2 ⋊ D4`` (paper Sec. 3.1, Eq. 2). The translation part acts through
  convolution; this module implements the *point group* ``A`` (C4 or D4) acting on the plane about the
  centre of the image (or kernel), together with the regular action on the group axis.
* Elements are integers ``0 .. |A|-1``. Index ``4*j + i`` is ``r^i m^j`` (``j in {0, 1}``, ``j = 0`` only
  for p4): first mirror ``j`` times, then rotate ``i`` times. ``r`` is a rotation by +90 degrees,
  **counter-clockwise as an image is displayed** (row 0 at the top), i.e. ``torch.rot90(x, 1, (-2, -1))``.
  ``m`` mirrors the width axis (left-right flip), ``torch.flip(x, (-1,))``. Element 0 is the identity.
* Group law: ``m r = r^-1 m``, so ``(r^a m^b)(r^c m^d) = r^(a + (-1)^b c) m^(b + d)``.
* Action on images (tensors ``(..., H, W)``): ``(T_g f)(x) = f(g^-1 x)``, realised exactly by the pixel
  permutation above (``act_on_image``).
* Group feature maps have layout ``(B, C, |A|, H, W)``: ``C`` fields, each a function on ``A`` at every pixel;
  the group axis is dim ``-3``. The regular action (paper Eq. 3) is
  ``(T_g f)(x, a) = f(g^-1 x, g^-1 a)``: transform every group slice spatially, then permute the group axis
  so that output slot ``a`` reads input slot ``g^-1 a`` (``act_on_features``).
* Kernels of a lifting convolution are images, kernels of a group convolution are group feature maps
  on ``Omega x A`` indexed by the relative position ``g^-1 g~`` (Theorem 1, Eq. 8); the filter used for the
  output element ``a`` is the kernel transformed by ``a`` with the *same* actions (``image_filter_bank``,
  ``group_filter_bank``). Dynamic E4 kernels over the k x k grid are transformed with the index table
  ``kernel_permutation(k)``, built from ``act_on_image`` too.

All actions are exact (pure index permutations), so equivariance holds to floating point round-off.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache

import torch

__all__ = ["Group", "get", "P4", "P4M", "GROUPS", "resolve"]


@dataclass(frozen=True)
class Group:
    """A point group ``A`` (C4 or D4) of the affine group ``Z^2 ⋊ A`` (p4 or p4m).

    See the module docstring for the element order, the rotation direction and the tensor layout.
    """

    name: str
    rotations: int = 4
    reflections: bool = False
    _table: tuple[tuple[int, ...], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        n = self.order
        table = tuple(tuple(self._compose(a, b) for b in range(n)) for a in range(n))
        object.__setattr__(self, "_table", table)

    # ---- the abstract group -------------------------------------------------------------------------
    @property
    def order(self) -> int:
        """``|A|``: 4 for p4, 8 for p4m."""
        return self.rotations * (2 if self.reflections else 1)

    def elements(self) -> list[int]:
        """All elements as integers ``0 .. |A|-1`` (``4*j + i`` is ``r^i m^j``)."""
        return list(range(self.order))

    def decompose(self, g: int) -> tuple[int, int]:
        """``g -> (i, j)`` with ``g = r^i m^j``."""
        self._check_element(g)
        return g % self.rotations, g // self.rotations

    def element(self, rotation: int, mirror: int = 0) -> int:
        """The index of ``r^rotation m^mirror``."""
        if mirror and not self.reflections:
            raise ValueError(f"group {self.name!r} has no reflections")
        return (rotation % self.rotations) + self.rotations * (mirror % 2)

    def element_name(self, g: int) -> str:
        i, j = self.decompose(g)
        parts = ([f"r{i}"] if i else []) + (["m"] if j else [])
        return "".join(parts) or "e"

    def _compose(self, a: int, b: int) -> int:
        ia, ja = a % self.rotations, a // self.rotations
        ib, jb = b % self.rotations, b // self.rotations
        sign = -1 if ja else 1
        return (ia + sign * ib) % self.rotations + self.rotations * ((ja + jb) % 2)

    def compose(self, a: int, b: int) -> int:
        """The product ``a b`` (apply ``b`` first, then ``a``)."""
        self._check_element(a)
        self._check_element(b)
        return self._table[a][b]

    def inverse(self, a: int) -> int:
        """The inverse ``a^-1``."""
        self._check_element(a)
        return self._table[a].index(0)

    def _check_element(self, g: int) -> None:
        if not isinstance(g, int) or isinstance(g, bool) or not 0 <= g < self.order:
            raise ValueError(f"{g!r} is not an element of {self.name} (expected an int in 0..{self.order - 1})")

    # ---- actions ------------------------------------------------------------------------------------
    def act_on_image(self, x: torch.Tensor, g: int) -> torch.Tensor:
        """``(T_g x)(p) = x(g^-1 p)`` on the last two (spatial) dims of ``x`` (..., H, W).

        Exact: ``r`` is ``torch.rot90(·, 1, (-2, -1))``, ``m`` is a flip of the width axis; ``r^i m^j`` mirrors first.
        For non-square inputs a rotation by an odd multiple of 90 degrees swaps H and W.
        """
        if x.dim() < 2:
            raise ValueError(f"act_on_image needs a tensor with at least 2 dims (..., H, W), got shape {tuple(x.shape)}")
        i, j = self.decompose(g)
        if j:
            x = torch.flip(x, (-1,))
        if i:
            x = torch.rot90(x, i, (-2, -1))
        return x

    def regular_permutation(self, g: int) -> list[int]:
        """Source index on the group axis for each output slot: ``perm[a] = g^-1 a``."""
        gi = self.inverse(g)
        return [self._table[gi][a] for a in range(self.order)]

    def act_on_features(self, x: torch.Tensor, g: int) -> torch.Tensor:
        """Regular action on a group feature map ``(..., |A|, H, W)``: ``(T_g f)(p, a) = f(g^-1 p, g^-1 a)``."""
        if x.dim() < 3 or x.shape[-3] != self.order:
            raise ValueError(
                f"act_on_features needs a group feature map (..., {self.order}, H, W) for {self.name}, "
                f"got shape {tuple(x.shape)}"
            )
        perm = torch.tensor(self.regular_permutation(g), device=x.device)
        return self.act_on_image(x, g).index_select(-3, perm)

    def image_filter_bank(self, weight: torch.Tensor) -> torch.Tensor:
        """Lifting filters: ``weight (Cout, Cin, k, k) -> (Cout, |A|, Cin, k, k)``, slot ``a`` is ``T_a weight``."""
        return torch.stack([self.act_on_image(weight, a) for a in self.elements()], dim=1)

    def group_filter_bank(self, weight: torch.Tensor) -> torch.Tensor:
        """Group-convolution filters (Eq. 5): ``weight (Cout, Cin, |A|, k, k) -> (Cout, |A|, Cin, |A|, k, k)``.

        ``weight[..., b, :, :]`` is the kernel at relative position ``(·, b) = g^-1 g~``; output slot ``a`` uses
        ``T_a weight`` so that ``f'(x, a) = sum_{y, b} weight(a^-1 (y - x), a^-1 b) f(y, b)``.
        """
        return torch.stack([self.act_on_features(weight, a) for a in self.elements()], dim=1)

    def kernel_permutation(self, kernel_size: int, device: torch.device | str | None = None) -> torch.Tensor:
        """Index table ``(|A|, k*k)``: the k x k kernel transformed by ``a`` is ``flat_kernel[..., table[a]]``.

        Built by applying ``act_on_image`` to the grid of flat indices, so it is the same action.
        """
        return _kernel_permutation(self, kernel_size).to(device) if device is not None else _kernel_permutation(self, kernel_size)

    def __str__(self) -> str:
        return self.name


@cache
def _kernel_permutation(group: Group, k: int) -> torch.Tensor:
    grid = torch.arange(k * k).view(k, k)
    return torch.stack([group.act_on_image(grid, a).reshape(-1) for a in group.elements()])


P4 = Group("p4", rotations=4, reflections=False)
P4M = Group("p4m", rotations=4, reflections=True)
GROUPS: dict[str, Group] = {"p4": P4, "p4m": P4M}


def get(name: str) -> Group:
    """The group named ``"p4"`` or ``"p4m"``."""
    try:
        return GROUPS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown group {name!r}; known groups: {', '.join(GROUPS)}") from None


def resolve(group: str | Group) -> Group:
    """Accept a group name or a :class:`Group`."""
    return group if isinstance(group, Group) else get(group)
