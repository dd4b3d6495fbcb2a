"""The model registry: ``create_model(name)``, ``list_models()``, ``model_spec(name)``.

A model is registered with :func:`register_model` on a builder ``builder(num_classes=10, **overrides) -> nn.Module``
together with its data set (which fixes its input size), its group, a description and default overrides. The
paper's reported numbers for a model are not here: they live in :mod:`e4net.paper`, joined to a model by its name
(``PaperRow.model``).

The model-family modules (:mod:`.mnist`, :mod:`.resnet`, :mod:`.attention`) import this module and register their
models when :mod:`e4net.models` imports them; this module imports none of them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from ..nn import set_backend
from .pretrained import check_pretrained_request, load_pretrained

__all__ = ["INPUT_SHAPES", "ModelSpec", "register_model", "list_models", "model_spec", "create_model"]

#: Input shape ``(channels, height, width)`` (``(channels, depth, height, width)`` for volumes) of each data set.
INPUT_SHAPES: dict[str, tuple[int, ...]] = {
    "mnist-rot": (1, 28, 28),
    "digits": (1, 28, 28),
    "cifar10": (3, 32, 32),
    "cifar100": (3, 32, 32),
    "digits3d": (1, 16, 16, 16),
}


@dataclass(frozen=True)
class ModelSpec:
    """A registered model: its builder, data set (hence input shape), group, description and default overrides."""

    name: str
    builder: Callable[..., nn.Module]
    dataset: str
    group: str | None
    description: str
    defaults: dict[str, Any] = field(default_factory=dict)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """``(channels, height, width)`` (or ``(channels, depth, height, width)``) of one input of the model's data
        set."""
        return INPUT_SHAPES[self.dataset]


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(
    name: str, *, dataset: str, group: str | None, description: str, **defaults: Any
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator registering ``builder`` under ``name`` (``defaults`` are keyword arguments passed to it)."""
    if dataset not in INPUT_SHAPES:
        raise ValueError(f"unknown data set {dataset!r} for model {name!r}")

    def deco(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        _REGISTRY[name] = ModelSpec(name, builder, dataset, group, description, dict(defaults))
        return builder

    return deco


def list_models() -> list[str]:
    """Names of all registered models, in registration order."""
    return list(_REGISTRY)


def model_spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` registered as ``name`` (ValueError listing the registered names otherwise)."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; registered models: {', '.join(_REGISTRY)}") from None


def create_model(name: str, num_classes: int = 10, pretrained: bool = False, **overrides: Any) -> nn.Module:
    """Build the registered model ``name`` with ``num_classes`` outputs; ``overrides`` replace its defaults.

    ``pretrained=True`` loads the weights shipped with e4net (:mod:`e4net.models.pretrained`; the model comes back
    in eval mode, its training record in ``model.pretrained_cfg``); a ValueError when ``name`` has none, or when
    ``num_classes`` / ``overrides`` ask for another architecture than the weights'.
    ``backend=NAME`` is not passed to the builder: it is applied to the built model with
    :func:`e4net.nn.set_backend` (the E4 aggregation backend of every E4 layer; ValueError for an unknown name).
    """
    spec = model_spec(name)
    backend = overrides.pop("backend", None)
    if pretrained:
        record = check_pretrained_request(name, num_classes, overrides)
        overrides = {**record.model_args, **overrides}
    kwargs = {**spec.defaults, **overrides}
    try:
        model = spec.builder(num_classes=num_classes, **kwargs)
    except TypeError as exc:
        raise ValueError(f"model {name!r}: bad override ({exc})") from None
    if pretrained:
        load_pretrained(model, name)
    return model if backend is None else set_backend(model, backend)
