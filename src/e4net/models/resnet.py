"""CIFAR models of Sec. 5.2 / Table 4: ResNet-18 and its p4 / p4m and E4 versions, as the authors built them.

* ``r18``: the standard ResNet-18 for 32x32 inputs [10] (3x3 stem, no max pooling, 4 stages of 2 basic blocks,
  64-128-256-512 channels, stride-2 downsampling, global average pooling, linear), with the authors' dropout after
  the first convolution of every block.
* ``p4-r18`` / ``p4m-r18``: every convolution replaced by its group version (lifting stem, group convolutions
  of Eq. 5, 1x1 group convolutions in the shortcuts). The width is multiplied by ``sqrt(|A|)`` in *total channels*
  (fields x |A|), i.e. ``fields = floor(64 / sqrt(|A|))`` in the first stage (32 for p4, 22 for p4m), doubled per
  stage, so the parameters stay about the same. Logits: max over the group, mean over space, linear (invariant).
* ``p4-e4r18`` / ``p4m-e4r18``: the second convolution of every residual block is an E4 layer (Eq. 12) with
  k=3, r=2 and two channels per slice (``slices = fields // 2``).

The paper does not spell these networks out; Table 4 was produced by the authors' code
(LingshenHe/Efficient-Equivariant-Network, ``model/resnet.py``, ``model/group_op.py``, ``train.py``). Its choices
are our defaults; the alternatives this package used before are options (:class:`GroupResNet18`):

* ``downsample_pool``: ``"max"`` (authors': the stride-1 3x3 conv, then 2x2 max pooling) or ``"avg"`` (ours:
  2x2 average pooling).
* ``shortcut_pool_first``: ``False`` (authors': the 1x1 group conv at full resolution, then the 2x2 pooling, then
  BN) or ``True`` (ours: pool, then the 1x1 conv).
* ``head``: ``"max"`` (authors': max over the group, mean over space, linear) or ``"mean"`` (ours: mean over group
  and space, linear).
* ``dropout``: 0.2 (authors', :data:`AUTHORS_DROPOUT`) after every block's ``conv1``, in their order conv1 -> pool
  -> dropout -> BN -> ReLU, in ``r18`` too; 0 for none (ours).

Exactness: a stride-2 convolution on an even-sized map is not exactly equivariant (its sampling grid is not
symmetric about the centre), so the group models downsample with a stride-1 convolution followed by 2x2 pooling,
exact on the 32/16/8-sized maps, max or average alike. Why ``shortcut_pool_first`` existed: *average* pooling and a
1x1 convolution commute, so pooling first is the same map at a quarter of the shortcut's MACs. Max pooling does not
commute with a linear map, so with ``downsample_pool="max"`` pooling first is a *different* (still exactly
equivariant) network, in neither the authors' code nor the paper; it is allowed, as a cheaper variant, not as an
equivalent. The stride-1 3x3 convolutions cost 4x the MACs of a strided one; docs/models.md compares the totals
with Table 4.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..groups import Group, resolve
from ..nn import (
    E4Conv,
    GlobalAvgPool,
    GroupBatchNorm,
    GroupConv,
    GroupMaxPool,
    LiftingConv,
    SpatialAvgPool2d,
    SpatialMaxPool2d,
    norm_relu,
)
from .blocks import ConvNormAct
from .registry import register_model

__all__ = ["ResNet18", "GroupResNet18", "BasicBlock", "GroupBasicBlock", "default_width", "AUTHORS_DROPOUT"]

#: Dropout after the first convolution of every residual block: ``--dropout`` of the authors' ``train.py``
#: (default 0.2, used for CIFAR-10 and CIFAR-100 alike; their README lists "dropout rate: 0.2").
AUTHORS_DROPOUT = 0.2

DOWNSAMPLE_POOLS = {"max": SpatialMaxPool2d, "avg": SpatialAvgPool2d}
HEADS = ("max", "mean")


# ---- plain ResNet-18 ------------------------------------------------------------------------------------------------
class BasicBlock(nn.Module):
    """``ReLU(BN(conv3x3(ReLU(BN(dropout(conv3x3(x)))))) + shortcut(x))`` [10], dropout as in the authors' code."""

    def __init__(self, cin: int, cout: int, stride: int, dropout: float = AUTHORS_DROPOUT):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.dropout = nn.Dropout(dropout)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.dropout(self.conv1(x))))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet-18 for 32x32 images (the CIFAR variant: 3x3 stem, no max pooling); ``width`` channels in stage 1.

    ``dropout``: after the first convolution of every block (the authors' 0.2, :data:`AUTHORS_DROPOUT`; 0 for none).
    """

    def __init__(self, num_classes: int = 10, width: int = 64, in_channels: int = 3, dropout: float = AUTHORS_DROPOUT):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)
        )
        blocks, cin = [], width
        for stage in range(4):
            cout = width * 2**stage
            for i in range(2):
                blocks.append(BasicBlock(cin, cout, 2 if stage > 0 and i == 0 else 1, dropout))
                cin = cout
        self.layers = nn.Sequential(*blocks)
        self.classifier = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.layers(self.stem(x)).mean((-2, -1)))


# ---- group ResNet-18 ------------------------------------------------------------------------------------------------
def default_width(group: str | Group, base: int = 64) -> int:
    """First-stage fields: ``floor(base / sqrt(|A|))`` so that fields x |A| = base x sqrt(|A|) (32 for p4, 22 for p4m)."""
    return int(base / math.sqrt(resolve(group).order))


def _check_choice(value: str, choices, name: str) -> str:
    if value not in choices:
        raise ValueError(f"GroupResNet18: {name} must be one of {sorted(choices)}, got {value!r}")
    return value


class GroupBasicBlock(nn.Module):
    """Residual block on group feature maps: ``ReLU(BN(conv2(ReLU(BN(drop(pool(conv1(x))))))) + shortcut(x))``.

    ``conv1`` is a 3x3 group convolution (Eq. 5); ``conv2`` another one, or an E4 layer (Eq. 12) if ``e4``.
    ``downsample`` halves the map exactly: stride-1 ``conv1`` then 2x2 pooling (``downsample_pool``: ``"max"``, the
    authors', or ``"avg"``); shortcut: 1x1 group convolution, the same 2x2 pooling, BN (the authors' order), or
    pooling before the convolution with ``shortcut_pool_first`` (the same map at 1/4 of the MACs for ``"avg"``; a
    different one for ``"max"``). ``dropout`` follows the pooling, as in the authors' code (conv -> pool -> dropout
    -> BN -> ReLU). Module names (``conv1, pool, dropout, bn1, conv2, bn2, shortcut``) are the state_dict keys.
    """

    def __init__(
        self,
        cin: int,
        cout: int,
        group: Group,
        *,
        downsample: bool,
        e4: bool,
        reduction: int = 2,
        channels_per_slice: int = 2,
        e4_kernel_size: int = 3,
        downsample_pool: str = "max",
        shortcut_pool_first: bool = False,
        dropout: float = AUTHORS_DROPOUT,
    ):
        super().__init__()
        pool_cls = DOWNSAMPLE_POOLS[_check_choice(downsample_pool, DOWNSAMPLE_POOLS, "downsample_pool")]
        self.conv1 = GroupConv(cin, cout, 3, group)
        self.pool = pool_cls(2) if downsample else nn.Identity()
        self.dropout = nn.Dropout(dropout)
        self.bn1 = GroupBatchNorm(cout, group)
        if e4:
            if cout % channels_per_slice:
                raise ValueError(
                    f"E4 block: {cout} fields are not divisible into slices of {channels_per_slice} channels"
                )
            slices = cout // channels_per_slice
            self.conv2 = E4Conv(cout, cout, e4_kernel_size, group, reduction=reduction, slices=slices)
        else:
            self.conv2 = GroupConv(cout, cout, 3, group)
        self.bn2 = GroupBatchNorm(cout, group)
        self.shortcut = nn.Sequential()
        if downsample or cin != cout:
            pool = pool_cls(2) if downsample else nn.Identity()
            conv = GroupConv(cin, cout, 1, group)
            layers = [pool, conv] if shortcut_pool_first else [conv, pool]
            self.shortcut = nn.Sequential(*layers, GroupBatchNorm(cout, group))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = norm_relu(self.bn1, self.dropout(self.pool(self.conv1(x))))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class GroupResNet18(nn.Module):
    """p4 / p4m ResNet-18 (Sec. 5.2); with ``e4=True`` the second convolution of every block is an E4 layer.

    Args:
        num_classes: outputs.
        group: ``"p4"`` or ``"p4m"``.
        width: fields in stage 1 (default :func:`default_width`: 32 for p4, 22 for p4m), doubled per stage.
        e4: use E4 layers (k=``e4_kernel_size``, r=``reduction``, ``channels_per_slice`` channels per slice).
        in_channels: image channels.
        downsample_pool: the 2x2 pooling after the stride-1 downsampling convolutions, ``"max"`` (the authors') or
            ``"avg"`` (ours before).
        shortcut_pool_first: in downsampling shortcuts, pool before the 1x1 convolution (ours before: with
            ``"avg"`` the same map, cheaper) instead of after it (the authors', default).
        head: ``"max"`` (the authors': max over the group, then mean over space, then linear) or ``"mean"`` (ours
            before: mean over group and space). Both are invariant.
        dropout: dropout after ``conv1`` of every block (the authors' 0.2, :data:`AUTHORS_DROPOUT`; 0 for none).

    ``GroupResNet18(..., downsample_pool="avg", shortcut_pool_first=True, head="mean", dropout=0.0)`` is the network
    this package built before, with the same state_dict keys. The aggregation backend of the E4 layers is chosen
    afterwards, for the whole model: :func:`e4net.nn.set_backend` (or :func:`e4net.backends.use_backend`).
    """

    def __init__(
        self,
        num_classes: int = 10,
        group: str = "p4",
        width: int | None = None,
        e4: bool = False,
        reduction: int = 2,
        channels_per_slice: int = 2,
        e4_kernel_size: int = 3,
        in_channels: int = 3,
        downsample_pool: str = "max",
        shortcut_pool_first: bool = False,
        head: str = "max",
        dropout: float = AUTHORS_DROPOUT,
    ):
        super().__init__()
        g = resolve(group)
        self.group = g
        width = default_width(g) if width is None else width
        self.stem = ConvNormAct(LiftingConv(in_channels, width, 3, g), GroupBatchNorm(width, g), nn.ReLU(inplace=True))
        blocks, cin = [], width
        for stage in range(4):
            cout = width * 2**stage
            for i in range(2):
                blocks.append(
                    GroupBasicBlock(
                        cin,
                        cout,
                        g,
                        downsample=stage > 0 and i == 0,
                        e4=e4,
                        reduction=reduction,
                        channels_per_slice=channels_per_slice,
                        e4_kernel_size=e4_kernel_size,
                        downsample_pool=downsample_pool,
                        shortcut_pool_first=shortcut_pool_first,
                        dropout=dropout,
                    )
                )
                cin = cout
        self.layers = nn.Sequential(*blocks)
        if _check_choice(head, HEADS, "head") == "max":
            self.pool = nn.Sequential(GroupMaxPool(), GlobalAvgPool())  # C_4_Pool, then AdaptiveAvgPool2d(1)
        else:
            self.pool = GlobalAvgPool(group_pool=True)
        self.classifier = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.layers(self.stem(x))))


# ---- registrations (Table 4; the paper's numbers: e4net.paper) ---------------------------------------------------
@register_model(
    "r18",
    dataset="cifar10",
    group=None,
    description="ResNet-18 for 32x32 inputs (not equivariant; the Table 4 baseline)",
)
def r18(num_classes: int = 10, **kwargs) -> ResNet18:
    return ResNet18(num_classes=num_classes, **kwargs)


@register_model(
    "p4-r18",
    dataset="cifar10",
    group="p4",
    description="p4-ResNet-18: every convolution a p4 convolution, 32 fields in stage 1",
)
def p4_r18(num_classes: int = 10, **kwargs) -> GroupResNet18:
    return GroupResNet18(num_classes=num_classes, group="p4", **kwargs)


@register_model(
    "p4m-r18",
    dataset="cifar10",
    group="p4m",
    description="p4m-ResNet-18: every convolution a p4m convolution, 22 fields in stage 1",
)
def p4m_r18(num_classes: int = 10, **kwargs) -> GroupResNet18:
    return GroupResNet18(num_classes=num_classes, group="p4m", **kwargs)


@register_model(
    "p4-e4r18",
    dataset="cifar10",
    group="p4",
    description="p4-E4R18: p4-R18 with the second convolution of every block an E4 layer (k=3, r=2, 2 ch/slice)",
)
def p4_e4r18(num_classes: int = 10, **kwargs) -> GroupResNet18:
    return GroupResNet18(num_classes=num_classes, group="p4", e4=True, **kwargs)


@register_model(
    "p4m-e4r18",
    dataset="cifar10",
    group="p4m",
    description="p4m-E4R18: p4m-R18 with the second convolution of every block an E4 layer (k=3, r=2, 2 ch/slice)",
)
def p4m_e4r18(num_classes: int = 10, **kwargs) -> GroupResNet18:
    return GroupResNet18(num_classes=num_classes, group="p4m", e4=True, **kwargs)
