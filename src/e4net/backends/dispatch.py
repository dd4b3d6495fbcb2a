"""The dispatcher of the E4 aggregation: the one place that chooses a backend and falls back.

From the declarations (:class:`~e4net.backends.contract.Backend`) registered with :func:`register_backend`:

* ``"auto"`` runs the highest-priority backend declared for the tensors' device type that accepts them (device,
  dtype, one dtype for all, autograd) and can run in this process; if none does, :data:`FALLBACK`.
* A named backend runs if it accepts the tensors and can run here; otherwise :data:`FALLBACK` (``"shift"``: any
  device and dtype, plain PyTorch).
* Inside ``with use_backend(name):`` every aggregation uses ``name``, whatever its layer says.
* Under ``torch.compile`` (dynamo) the choice is made once, when the graph is traced, and is a constant of the
  graph (:func:`_traced_choice`): no graph break per layer. A ``use_backend`` block entered later does not retrace
  a graph already compiled; a failing backend raises instead of falling back.
* A backend that raises at run time on a device type it declares in ``recover_on`` (the Triton kernels failing to
  compile on some GPU) is marked unusable on that device type in this process, warned about once, and the call is
  dispatched again. Elsewhere its error propagates (a failure in the Triton interpreter on CPU is a bug).

:func:`resolve_backend` answers which backend :func:`aggregate` would run for given tensors.
"""

from __future__ import annotations

import contextlib
import threading
import warnings
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass

import torch

from ._geometry import add_kernel_bias, check_aggregation_shapes
from .contract import Backend

__all__ = [
    "FALLBACK", "aggregate", "available_backends", "check_backend", "get_backend", "register_backend",
    "resolve_backend", "use_backend",
]  # fmt: skip

FALLBACK = "shift"
"""The backend run when the chosen one does not accept the tensors or cannot run (declares any device and dtype)."""


class _State:
    """The dispatcher's state: the registered declarations, and the backends found unusable at run time."""

    def __init__(self) -> None:
        self.backends: dict[str, Backend] = {}
        self.unusable: set[tuple[str, str]] = set()  # (backend name, device type)
        self.lock = threading.Lock()


_state = _State()
_override: ContextVar[str | None] = ContextVar("e4net_aggregation_backend", default=None)
_last_run: ContextVar[str | None] = ContextVar("e4net_aggregation_last_run", default=None)


def last_backend_run() -> str | None:
    """The backend whose implementation the latest :func:`aggregate` call in this context ran, after any fallback
    (None before the first call). For tests and diagnostics that must know what ran, not what was asked for."""
    return _last_run.get()


def register_backend(backend: Backend) -> Backend:
    """Register (or replace) the declaration of a backend; returns it."""
    if not isinstance(backend, Backend):
        raise TypeError(f"register_backend expects a Backend declaration, got {type(backend).__name__}")
    _state.backends[backend.name] = backend
    _state.unusable = {key for key in _state.unusable if key[0] != backend.name}
    return backend


def available_backends() -> list[str]:
    """``"auto"`` and the registered backends installed in this process, in registration order."""
    return ["auto", *(name for name, b in _state.backends.items() if b.installed)]


def check_backend(name: str) -> str:
    """``name`` if it is ``"auto"`` or an available backend; otherwise a ValueError naming the available ones."""
    if name != "auto":
        backend = _state.backends.get(name) if isinstance(name, str) else None
        if backend is None:
            raise ValueError(f"unknown aggregation backend {name!r}; available: {', '.join(available_backends())}")
        if not backend.installed:
            raise ValueError(
                f"aggregation backend {name!r} is not available here (it needs {', '.join(backend.requires)}); "
                f"available: {', '.join(available_backends())}"
            )
    return name


def get_backend(name: str) -> Backend:
    """The declaration of the available backend ``name`` (not ``"auto"``)."""
    if name == "auto":
        raise ValueError("'auto' is a choice, not a backend: see resolve_backend")
    return _state.backends[check_backend(name)]


def use_backend(name: str) -> contextlib.AbstractContextManager[str]:
    """Within ``with use_backend(name):`` every aggregation (every E4 layer) uses backend ``name``, whatever the layer
    says; blocks nest, and leaving one restores the outer choice. ``name`` is validated here (:func:`check_backend`).
    """
    return _overriding(check_backend(name))


@contextlib.contextmanager
def _overriding(name: str) -> Iterator[str]:
    token = _override.set(name)
    try:
        yield name
    finally:
        _override.reset(token)


@dataclass(frozen=True)
class _Inputs:
    """What the choice depends on: ``v``'s device type and dtype, whether the kernel (and bias) match them, and
    whether a gradient is wanted."""

    device: str
    dtype: torch.dtype
    same_device: bool = True
    same_dtype: bool = True
    needs_grad: bool = False
    spatial_dims: int = 2  # 3: voxel grids, v (B, C, |A|, D, H, W); only backends with a 3-D function take them

    @classmethod
    def of(cls, v: torch.Tensor, others: tuple[torch.Tensor, ...]) -> _Inputs:
        tensors = (v, *others)
        return cls(
            v.device.type,
            v.dtype,
            same_device=all(t.device == v.device for t in others),
            same_dtype=all(t.dtype == v.dtype for t in others),
            needs_grad=torch.is_grad_enabled() and any(t.requires_grad for t in tensors),
            spatial_dims=v.dim() - 3,
        )


def _runnable(backend: Backend, inputs: _Inputs) -> bool:
    return (
        backend.can_run(inputs.device)
        and backend.loader(inputs.spatial_dims) is not None
        and (backend.name, inputs.device) not in _state.unusable
        and backend.accepts(
            inputs.device,
            inputs.dtype,
            same_device=inputs.same_device,
            same_dtype=inputs.same_dtype,
            needs_grad=inputs.needs_grad,
        )
    )


