"""The E4 layer shapes the ``layers`` suite measures: those of E4-Net (Sec. 5.1) and of the E4-ResNet-18s (Sec. 5.2)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class LayerCase:
    """One E4 layer shape: ``E4Conv(fields, fields, k, group, r, s)`` on ``size x size`` maps."""

    name: str
    group: str
    fields: int
    kernel_size: int
    reduction: int
    slices: int
    size: int


def e4net_layers() -> list[LayerCase]:
    """The E4 layers of E4-Net (Sec. 5.1): 16 fields, p4, k=5, r=1, s=2, at 28, 14 and 7 px."""
    return [LayerCase(f"E4-Net {s}px", "p4", 16, 5, 1, 2, s) for s in (28, 14, 7)]


def resnet_layers() -> list[LayerCase]:
    """The E4 layers of p4-/p4m-E4R18 (Sec. 5.2): k=3, r=2, s = fields / 2, fields doubling per stage."""
    cases = []
    for group, base in (("p4", 32), ("p4m", 22)):
        for i, size in enumerate((32, 16, 8, 4)):
            f = base * 2**i
            cases.append(LayerCase(f"{group}-E4R18 {size}px", group, f, 3, 2, f // 2, size))
    return cases


LAYER_SETS: dict[str, Callable[[], list[LayerCase]]] = {"e4net": e4net_layers, "resnet": resnet_layers}
