"""Decoding image files of every kind to uint8 RGB: one rule per kind of file, never one per image."""

import io

import numpy as np
import pytest
from PIL import Image

from compress.data.decode import decode_image
from compress.errors import CompressError


def _png16(top: int) -> bytes:
    arr = np.zeros((8, 8), np.uint16)
    arr[0, 0] = top
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")  # mode I;16
    return buf.getvalue()


def test_16_bit_greyscale_keeps_its_top_8_bits_whatever_its_maximum():
    """The shift was chosen per image: max 255 decoded at full brightness (mean 127 on a reviewer's
    image), max 256 near black."""
    low, high = decode_image(_png16(255), "low.png"), decode_image(_png16(256), "high.png")
    assert int(low.max()) == 0 and int(high.max()) == 1
    assert int(decode_image(_png16(65535), "white.png").max()) == 255


@pytest.mark.parametrize("mode, kind", [("F", "floating-point"), ("I", "32-bit integer")])
def test_pixels_whose_range_the_file_does_not_say_are_refused(mode, kind):
    """A float TIFF in [0, 1] came out as black and white (0 or 1 after convert('RGB'))."""
    buf = io.BytesIO()
    Image.fromarray(np.full((4, 4), 0.5, np.float32)).convert(mode).save(buf, format="TIFF")
    with pytest.raises(CompressError, match=f"image x.tif holds {kind} pixels"):
        decode_image(buf.getvalue(), "x.tif")
