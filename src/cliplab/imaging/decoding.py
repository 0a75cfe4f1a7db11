"""Reading images safely: one place that opens files and bytes, names them in errors, and refuses pixel bombs.

A PNG of 12000×12000 pixels can be 140 KB on disk and 430 MB once decoded. PIL only refuses images above
``Image.MAX_IMAGE_PIXELS`` (≈179 MP, after a warning at ≈89 MP); every reader in cliplab (data sources, the
loader, the web app's uploads) goes through :func:`decode_image`, which reads the header first and refuses an
image whose declared size is above ``max_pixels`` *before* decoding it.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import IO

from PIL import Image, UnidentifiedImageError

from cliplab.imaging.limits import DEFAULT_MAX_IMAGE_PIXELS

ImageSource = Image.Image | str | os.PathLike | bytes | IO[bytes]


class ImageTooLarge(ValueError):
    """An image whose declared width × height is above the pixel limit (raised before decoding)."""

    def __init__(self, name: str, width: int, height: int, max_pixels: int) -> None:
        self.name, self.width, self.height, self.max_pixels = name, width, height, max_pixels
        super().__init__(
            f"{name} is {width}x{height} = {width * height:,} pixels, above the limit of {max_pixels:,} "
            "(a decompression bomb or a very large image; raise the limit with --max-image-pixels or "
            "CLIPLAB_MAX_IMAGE_PIXELS)"
        )


def max_image_pixels() -> int:
    """The limit in force: ``CLIPLAB_MAX_IMAGE_PIXELS`` if set (0 or negative: no limit), else the default."""
    value = os.environ.get("CLIPLAB_MAX_IMAGE_PIXELS")
    if value is None or not value.strip():
        return DEFAULT_MAX_IMAGE_PIXELS
    try:
        return int(value)
    except ValueError as err:
        raise ValueError(f"CLIPLAB_MAX_IMAGE_PIXELS must be an integer, got {value!r}") from err


def decode_image(source: ImageSource, *, name: str | None = None, max_pixels: int | None = None) -> Image.Image:
    """Decode ``source`` (a path, bytes, a binary file object or a PIL image) into an RGB PIL image.

    ``name`` is how errors refer to the image (default: the path, or "the image"); ``max_pixels`` (default
    :func:`max_image_pixels`; ≤ 0 disables the check) bounds the declared width × height, checked from the
    header before any pixel is decoded. A missing path raises ``FileNotFoundError``; an undecodable image
    ``ValueError``; a too-large one :class:`ImageTooLarge` (a ``ValueError``), each naming the image.
    """
    if isinstance(source, Image.Image):
        return source.convert("RGB") if source.mode != "RGB" else source
    limit = max_image_pixels() if max_pixels is None else max_pixels
    if isinstance(source, str | os.PathLike):
        label = name or str(source)
        fp: str | os.PathLike | IO[bytes] = Path(source)
    else:
        label = name or "the image"
        fp = io.BytesIO(source) if isinstance(source, bytes | bytearray | memoryview) else source
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit decides
            with Image.open(fp) as im:
                width, height = im.size
                if limit > 0 and width * height > limit:
                    raise ImageTooLarge(label, width, height, limit)
                im.load()
                return im.convert("RGB")
    except (FileNotFoundError, IsADirectoryError) as err:  # no stat() first: one syscall less per image
        raise FileNotFoundError(f"image file not found: {label}") from err
    except ImageTooLarge:
        raise
    except Image.DecompressionBombError as err:
        raise ValueError(f"cannot read image file {label}: {err}") from err
    except UnidentifiedImageError as err:  # its own message shows the file object's repr, not a name
        raise ValueError(f"cannot read image file {label}: not a recognised image format") from err
    except (OSError, ValueError, SyntaxError) as err:
        raise ValueError(f"cannot read image file {label}: {err}") from err
