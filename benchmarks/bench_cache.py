"""Packed image cache: build speed with 1 and 2 worker processes, and the trainer's peak memory on a 1,000,000-row
versus a 10,000-row table over the same cached images (memory must not grow with the rows).

Run: ``python benchmarks/bench_cache.py [--n-images 3000] [--size 112] [--repeats 3] [--steps 50] [--out FILE.csv]``
(``--quick``: 24 images, 32 px, 1 repeat, 3 steps, 1,000 vs 100,000 rows; for a smoke test).

1. Writes ``--n-images`` seeded JPEGs (sides 256-512 px, smooth colour fields plus noise, quality 90) into a temporary
   folder, then builds the cache at ``--size`` px with 1 and 2 workers, interleaved, ``--repeats`` times each (a fresh
   cache folder every time; a tiny build first starts the fork server, so its one-off start is not timed). Reports
   the median images/s per worker count and per worker.
2. For each row count, a fresh Python process builds the table (rows repeat the images; one ``expr`` label column),
   opens the cache through ``image_source`` (no decoding) and runs ``train.fit`` (CNN4, ``--steps`` steps, quota 32,
   CPU). It reports the table's own size (pandas, deep), RSS after building the table and the peak RSS during
   training (``VmHWM`` of ``/proc/self/status``, reset after the table is built through ``/proc/self/clear_refs``),
   so the training growth can be compared across row counts. Materialising the images would need
   ``rows * size * size * 3`` bytes (37.6 GB for 1,000,000 rows at 112 px).
"""
from __future__ import annotations

import argparse
import csv
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

MiB = 2**20


def write_jpegs(folder: Path, n: int, seed: int = 0) -> list[str]:
    """``n`` seeded JPEGs with random sides in 256..512 px: an upsampled random colour field plus noise."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    names = []
    for i in range(n):
        w, h = (int(s) for s in rng.integers(256, 513, 2))
        base = Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).resize((w, h), Image.BICUBIC)
        pixels = np.asarray(base, dtype=np.int16) + rng.normal(0, 8, (h, w, 1)).astype(np.int16)
        names.append(f"{i:05d}.jpg")
        Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(folder / names[-1], quality=90)
    return names


def time_builds(names: list[str], root: Path, size: int, repeats: int, work: Path) -> dict[int, list[float]]:
    """Seconds of every build, per worker count, interleaved; every build in a fresh cache folder."""
    from fbhelpers.datasets.cache import build_cache

    build_cache(names[:8], root, 8, work / "warm-up", workers=2, chunk=2, progress=False)  # starts the fork server
    times: dict[int, list[float]] = {1: [], 2: []}
    for rep in range(repeats):
        for workers in times:
            folder = work / f"build-{workers}-{rep}"
            start = time.perf_counter()
            packed = build_cache(names, root, size, folder, workers=workers, progress=False)
            times[workers].append(time.perf_counter() - start)
            assert packed.stats.decoded == len(names), packed.stats.summary()
            del packed
            if rep < repeats - 1 or workers != 2:
                shutil.rmtree(folder)
    return times


def status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def measure(rows: int, root: Path, size: int, cache: Path, steps: int) -> dict[str, float]:
    """In this (fresh) process: table of ``rows`` rows -> ``image_source`` -> ``fit``; RSS figures in MiB."""
    import pandas as pd

    from fbhelpers import train
    from fbhelpers.datasets.cache import image_source
    from fbhelpers.models import MultiHeadNet
    from fbhelpers.tasks import EXPR

    names = sorted(p.name for p in root.glob("*.jpg"))
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
    done = subprocess.run([sys.executable, __file__, "--measure", str(rows), "--root", str(root), "--size", str(size),
                           "--cache", str(cache), "--steps", str(steps)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"memory run with {rows} rows failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def report(n: int, size: int, times: dict[int, list[float]], memory: list[dict[str, float]]) -> list[tuple]:
    """Print the tables; return the CSV rows ``(measure, setting, value, unit)``."""
    out = []
    print(f"cache build: {n:,} JPEGs (256-512 px, q90) -> {size} px, median of {len(times[1])} interleaved runs")
    print(f"{'workers':>8} {'images/s':>10} {'per worker':>11} {'median s':>9}")
    for workers, t in times.items():
        rate = n / statistics.median(t)
        print(f"{workers:>8} {rate:>10,.0f} {rate / workers:>11,.0f} {statistics.median(t):>9.2f}")
        out += [("build", f"workers={workers}", round(rate, 1), "images/s"),
                ("build", f"workers={workers} per worker", round(rate / workers, 1), "images/s")]
    print(f"\ntrainer memory (fit, CNN4, {size} px, quota 32; MiB)")
    print(f"{'rows':>10} {'table':>7} {'RSS after table':>16} {'peak during fit':>16} {'fit growth':>11} "
          f"{'file-backed':>12} {'steps/s':>8}")
    for m in memory:
        growth = m["peak_fit_mib"] - m["rss_table_mib"]
        print(f"{m['rows']:>10,} {m['table_mib']:>7.1f} {m['rss_table_mib']:>16.1f} {m['peak_fit_mib']:>16.1f} "
              f"{growth:>11.1f} {m['rss_file_end_mib']:>12.1f} {m['steps_per_s']:>8.2f}")
        out += [("memory", f"rows={m['rows']} {k}", round(v, 2), "MiB" if k.endswith("mib") else "")
                for k, v in m.items() if k != "rows"]
    small, big = memory
    extra = (big["peak_fit_mib"] - big["rss_table_mib"]) - (small["peak_fit_mib"] - small["rss_table_mib"])
    dense = big["rows"] * size * size * 3 / MiB
    print(f"\nfit growth {big['rows']:,} rows minus {small['rows']:,} rows: {extra:+.1f} MiB "
          f"(materialised images would be {dense:,.0f} MiB); the table itself: "
          f"{big['table_mib'] - small['table_mib']:+.1f} MiB")
    out.append(("memory", "fit growth difference", round(extra, 2), "MiB"))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-images", type=int, default=3000)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--out", type=Path, help="CSV of the figures (measure, setting, value, unit)")
    parser.add_argument("--quick", action="store_true", help="tiny run for a smoke test")
    parser.add_argument("--measure", type=int, help=argparse.SUPPRESS)  # internal: one memory run, in a subprocess
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--cache", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure is not None:
        print(json.dumps(measure(args.measure, args.root, args.size, args.cache, args.steps)))
        return
    if args.quick:
        args.n_images, args.size, args.repeats, args.steps = 24, 32, 1, 3
    row_counts = (1_000, 100_000) if args.quick else (10_000, 1_000_000)
    with tempfile.TemporaryDirectory(prefix="bench_cache_") as tmp:
        root, work = Path(tmp) / "images", Path(tmp) / "caches"
        root.mkdir()
        start = time.perf_counter()
        names = write_jpegs(root, args.n_images)
        print(f"wrote {len(names):,} JPEGs in {time.perf_counter() - start:.1f} s")
        times = time_builds(names, root, args.size, args.repeats, work)
        cache = work / f"build-2-{args.repeats - 1}"
        memory = [run_measure(rows, root, args.size, cache, args.steps) for rows in row_counts]
        rows = report(len(names), args.size, times, memory)
    if args.out:
        with open(args.out, "w", newline="") as fh:
            csv.writer(fh).writerows([("measure", "setting", "value", "unit"), *rows])


if __name__ == "__main__":
    main()
