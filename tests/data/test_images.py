"""Image loading: RGB output and clear errors for missing, corrupt and oversized files."""

import pytest
from PIL import Image

from partsearch.data.images import load_image
from partsearch.errors import DataError


def test_loads_grayscale_as_rgb(tmp_path):
    path = tmp_path / "g.png"
    Image.new("L", (8, 16), 128).save(path)
    image = load_image(path, max_pixels=1000)
    assert image.mode == "RGB" and image.size == (8, 16)


def test_missing_image_names_file(tmp_path):
    with pytest.raises(DataError, match=rf"image not found: {tmp_path / 'nope.jpg'}"):
        load_image(tmp_path / "nope.jpg", max_pixels=1000)


def test_corrupt_image_names_file(tmp_path):
    path = tmp_path / "bad.jpg"
    path.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(DataError, match=rf"corrupt or unreadable image {path}"):
        load_image(path, max_pixels=1000)


def test_truncated_image_names_file(tmp_path):
    path = tmp_path / "cut.png"
    Image.new("RGB", (64, 64), (10, 200, 30)).save(path)
    path.write_bytes(path.read_bytes()[:60])
    with pytest.raises(DataError, match=rf"corrupt or unreadable image {path}"):
        load_image(path, max_pixels=10_000)


def test_image_over_pixel_limit_is_refused_from_its_header(tmp_path):
    path = tmp_path / "big.png"
    Image.new("RGB", (50, 40)).save(path)
    limit = r"50x40 = 2000 pixels, over the pixel limit of 1999 \(data\.max_image_pixels\)"
    with pytest.raises(DataError, match=limit):
        load_image(path, max_pixels=1999)


def test_decompression_bomb_header_is_refused_without_decoding(tmp_path):
    """A PNG whose header claims 8000x8000 pixels but has no pixel data: the pixel limit,
    not a decoding failure, is reported, so the size was read from the header alone."""
    import struct
    import zlib

    def png_chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    chunk = png_chunk(b"IHDR", struct.pack(">IIBBBBB", 8000, 8000, 8, 2, 0, 0, 0))
    path = tmp_path / "bomb.png"
    data = png_chunk(b"IDAT", zlib.compress(b"\0" * 64)) + png_chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk + data)
    with pytest.raises(DataError, match=r"8000x8000 = 64000000 pixels, over the pixel limit of 50000000"):
        load_image(path, max_pixels=50_000_000)
