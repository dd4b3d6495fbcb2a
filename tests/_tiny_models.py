"""Tiny registered models for the training tests (the paper's models are too slow for CPU tests)."""

from __future__ import annotations

from torch import nn

from e4net.models import list_models, register_model
from e4net.nn import E4Conv, GlobalMaxPool, GroupBatchNorm, LiftingConv, SpatialMaxPool2d


class TinyE4(nn.Module):
    """Lifting conv -> E4 layer (with its batch norm) -> 2x2 pool -> global group max pool -> linear: p4-invariant."""

    def __init__(
        self, num_classes: int = 10, in_channels: int = 1, width: int = 4, group: str = "p4", norm: bool = True
    ):
        super().__init__()
        self.lift = LiftingConv(in_channels, width, 3, group)
        self.bn = GroupBatchNorm(width, group) if norm else nn.Identity()
        self.e4 = E4Conv(width, width, 3, group, slices=2)
        self.pool = SpatialMaxPool2d(2)
        self.gpool = GlobalMaxPool()
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x):
        x = self.pool(self.bn(self.lift(x)).relu())
        return self.fc(self.gpool(self.e4(x).relu()))


class TinyPlain(nn.Module):
    """A tiny fast model (no E4 layer); without ``norm`` DDP gradient averaging equals the full-batch gradient."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, norm: bool = False):
        super().__init__()
        self.lift = LiftingConv(in_channels, 4, 3, "p4")
        self.bn = GroupBatchNorm(4, "p4") if norm else nn.Identity()
        self.pool = SpatialMaxPool2d(4)
        self.gpool = GlobalMaxPool()
        self.fc = nn.Linear(4, num_classes)

    def forward(self, x):
        return self.fc(self.gpool(self.pool(self.bn(self.lift(x))).relu()))


class TinyDropout(TinyPlain):
    """:class:`TinyPlain` with dropout before the classifier: every training step draws from torch's global RNG,
    so a resumed run is bit-identical to an uninterrupted one only if ``--resume`` restores that RNG's state."""

    def __init__(self, num_classes: int = 10, p: float = 0.5):
        super().__init__(num_classes)
        self.drop = nn.Dropout(p)

    def forward(self, x):
        return self.fc(self.drop(self.gpool(self.pool(self.bn(self.lift(x))).relu())))


class NanAfter(TinyPlain):
    """Outputs NaN from its ``nan_at``-th training forward pass on (a model whose loss diverges)."""

    def __init__(self, num_classes: int = 10, nan_at: int = 6):
        super().__init__(num_classes)
        self.nan_at, self.calls = nan_at, 0

    def forward(self, x):
        y = super().forward(x)
        if self.training:
            self.calls += 1
            if self.calls >= self.nan_at:
                y = y * float("nan")
        return y


def register() -> None:
    if "tiny-e4" in list_models():
        return
    register_model("tiny-e4", dataset="mnist-rot", group="p4", description="test model")(
        lambda num_classes=10, **kw: TinyE4(num_classes, **kw)
    )
    register_model("tiny-bn-other", dataset="mnist-rot", group="p4", description="test model, other layers")(
        lambda num_classes=10, **kw: TinyPlain(num_classes, norm=False, **kw)
    )
    register_model("tiny-plain", dataset="mnist-rot", group="p4", description="test model, no norm")(
        lambda num_classes=10, **kw: TinyPlain(num_classes, **kw)
    )
    register_model("tiny-bn", dataset="mnist-rot", group="p4", description="fast test model with batch norm")(
        lambda num_classes=10, **kw: TinyPlain(num_classes, norm=True, **kw)
    )
    register_model("tiny-dropout", dataset="mnist-rot", group="p4", description="test model with dropout")(
        lambda num_classes=10, **kw: TinyDropout(num_classes, **kw)
    )
    register_model("tiny-nan", dataset="mnist-rot", group="p4", description="test model that diverges")(
        lambda num_classes=10, **kw: NanAfter(num_classes, **kw)
    )
    register_model("tiny-cnn", dataset="mnist-rot", group=None, description="plain CNN test model")(
        lambda num_classes=10, **kw: nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(4, 4, 3, stride=2),
            nn.Flatten(),
            nn.Linear(4 * 13 * 13, num_classes),
        )
    )
    register_model("tiny-cifar", dataset="cifar10", group="p4m", description="test model for 3-channel inputs")(
        lambda num_classes=10, **kw: TinyE4(num_classes, in_channels=3, group="p4m", **kw)
    )


register()
