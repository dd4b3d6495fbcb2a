"""Volumetric models for the embedded 3-D benchmark ``digits3d`` (voxel cubes ``(1, 16, 16, 16)``): E4 on the cube's
rotation group O, its group-convolution twin, and a plain 3-D CNN.

E4-Net-3D (``e4net3d``) and its twin G-CNN-3D (``gcnn3d``), the same topology and width ``C`` (fields)::

    x (1, 16, 16, 16)
    -> LiftingConv(1 -> C, 2x2x2, O, stride 2, unpadded)  -> BN -> ReLU                      16^3 -> 8^3
    -> layer #1 (C -> C, 3x3x3)                           -> BN -> ReLU                       8^3
    -> layer #2 (C -> C, 3x3x3)                           -> BN -> ReLU -> MaxPool 2x2x2       8^3 -> 4^3
    -> layer #3 (C -> C, 3x3x3)                           -> BN -> ReLU                       4^3
    -> max over the group (24 slots) -> global spatial max -> Linear(C -> classes)

where a layer is :class:`~e4net.nn.E4Conv` (Eq. 12 in 3-D: k^3 dynamic kernels, ``r = 1``, ``s = 2``) in ``e4net3d``
and :class:`~e4net.nn.GroupConv` (Eq. 5 in 3-D) in ``gcnn3d``. Both are exactly invariant to the 24 rotations of
the cube (48 with ``group="Oh"``): every layer is exactly equivariant (the unpadded stride-2 lifting layer too: its
grid of 2x2x2 patch centres, 15 per side, is symmetric about the cube's centre, :mod:`e4net.nn.conv`), 2x2x2 pooling
of even sides is, and the group and global max pools make the logits invariant. The lifting layer patchifies
16^3 -> 8^3 so that no 16^3 x |A| feature map is ever stored: the hidden layers, where E4 and the group convolution
differ, dominate the cost. The data's rotations are continuous (SO(3)), so that is
the symmetry the networks build in, not all of it.

CNN-3D (``cnn3d``): the same stages with ``Conv3d`` (2x2x2 stride 2, then 3x3x3) + BN + ReLU, 12 channels for about
E4-Net-3D's parameters, global max pooling and a linear classifier; no built-in symmetry.
"""

from __future__ import annotations

from torch import nn

from ..groups import resolve
from ..nn import E4Conv, GlobalMaxPool, GroupConv, GroupMaxPool, LiftingConv, SpatialMaxPool3d
from .blocks import conv_bn_act
from .registry import register_model

__all__ = ["GroupNet3d", "CNN3d"]

LAYERS = ("e4", "gconv")


class GroupNet3d(nn.Module):
    """The shared topology of ``e4net3d`` / ``gcnn3d`` (module docstring).

    Args:
        num_classes: outputs of the linear layer.
        layer: ``"e4"`` (E4Conv) or ``"gconv"`` (GroupConv) for the two hidden layers.
        fields: fields C of every layer (the group axis multiplies them by |A|).
        kernel_size: spatial side k of the hidden layers' k^3 kernels.
        reduction, slices: the E4 layer's r and s (unused by ``"gconv"``).
        group: ``"O"`` (24 rotations) or ``"Oh"`` (48).
        in_channels: voxel channels.
    """

    def __init__(
        self,
        num_classes: int = 10,
        layer: str = "e4",
        fields: int = 8,
        kernel_size: int = 3,
        reduction: int = 1,
        slices: int = 2,
        group: str = "O",
        in_channels: int = 1,
    ):
        super().__init__()
        if layer not in LAYERS:
            raise ValueError(f"GroupNet3d: layer must be one of {LAYERS}, got {layer!r}")
        G = resolve(group)
        if G.spatial_dims != 3:
            raise ValueError(f"GroupNet3d needs a group acting on voxel grids (O, Oh), got {G.name}")

        def hidden() -> nn.Module:
            if layer == "e4":
                return E4Conv(fields, fields, kernel_size, G, reduction=reduction, slices=slices)
            return GroupConv(fields, fields, kernel_size, G)

        lift = LiftingConv(in_channels, fields, 2, G, stride=2, padding="valid")
        self.lift = conv_bn_act(lift, fields, G)
        self.layer1 = conv_bn_act(hidden(), fields, G)
        self.layer2 = conv_bn_act(hidden(), fields, G)
        self.pool = SpatialMaxPool3d(2)
        self.layer3 = conv_bn_act(hidden(), fields, G)
        self.head = nn.Sequential(GroupMaxPool(), GlobalMaxPool(), nn.Linear(fields, num_classes))

    def forward(self, x):
        x = self.layer2(self.layer1(self.lift(x)))
        return self.head(self.layer3(self.pool(x)))


class CNN3d(nn.Module):
    """The plain 3-D CNN baseline: the same three stages with ``Conv3d`` (``width`` channels), no symmetry."""

    def __init__(self, num_classes: int = 10, width: int = 12, kernel_size: int = 3, in_channels: int = 1):
        super().__init__()
        p = kernel_size // 2

        def block(cin: int, k: int = kernel_size, stride: int = 1, pad: int = p) -> nn.Sequential:
            conv = nn.Conv3d(cin, width, k, stride=stride, padding=pad, bias=False)
            return nn.Sequential(conv, nn.BatchNorm3d(width), nn.ReLU(inplace=True))

        self.features = nn.Sequential(
            block(in_channels, 2, 2, 0), block(width), block(width), nn.MaxPool3d(2), block(width)
        )
        self.head = nn.Sequential(nn.AdaptiveMaxPool3d(1), nn.Flatten(), nn.Linear(width, num_classes))

    def forward(self, x):
        return self.head(self.features(x))


@register_model(
    "e4net3d",
    dataset="digits3d",
    group="O",
    description="E4-Net-3D: O lifting (2^3, stride 2) + 3 E4 layers (8 fields, k=3, r=1, s=2), max pooling, linear",
)
def e4net3d(num_classes: int = 10, **kwargs) -> nn.Module:
    return GroupNet3d(num_classes, layer="e4", **kwargs)


@register_model(
    "gcnn3d",
    dataset="digits3d",
    group="O",
    description="G-CNN-3D: e4net3d's twin (same topology and width) with 3-D group convolutions (Eq. 5)",
)
def gcnn3d(num_classes: int = 10, **kwargs) -> nn.Module:
    return GroupNet3d(num_classes, layer="gconv", **kwargs)


@register_model(
    "cnn3d",
    dataset="digits3d",
    group=None,
    description="CNN-3D: plain Conv3d baseline (12 channels, about e4net3d's parameters), same pooling",
)
def cnn3d(num_classes: int = 10, **kwargs) -> nn.Module:
    return CNN3d(num_classes, **kwargs)
