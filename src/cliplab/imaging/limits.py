"""The pixel limit of every image cliplab decodes (no imports: the CLI's parsers read it without loading PIL)."""

from __future__ import annotations

#: Default limit on width × height for every image cliplab decodes (``--max-image-pixels`` on ``serve``;
#: ``CLIPLAB_MAX_IMAGE_PIXELS`` for readers of datasets). 50 MP holds any photograph up to ~8000×6000.
DEFAULT_MAX_IMAGE_PIXELS = 50_000_000
