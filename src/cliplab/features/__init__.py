"""Features first: embed once, cache on disk, run every method on the cached features."""

from cliplab.features.embedding import cache_key, embed, embed_images, embed_views, encoding_options
from cliplab.features.store import Features

__all__ = ["Features", "cache_key", "embed", "embed_images", "embed_views", "encoding_options"]
