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


EPS = (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\n0 0 moveto 8 8 lineto stroke\nshowpage\n%%EOF\n")


def test_a_stranger_s_postscript_named_png_never_reaches_ghostscript(tmp_path, monkeypatch):
    """PIL picked its plugin from the bytes: an EPS file named x.png went to the EPS plugin, which runs `gs`
    on it when the image is converted (a reviewer's fake gs logged the stranger's PostScript)."""
    marker = tmp_path / "gs-ran"
    fake = tmp_path / "bin" / "gs"
    fake.parent.mkdir()
    fake.write_text(f"#!/bin/sh\ntouch {marker}\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:{__import__('os').environ['PATH']}")
    from compress.data.decode import image_size

    for read in (lambda: decode_image(EPS, "train/cat/x.png"), lambda: image_size(EPS, "train/cat/x.png")):
        with pytest.raises(CompressError, match=r"^image train/cat/x.png is not a JPEG, PNG, BMP, WebP, GIF or TIFF"):
            read()
    assert not marker.exists()


@pytest.mark.parametrize("fmt", ["PPM", "PCX", "ICO", "TGA"])
def test_formats_outside_the_image_suffixes_are_refused_whatever_the_name(fmt):
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 20, 30)).save(buf, format=fmt)
    with pytest.raises(CompressError, match="is not a JPEG, PNG"):
        decode_image(buf.getvalue(), "x.jpg")


@pytest.mark.parametrize("fmt", ["JPEG", "MPO", "PNG", "BMP", "WEBP", "GIF", "TIFF"])
def test_every_format_of_the_image_suffixes_still_decodes(fmt):
    """MPO: a camera's JPEG with a second picture, which PIL opens through its JPEG plugin."""
    buf = io.BytesIO()
    extra = {"save_all": True, "append_images": [Image.new("RGB", (8, 6))]} if fmt == "MPO" else {}
    Image.new("RGB", (8, 6), (200, 100, 50)).save(buf, format=fmt, **extra)
    img = decode_image(buf.getvalue(), f"x.{fmt.lower()}")
    assert tuple(img.shape) == (3, 6, 8) and abs(int(img[0].float().mean()) - 200) <= 8


def test_an_empty_file_is_called_empty():
    """It was `cannot identify image file <_io.BytesIO object at 0x7fa0...>`."""
    with pytest.raises(CompressError, match="^image x.png is an empty file$"):
        decode_image(b"", "x.png")


def test_decoding_never_calls_an_image_open_another_package_replaced(monkeypatch):
    """ultralytics replaces PIL.Image.open on import; on a file Pillow cannot identify, its version tried to
    pip-install a HEIF plugin ("No module named 'pi_heif'" here, offline) in the middle of our decoding."""
    from PIL import Image

    from compress.data.decode import image_size

    monkeypatch.setattr(Image, "open", lambda *a, **k: pytest.fail("the replaced Image.open ran"))
    buf = io.BytesIO()
    Image.new("RGB", (8, 6), (200, 100, 50)).save(buf, format="PNG")
    assert tuple(decode_image(buf.getvalue(), "x.png").shape) == (3, 6, 8)
    assert image_size(buf.getvalue(), "x.png") == (6, 8)
    with pytest.raises(CompressError, match="is not a JPEG, PNG"):
        decode_image(EPS, "x.png")


def test_a_damaged_file_of_an_allowed_format_names_what_its_decoder_said():
    buf = io.BytesIO()
    Image.new("RGB", (8, 6)).save(buf, format="PNG")
    damaged = buf.getvalue()[:8] + bytes(8) + buf.getvalue()[16:]  # the signature, then a broken header
    with pytest.raises(CompressError, match="^cannot decode image x.png: "):
        decode_image(damaged, "x.png")


@pytest.mark.parametrize("data", [b"x", b"ab", b"\x00\x01\x02"])
def test_a_file_of_a_few_bytes_is_named_as_no_image(data):
    """Pillow's BMP/DIB check read past the end of a 1-3 byte file: 'unpack_from requires a buffer of ...'."""
    with pytest.raises(CompressError, match="^image x.png is not a JPEG, PNG, BMP, WebP, GIF or TIFF file"):
        decode_image(data, "x.png")
