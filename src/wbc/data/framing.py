"""How an image file becomes the model's input: decode fast, find the stained cell, crop, resize.

Decoding: libjpeg-turbo through simplejpeg for JPEG (about twice Pillow's speed on the 320x240
Kaggle crops, measured by `wbc bench`), Pillow for everything else and for the error message
when a file is damaged. Resizing: OpenCV's area filter.

Framing: a model either sees the whole frame resized (crop=0), or a square of `crop` pixels of
the 320-pixel-wide Kaggle frame centred on the stained (purple) cell. The WBC is the only thing
in a Wright-Giemsa smear much bluer than red, so "blue minus red above a threshold" finds it;
the same rule frames WBCs found in whole smear images (wbc count).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from wbc.errors import BadImage, ImageTooLarge, WbcError

KAGGLE_WIDTH = 320  # the frame the classifier's crop sizes are expressed in
STAIN_THRESHOLD = 40  # blue - red, 0..255: nucleus and stained cytoplasm of a WBC
from wbc.data.scan import MAX_PIXELS  # one decompression-bomb limit for `data check` and every decoder

cv2.setNumThreads(1)  # one image is small; threads belong to the batch, not the resize


def _pil_decode(data: bytes, name: str) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.width * im.height > MAX_PIXELS:
                raise ImageTooLarge(f"{name} is {im.width}x{im.height} pixels, over the {MAX_PIXELS:,}-pixel limit: downscale it first")
            return np.asarray(im.convert("RGB"))
    except ImageTooLarge:
        raise
    except Image.DecompressionBombError:
        raise ImageTooLarge(f"{name} is over the {MAX_PIXELS:,}-pixel limit (a decompression bomb?): downscale it first") from None
    except UnidentifiedImageError:
        raise BadImage(f"cannot read image {name}: not an image file (JPEG, PNG, BMP, TIFF or WebP expected)") from None
    except (OSError, SyntaxError, ValueError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise BadImage(f"cannot read image {name}: {msg} (is it a complete image file?)") from None


def decode_bytes(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """HxWx3 uint8 RGB from encoded bytes; any damage is a one-line WbcError naming `name`."""
    if not data:
        raise BadImage(f"cannot read image {name}: the file is empty")
    if data[:2] == b"\xff\xd8":  # JPEG
        import simplejpeg

        try:
            h, w, _, _ = simplejpeg.decode_jpeg_header(data)
            if h * w > MAX_PIXELS:
                raise ImageTooLarge(f"{name} is {w}x{h} pixels, over the {MAX_PIXELS:,}-pixel limit: downscale it first")
            return simplejpeg.decode_jpeg(data, colorspace="RGB")
        except ValueError:
            pass  # truncated or odd JPEG: Pillow decides, and words the error
    return _pil_decode(data, name)


def decode(source) -> np.ndarray:
    """A path, bytes, PIL image or HxWx3 array as an HxWx3 uint8 RGB array."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise WbcError(f"image not found: {path}") from None
        except IsADirectoryError:
            raise WbcError(f"{path} is a folder, not an image file") from None
        return decode_bytes(data, str(path))
    if isinstance(source, (bytes, bytearray)):
        return decode_bytes(bytes(source))
    if isinstance(source, Image.Image):
        return np.asarray(source.convert("RGB"))
    if isinstance(source, np.ndarray):
        if source.ndim != 3 or source.shape[2] != 3:
            raise WbcError(f"expected an HxWx3 RGB array, got shape {source.shape}")
        return np.ascontiguousarray(source, dtype=np.uint8)
    raise WbcError(f"cannot read a {type(source).__name__} as an image: pass a file path, bytes, a PIL image or an RGB array")


def stain_mask(rgb: np.ndarray, threshold: int = STAIN_THRESHOLD) -> np.ndarray:
    """True where blue exceeds red by `threshold`: WBC nuclei and granules, not red cells or plasma."""
    return (rgb[..., 2].astype(np.int16) - rgb[..., 0].astype(np.int16)) > threshold


def cell_centre(rgb: np.ndarray) -> tuple[float, float]:
    """(x, y) of the largest stained region, found at low resolution; the image centre if none."""
    h, w = rgb.shape[:2]
    step = max(1, w // 160)
    small = rgb[::step, ::step]
    mask = stain_mask(small).astype(np.uint8)
    n, _, stats, centroids = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if n <= 1:
        return w / 2, h / 2
    k = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    if stats[k, cv2.CC_STAT_AREA] < 20:  # specks: no cell to centre on
        return w / 2, h / 2
    cx, cy = centroids[k]
    return float(cx * step + step / 2), float(cy * step + step / 2)


def crop_square(rgb: np.ndarray, cx: float, cy: float, side: int, height: int | None = None) -> np.ndarray:
    """A side x side (or side x height) window centred on (cx, cy); outside the image is black (as the Kaggle fill)."""
    h, w = rgb.shape[:2]
    ch = height or side
    x0, y0 = int(round(cx - side / 2)), int(round(cy - ch / 2))
    out = np.zeros((ch, side, 3), np.uint8)
    sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x0 + side, w), min(y0 + ch, h)
    if sx1 > sx0 and sy1 > sy0:
        out[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = rgb[sy0:sy1, sx0:sx1]
    return out


def frame(rgb: np.ndarray, size_hw: tuple[int, int], crop: int = 0, centre: tuple[float, float] | None = None,
          px_per_frame_px: float | None = None) -> torch.Tensor:
    """The model input (uint8 3xHxW) from an RGB image.

    By default the image is taken to be framed like a 320x240 Kaggle crop (its width is 320
    frame pixels). `centre` and `px_per_frame_px` instead cut the model's view out of a larger
    field (wbc count): centred on a known cell, at a known scale.
    """
    scale = px_per_frame_px or rgb.shape[1] / KAGGLE_WIDTH
    if centre is not None and not crop:  # whole-frame model: a 320x240-frame window around the cell
        rgb = crop_square(rgb, *centre, round(KAGGLE_WIDTH * scale), round(KAGGLE_WIDTH * 3 / 4 * scale))
    elif crop:
        rgb = crop_square(rgb, *(centre or cell_centre(rgb)), max(8, round(crop * scale)))
    h, w = size_hw
    if rgb.shape[:2] != (h, w):
        rgb = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)
    return torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))


def load_input(source, size_hw: tuple[int, int], crop: int = 0) -> torch.Tensor:
    return frame(decode(source), size_hw, crop)
