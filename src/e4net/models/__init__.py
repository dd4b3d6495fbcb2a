"""The paper's models (Tables 1-4) behind a registry: :func:`create_model`, :func:`list_models`.

* :mod:`.registry` -- :func:`register_model`, :func:`create_model`, :func:`model_spec`: builders and input specs.
* :mod:`.pretrained` -- the trained weights shipped in the package (``create_model(name, pretrained=True)``).
* :mod:`.attention` -- the attention baselines p4-SA and alpha-p4-CNN (Table 1); :mod:`.mnist` -- E4-Net,
  E4-Net (large), P4CNN (Table 1; the Table 2 / 3 ablations are overrides of ``e4net``); :mod:`.resnet` -- the
  ResNet-18 family (Table 4); :mod:`.volumetric` -- the 3-D models on O (``e4net3d``, ``gcnn3d``, ``cnn3d``,
  docs/3d.md). Importing this package imports them, and they register their models.

The paper's numbers for each model are in :mod:`e4net.paper`; the comparison of live counts with them is
:mod:`e4net.analysis.paper_table` (``e4net models``).
"""

from .pretrained import available_pretrained, pretrained_record
from .registry import INPUT_SHAPES, ModelSpec, create_model, list_models, model_spec, register_model

# The model families register themselves on import (this order is the order of list_models()).
from . import attention, mnist, resnet, volumetric  # noqa: E402, F401  # isort: skip

__all__ = [
    "create_model", "list_models", "model_spec", "register_model", "ModelSpec", "INPUT_SHAPES", "available_pretrained",
    "pretrained_record",
]  # fmt: skip
