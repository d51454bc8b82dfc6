"""Generation speed of the SynthFaces twin (fbhelpers.synthetic.faces) on one CPU core, numpy only.

Run: ``python benchmarks/bench_synthetic.py [--size 64] [--n 4096] [--repeats 3]``. Prints images/s for
rendering alone (labels and nuisance given) and for the whole story (labels + nuisance + rendering), best of
``--repeats``. The process is pinned to one core and BLAS / OpenMP pools to one thread before numpy loads; torch is
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

from fbhelpers.synthetic.faces import make_faces, render_faces, sample_labels, sample_nuisance  # noqa: E402


def best_rate(fn, n: int, repeats: int) -> float:
    """Images per second of ``fn()`` (which makes ``n`` images), best of ``repeats`` timed runs after a warm-up."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return n / min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--n", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    labels, nuisance = sample_labels(args.n, seed=0), sample_nuisance(args.n, seed=0)
    render = best_rate(lambda: render_faces(labels, nuisance, args.size), args.n, args.repeats)
    story = best_rate(lambda: make_faces(args.n, size=args.size, seed=0), args.n, args.repeats)
    print(f"SynthFaces {args.size} px RGB, n={args.n}, 1 core: render {render:,.0f} images/s; "
          f"labels + nuisance + render {story:,.0f} images/s")


if __name__ == "__main__":
    main()
