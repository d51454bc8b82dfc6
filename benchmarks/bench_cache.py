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

The measuring code is ``fbhelpers.bench.scale`` (also ``python -m fbhelpers bench scale``, as rows of the benchmark
CSV); this script prints it as the two tables of
docs/performance.md#the-image-cache-speed-and-memory.
"""
from __future__ import annotations

import argparse
import csv
import statistics
from pathlib import Path

from fbhelpers.bench.scale import MiB, measure_all, settings  # the measurements live in the library (bench scale)


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
    args = parser.parse_args()
    row_counts = settings(tiny=False)["row_counts"]
    if args.quick:
        args.n_images, args.size, args.repeats, args.steps = 24, 32, 1, 3
        row_counts = (1_000, 100_000)
    times, memory = measure_all(args.n_images, args.size, args.repeats, args.steps, row_counts)
    rows = report(args.n_images, args.size, times, memory)
    if args.out:
        with open(args.out, "w", newline="") as fh:
            csv.writer(fh).writerows([("measure", "setting", "value", "unit"), *rows])


if __name__ == "__main__":
    main()
