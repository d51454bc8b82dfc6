"""Generated JPEGs of realistic size for the data benchmarks (``pipeline``, ``scale``, ``bench_cache.py``)."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def write_jpegs(folder: str | Path, n: int, seed: int = 0, sides: tuple[int, int] = (256, 512),
                quality: int = 90) -> list[str]:
    """``n`` seeded JPEGs ``00000.jpg`` ... in ``folder`` (created) with random width and height in
    ``sides`` (inclusive): an upsampled random 6 x 6 colour field plus Gaussian noise (sd 8), saved at
    ``quality``. Returns the file names, relative to ``folder``."""
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = []
    for i in range(n):
        w, h = (int(s) for s in rng.integers(sides[0], sides[1] + 1, 2))
        base = Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).resize((w, h), Image.BICUBIC)
        pixels = np.asarray(base, dtype=np.int16) + rng.normal(0, 8, (h, w, 1)).astype(np.int16)
        names.append(f"{i:05d}.jpg")
        Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(folder / names[-1], quality=quality)
    return names
