"""Image bytes → uint8 RGB C×H×W tensors: grayscale, RGBA, palette and 16-bit images all become RGB."""

from __future__ import annotations

import io
import warnings

import numpy as np
import torch

from compress.errors import CompressError, MixedImageSizes

# Part of every cache key: bump it when decoding or resizing changes what a cached image holds.
DECODER_VERSION = "3"


def _to_rgb(img, name: str = "image"):
    if img.mode in ("I;16", "I;16B", "I;16L"):
        # 16-bit grayscale: the top 8 bits, whatever this image's own maximum (choosing per image put a
        # dark image with max 255 at full brightness and one with max 256 near black).
        from PIL import Image

        arr = np.asarray(img).astype(np.int64).clip(0, 65535)
        img = Image.fromarray((arr >> 8).astype(np.uint8))
    elif img.mode in ("I", "F"):
        kind = "32-bit integer" if img.mode == "I" else "floating-point"
        raise CompressError(f"image {name} holds {kind} pixels, whose range the file does not say; "
                            "convert it to 8 or 16 bits per channel")
    elif img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    return img if img.mode == "RGB" else img.convert("RGB")


# The formats of IMAGE_SUFFIXES (a camera's multi-picture JPEG opens through JPEG). Without this list PIL
# picks a plugin from the bytes, whatever the suffix: a ".png" holding PostScript went to Ghostscript.
PIXEL_FORMATS = ("JPEG", "PNG", "BMP", "DIB", "WEBP", "GIF", "TIFF")


def _open(data: bytes, name: str):
    """The image in `data`, opened by the plugin of one of PIXEL_FORMATS that accepts its first bytes.

    Image.open itself is not called: other packages replace it (ultralytics does on import, and on a file
    Pillow cannot identify it tries to pip-install a HEIF plugin). Each allowed format's registered opener
    is tried as Image.open tries them; the pixel bound is checked by the caller (_check_pixels)."""
    import struct

    from PIL import Image

    if not data:
        raise CompressError(f"image {name} is an empty file")
    Image.init()  # registers every plugin Pillow was built with (WebP may be missing: it is then skipped)
    prefix, failure = data[:16], None
    for fmt in PIXEL_FORMATS:
        factory, accept = Image.OPEN.get(fmt, (None, None))
        if factory is None:
            continue
        try:
            verdict = accept(prefix) if accept else True
        except struct.error:  # a file of a few bytes: a plugin's check reads past its end
            continue
        if not verdict or isinstance(verdict, str):  # a string is Pillow's "almost, but no" message
            continue
        try:
            return factory(io.BytesIO(data), "")
        except (SyntaxError, IndexError, TypeError, struct.error) as exc:  # Image.open tries the next format
            failure = failure or f"{fmt}: {exc}"
    if failure is not None:
        raise CompressError(f"cannot decode image {name}: {failure.splitlines()[0][:200]}")
    raise CompressError(f"image {name} is not a JPEG, PNG, BMP, WebP, GIF or TIFF file "
                        "(other formats are not read, whatever the name)")


def _check_pixels(size: tuple[int, int], name: str) -> None:
    """A header may promise any size; bound it before the pixels are decoded (compress.limits)."""
    from compress.limits import MAX_IMAGE_PIXELS

    w, h = size
    if w * h > MAX_IMAGE_PIXELS:
        raise CompressError(f"image {name} is {w}x{h} pixels, over the bound of {MAX_IMAGE_PIXELS:,} "
                            "(MAX_IMAGE_PIXELS)")


def _too_many_pixels(name: str, exc: Exception) -> str:
    """PIL's own bomb check fires first for the largest headers; the message names our bound all the same."""
    from compress.limits import MAX_IMAGE_PIXELS

    return f"image {name} is over the bound of {MAX_IMAGE_PIXELS:,} pixels (MAX_IMAGE_PIXELS): {exc}"


def decode_image(data: bytes, name: str, *, at_least: int | None = None,
                 size: tuple[int, int] | None = None) -> torch.Tensor:
    """Decode one image to uint8 3×H×W. `at_least` lets JPEG decoding downscale by a power of two
    while keeping both sides at or above that many pixels (much faster for large photos). An image whose
    header says another (height, width) than `size` raises MixedImageSizes before its pixels are decoded."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            # PIL warns about odd but readable files (palette transparency, EXIF); they decode fine.
            warnings.simplefilter("ignore")
            img = _open(data, name)
            _check_pixels(img.size, name)
            if size is not None and tuple(img.size) != (size[1], size[0]):
                raise MixedImageSizes(f"{name} is {img.size[0]}x{img.size[1]}, not {size[1]}x{size[0]}")
            if at_least is not None and img.format == "JPEG":
                img.draft("RGB", (at_least, at_least))
            img = _to_rgb(img, name)
            arr = np.asarray(img, dtype=np.uint8)
    except CompressError:
        raise
    except Image.DecompressionBombError as exc:
        raise CompressError(_too_many_pixels(name, exc)) from None
    except Exception as exc:  # noqa: BLE001 - PIL raises many types for a bad file
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise CompressError(f"cannot decode image {name}: {reason}") from None
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


def image_size(data: bytes, name: str) -> tuple[int, int]:
    """(height, width) from the image header, without decoding the pixels."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            w, h = _open(data, name).size
    except CompressError:
        raise
    except Image.DecompressionBombError as exc:
        raise CompressError(_too_many_pixels(name, exc)) from None
    except Exception as exc:  # noqa: BLE001
        raise CompressError(f"cannot decode image {name}: {exc}") from None
    _check_pixels((w, h), name)
    return h, w
