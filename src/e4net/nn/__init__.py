"""Equivariant layers for p4 / p4m feature maps ``(B, C, |A|, H, W)`` and O / Oh feature maps ``(B, C, |A|, D, H, W)``
(conventions: :mod:`e4net.groups`; the group decides the number of spatial dims)."""

from .aggregation import GroupAggregation
from .attentive_conv import AttentiveGroupConv, AttentiveLiftingConv
from .backend import set_backend
from .conv import GroupConv, LiftingConv
from .e4 import CONCAT_MODES, E4Conv
from .linear import SlotwiseLinear
from .norm import GroupBatchNorm, GroupInstanceNorm, norm_relu
from .pooling import (
    GlobalAvgPool,
    GlobalMaxPool,
    GroupAvgPool,
    GroupMaxPool,
    SpatialAvgPool2d,
    SpatialAvgPool3d,
    SpatialMaxPool2d,
    SpatialMaxPool3d,
)
from .self_attention import GroupSelfAttention, LiftingSelfAttention

__all__ = [
    "set_backend",
    "LiftingConv",
    "GroupConv",
    "E4Conv",
    "SlotwiseLinear",
    "CONCAT_MODES",
    "GroupBatchNorm",
    "GroupInstanceNorm",
    "norm_relu",
    "GroupMaxPool",
    "GroupAvgPool",
    "SpatialMaxPool2d",
    "SpatialAvgPool2d",
    "SpatialMaxPool3d",
    "SpatialAvgPool3d",
    "GlobalMaxPool",
    "GlobalAvgPool",
    "GroupAggregation",
    "GroupSelfAttention",
    "LiftingSelfAttention",
    "AttentiveGroupConv",
    "AttentiveLiftingConv",
]
