"""Deploying e4net models: plain-PyTorch export, ONNX, and reading image files for prediction.

* :func:`export` (:mod:`.convert`) -- an inference-only module of standard PyTorch operations, equal to the model in
  eval mode; its layers are the e4net-free classes of :mod:`.plain` (which imports only torch).
* :mod:`.onnx` -- :func:`~e4net.deploy.onnx.to_onnx` (``torch.onnx.export``, dynamo, dynamic batch) and
  :func:`~e4net.deploy.onnx.onnx_session` (onnxruntime); needs the ``export`` extra.
* :mod:`.images` -- :func:`~e4net.deploy.images.read_images`: PNG / JPEG files as a model's input batch.

Lazy (PEP 562) like the package face: importing :mod:`e4net.deploy.plain` loads nothing else of e4net.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_LAZY = {"export": ".convert", "convert_layer": ".convert", "read_images": ".images"}

__all__ = ["export", "convert_layer", "read_images"]

if TYPE_CHECKING:
    from .convert import convert_layer, export
    from .images import read_images


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name], __name__), name)
    globals()[name] = value
    return value
