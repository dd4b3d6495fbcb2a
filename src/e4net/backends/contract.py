"""What an aggregation backend declares: :class:`Backend`, the contract between a backend and the dispatcher.

A backend computes the last step of Eq. 12 (the formula in :mod:`e4net.backends`) with one function
``fn(v, kernel, index, stride)`` (``fn(v, kernel, index, stride, kernel_bias)`` when it fuses the kernel bias) and
*declares* which tensors it takes: device types, dtypes, whether it fuses the bias and supports autograd, its
priority for ``backend="auto"`` per device type, how it is loaded and whether it can run in this process. The
dispatcher (:mod:`e4net.backends.dispatch`) chooses and falls back from these declarations alone; the function only
computes, and is never called with tensors it does not declare.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from types import MappingProxyType

import torch

__all__ = ["AggregateFn", "Backend", "lazy_function"]

AggregateFn = Callable[..., torch.Tensor]
"""``fn(v, kernel, index, stride[, kernel_bias]) -> out``: see :func:`e4net.backends.aggregate`."""


def lazy_function(module: str, attr: str) -> Callable[[], AggregateFn]:
    """A loader for :attr:`Backend.load`: imports ``module`` when the backend first runs (numba and triton are heavy
    imports) and returns its ``attr``, looked up on every call so that a patched attribute is seen."""

    def load() -> AggregateFn:
        return getattr(importlib.import_module(module), attr)

    load.__qualname__ = f"lazy_function({module!r}, {attr!r})"
    return load


@dataclass(frozen=True, eq=False)
class Backend:
    """The declaration of one aggregation backend.

    Attributes:
        name: the name layers and :func:`~e4net.backends.aggregate` select it by.
        load: returns the aggregation function (imports its module on first use, :func:`lazy_function`).
        devices: device types it runs on (``"cpu"``, ``"cuda"``); ``None``: any, and ``v``, ``kernel`` and the bias
            may then sit where PyTorch allows. When declared, all of them must be on ``v``'s device.
        dtypes: dtypes it computes in; ``None``: any (mixed dtypes promote as in PyTorch). When declared, ``v``,
            ``kernel`` and the bias must all have one of them, the same one.
        fuses_bias: the function takes the ``(s, k*k)`` kernel bias as a fifth argument (otherwise the dispatcher
            adds it to the kernels first).
        autograd: its output is differentiable wrt ``v``, ``kernel`` (and the fused bias); when ``False`` the
            dispatcher does not choose it for inputs that require grad while grad mode is on.
        auto_priority: device type -> priority for ``backend="auto"``; the highest runnable one wins, a device type
            missing here is never auto-chosen for this backend.
        requires: modules that must be importable for it to be available in this process (listed by
            :func:`~e4net.backends.available_backends`).
        runs_on: an extra per-device-type condition checked in this process (Triton on CPU: only under its
            interpreter); ``None``: none.
        recover_on: device types on which a failure of the function (e.g. the Triton kernels do not compile on this
            GPU) marks the backend unusable there, with one warning, and the call falls back instead of raising.
        load_3d: returns its aggregation on voxel grids (``v (B, C, |A|, D, H, W)``, k^3 kernels; groups O, Oh),
            same signature and declarations; ``None``: pixel grids only (the dispatcher routes by ``v``'s rank).
        load_generated_3d: returns its 3-D aggregation with the kernel generator's last linear map fused in,
            ``fn(v, hidden, weight, bias, index, stride)`` (:func:`e4net.backends.aggregate_generated`); ``None``:
            the kernels are generated first and :attr:`load_3d` runs.
        load_generated: returns its 2-D aggregation with the generator's last linear map fused in, same signature as
            :attr:`load_generated_3d`, for inference only (not differentiable): each kernel ``W2 h + b`` is generated
            where it is used and the kernel tensor is never stored; ``None``: the kernels are generated first.
    """

    name: str
    load: Callable[[], AggregateFn]
    devices: frozenset[str] | None = None
    dtypes: frozenset[torch.dtype] | None = None
    fuses_bias: bool = False
    autograd: bool = True
    auto_priority: Mapping[str, int] = field(default_factory=dict)
    requires: tuple[str, ...] = ()
    runs_on: Callable[[str], bool] | None = None
    recover_on: frozenset[str] = frozenset()
    load_3d: Callable[[], AggregateFn] | None = None
    load_generated: Callable[[], AggregateFn] | None = None
    load_generated_3d: Callable[[], AggregateFn] | None = None

    def loader(self, spatial_dims: int) -> Callable[[], AggregateFn] | None:
        """:attr:`load` for pixel grids (2), :attr:`load_3d` for voxel grids (3); ``None`` if not implemented."""
        return {2: self.load, 3: self.load_3d}.get(spatial_dims)

    def __post_init__(self) -> None:
        def frozen(values: Iterable | None) -> frozenset | None:
            return None if values is None else frozenset(values)

        object.__setattr__(self, "devices", frozen(self.devices))
        object.__setattr__(self, "dtypes", frozen(self.dtypes))
        object.__setattr__(self, "recover_on", frozenset(self.recover_on))
        object.__setattr__(self, "requires", tuple(self.requires))
        object.__setattr__(self, "auto_priority", MappingProxyType(dict(self.auto_priority)))
        if not self.name or self.name == "auto":
            raise ValueError(f"a backend needs a name other than 'auto', got {self.name!r}")
        if self.devices is not None and not set(self.auto_priority) <= self.devices:
            raise ValueError(f"backend {self.name!r}: auto_priority names devices it does not declare")

    @cached_property
    def installed(self) -> bool:
        """Whether every module in :attr:`requires` is importable (checked once, without importing it)."""
        return all(importlib.util.find_spec(m) is not None for m in self.requires)

    def can_run(self, device_type: str) -> bool:
        """Installed, declared for ``device_type``, and its :attr:`runs_on` condition holds in this process."""
        return (
            self.installed
            and (self.devices is None or device_type in self.devices)
            and (self.runs_on is None or self.runs_on(device_type))
        )

    def accepts(
        self,
        device_type: str,
        dtype: torch.dtype,
        *,
        same_device: bool = True,
        same_dtype: bool = True,
        needs_grad: bool = False,
    ) -> bool:
        """Whether the declaration covers inputs whose ``v`` has ``device_type`` / ``dtype``; ``same_device`` /
        ``same_dtype``: the kernel (and bias) share ``v``'s device / dtype; ``needs_grad``: a gradient is wanted."""
        if self.devices is not None and (device_type not in self.devices or not same_device):
            return False
        if self.dtypes is not None and (dtype not in self.dtypes or not same_dtype):
            return False
        return self.autograd or not needs_grad
