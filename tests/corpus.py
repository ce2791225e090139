"""A corpus of bad (and oddly good) inputs, made from one real cell image: small files, each a case.

    python tests/corpus.py DEST     # write the corpus to DEST (the tests make their own copy)

`ok` cases must come back with an answer (a class, or "no white cell found"); `error` cases with
one clear line that names the file. Nothing may print a traceback or hang.
"""

from __future__ import annotations

import io
import os
import struct
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image


@dataclass
class Case:
    name: str
    path: Path
    expect: str  # ok | error
    http: bool = True  # can be sent as an upload (folders and links cannot)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares width x height and holds one tiny compressed row: a decompression bomb's header."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + _png_chunk(b"IEND", b"")


def _jpeg_with_size(jpeg: bytes, width: int, height: int) -> bytes:
    """The same JPEG with its frame header (SOF) claiming another size."""
    data = bytearray(jpeg)
    i = 2
    while i < len(data) - 9:
        marker, length = data[i + 1], struct.unpack(">H", data[i + 2 : i + 4])[0]
        if marker in (0xC0, 0xC1, 0xC2):
            data[i + 5 : i + 9] = struct.pack(">HH", height, width)
            return bytes(data)
        i += 2 + length
    raise ValueError("no SOF marker")


def _save(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def make_corpus(dest: Path, cell: Path, model: Path | None = None) -> list[Case]:
    """Write every case under `dest`; `cell` is a real single-cell JPEG, `model` a real wbc model file."""
    dest.mkdir(parents=True, exist_ok=True)
    rgb = Image.open(cell).convert("RGB")
    jpeg = cell.read_bytes()
    cases: list[Case] = []

    def add(name: str, data: bytes, expect: str, filename: str | None = None) -> None:
        p = dest / (filename or name)
        p.write_bytes(data)
        cases.append(Case(name, p, expect))

    # images that are fine, in every form a lab's software may write them
    add("valid.jpeg", jpeg, "ok")
    add("spaces and non-ascii", jpeg, "ok", "path with spaces é ü 細胞.jpeg")
    add("progressive.jpg", _save(rgb, "JPEG", quality=90, progressive=True), "ok")
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90
    add("exif_rotated.jpg", _save(rgb, "JPEG", quality=90, exif=exif.tobytes()), "ok")
    add("cmyk.jpg", _save(rgb.convert("CMYK"), "JPEG", quality=90), "ok")
    add("greyscale.jpg", _save(rgb.convert("L"), "JPEG", quality=90), "ok")
    add("palette.png", _save(rgb.convert("P", palette=Image.Palette.ADAPTIVE), "PNG"), "ok")
    add("alpha.png", _save(rgb.convert("RGBA"), "PNG"), "ok")
    add("grey_alpha.png", _save(rgb.convert("LA"), "PNG"), "ok")
    add("one_bit.png", _save(rgb.convert("1"), "PNG"), "ok")
    add("sixteen_bit_grey.png", _save(Image.fromarray((np.asarray(rgb.convert("L")).astype(np.uint16) * 257)), "PNG"), "ok")
    import cv2

    ok, png16 = cv2.imencode(".png", (np.asarray(rgb)[..., ::-1].astype(np.uint16) * 257))
    add("sixteen_bit_rgb.png", png16.tobytes(), "ok")
    add("float.tif", _save(Image.fromarray(np.asarray(rgb.convert("L")).astype(np.float32)), "TIFF"), "ok")
    frames = [rgb.convert("P"), rgb.rotate(90).convert("P")]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    add("animated.gif", buf.getvalue(), "error")  # several images of one size: answering the first dropped the rest
    buf = io.BytesIO()
    rgb.save(buf, format="TIFF", save_all=True, append_images=[rgb.rotate(180)])
    add("multipage.tif", buf.getvalue(), "error")
    buf = io.BytesIO()  # a scan's pyramid: the full image, then its halves; the first is the image
    rgb.save(buf, format="TIFF", save_all=True, append_images=[rgb.reduce(2), rgb.reduce(4)])
    add("pyramid.tif", buf.getvalue(), "ok")
    add("webp.webp", _save(rgb, "WEBP", quality=85), "ok")
    add("bitmap.bmp", _save(rgb, "BMP"), "ok")
    add("trailing_garbage.jpg", jpeg + os.urandom(2000), "ok")
    add("one_pixel.png", _save(Image.new("RGB", (1, 1), (200, 180, 190)), "PNG"), "ok")
    add("all_black.png", _save(Image.new("RGB", (320, 240)), "PNG"), "ok")
    add("wide_10000x10.png", _save(Image.new("RGB", (10000, 10), (230, 220, 225)), "PNG"), "ok")

    # bytes that are not a usable image
    add("truncated.jpg", jpeg[: len(jpeg) // 3], "error")
    add("empty.jpg", b"", "error")
    add("text_renamed.jpg", b"Patient 0042, CBC 2026-11-28\nWBC 7.2\n" * 20, "error")
    add("zero_width.png", _png_header_only(0, 240), "error")
    add("bomb_png.png", _png_header_only(60000, 60000), "error")
    add("bomb_jpeg.jpg", _jpeg_with_size(jpeg, 40000, 40000), "error")
    add("heic.heic", b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + os.urandom(500), "error")
    add("drawing.svg", b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><circle r="4"/></svg>', "error")
    add("report.pdf", b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n", "error")
    png = bytearray(_save(rgb, "PNG"))
    png[40] ^= 0xFF  # inside the first IDAT: the CRC no longer matches
    add("bad_crc.png", bytes(png), "error")

    # things on disk that are not files of bytes
    folder = dest / "folder_named.jpg"
    folder.mkdir(exist_ok=True)
    cases.append(Case("folder named .jpg", folder, "error", http=False))
    link = dest / "broken_link.jpg"
    if not link.is_symlink():
        link.symlink_to(dest / "does-not-exist.jpg")
    cases.append(Case("broken symlink", link, "error", http=False))
    locked = dest / "no_permission.jpg"
    locked.write_bytes(jpeg)
    locked.chmod(0)
    cases.append(Case("no permission", locked, "error" if os.geteuid() != 0 else "ok", http=False))  # root reads every file
    loop = dest / "loop_folder"
    (loop / "sub").mkdir(parents=True, exist_ok=True)
    (loop / "cell.jpeg").write_bytes(jpeg)
    if not (loop / "sub" / "back").is_symlink():
        (loop / "sub" / "back").symlink_to(loop, target_is_directory=True)
    cases.append(Case("symlink loop folder", loop, "ok", http=False))

    if model is not None:
        data = model.read_bytes()
        add("model_truncated.safetensors", data[: len(data) // 2], "error")
        import torch
        from safetensors.torch import save_file

        save_file({"w": torch.zeros(3)}, str(dest / "model_foreign.safetensors"))
        cases.append(Case("model_foreign.safetensors", dest / "model_foreign.safetensors", "error"))
        from wbc.models.io import FORMAT, load_model_file, save_model

        m, meta = load_model_file(model)
        newer = dest / "model_newer.safetensors"
        save_model(m, newer, meta["info"])
        from safetensors import safe_open

        with safe_open(str(newer), framework="pt") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}
            md = dict(f.metadata())
        md["format"], md["wbc_version"] = FORMAT.replace("/1", "/9"), "9.0.0"
        save_file(tensors, str(newer), metadata=md)
        cases.append(Case("model_newer.safetensors", newer, "error"))
    return cases


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python tests/corpus.py CELL.jpeg DEST")
    for c in make_corpus(Path(sys.argv[2]), Path(sys.argv[1])):
        print(f"{c.expect:5} {c.path}")
