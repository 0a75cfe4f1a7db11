"""Image reading and preprocessing: the leaf layer that ``cliplab.data`` and ``cliplab.models`` both use.

``decoding``: :func:`decode_image` (paths, bytes, file objects; errors name the image; a pixel limit checked
from the header before decoding). ``preprocess``: ``Preprocess`` / ``PatchPreprocess`` (the processors'
resize, crop and normalisation in NumPy) and ``load_image``.
"""

from cliplab.imaging.decoding import DEFAULT_MAX_IMAGE_PIXELS, ImageTooLarge, decode_image, max_image_pixels

__all__ = ["DEFAULT_MAX_IMAGE_PIXELS", "ImageTooLarge", "decode_image", "max_image_pixels"]
