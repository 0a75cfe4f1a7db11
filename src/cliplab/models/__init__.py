"""Models: loading (``load_model``), the ``Model`` interface, preprocessing, backends."""

from cliplab.models.base import Model
from cliplab.models.preprocess import Preprocess, load_image
from cliplab.models.registry import SPEC_FORMS, load_model

__all__ = ["Model", "Preprocess", "SPEC_FORMS", "load_image", "load_model"]
