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
            stack = several_images(im)
            if stack:
                raise BadImage(f"{name} holds {stack} images of one size (a stack, a series or an animation), and wbc reads one a "
                               f"file: save each as its own file (ImageMagick: magick {Path(name).name} page-%d.png)")
            sixteen = _sixteen_bit_colour(im)  # before the EXIF read, which may load a PNG and drop what this reads
            turn = _orientation(im)
            if im.mode.startswith("I") or im.mode == "F":  # 16/32-bit or float greyscale: Pillow's RGB conversion would clip
                return upright(_to_uint8(np.repeat(np.asarray(im)[..., None], 3, axis=2)), turn)
            if sixteen:
                deep = _cv2_colour(data)
                if deep is not None:
                    return upright(_to_uint8(deep), turn)
            return upright(np.asarray(im.convert("RGB")), turn)
    except (ImageTooLarge, BadImage):
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


def several_images(im: Image.Image) -> int | None:
    """How many images a multi-page file (TIFF, GIF, WebP, MPO) holds when two or more are of the first one's size, else
    None. Only the first was read: a stack of cells, or of fields, was answered for its first page in silence. A
    pyramid (a scan's lower resolutions) or a camera's preview is smaller than the first page and is read as before."""
    frames = getattr(im, "n_frames", 1)
    if frames < 2:
        return None
    size, same = im.size, 1
    try:
        for i in range(1, min(frames, 64)):
            im.seek(i)
            same += im.size == size
    except EOFError:  # fewer pages than the file said: those read decide
        pass
    finally:
        im.seek(0)
    return frames if same > 1 else None


EXIF_ORIENTATION = 0x0112


def _orientation(im: Image.Image) -> int:
    """The EXIF orientation (1-8; 1 upright) a camera or phone wrote instead of turning the pixels."""
    try:
        turn = im.getexif().get(EXIF_ORIENTATION, 1)
    except Exception:  # a damaged EXIF block: the pixels as stored
        return 1
    return turn if turn in range(1, 9) else 1


def _jpeg_turn(data: bytes) -> int:
    """The orientation of a JPEG libjpeg-turbo decodes (Pillow reads the header alone)."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            return _orientation(im)
    except Exception:
        return 1


def upright(a: np.ndarray, turn: int) -> np.ndarray:
    """The pixels as every viewer and browser shows them (EXIF orientation applied, as Pillow's exif_transpose
    does), so boxes, heat-maps and pictures line up with what the user sees."""
    if turn in (5, 6, 7, 8):
        a = np.rot90(a, k=-1 if turn in (5, 6) else 1)
    if turn in (2, 5, 7):
        a = a[:, ::-1]
    elif turn in (3, 4):
        a = a[::-1] if turn == 4 else a[::-1, ::-1]
    return np.ascontiguousarray(a)


def _to_uint8(a: np.ndarray) -> np.ndarray:
    """HxWx3 pixels of any depth as uint8. Integers by the bit depth their largest value implies: a 10-, 12- or
    14-bit camera writes 16-bit files holding 0..1023, 4095 or 16383, and read as 16-bit such a brightfield image
    came out nearly black (a 12-bit PBC cell: mean 12 of 255, its red cells lost, the scale assumed). Floats in 0..1
    by 255, larger ones by their range."""
    top = float(np.nanmax(a)) if a.size else 0.0
    if a.dtype.kind == "f":
        scale = 255.0 if top <= 1.0 else 1.0 if top <= 255 else 255.0 / top
    else:
        bits = next((b for b in (8, 10, 12, 14, 16) if top < 2**b), None)
        scale = 255.0 / (2**bits - 1) if bits else 255.0 / top
    return np.clip(np.rint(np.nan_to_num(a.astype(np.float64) * scale)), 0, 255).astype(np.uint8)


def _sixteen_bit_colour(im: Image.Image) -> bool:
    """A colour PNG or TIFF of 16 bits a channel, which Pillow reads by its top 8 bits only."""
    args = im.tile[0].args if im.tile else None
    raw = args if isinstance(args, str) else args[0] if isinstance(args, tuple) and args and isinstance(args[0], str) else ""
    return im.mode in ("RGB", "RGBA") and ";16" in raw


def _cv2_colour(data: bytes) -> np.ndarray | None:
    """HxWx3 RGB at the file's own depth (OpenCV keeps 16 bits a channel); None where OpenCV cannot read it."""
    a = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if a is None or a.ndim != 3 or a.shape[2] not in (3, 4):
        return None
    return cv2.cvtColor(a, cv2.COLOR_BGRA2RGB if a.shape[2] == 4 else cv2.COLOR_BGR2RGB)


