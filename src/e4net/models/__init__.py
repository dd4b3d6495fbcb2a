"""The paper's models (Tables 1-4) behind a registry: :func:`create_model`, :func:`list_models`.

* :mod:`.mnist` -- E4-Net, E4-Net (large), P4CNN (Table 1); :mod:`.resnet` -- the ResNet-18 family (Table 4).
* :mod:`.paper` -- the Table 2 / 3 ablations as overrides of ``e4net`` (:data:`ABLATIONS`) and known deviations.
* :mod:`.table` -- :func:`model_table` / :func:`format_table`: live params / MACs against the paper (``e4net models``).
"""

from .paper import ABLATIONS, Ablation, ablations
from .registry import INPUT_SHAPES, ModelSpec, PaperRow, create_model, list_models, model_spec, register_model
from .table import TableRow, format_table, model_table

__all__ = [
    "create_model",
    "list_models",
    "model_spec",
    "register_model",
    "ModelSpec",
    "PaperRow",
    "INPUT_SHAPES",
    "Ablation",
    "ABLATIONS",
    "ablations",
    "TableRow",
    "model_table",
    "format_table",
]
