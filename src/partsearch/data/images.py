"""Image loading with clear errors for missing, corrupt and oversized files: `load_image` for a
dataset's files, `decode_image` for the bytes a search index takes (a gallery file or an upload)."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from partsearch.config import DataConfig
from partsearch.errors import DataError, ImageRejected, ImageTooLarge

# The formats a search index accepts, by the decoder's name, with the suffix an upload is stored under.
ACCEPTED_FORMATS = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp"}
MAX_IMAGE_PIXELS = DataConfig.max_image_pixels


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


def decode_image(data: bytes, name: str, max_pixels: int = MAX_IMAGE_PIXELS) -> tuple[Image.Image, str]:
    """Decode JPEG/PNG/WebP bytes to RGB, checking the decoded format (not the file name) and the
    pixel count before decoding (decompression bombs). Returns (image, format)."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            fmt = im.format or "unknown"
            if fmt not in ACCEPTED_FORMATS:
                raise ImageRejected(f"{name}: {fmt} images are not accepted; use JPEG, PNG or WebP")
            width, height = im.size
            if width * height > max_pixels:
                raise ImageTooLarge(
                    f"{name}: {width}x{height} = {width * height} pixels is over the limit of {max_pixels}"
                )
            im.load()
            return im.convert("RGB"), fmt
    except ImageRejected:
        raise
    except Image.DecompressionBombError as err:
        raise ImageTooLarge(f"{name}: over the pixel limit ({err})") from None
    except UnidentifiedImageError:
        # PIL's own text names the in-memory buffer (<_io.BytesIO object at 0x...>), not the file.
        raise ImageRejected(f"{name}: not a readable JPEG/PNG/WebP image (unrecognised content)") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageRejected(f"{name}: not a readable JPEG/PNG/WebP image ({err})") from None