def decode_bytes(data: bytes, name: str = "<bytes>", max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """HxWx3 uint8 RGB from encoded bytes; any damage is a one-line WbcError naming `name`."""
    if not data:
        raise BadImage(f"cannot read image {name}: the file is empty")
    if _large_jpeg(data, name, max_pixels):
        import simplejpeg

        try:
            return upright(simplejpeg.decode_jpeg(data, colorspace="RGB"), _jpeg_turn(data))
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
            turn = _jpeg_turn(data)
            small = upright(_resized(small, max(1, round(w * factor)), max(1, round(h * factor))), turn)
            return small, ((h, w) if turn >= 5 else (w, h))
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


def _read(path: str | os.PathLike) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise WbcError(f"image not found: {path}") from None
    except IsADirectoryError:
        raise WbcError(f"{path} is a folder, not an image file") from None


IJG_LUMINANCE_SUM = 3688  # the sum of the JPEG standard's (Annex K) luminance table, which libjpeg scales by quality


def jpeg_quality(data: bytes) -> int | None:
    """The IJG quality (1-100) a JPEG was saved at, from the sum of its luminance quantisation table against the
    standard one (exact from 20 up for libjpeg's files; lower reads 13-20); None for other files or odd tables. The
    sources' own files: Kaggle and BCCD 75, PBC 75-85, Munich 95."""
    if data[:2] != b"\xff\xd8":
        return None
    try:
        with Image.open(io.BytesIO(data)) as im:
            tables = getattr(im, "quantization", None) or {}
    except Exception:  # a damaged header: decoding says so, not this
        return None
    if 0 not in tables or len(tables[0]) != 64:
        return None
    scale = 100 * sum(tables[0]) / IJG_LUMINANCE_SUM
    return max(1, min(100, round((200 - scale) / 2) if scale <= 100 else round(5000 / scale)))


def decode_with_quality(source, name: str | None = None) -> tuple[np.ndarray, int | None]:
    """(`decode(source)`, the JPEG quality of a file or bytes given, else None): the file read once."""
    if isinstance(source, (str, os.PathLike, bytes, bytearray)):
        data = _read(source) if isinstance(source, (str, os.PathLike)) else bytes(source)
        label = name or (str(source) if isinstance(source, (str, os.PathLike)) else "<bytes>")
        return decode_bytes(data, label), jpeg_quality(data)
    return decode(source), None


def decode(source, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """A path, bytes, PIL image or HxWx3 array as an HxWx3 uint8 RGB array."""
    if isinstance(source, (str, os.PathLike)):
        return decode_bytes(_read(source), str(source), max_pixels)
    if isinstance(source, (bytes, bytearray)):
        return decode_bytes(bytes(source), max_pixels=max_pixels)
    if isinstance(source, Image.Image):  # turned as shown, as a file is (exif_transpose drops the tag it applied)
        deep = source.mode.startswith("I") or source.mode == "F"  # Pillow's RGB conversion would clip them
        rgb = _to_uint8(np.repeat(np.asarray(source)[..., None], 3, axis=2)) if deep else np.asarray(source.convert("RGB"))
        return upright(rgb, _orientation(source))
    if isinstance(source, np.ndarray):
        rgb = source[..., None].repeat(3, axis=2) if source.ndim == 2 else source[..., :3] if source.ndim == 3 and source.shape[2] == 4 else source
        if rgb.ndim != 3 or rgb.shape[2] != 3:
            raise WbcError(f"expected an HxWx3 RGB array (or HxW grey, HxWx4 RGBA), got shape {source.shape}")
        # floats (0..1, as scikit-image gives) and deeper integers are read as files of their depth are (cast to uint8,
        # a 0..1 image came out black)
        return np.ascontiguousarray(rgb) if rgb.dtype == np.uint8 else _to_uint8(rgb)
    raise WbcError(f"cannot read a {type(source).__name__} as an image: pass a file path, bytes, a PIL image or an RGB array")


MARGIN_TOLERANCE = 3  # grey levels: a row or column at the edge this flat is a margin
DARK_MARGIN = 40  # ... unless no channel is brighter than this


def without_margins(rgb: np.ndarray) -> np.ndarray:
    """The picture without flat margins (rows and columns of one colour at its edges: a figure's white border, a crop
    pasted onto a canvas; black ones are kept), as a view; the image itself when it has none, or is nothing but margin.
    What the overexposure rule reads: a white margin taken for the smear's background said "overexposed" of every cell
    (validation cells padded white: all 240 Kaggle and 240 PBC answers flagged so); a smear's own rows are never one
    flat colour. Only that rule reads it: cut to its text, a printed page looked like a dense field of dark blobs."""
    h, w = rgb.shape[:2]
    if min(h, w) < 3:
        return rgb
    if not (_flat(rgb[[0, -1]], 1).any() or _flat(rgb[:, [0, -1]], 0).any()):
        return rgb  # the usual case (a black fill included): no edge is a margin, nothing to trim (a few microseconds)
    y0, y1 = _span(_flat(rgb, 1))
    x0, x1 = _span(_flat(rgb, 0))
    if y1 - y0 < MIN_SIDE or x1 - x0 < MIN_SIDE or (y0, y1, x0, x1) == (0, h, 0, w):
        return rgb
    return rgb[y0:y1, x0:x1]


def _flat(rgb: np.ndarray, axis: int) -> np.ndarray:
    """Per row (axis 1) or column (axis 0): one colour throughout, and not black (a rotated copy's fill or a
    letterbox, which every step already reads as nothing: Kaggle's shifted copies keep their size)."""
    hi = rgb.max(axis=axis)
    return (hi.astype(np.int16) - rgb.min(axis=axis) <= MARGIN_TOLERANCE).all(1) & (hi.max(1) > DARK_MARGIN)


def _span(flat: np.ndarray) -> tuple[int, int]:
    """[first, last + 1) of what is not margin: the flat run at each end dropped."""
    n = len(flat)
    start = int(np.argmin(flat)) if not flat.all() else n
    end = n - int(np.argmin(flat[::-1])) if not flat.all() else 0
    return start, end
