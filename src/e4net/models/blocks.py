"""Building blocks shared by the model families (not layers of the paper on their own).

* :func:`conv_bn_act`: the usual ``conv -> norm -> ReLU (-> dropout)`` stack.
"""

from __future__ import annotations

from torch import nn

from ..groups import Group
from ..nn import GroupBatchNorm

__all__ = ["conv_bn_act"]


def conv_bn_act(conv: nn.Module, channels: int, group: Group, dropout: float = 0.0, act: bool = True) -> nn.Sequential:
    """``conv -> GroupBatchNorm -> ReLU -> Dropout(p)`` (ReLU / dropout optional)."""
    layers: list[nn.Module] = [conv, GroupBatchNorm(channels, group)]
    if act:
        layers.append(nn.ReLU(inplace=True))
    if dropout > 0:
        layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)
