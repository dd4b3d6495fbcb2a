"""The point groups of p4 and p4m (pixel grids) and of O and Oh (voxel grids), their actions, and the contract every
group of this package fulfils. The 3-D conventions are in the docstring of :class:`CubeGroup`.

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
* Action on signals (images ``(..., H, W)``): ``(T_g f)(x) = f(g^-1 x)``, realised exactly by the pixel
  permutation above (``act_on_signal``).
* Group feature maps have layout ``(B, C, |A|, H, W)``: ``C`` fields, each a function on ``A`` at every pixel;
  the group axis is dim ``-3`` (in general ``-(spatial_dims + 1)``). The regular action (paper Eq. 3) is
  ``(T_g f)(x, a) = f(g^-1 x, g^-1 a)``: transform every group slice spatially, then permute the group axis
  so that output slot ``a`` reads input slot ``g^-1 a`` (``act_on_features``).
* Kernels of a lifting convolution are signals, kernels of a group convolution are group feature maps on
  ``Omega x A`` indexed by the relative position ``g^-1 g~`` (Theorem 1, Eq. 8); the filter used for output
  element ``a`` is the kernel transformed by ``a`` with the *same* actions. Every layer does this through one
  index table, ``relative_position_index(k, over_group)``: row ``a`` lists, for each relative position of the
  neighbourhood ``N(e)`` (``Omega`` or ``Omega x A``, flattened b-major then row-major), the position it reads
  after the transformation by ``a``, so ``t[..., table[a]]`` is ``T_a t``. It is built from ``act_on_signal`` /
  ``act_on_features`` (no rotation is re-implemented anywhere else).

All actions are exact (pure index permutations), so equivariance holds to floating point round-off.

The contract (:class:`Group`)
-----------------------------
A layer needs from its group: ``name``, ``order`` (``|A|``), ``spatial_dims`` (2 for images; 3 for groups acting on
voxels), ``elements()``, ``compose(a, b)``, ``inverse(a)``, the ``composition_table``, ``act_on_signal(x, g)``,
``act_on_features(x, g)``, ``regular_permutation(g)`` and ``relative_position_index(kernel_size, over_group)``.
A new group (e.g. the octahedral group O on 3-D voxel grids with k x k x k kernels) implements only the abstract
members -- ``order``, ``spatial_dims``, the group law ``_compose`` and the action on signals ``_act_on_signal`` -- and
inherits the rest, including the input checks and the relative-position table. :class:`SquareGroup` is the
symmetries of the square acting on the pixel grid (C4, or D4 with reflections). Only 90-degree rotations act exactly
on a pixel grid, so it has no rotation-order parameter. :class:`CubeGroup` is the symmetries of the cube acting on
the voxel grid (O, the 24 rotations, or Oh, 48 with reflections), the 3-D extension the paper's conclusion names.
"""

from __future__ import annotations

import abc
import itertools
from dataclasses import dataclass
from functools import cached_property

import torch

__all__ = ["Group", "SquareGroup", "CubeGroup", "get", "P4", "P4M", "O", "OH", "GROUPS", "resolve"]


