"""The model registry: ``create_model(name)``, ``list_models()``, and each model's row of the paper's tables.

A model is registered with :func:`register_model` on a builder ``builder(num_classes=10, **overrides) -> nn.Module``
together with its data set (which fixes its input size), its group and the paper's numbers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

INPUT_SHAPES: dict[str, tuple[int, int, int]] = {
    "mnist-rot": (1, 28, 28),
    "digits": (1, 28, 28),
    "cifar10": (3, 32, 32),
    "cifar100": (3, 32, 32),
}


@dataclass(frozen=True)
class PaperRow:
    """A row of the paper's tables: ``params`` and ``macs`` as reported, test error in percent if reported."""

    table: str
    label: str
    params: float
    macs: float
    test_error: float | None = None
    test_error_std: float | None = None
    test_error_cifar100: float | None = None
    test_error_cifar100_std: float | None = None


@dataclass(frozen=True)
class ModelSpec:
    name: str
    builder: Callable[..., nn.Module]
    dataset: str
    group: str | None
    description: str
    paper: PaperRow | None = None
    defaults: dict[str, Any] = field(default_factory=dict)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return INPUT_SHAPES[self.dataset]


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(
    name: str,
    *,
    dataset: str,
    group: str | None,
    description: str,
    paper: PaperRow | None = None,
    **defaults: Any,
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator registering ``builder`` under ``name`` (``defaults`` are keyword arguments passed to it)."""
    if dataset not in INPUT_SHAPES:
        raise ValueError(f"unknown data set {dataset!r} for model {name!r}")

    def deco(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        _REGISTRY[name] = ModelSpec(name, builder, dataset, group, description, paper, dict(defaults))
        return builder

    return deco


def list_models() -> list[str]:
    """Names of all registered models."""
    _load_all()
    return list(_REGISTRY)


def model_spec(name: str) -> ModelSpec:
    _load_all()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; registered models: {', '.join(_REGISTRY)}") from None


def create_model(name: str, num_classes: int = 10, **overrides: Any) -> nn.Module:
    """Build the registered model ``name`` with ``num_classes`` outputs; ``overrides`` replace its defaults."""
    spec = model_spec(name)
    kwargs = {**spec.defaults, **overrides}
    try:
        return spec.builder(num_classes=num_classes, **kwargs)
    except TypeError as exc:
        raise ValueError(f"model {name!r}: bad override ({exc})") from None


def _load_all() -> None:
    # Importing the model-family modules registers their models.
    from . import _families  # noqa: F401
