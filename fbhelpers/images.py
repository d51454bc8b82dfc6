"""Reading image files: the one decoder of fbhelpers (cache build, training input, ``predict``) and the one list of
image file suffixes (folder listings).

:func:`decode_image` opens a file with Pillow, applies its EXIF orientation, brings every mode Pillow opens to 8-bit
channels (:func:`to_8bit`), crops, converts to ``"RGB"`` or ``"L"`` and resizes (bicubic). How each mode becomes
8-bit [choice]:

- ``L``, ``RGB``: unchanged (Pillow's own conversion and resize, as before); ``1``: 0 or 255;
- 16-bit integer greyscale (``I;16``, ``I;16L``, ``I;16B``, ``I;16N``: 16-bit PNG and TIFF): the type's full range,
  ``round(v * 255 / 65535)``, so 32768 becomes 128 (Pillow's own conversion clips every value >= 255 to white);
- 32-bit integer greyscale (``I``: 16-bit PGM/PPM, 32-bit TIFF): as 16-bit when every value is in [0, 65535]
  (16-bit data in a 32-bit mode, the common case), else the full int32 range, ``round((v + 2**31) * 255 /
  (2**32 - 1))``;
- float greyscale (``F``): ``round(v * 255)`` when every value is in [0, 1], ``round(v)`` when every value is in
  [0, 255] (an 8-bit scale), else stretched from the image's min..max to 0..255; a NaN or infinite pixel is an
  error;
- with transparency (``LA``, ``La``, ``PA``, ``RGBA``, ``RGBa``, and ``P`` with a transparent palette entry):
  composited on :data:`BACKGROUND` (black, as the parts of a crop box outside the image and a cache row that
  failed to decode), i.e. each colour times its opacity;
- every other mode (``P``, ``CMYK``, ``YCbCr``, ``HSV``, ``LAB``): Pillow's conversion to ``RGB``.

Only regular files are opened: a FIFO (whose open would wait forever), a device or a folder is refused with a
ValueError naming it. Pillow and numpy only (no torch), so that the cache's decoding workers stay light.
"""
from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".jfif",
                                     ".jpe", ".ppm", ".pgm", ".pbm", ".pnm", ".tga")
"""Suffixes (lower case) of the files a folder listing takes as images: the common formats Pillow decodes."""
BACKGROUND: tuple[int, int, int] = (0, 0, 0)
"""The colour transparent pixels are composited on [choice]: black."""
DECODER_VERSION = 2
"""Changes whenever :func:`decode_image` gives other pixels for some file (2: transparency composited on
``BACKGROUND``, 16-bit and float modes scaled); part of the image cache's key, so a cache never mixes decoders."""
INT16_MODES: tuple[str, ...] = ("I;16", "I;16L", "I;16B", "I;16N")
ALPHA_MODES: tuple[str, ...] = ("LA", "La", "PA", "RGBA", "RGBa")
_KINDS = {stat.S_ISDIR: "a folder", stat.S_ISFIFO: "a FIFO (named pipe)", stat.S_ISCHR: "a character device",
          stat.S_ISBLK: "a block device", stat.S_ISSOCK: "a socket"}


def decode_image(path: str | Path, size: int | tuple[int, int], mode: str = "RGB",
                 box: Sequence[float] | None = None) -> np.ndarray:
    """One image file -> uint8 ``(H, W, C)``: Pillow decode, EXIF orientation, 8-bit channels (:func:`to_8bit`),
    optional crop to ``box`` (``x, y, w, h`` in pixels of the upright image, rounded by Pillow; parts outside the
    image are black), convert to ``mode`` (``"RGB"`` or ``"L"``), bicubic resize to ``size`` (int = square; aspect
    ratio not kept [choice]). FileNotFoundError / ValueError naming the file and the reason (no Pillow traceback);
    a file that is not a regular file is a ValueError and is never opened."""
    h, w = (size, size) if isinstance(size, int) else size
    try:
        _check_regular(path)
        with Image.open(path) as im:
            im = to_8bit(ImageOps.exif_transpose(im))
            if box is not None:
                x, y, bw, bh = box
                im = im.crop((x, y, x + bw, y + bh))
            arr = np.asarray(im.convert(mode).resize((w, h), Image.Resampling.BICUBIC), dtype=np.uint8)
    except FileNotFoundError:
        raise FileNotFoundError(f"image file not found: {path}") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:  # Pillow's ways to say "broken"
        raise ValueError(f"cannot decode image {path}: {err}") from None
    return arr[:, :, None] if arr.ndim == 2 else arr


def to_8bit(im: Image.Image) -> Image.Image:
    """``im`` as an image of 8-bit channels (``L``, ``RGB`` or ``1``), each mode as the module docstring says."""
    if im.mode in ("L", "RGB", "1"):
        return im
    if im.mode in INT16_MODES or im.mode in ("I", "F"):
        return Image.fromarray(_grey_8bit(np.asarray(im), im.mode), "L")
    if im.mode in ALPHA_MODES or (im.mode == "P" and "transparency" in im.info):
        rgba = (im.convert("LA") if im.mode == "La" else im).convert("RGBA")  # Pillow has no La -> RGBA
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (*BACKGROUND, 255)), rgba).convert("RGB")
    return im.convert("RGB")


def _grey_8bit(values: np.ndarray, mode: str) -> np.ndarray:
    """A 16/32-bit integer or float greyscale array as uint8 (the scales of the module docstring)."""
    values = values.astype(np.float64)
    if mode == "F" and not np.isfinite(values).all():
        raise ValueError(f"{int((~np.isfinite(values)).sum())} of its {values.size} float pixels are NaN or infinite")
    low, high = values.min(), values.max()
    if mode == "F" and low >= 0 and high <= 1:
        scaled = values * 255
    elif mode == "F" and low >= 0 and high <= 255:
        scaled = values
    elif mode == "F":
        scaled = (values - low) * (255 / max(high - low, np.finfo(np.float64).tiny))
    elif mode in INT16_MODES or (low >= 0 and high <= 65535):
        scaled = values * (255 / 65535)
    else:
        scaled = (values + 2.0 ** 31) * (255 / (2.0 ** 32 - 1))
    return np.clip(np.round(scaled), 0, 255).astype(np.uint8)


def _check_regular(path: str | Path) -> None:
    """ValueError naming what ``path`` is when it is not a regular file (following links); FileNotFoundError when
    nothing is there."""
    kind = os.stat(path).st_mode
    for test, name in _KINDS.items():
        if test(kind):
            raise ValueError(f"not a regular file: it is {name}")
    if not stat.S_ISREG(kind):
        raise ValueError("not a regular file")


def image_files(folder: str | Path, recursive: bool = True) -> list[Path]:
    """The entries of a folder (and of its sub-folders unless ``recursive=False``) whose suffix is one of
    :data:`IMAGE_EXTENSIONS`, sorted; ValueError when there is none. Sub-folders are searched, never listed; other
    entries that are not regular files (a FIFO, a device, a socket, a dangling or looping link) are listed, so that
    :func:`decode_image` refuses each with its reason and ``predict`` skips and counts it."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"not a folder: {folder}")
    candidates = folder.rglob("*") if recursive else folder.glob("*")
    files = sorted(p for p in candidates if p.suffix.lower() in IMAGE_EXTENSIONS and not _is_dir(p))
    if not files:
        where = "under" if recursive else "directly in (not searching sub-folders)"
        raise ValueError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) {where} the folder {os.fspath(folder)!r}")
    return files


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:  # a looping link: not a folder to skip silently, decode_image names it
        return False
