"""How an image file becomes the model's input: decode fast, find the stained cell, crop, resize.

Decoding: libjpeg-turbo through simplejpeg for JPEG (about twice Pillow's speed on the 320x240
Kaggle crops, measured by `wbc bench`), Pillow for everything else and for the error message
when a file is damaged. Resizing: OpenCV's area filter.

Framing: a model sees a square `field_um` micrometres wide centred on the stained (purple) cell,
resized to its input size, so cells from any microscope reach the network at one physical scale.
The scale comes from the caller (`--px-per-um`, an adapted model's lab scale, a smear field's
known magnification) or is measured from the red cells in the image (wbc.data.scale); when
neither is possible it is assumed from the image width (`ASSUMED_FIELD_UM`), and the result
says so. The WBC is the only thing in a Romanowsky-stained smear much bluer than red, so "blue
minus red above a threshold" finds it; the same rule frames WBCs found in whole smear fields
(wbc count) and tells an image with no white cell in it. Models of wbc <= 0.1 (`field_um` 0)
framed a `crop`-pixel square of the 320-pixel-wide Kaggle frame instead; they still load.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from wbc.errors import BadImage, ImageTooLarge, WbcError

KAGGLE_WIDTH = 320  # the frame legacy (field_um 0) crop sizes are expressed in
KAGGLE_PX_PER_UM = 6.81  # the Kaggle 320x240 crops (wbc data scale, median of 80 TRAIN images)
ASSUMED_FIELD_UM = 40.0  # a single-cell image with no measurable red cells: assume it is this wide
STAIN_THRESHOLD = 40  # blue - red, 0..255: nucleus and stained cytoplasm of a WBC (centring)
STAINED_THRESHOLD = 25  # a looser one for "is anything stained at all" (PBC monocytes stain paler)
MIN_STAINED_UM2 = 0.05  # below this nothing in the image is stained: no cell of any kind (PBC platelets: >= 0.08)
MIN_NUCLEUS_UM2 = 3.0  # a white cell's (or erythroblast's) stained nucleus is larger (PBC train: >= 3.6 um2, Kaggle >= 23 but 0.1% cut-off cells)
from wbc.data.scan import MAX_PIXELS, MIN_SIDE  # one pixel limit for `data check` and every decoder

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


def is_greyscale(rgb: np.ndarray) -> bool:
    """No colour anywhere to speak of (a greyscale camera, or a grey export): the stain cannot be seen."""
    small = rgb[:: max(1, rgb.shape[0] // 64), :: max(1, rgb.shape[1] // 64)].astype(np.int16)
    return float(np.abs(small[..., 0] - small[..., 1]).mean() + np.abs(small[..., 1] - small[..., 2]).mean()) < 4.0


def largest_stained_um2(rgb: np.ndarray, px_per_um: float) -> float:
    """Area (square micrometres) of the largest region stained at all (blue - red > 25). In a greyscale
    image, of the largest solid dark blob instead (a nucleus is the darkest thing in a smear; the thin
    strokes of text vanish under a 1 um opening)."""
    h, w = rgb.shape[:2]
    step = max(1, round(min(w, h) / 400))  # big fields: measure at about 400 px, plenty for areas
    small = rgb[::step, ::step]
    if is_greyscale(small):
        g = small[..., 1]
        background = float(np.percentile(g, 90))
        mask = (g < 0.6 * background).astype(np.uint8)
        k = max(3, int(px_per_um / step) | 1)
        mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    else:
        mask = stain_mask(small, STAINED_THRESHOLD).astype(np.uint8)
    n, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if n <= 1:
        return 0.0
    return float(stats[1:, cv2.CC_STAT_AREA].max() * step * step / px_per_um**2)


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


@dataclass
class Framed:
    """A model input and what framing it learnt about the image."""

    pixels: torch.Tensor  # uint8 3 x H x W
    px_per_um: float
    scale: str  # given | measured | assumed (see the module docstring)
    stained_um2: float  # largest stained region: the no-white-cell rule reads it
    too_small: bool = False  # under MIN_SIDE pixels a side


def image_scale(rgb: np.ndarray, px_per_um: float | None = None) -> tuple[float, str]:
    """(pixels a micrometre, how it was known): given, else measured from red cells, else assumed."""
    if px_per_um:
        return float(px_per_um), "given"
    from wbc.data.scale import estimate_scale

    s = estimate_scale(rgb) if min(rgb.shape[:2]) >= MIN_SIDE else None
    if s is not None and s.found:
        return s.px_per_um, "measured"
    return rgb.shape[1] / ASSUMED_FIELD_UM, "assumed"


def resize_to(rgb: np.ndarray, size_hw: tuple[int, int]) -> torch.Tensor:
    h, w = size_hw
    if rgb.shape[:2] != (h, w):
        rgb = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)
    return torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))


def view(rgb: np.ndarray, size_hw: tuple[int, int], field_um: float, px_per_um: float, centre: tuple[float, float] | None = None) -> torch.Tensor:
    """The field_um-wide square around `centre` (default: the stained cell) at the model's input size."""
    side = max(8, round(field_um * px_per_um))
    return resize_to(crop_square(rgb, *(centre or cell_centre(rgb)), side), size_hw)


def legacy_view(rgb: np.ndarray, size_hw: tuple[int, int], crop: int, px_per_um: float | None = None,
                centre: tuple[float, float] | None = None) -> torch.Tensor:
    """Framing of wbc <= 0.1 models: a `crop`-pixel square of the 320-wide Kaggle frame (0: the whole frame)."""
    scale = px_per_um / KAGGLE_PX_PER_UM if px_per_um else rgb.shape[1] / KAGGLE_WIDTH
    if centre is not None and not crop:
        rgb = crop_square(rgb, *centre, round(KAGGLE_WIDTH * scale), round(KAGGLE_WIDTH * 3 / 4 * scale))
    elif crop:
        rgb = crop_square(rgb, *(centre or cell_centre(rgb)), max(8, round(crop * scale)))
    return resize_to(rgb, size_hw)


def cell_view(rgb: np.ndarray, spec, px_per_um: float, centre: tuple[float, float]) -> torch.Tensor:
    """The model's input for a cell at `centre` of an image of known scale (a smear field): no checks, no estimate."""
    if spec.field_um:
        return view(rgb, spec.input_size, spec.field_um, px_per_um, centre)
    return legacy_view(rgb, spec.input_size, spec.crop, px_per_um, centre)


def frame(rgb: np.ndarray, spec, px_per_um: float | None = None, centre: tuple[float, float] | None = None) -> Framed:
    """The input `spec` (a ModelSpec) asks for, from an RGB image; `px_per_um` overrides the spec's own scale."""
    h, w = rgb.shape[:2]
    if min(h, w) < MIN_SIDE:
        black = torch.zeros(3, *spec.input_size, dtype=torch.uint8)
        return Framed(black, w / ASSUMED_FIELD_UM, "assumed", 0.0, too_small=True)
    px, how = image_scale(rgb, px_per_um or spec.px_per_um) if spec.field_um or px_per_um else (w / ASSUMED_FIELD_UM, "assumed")
    if spec.field_um:
        pixels = view(rgb, spec.input_size, spec.field_um, px, centre)
    else:
        pixels = legacy_view(rgb, spec.input_size, spec.crop, px_per_um, centre)
    return Framed(pixels, px, how, largest_stained_um2(rgb, px))


def load_input(source, spec, px_per_um: float | None = None) -> torch.Tensor:
    return frame(decode(source), spec, px_per_um).pixels