def _choose(name: str, inputs: _Inputs) -> Backend:
    name = check_backend(_override.get() or name)
    if name == "auto":
        candidates = [b for b in _state.backends.values() if inputs.device in b.auto_priority and _runnable(b, inputs)]
        if candidates:  # the first registered among equal priorities
            return max(candidates, key=lambda b: b.auto_priority[inputs.device])
    else:
        backend = _state.backends[name]
        if _runnable(backend, inputs):
            return backend
    return _state.backends[FALLBACK]


def resolve_backend(
    name: str,
    v: torch.Tensor | torch.device | str,
    kernel: torch.Tensor | None = None,
    kernel_bias: torch.Tensor | None = None,
) -> str:
    """The name of the backend :func:`aggregate` runs for ``backend=name`` on these tensors (inside the current
    :func:`use_backend` block, if any).

    ``v`` may also be a device: it then stands for tensors of the default dtype on that device, without gradients.
    """
    if isinstance(v, torch.Tensor):
        others = tuple(t for t in (kernel, kernel_bias) if t is not None)
        inputs = _Inputs.of(v, others)
    else:
        inputs = _Inputs(torch.device(v).type, torch.get_default_dtype())
    return _choose(name, inputs).name


class _TracedChoice:
    """A backend chosen while dynamo traces, with its functions already imported (dynamo cannot trace the import)."""

    def __init__(self, backend: Backend, spatial_dims: int) -> None:
        self.backend = backend
        self.function = backend.loader(spatial_dims)()
        self.generated = backend.load_generated_3d if spatial_dims == 3 else backend.load_generated
        self.generated = self.generated() if self.generated is not None else None


_traced: dict[tuple[str, int], _TracedChoice] = {}


@torch.compiler.assume_constant_result
def _traced_choice(
    name: str, device: str, dtype: torch.dtype, same_device: bool, same_dtype: bool, needs_grad: bool, dims: int
) -> str:
    """:func:`_choose` for dynamo: called once per trace with plain values, its result a constant of the graph; the
    chosen backend's functions are imported here and kept in ``_traced``."""
    chosen = _choose(name, _Inputs(device, dtype, same_device, same_dtype, needs_grad, dims))
    if (chosen.name, dims) not in _traced:
        _traced[chosen.name, dims] = _TracedChoice(chosen, dims)
    return chosen.name


def traced_choice(name: str, v: torch.Tensor, others: tuple[torch.Tensor, ...]) -> _TracedChoice:
    """The choice of :func:`aggregate` while dynamo traces (``torch.compiler.is_compiling()``), without a graph
    break: the inputs' facts go to :func:`_traced_choice` as plain values."""
    dims = v.dim() - 3
    needs_grad = torch.is_grad_enabled() and (v.requires_grad or any(t.requires_grad for t in others))
    same_device = all(t.device == v.device for t in others)
    same_dtype = all(t.dtype == v.dtype for t in others)
    chosen = _traced_choice(name, v.device.type, v.dtype, same_device, same_dtype, needs_grad, dims)
    return _traced[chosen, dims]


def _mark_unusable(backend: Backend, device: str, exc: Exception) -> None:
    with _state.lock:
        if (backend.name, device) in _state.unusable:
            return
        _state.unusable.add((backend.name, device))
    warnings.warn(
        f"e4net: the {backend.name!r} aggregation backend failed on {device} ({exc}); it is not used on {device} "
        f"from now on, the aggregation falls back",
        RuntimeWarning,
        stacklevel=3,
    )


def aggregate(
    v: torch.Tensor,
    kernel: torch.Tensor,
    index: torch.Tensor,
    stride: int = 1,
    backend: str = "auto",
    kernel_bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """The E4 aggregation (last step of Eq. 12, formula in :mod:`e4net.backends`) on the backend chosen above.

    Args:
        v: values ``(B, C, |A|, H, W)``.
        kernel: generated kernels ``(B, s, k*k, |A|, H', W')`` in the frame of each group element, ``C % s == 0``.
        index: the relative-position table ``(|A|, k*k)``: slot ``a`` reads its kernel at ``index[a, u]``.
        stride: output grid subsampling (padding ``k // 2``).
        backend: ``"auto"`` or a name from :func:`available_backends`.
        kernel_bias: optional ``(s, k*k)``, added to every generated kernel first (a static depthwise kernel per
            slice, the bias of the generator's ``W2``); backends that declare ``fuses_bias`` fuse it, for the
            others it is added here.
    """
    check_aggregation_shapes(v, kernel, index, stride, kernel_bias)
    others = (kernel,) if kernel_bias is None else (kernel, kernel_bias)
    if torch.compiler.is_compiling():
        traced = traced_choice(backend, v, others)
        if traced.backend.fuses_bias and kernel_bias is not None:
            return traced.function(v, kernel, index, stride, kernel_bias)
        return traced.function(v, add_kernel_bias(kernel, kernel_bias), index, stride)
    inputs = _Inputs.of(v, others)
    chosen = _choose(backend, inputs)
    fn = chosen.loader(inputs.spatial_dims)()  # the fallback implements both ranks
    _last_run.set(chosen.name)
    try:
        if chosen.fuses_bias and kernel_bias is not None:
            return fn(v, kernel, index, stride, kernel_bias)
        return fn(v, add_kernel_bias(kernel, kernel_bias), index, stride)
    except torch.OutOfMemoryError:
        raise  # not a defect of the backend: falling back would only move the problem
    except Exception as exc:
        if v.device.type not in chosen.recover_on or chosen.name == FALLBACK:
            raise
        _mark_unusable(chosen, v.device.type, exc)
    return aggregate(v, kernel, index, stride, backend, kernel_bias)
