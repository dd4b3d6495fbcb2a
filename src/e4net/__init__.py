"""e4net: exact, fast rotation- and reflection-equivariant CNNs (E4-Net, NeurIPS 2021).

* :mod:`e4net.groups` -- p4 / p4m and their actions (the conventions live in its docstring).
* :mod:`e4net.nn` -- LiftingConv, GroupConv (Eq. 5), E4Conv (Eq. 12), GroupBatchNorm, pooling.
* :mod:`e4net.backends` -- implementations of the E4 aggregation.
* :mod:`e4net.analysis` -- :func:`count` (params / MACs).
* :mod:`e4net.models` -- the paper's models: :func:`create_model`, :func:`list_models`.
* :func:`tune_cpu_allocator` -- keep freed activations in glibc's heap (faster CPU training; process-wide).
"""

from . import backends, groups, nn
from ._memory import tune_cpu_allocator
from .analysis import Count, count
from .models import create_model, list_models

__version__ = "0.1.0"

__all__ = [
    "groups", "nn", "backends", "count", "Count", "create_model", "list_models", "tune_cpu_allocator", "__version__",
]  # fmt: skip
