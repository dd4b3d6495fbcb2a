"""e4net: exact, fast rotation- and reflection-equivariant CNNs (E4-Net, NeurIPS 2021).

* :mod:`e4net.groups` -- p4 / p4m and their actions (the conventions live in its docstring).
* :mod:`e4net.nn` -- LiftingConv, GroupConv (Eq. 5), E4Conv (Eq. 12), GroupBatchNorm, pooling;
  :func:`set_backend` chooses the E4 aggregation backend of a whole model.
* :mod:`e4net.backends` -- implementations of the E4 aggregation.
* :mod:`e4net.analysis` -- :func:`count` (params / MACs).
* :mod:`e4net.models` -- the paper's models: :func:`create_model`, :func:`list_models`.
* :func:`export` -- a model as an inference-only module of standard PyTorch operations (:mod:`e4net.deploy`).
* :func:`tune_cpu_allocator` -- keep freed activations in glibc's heap (faster CPU training; process-wide).

The package face is lazy (PEP 562): every name above is imported on first access, so ``import e4net.groups`` loads
neither torch.nn layers nor the backends, models or analysis.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# name -> (module, attribute); attribute None: the module itself.
_LAZY: dict[str, tuple[str, str | None]] = {
    "groups": (".groups", None),
    "nn": (".nn", None),
    "backends": (".backends", None),
    "count": (".analysis", "count"),
    "Count": (".analysis", "Count"),
    "create_model": (".models", "create_model"),
    "list_models": (".models", "list_models"),
    "set_backend": (".nn", "set_backend"),
    "export": (".deploy", "export"),
    "tune_cpu_allocator": ("._memory", "tune_cpu_allocator"),
}

__all__ = [
    "groups", "nn", "backends", "count", "Count", "create_model", "list_models", "set_backend", "export",
    "tune_cpu_allocator",
    "__version__",
]  # fmt: skip

if TYPE_CHECKING:  # static analysers see the eager imports
    from . import backends, groups, nn
    from ._memory import tune_cpu_allocator
    from .analysis import Count, count
    from .deploy import export
    from .models import create_model, list_models
    from .nn import set_backend


def __getattr__(name: str) -> Any:
    """Import a name of ``__all__`` (or a subpackage, e.g. ``e4net.models``) on first access."""
    if name in _LAZY:
        module, attr = _LAZY[name]
    elif not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        module, attr = f".{name}", None
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = importlib.import_module(module, __name__)
    if attr is not None:
        value = getattr(value, attr)
    globals()[name] = value  # later accesses skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
