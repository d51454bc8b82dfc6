"""Reading image files: the one decoder of fbhelpers (cache build, training input, ``predict``) and the one list of
image file suffixes (folder listings).

Pillow and numpy only (no torch), so that the cache's decoding workers stay light.
"""
from __future__ import annotations

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".jfif",
                                     ".jpe", ".ppm", ".pgm", ".pbm", ".pnm", ".tga")
"""Suffixes (lower case) of the files a folder listing takes as images: the common formats Pillow decodes."""
