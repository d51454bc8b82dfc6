"""Scale: the packed image cache's build rate per worker, and the trainer's peak memory on a 1,000,000-row versus
a 10,000-row table over the same cached images (memory must not grow with the rows).

1. Writes ``n_images`` seeded JPEGs (256-512 px, :func:`fbhelpers.bench.images.write_jpegs`) into a temporary
   folder and builds the cache at ``size`` px with 1 and 2 workers, interleaved, ``repeats`` times each (a fresh
   cache folder every time; a tiny build first starts the fork server, so its one-off start is not timed).
2. For each row count, a fresh Python process (``python -m fbhelpers.bench.scale --measure ROWS ...``) builds the
   table (rows repeat the images; one ``expr`` label column), opens the cache through ``image_source`` (no
   decoding) and runs ``train.fit`` (CNN4, ``steps`` steps, quota 32, CPU). It reports the table's own size
   (pandas, deep), RSS after building the table and the peak RSS during training (``VmHWM`` of
   ``/proc/self/status``, reset after the table is built through ``/proc/self/clear_refs``), so the training
   growth can be compared across row counts.

``benchmarks/bench_cache.py`` prints the same measurements as its own tables; both call the functions here.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from . import rows_for
from .images import write_jpegs

MiB = 2**20
#: fit's growth at the big table may exceed the small table's by at most this fraction (+ FLAT_MIB): "flat"
FLAT_FRACTION, FLAT_MIB = 0.05, 16.0


def time_builds(names: list[str], root: Path, size: int, repeats: int, work: Path,
                workers: tuple[int, ...] = (1, 2)) -> dict[int, list[float]]:
    """Seconds of every cache build, per worker count, interleaved; every build in a fresh cache folder (the
    last one with the most workers is kept, for the memory runs: ``work / f"build-{max}-{repeats - 1}"``)."""
    from ..datasets.cache import build_cache

    build_cache(names[:8], root, 8, work / "warm-up", workers=max(workers), chunk=2, progress=False)  # fork server
    times: dict[int, list[float]] = {w: [] for w in workers}
    for rep in range(repeats):
        for w in times:
            folder = work / f"build-{w}-{rep}"
            start = time.perf_counter()
            packed = build_cache(names, root, size, folder, workers=w, progress=False)
            times[w].append(time.perf_counter() - start)
            assert packed.stats.decoded == len(names), packed.stats.summary()
            del packed
            if rep < repeats - 1 or w != max(workers):
                shutil.rmtree(folder)
    return times


def status_kib(field: str) -> int:
    """A ``kB`` field of ``/proc/self/status`` (VmRSS, VmHWM, RssFile, ...)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def measure(rows: int, root: Path, size: int, cache: Path, steps: int) -> dict[str, float]:
    """In this (fresh) process: table of ``rows`` rows -> ``image_source`` -> ``fit``; RSS figures in MiB."""
    import pandas as pd

    from .. import train
    from ..datasets.cache import image_source
    from ..models import MultiHeadNet
    from ..tasks import EXPR

    names = sorted(p.name for p in Path(root).glob("*.jpg"))
    rss_start = status_kib("VmRSS")
    rng = np.random.default_rng(0)
    table = pd.DataFrame({"path": np.asarray(names, dtype=object)[np.arange(rows) % len(names)], "split": "train",
                          "source": "bench", "expr": pd.array(rng.integers(0, 7, rows), dtype="Int64")})
    src = image_source(table, root, size, cache, progress=False)
    assert len(src) == rows and type(src.images).__name__ == "CachedImages"
    rss_table = status_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # peak RSS := current RSS (Linux >= 4.0)
    model = MultiHeadNet((EXPR,), backbone="cnn4")
    start = time.perf_counter()
    train.fit(model, {"bench": src}, (EXPR,), steps=steps, quota=32, device="cpu", progress=False)
    seconds = time.perf_counter() - start
    return {"rows": rows, "table_mib": table.memory_usage(deep=True).sum() / MiB,
            "rss_start_mib": rss_start / 1024, "rss_table_mib": rss_table / 1024,
            "peak_fit_mib": status_kib("VmHWM") / 1024, "rss_file_end_mib": status_kib("RssFile") / 1024,
            "steps_per_s": steps / seconds}


