"""Generation speed of the SynthFaces twin (fbhelpers.synthetic.faces) on one CPU core, numpy only.

Run: ``python benchmarks/bench_synthetic.py [--size 64] [--n 4096] [--repeats 7] [--channels 3]``. Prints
images/s for rendering alone (labels and nuisance given) and for the whole story (labels + nuisance + rendering):
the best of ``--repeats`` interleaved runs (a shared virtual core is noisy; the best run is the machine's speed)
and the median. The process is pinned to one core and BLAS / OpenMP pools to one thread before numpy loads; torch is
never used (it is only imported as a dependency of ``fbhelpers.relatedness``).
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"
if hasattr(os, "sched_setaffinity"):
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})

import argparse  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from fbhelpers.synthetic.faces import make_faces, render_faces, sample_labels, sample_nuisance  # noqa: E402


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--n", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--channels", type=int, default=3)
    args = parser.parse_args()
    labels, nuisance = sample_labels(args.n, seed=0), sample_nuisance(args.n, seed=0)
    jobs = {"labels + nuisance + render": lambda: make_faces(args.n, size=args.size, channels=args.channels, seed=0),
            "render": lambda: render_faces(labels, nuisance, args.size, args.channels)}
    for fn in jobs.values():  # warm-up
        fn()
    times = {name: [] for name in jobs}
    for _ in range(args.repeats):  # interleaved, so that both see the same machine
        for name, fn in jobs.items():
            times[name].append(timed(fn))
    kind = "RGB" if args.channels == 3 else "grey"
    figures = "; ".join(f"{name} {args.n / min(t):,.0f} images/s (median {args.n / np.median(t):,.0f})"
                        for name, t in times.items())
    print(f"SynthFaces {args.size} px {kind}, n={args.n}, 1 core, best of {args.repeats}: {figures}")


if __name__ == "__main__":
    main()
