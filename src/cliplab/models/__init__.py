"""Models: loading (``load_model``), the ``Model`` interface, preprocessing, backends."""

from cliplab.imaging.preprocess import Preprocess, load_image
from cliplab.models.base import Model
from cliplab.models.registry import (
    MODEL_SOURCES,
    SPEC_FORMS,
    ModelSource,
    check_model_spec,
    load_model,
    model_sources,
    register_model_source,
    unregister_model_source,
)

__all__ = [
    "MODEL_SOURCES",
    "SPEC_FORMS",
    "Model",
    "ModelSource",
    "Preprocess",
    "check_model_spec",
    "load_image",
    "load_model",
    "model_sources",
    "register_model_source",
    "unregister_model_source",
]
