"""Building blocks shared by the model families (not layers of the paper on their own).

* :func:`conv_bn_act`: the usual ``conv -> norm -> ReLU (-> dropout)`` stack.
"""

from __future__ import annotations

import torch
from torch import nn

from ..groups import Group
from ..nn import GroupBatchNorm, norm_relu

__all__ = ["conv_bn_act", "ConvNormAct"]


class ConvNormAct(nn.Sequential):
    """``conv -> GroupBatchNorm (-> ReLU) (-> Dropout)`` as an ``nn.Sequential`` (same modules, indices and
    ``state_dict``), whose norm and ReLU run as one :func:`e4net.nn.norm_relu` (fused on float CPU tensors)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if len(self) < 3 or type(self[2]) is not nn.ReLU or self[2]._forward_hooks or self[2]._forward_pre_hooks:
            return super().forward(x)
        x = norm_relu(self[1], self[0](x))
        for layer in self[3:]:
            x = layer(x)
        return x


def conv_bn_act(conv: nn.Module, channels: int, group: Group, dropout: float = 0.0, act: bool = True) -> nn.Sequential:
    """``conv -> GroupBatchNorm -> ReLU -> Dropout(p)`` (ReLU / dropout optional), a :class:`ConvNormAct`."""
    layers: list[nn.Module] = [conv, GroupBatchNorm(channels, group)]
    if act:
        layers.append(nn.ReLU(inplace=True))
    if dropout > 0:
        layers.append(nn.Dropout(dropout))
    return ConvNormAct(*layers)
