"""Choosing the E4 aggregation backend for a whole model: :func:`set_backend`.

The backends themselves, their declared capabilities and the dispatcher that picks one (and falls back) live in
:mod:`e4net.backends`; this is the one public, validated way to set the choice on every layer of a model, so model
constructors do not thread a ``backend`` argument through their blocks. For a temporary choice over a block of code
(every aggregation, whatever its layer says) use :func:`e4net.backends.use_backend`.
"""

from __future__ import annotations

from torch import nn

from ..backends import check_backend
from .e4 import E4Conv

__all__ = ["set_backend"]


def set_backend(model: nn.Module, name: str) -> nn.Module:
    """Make every E4 layer of ``model`` aggregate with backend ``name`` (``"auto"`` restores the default).

    Validates ``name`` first (:func:`e4net.backends.check_backend`: a ValueError naming the known backends) and
    returns ``model``. A model without E4 layers is returned unchanged.
    """
    name = check_backend(name)
    for module in model.modules():
        if isinstance(module, E4Conv):
            module.backend = name
    return model
