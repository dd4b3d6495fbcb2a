"""The paper's models (Tables 1-4) behind a registry: :func:`create_model`, :func:`list_models`."""

from .registry import INPUT_SHAPES, ModelSpec, PaperRow, create_model, list_models, model_spec, register_model

__all__ = ["create_model", "list_models", "model_spec", "register_model", "ModelSpec", "PaperRow", "INPUT_SHAPES"]
