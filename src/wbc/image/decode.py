"""Image bytes to an RGB array: fast, bounded, and every failure one line naming the file.

JPEG through libjpeg-turbo (simplejpeg: about twice Pillow's speed on the 320x240 Kaggle crops,
measured by `wbc bench`), everything else through Pillow, which also words the error when a file
is damaged. One pixel limit (`MAX_PIXELS`, checked from the header before decoding) serves
`wbc data check` and every decoder; large JPEG fields can shrink while they decode.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from wbc.errors import BadImage, ImageTooLarge, WbcError

MIN_SIDE = 32  # smaller than this cannot hold a cell at the training scale
MAX_PIXELS = 40_000_000  # well above any microscope field we expect; stops decompression bombs

cv2.setNumThreads(1)  # one image is small; threads belong to the batch, not the resize
Image.MAX_IMAGE_PIXELS = None  # our own limit (checked from the header, before decoding) replaces Pillow's warning


def _pil_decode(data: bytes, name: str, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.width * im.height > max_pixels:
                raise ImageTooLarge(f"{name} is {im.width}x{im.height} pixels, over the {max_pixels:,}-pixel limit: downscale it first")
            if im.mode.startswith("I") or im.mode == "F":  # 16/32-bit or float greyscale: Pillow's RGB conversion would clip
                return _grey_to_rgb8(np.asarray(im))
            return np.asarray(im.convert("RGB"))
    except ImageTooLarge:
        raise
    except Image.DecompressionBombError:
        raise ImageTooLarge(f"{name} is over the {max_pixels:,}-pixel limit (a decompression bomb?): downscale it first") from None
    except UnidentifiedImageError:
        raise BadImage(f"cannot read image {name}: not an image file (JPEG, PNG, BMP, TIFF or WebP expected)") from None
    except (OSError, SyntaxError, ValueError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise BadImage(f"cannot read image {name}: {msg} (is it a complete image file?)") from None
    except Exception as e:  # a decoder tripping over a hostile file is still the file's fault
        raise BadImage(f"cannot read image {name}: the decoder failed ({type(e).__name__}); is it a damaged image file?") from None


def _grey_to_rgb8(a: np.ndarray) -> np.ndarray:
    """A high-bit-depth greyscale array as 8-bit RGB: 16-bit data scaled by 1/257, floats and others by their range."""
    a = a.astype(np.float64)
    top = float(np.nanmax(a)) if a.size else 0.0
    scale = 1.0 if top <= 255 else 255.0 / 65535 if top <= 65535 else 255.0 / top
    g = np.clip(np.nan_to_num(a * scale), 0, 255).astype(np.uint8)
    return np.repeat(g[..., None], 3, axis=2)


def decode_bytes(data: bytes, name: str = "<bytes>", max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """HxWx3 uint8 RGB from encoded bytes; any damage is a one-line WbcError naming `name`."""
    if not data:
        raise BadImage(f"cannot read image {name}: the file is empty")
    if _large_jpeg(data, name, max_pixels):
        import simplejpeg

        try:
            return simplejpeg.decode_jpeg(data, colorspace="RGB")
        except ValueError:
            pass  # truncated or odd JPEG: Pillow decides, and words the error
    return _pil_decode(data, name, max_pixels)


def _large_jpeg(data: bytes | None, name, max_pixels: int) -> tuple[int, int] | None:
    """(height, width) of a JPEG over 16 Mpx, which libjpeg-turbo decodes (raises ImageTooLarge over
    `max_pixels`); None for anything else (small, not JPEG, unreadable header): the full decoder's job."""
    if not data or data[:2] != b"\xff\xd8":
        return None
    import simplejpeg

    try:
        h, w, _, _ = simplejpeg.decode_jpeg_header(data)
    except ValueError:
        return None
    if h * w <= 16_000_000:
        return None
    if h * w > max_pixels:
        raise ImageTooLarge(f"{name} is {w}x{h} pixels, over the {max_pixels:,}-pixel limit: downscale it first")
    return h, w


def decode_shrunk(source, factor: float, max_pixels: int = MAX_PIXELS) -> tuple[np.ndarray, tuple[int, int]]:
    """(the image scaled by `factor`, its original (width, height)). A large JPEG file (over 16 Mpx) shrinks
    while it decodes (libjpeg-turbo's DCT scaling), so a 100-megapixel field halved never exists at full
    size; smaller images take the same path as training (full decode, area filter)."""
    data = None
    if isinstance(source, (str, os.PathLike)) and factor < 0.95:
        try:
            data = Path(source).read_bytes()
        except OSError:
            data = None  # decode() below words the error
    dims = _large_jpeg(data, source, max_pixels)
    if dims:
        import simplejpeg

        h, w = dims
        try:
            small = simplejpeg.decode_jpeg(data, colorspace="RGB", min_height=int(np.ceil(h * factor)), min_width=int(np.ceil(w * factor)))
            return _resized(small, max(1, round(w * factor)), max(1, round(h * factor))), (w, h)
        except ValueError:
            pass  # an odd JPEG: the full decoder decides
    data = None
    rgb = decode(source, max_pixels)
    h, w = rgb.shape[:2]
    if abs(factor - 1) < 0.02:
        return rgb, (w, h)
    return _resized(rgb, max(1, round(w * factor)), max(1, round(h * factor))), (w, h)


def _resized(rgb: np.ndarray, w: int, h: int) -> np.ndarray:
    if rgb.shape[:2] == (h, w):
        return rgb
    return cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA if w < rgb.shape[1] else cv2.INTER_LINEAR)


def decode(source, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """A path, bytes, PIL image or HxWx3 array as an HxWx3 uint8 RGB array."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise WbcError(f"image not found: {path}") from None
        except IsADirectoryError:
            raise WbcError(f"{path} is a folder, not an image file") from None
        return decode_bytes(data, str(path), max_pixels)
    if isinstance(source, (bytes, bytearray)):
        return decode_bytes(bytes(source), max_pixels=max_pixels)
    if isinstance(source, Image.Image):
        return np.asarray(source.convert("RGB"))
    if isinstance(source, np.ndarray):
        if source.ndim != 3 or source.shape[2] != 3:
            raise WbcError(f"expected an HxWx3 RGB array, got shape {source.shape}")
        return np.ascontiguousarray(source, dtype=np.uint8)
    raise WbcError(f"cannot read a {type(source).__name__} as an image: pass a file path, bytes, a PIL image or an RGB array")