class Group(abc.ABC):
    """A finite point group ``A`` acting exactly on signals sampled on a grid (see the module docstring).

    Subclasses set the attribute ``name`` and implement the abstract members; everything else is derived here.
    """

    name: str

    # ---- what a new group implements --------------------------------------------------------------------------------
    @property
    @abc.abstractmethod
    def order(self) -> int:
        """``|A|``, the number of elements."""

    @property
    @abc.abstractmethod
    def spatial_dims(self) -> int:
        """The number of trailing grid dims of a signal the group acts on (2 for images, 3 for voxels)."""

    @abc.abstractmethod
    def _compose(self, a: int, b: int) -> int:
        """The group law on valid element indices: the index of ``a b`` (apply ``b`` first). Element 0 is ``e``."""

    @abc.abstractmethod
    def _act_on_signal(self, x: torch.Tensor, g: int) -> torch.Tensor:
        """``T_g x`` on the last ``spatial_dims`` dims of ``x`` (already checked), an exact index permutation."""

    # ---- the abstract group -------------------------------------------------------------------------------------------
    def elements(self) -> list[int]:
        """All elements as integers ``0 .. |A|-1``."""
        return list(range(self.order))

    @cached_property
    def composition_table(self) -> tuple[tuple[int, ...], ...]:
        """``table[a][b]`` is the index of ``a b``."""
        n = self.order
        return tuple(tuple(self._compose(a, b) for b in range(n)) for a in range(n))

    def compose(self, a: int, b: int) -> int:
        """The product ``a b`` (apply ``b`` first, then ``a``)."""
        self._check_element(a)
        self._check_element(b)
        return self.composition_table[a][b]

    def inverse(self, a: int) -> int:
        """The inverse ``a^-1``."""
        self._check_element(a)
        return self.composition_table[a].index(0)

    def _check_element(self, g: int) -> None:
        if not isinstance(g, int) or isinstance(g, bool) or not 0 <= g < self.order:
            raise ValueError(f"{g!r} is not an element of {self.name} (expected an int in 0..{self.order - 1})")

    # ---- actions ------------------------------------------------------------------------------------------------------
    def act_on_signal(self, x: torch.Tensor, g: int) -> torch.Tensor:
        """``(T_g x)(p) = x(g^-1 p)`` on the last ``spatial_dims`` dims of ``x`` (images ``(..., H, W)`` for 2)."""
        self._check_element(g)
        if not isinstance(x, torch.Tensor) or x.dim() < self.spatial_dims:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(
                f"act_on_signal needs a tensor with at least {self.spatial_dims} dims (the grid of {self.name}), "
                f"got shape {shape}"
            )
        return self._act_on_signal(x, g)

    def regular_permutation(self, g: int) -> list[int]:
        """Source index on the group axis for each output slot: ``perm[a] = g^-1 a``."""
        gi = self.inverse(g)
        return [self.composition_table[gi][a] for a in range(self.order)]

    def act_on_features(self, x: torch.Tensor, g: int) -> torch.Tensor:
        """Regular action on a group feature map ``(..., |A|, *grid)``: ``(T_g f)(p, a) = f(g^-1 p, g^-1 a)``."""
        axis = -(self.spatial_dims + 1)
        if not isinstance(x, torch.Tensor) or x.dim() < self.spatial_dims + 1 or x.shape[axis] != self.order:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            grid = ", ".join("HW"[i] if self.spatial_dims == 2 else f"N{i}" for i in range(self.spatial_dims))
            raise ValueError(
                f"act_on_features needs a group feature map (..., {self.order}, {grid}) for {self.name}, got shape {shape}"
            )
        perm = torch.tensor(self.regular_permutation(g), device=x.device)
        return self.act_on_signal(x, g).index_select(axis, perm)

    # ---- the relative-position table (Theorem 1, Eq. 8) ---------------------------------------------------------------
    @cached_property
    def _relative_position_tables(self) -> dict[tuple[int, bool], torch.Tensor]:
        return {}

    def relative_position_index(self, kernel_size: int, over_group: bool = False) -> torch.Tensor:
        """Index table ``(|A|, |N(e)|)`` mapping relative positions to the frame of each output slot.

        ``N(e)`` is the k^d grid ``Omega`` (``over_group=False``) or ``Omega x A`` (``over_group=True``), flattened
        group-major then row-major. For a tensor ``t`` whose last dim enumerates ``N(e)``, ``t[..., table[a]]`` is
        ``T_a t``: ``act_on_signal`` on ``Omega``, ``act_on_features`` on ``Omega x A``. For a neighbour
        ``g~ = (x + u, b)`` of ``g = (x, a)`` it reads the relative position ``(a^-1 u, a^-1 b)``. Any
        ``kernel_size >= 1`` (even sizes are exact only for layers without padding). Cached; a fresh copy is returned.
        """
        if not isinstance(kernel_size, int) or isinstance(kernel_size, bool) or kernel_size < 1:
            raise ValueError(f"relative_position_index: kernel_size must be a positive int, got {kernel_size!r}")
        key = (kernel_size, bool(over_group))
        if key not in self._relative_position_tables:
            grid_shape = (kernel_size,) * self.spatial_dims
            if over_group:
                grid = torch.arange(self.order * kernel_size**self.spatial_dims).view(self.order, *grid_shape)
                rows = [self.act_on_features(grid, a).reshape(-1) for a in self.elements()]
            else:
                grid = torch.arange(kernel_size**self.spatial_dims).view(grid_shape)
                rows = [self.act_on_signal(grid, a).reshape(-1) for a in self.elements()]
            self._relative_position_tables[key] = torch.stack(rows)
        return self._relative_position_tables[key].clone()

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class SquareGroup(Group):
    """The symmetries of the square acting on the pixel grid: C4 (``reflections=False``, p4) or D4 (p4m).

    See the module docstring for the element order, the rotation direction and the tensor layout.
    """

    name: str
    reflections: bool = False

    ROTATIONS = 4  # only 90-degree rotations map the pixel grid onto itself

    @property
    def order(self) -> int:
        """``|A|``: 4 for p4, 8 for p4m."""
        return self.ROTATIONS * (2 if self.reflections else 1)

    @property
    def spatial_dims(self) -> int:
        return 2

    def decompose(self, g: int) -> tuple[int, int]:
        """``g -> (i, j)`` with ``g = r^i m^j``."""
        self._check_element(g)
        return g % self.ROTATIONS, g // self.ROTATIONS

    def element(self, rotation: int, mirror: int = 0) -> int:
        """The index of ``r^rotation m^mirror``."""
        if mirror and not self.reflections:
            raise ValueError(f"group {self.name!r} has no reflections")
        return (rotation % self.ROTATIONS) + self.ROTATIONS * (mirror % 2)

    def element_name(self, g: int) -> str:
        i, j = self.decompose(g)
        parts = ([f"r{i}"] if i else []) + (["m"] if j else [])
        return "".join(parts) or "e"

    def _compose(self, a: int, b: int) -> int:
        n = self.ROTATIONS
        ia, ja = a % n, a // n
        ib, jb = b % n, b // n
        sign = -1 if ja else 1
        return (ia + sign * ib) % n + n * ((ja + jb) % 2)

    def _act_on_signal(self, x: torch.Tensor, g: int) -> torch.Tensor:
        """``r`` is ``torch.rot90(·, 1, (-2, -1))``, ``m`` a flip of the width axis; ``r^i m^j`` mirrors first.

        For non-square inputs a rotation by an odd multiple of 90 degrees swaps H and W.
        """
        i, j = self.decompose(g)
        if j:
            x = torch.flip(x, (-1,))
        if i:
            x = torch.rot90(x, i, (-2, -1))
        return x


