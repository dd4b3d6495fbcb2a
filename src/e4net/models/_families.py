"""Imports every model-family module so that its ``@register_model`` decorators run."""

from . import attention, mnist, resnet  # noqa: F401