def run_measure(rows: int, root: Path, size: int, cache: Path, steps: int) -> dict[str, float]:
    """:func:`measure` in a fresh Python process (so the peak RSS is this table's alone)."""
    done = subprocess.run([sys.executable, "-m", "fbhelpers.bench.scale", "--measure", str(rows), "--root",
                           str(root), "--size", str(size), "--cache", str(cache), "--steps", str(steps)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"memory run with {rows} rows failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def settings(tiny: bool, repeats: int = 0) -> dict[str, Any]:
    """Sizes of a full run (3,000 JPEGs at 112 px, 3 repeats, 50 steps, 10,000 vs 1,000,000 rows) or a tiny one."""
    if tiny:
        return {"n_images": 24, "size": 32, "repeats": repeats or 1, "steps": 3, "row_counts": (100, 10_000)}
    return {"n_images": 3000, "size": 112, "repeats": repeats or 3, "steps": 50, "row_counts": (10_000, 1_000_000)}


def measure_all(n_images: int, size: int, repeats: int, steps: int, row_counts: tuple[int, int],
                echo=print) -> tuple[dict[int, list[float]], list[dict[str, float]]]:
    """JPEGs -> interleaved builds -> one memory run per row count, in a temporary folder."""
    with tempfile.TemporaryDirectory(prefix="bench_scale_") as tmp:
        root, work = Path(tmp) / "images", Path(tmp) / "caches"
        start = time.perf_counter()
        names = write_jpegs(root, n_images)
        echo(f"wrote {len(names):,} JPEGs in {time.perf_counter() - start:.1f} s")
        times = time_builds(names, root, size, repeats, work)
        cache = work / f"build-2-{repeats - 1}"
        memory = [run_measure(rows, root, size, cache, steps) for rows in row_counts]
    return times, memory


def contract_rows(n_images: int, size: int, times: dict[int, list[float]],
                  memory: list[dict[str, float]]) -> list[dict[str, Any]]:
    """The measurements as rows of the benchmark contract (see :mod:`fbhelpers.bench`)."""
    case = f"cache build, {n_images:,} JPEGs 256-512 px -> {size} px"
    rate = {f"{w} worker{'s' if w > 1 else ''}": n_images / statistics.median(t) for w, t in times.items()}
    n = {f"{w} worker{'s' if w > 1 else ''}": len(t) for w, t in times.items()}
    out = rows_for("scale", case, "images/s", "images/s", rate, baseline="1 worker", n=n)
    per_worker = {k: v / int(k.split()[0]) for k, v in rate.items()}
    out += rows_for("scale", case, "images/s per worker", "images/s", per_worker, baseline="1 worker", n=n)
    small, big = memory
    growth = {f"{m['rows']:,} rows": m["peak_fit_mib"] - m["rss_table_mib"] for m in memory}
    base = f"{small['rows']:,} rows"
    allowed = FLAT_FRACTION * growth[base] + FLAT_MIB
    case = f"fit peak RSS growth, CNN4 {size} px, quota 32, table over {n_images:,} cached images"
    out += rows_for("scale", case, "fit growth", "MiB", growth, baseline=base, n=1,
                    goal=f"flat: <= {small['rows']:,}-row growth + {FLAT_FRACTION:.0%} + {FLAT_MIB:.0f} MiB",
                    met=lambda c, v, r: None if c == base else v - growth[base] <= allowed)
    for key, metric in (("peak_fit_mib", "peak RSS during fit"), ("rss_table_mib", "RSS after table"),
                        ("table_mib", "table (pandas, deep)")):
        out += rows_for("scale", case, metric, "MiB", {f"{m['rows']:,} rows": m[key] for m in memory},
                        baseline=base, n=1)
    dense = big["rows"] * size * size * 3 / MiB
    out += rows_for("scale", case, "images if materialised", "MiB", {f"{big['rows']:,} rows": dense}, baseline=None,
                    n=0)
    return out


def run(*, tiny: bool = False, device: str = "cpu", repeats: int = 0) -> list[dict[str, Any]]:
    """Cache build rate per worker count and fit's memory at two table sizes (always on CPU: what is measured
    is host memory and host decoding)."""
    s = settings(tiny, repeats)
    times, memory = measure_all(s["n_images"], s["size"], s["repeats"], s["steps"], s["row_counts"])
    return contract_rows(s["n_images"], s["size"], times, memory)


def _main() -> None:  # internal: one memory run, in a fresh process (run_measure)
    parser = argparse.ArgumentParser()
    parser.add_argument("--measure", type=int, required=True)
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--size", type=int, required=True)
    parser.add_argument("--cache", type=Path, required=True)
    parser.add_argument("--steps", type=int, required=True)
    args = parser.parse_args()
    print(json.dumps(measure(args.measure, args.root, args.size, args.cache, args.steps)))


if __name__ == "__main__":
    _main()