def _signed_permutations(proper_only: bool) -> tuple[tuple[tuple[int, ...], tuple[int, ...]], ...]:
    """The rotation matrices of O as ``(perm, signs)`` with ``M[i, perm[i]] = signs[i]``, in the order of the
    :class:`CubeGroup` docstring: permutations of ``itertools.permutations(range(3))``, then sign patterns of
    ``itertools.product((1, -1), repeat=3)``, keeping det +1 (``proper_only``) or all 48."""
    out = []
    for perm in itertools.permutations(range(3)):
        parity = sum(perm[i] > perm[j] for i in range(3) for j in range(i + 1, 3)) % 2
        for signs in itertools.product((1, -1), repeat=3):
            det = (-1) ** parity * signs[0] * signs[1] * signs[2]
            if det == 1 or not proper_only:
                out.append((perm, signs))
    return tuple(out)


_ROTATIONS_O = _signed_permutations(proper_only=True)


@dataclass(frozen=True)
class CubeGroup(Group):
    """The symmetries of the cube acting on voxel grids ``(..., D, H, W)``: O (24 rotations, ``reflections=False``)
    or Oh (48: O and the point reflection ``-I``), with the translations of Z^3 acting through convolution.

    Conventions (the 3-D counterpart of the module docstring):

    * A voxel ``(d, h, w)`` has the centred coordinates ``p = (d, h, w) - (D-1, H-1, W-1)/2`` (axis order D, H, W).
      An element is a signed permutation matrix ``M`` with ``M[i, perm[i]] = signs[i]`` acting by
      ``(T_g f)(p) = f(M^-1 p)``: output axis ``i`` reads input axis ``perm[i]``, reversed when ``signs[i] = -1``
      (``x.permute`` then ``torch.flip``, an exact index permutation). ``compose(a, b)`` is the matrix product
      ``M_a M_b`` (apply ``b`` first), so ``T_a T_b = T_{ab}``.
    * Element order: index ``24*j + i`` is ``R_i (-I)^j`` (``j in {0, 1}``, ``j = 0`` only for O). ``R_i`` is the
      ``i``-th det +1 matrix when permutations run over ``itertools.permutations(range(3))`` and, for each,
      sign patterns over ``itertools.product((1, -1), repeat=3)``. Element 0 is the identity; :meth:`matrix` gives
      ``M`` of any element. ``-I`` reverses all three axes.
    * Group feature maps are ``(B, C, |A|, D, H, W)`` with the regular action ``(T_g f)(p, a) = f(M_g^-1 p, g^-1 a)``
      (inherited ``act_on_features``); k x k x k kernels are transformed through ``relative_position_index``
      (the k^3 grid flattened row-major, D-major). Axes of unequal length are swapped by the elements that permute
      them (only cubic inputs keep their shape under all of O).
    """

    name: str
    reflections: bool = False

    @property
    def order(self) -> int:
        """``|A|``: 24 for O, 48 for Oh."""
        return len(_ROTATIONS_O) * (2 if self.reflections else 1)

    @property
    def spatial_dims(self) -> int:
        return 3

    def decompose(self, g: int) -> tuple[int, int]:
        """``g -> (i, j)`` with ``g = R_i (-I)^j``."""
        self._check_element(g)
        return g % len(_ROTATIONS_O), g // len(_ROTATIONS_O)

    def matrix(self, g: int) -> tuple[tuple[int, ...], ...]:
        """The signed permutation matrix ``M_g`` (rows: output axes D, H, W) as nested tuples."""
        i, j = self.decompose(g)
        perm, signs = _ROTATIONS_O[i]
        sign = -1 if j else 1
        return tuple(tuple(sign * signs[r] if c == perm[r] else 0 for c in range(3)) for r in range(3))

    def element_of_matrix(self, m: tuple[tuple[int, ...], ...] | list[list[int]]) -> int:
        """The index of the element with matrix ``m`` (ValueError if ``m`` is not in the group)."""
        key = tuple(tuple(int(v) for v in row) for row in m)
        try:
            return self._matrix_index[key]
        except KeyError:
            raise ValueError(f"{key} is not a matrix of {self.name}") from None

    @cached_property
    def _matrix_index(self) -> dict[tuple[tuple[int, ...], ...], int]:
        return {self.matrix(g): g for g in range(self.order)}

    def element_name(self, g: int) -> str:
        """``"e"``, or the matrix rows, e.g. ``"[0,-1,0;1,0,0;0,0,1]"``."""
        if g == 0:
            self._check_element(g)
            return "e"
        return "[" + ";".join(",".join(str(v) for v in row) for row in self.matrix(g)) + "]"

    def _compose(self, a: int, b: int) -> int:
        ma, mb = self.matrix(a), self.matrix(b)
        prod = tuple(tuple(sum(ma[r][t] * mb[t][c] for t in range(3)) for c in range(3)) for r in range(3))
        return self._matrix_index[prod]

    def _act_on_signal(self, x: torch.Tensor, g: int) -> torch.Tensor:
        """Output axis ``i`` reads input axis ``perm[i]``, reversed where the matrix entry is -1."""
        m = self.matrix(g)
        base = x.dim() - 3
        perm = [next(c for c in range(3) if m[r][c]) for r in range(3)]
        y = x.permute(*range(base), *(base + p for p in perm)) if perm != [0, 1, 2] else x
        flips = tuple(base + r for r in range(3) if m[r][perm[r]] < 0)
        return torch.flip(y, flips) if flips else y


P4 = SquareGroup("p4", reflections=False)
P4M = SquareGroup("p4m", reflections=True)
O = CubeGroup("O", reflections=False)  # noqa: E741 (the standard name of the octahedral rotation group)
OH = CubeGroup("Oh", reflections=True)
GROUPS: dict[str, Group] = {"p4": P4, "p4m": P4M, "O": O, "Oh": OH}


def get(name: str) -> Group:
    """The group named ``"p4"``, ``"p4m"`` (pixel grids), ``"O"`` or ``"Oh"`` (voxel grids)."""
    try:
        return GROUPS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown group {name!r}; known groups: {', '.join(GROUPS)}") from None


def resolve(group: str | Group) -> Group:
    """Accept a group name or a :class:`Group`."""
    return group if isinstance(group, Group) else get(group)
