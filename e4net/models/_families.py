"""Imports every model-family module so that its ``@register_model`` decorators run."""
from . import attention  # noqa: F401,E402
