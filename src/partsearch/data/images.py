"""Image loading with clear errors for missing, corrupt and oversized files."""

from __future__ import annotations

import warnings
from pathlib import Path

from PIL import Image

from partsearch.errors import DataError


def load_image(path: str | Path, max_pixels: int) -> Image.Image:
    """Open an image as RGB. The pixel count is checked from the header before any decoding,
    so a decompression bomb is refused without allocating it."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"image not found: {path}")
    with warnings.catch_warnings():
        # Our own limit (checked below) replaces PIL's warning at its lower default threshold.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(path) as image:
                width, height = image.size
                if width * height > max_pixels:
                    raise DataError(
                        f"image {path} has {width}x{height} = {width * height} pixels, over the pixel limit "
                        f"of {max_pixels} (data.max_image_pixels)"
                    )
                return image.convert("RGB")
        except Image.DecompressionBombError as err:
            raise DataError(f"image {path} is over the pixel limit of {max_pixels} (data.max_image_pixels) "
                            f"and PIL's own: {err}") from None
        except (OSError, SyntaxError, ValueError) as err:
            raise DataError(f"corrupt or unreadable image {path}: {err}") from None
