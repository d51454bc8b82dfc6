"""Benchmarks behind ``python -m fbhelpers bench`` (docs/performance.md#benchmarks).

Each benchmark is a module of this package with ``run(*, tiny=False, device="cpu", repeats=0) -> list[dict]``
(``repeats=0``: its own default); every row has the keys of :data:`ROW_KEYS`: ``benchmark``, ``case``,
``candidate``, ``metric``, ``value`` (the median), ``unit``, ``ratio`` (value / the baseline candidate's value in
the same case and metric; None for the baseline), ``goal`` (text), ``met`` (bool, None without a goal) and ``n``
(the timed repeats). Candidates are timed interleaved in one process (:mod:`fbhelpers.bench.timing`).
:func:`run_benchmarks` runs some of them, prints a table per benchmark and writes ``bench.csv`` with the machine
(:func:`machine`) in every row. Modules are imported by name only when run, so one that is missing or broken
fails alone, with a message saying so.
"""
from __future__ import annotations

import datetime as _dt
import importlib
import math
import os
import platform
import sys
import traceback
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

#: benchmark name -> module (imported lazily)
BENCHMARKS: dict[str, str] = {
    "pipeline": "fbhelpers.bench.pipeline",
    "coupling": "fbhelpers.bench.coupling",
    "syncs": "fbhelpers.bench.syncs",
    "gpu_step": "fbhelpers.bench.gpu_step",
    "scale": "fbhelpers.bench.scale",
}
#: benchmarks that measure a GPU: skipped on a CPU device unless ``tiny`` (the CPU smoke run of their code)
NEEDS_CUDA: frozenset[str] = frozenset({"gpu_step"})
ROW_KEYS: tuple[str, ...] = ("benchmark", "case", "candidate", "metric", "value", "unit", "ratio", "goal", "met",
                             "n")
MACHINE_KEYS: tuple[str, ...] = ("cpu", "cores", "gpu", "torch", "device", "date")


def resolve_names(names: Sequence[str] | None) -> list[str]:
    """The benchmarks to run, in the order given (all, in registry order, when none); ValueError listing the
    known names for an unknown one."""
    if not names:
        return list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        raise ValueError(f"unknown benchmark {', '.join(map(repr, unknown))}; known: {', '.join(BENCHMARKS)}")
    return list(dict.fromkeys(names))


def load(name: str):
    """The module of benchmark ``name``; ValueError for an unknown name, ImportError with a readable message when
    its module is not there."""
    module = BENCHMARKS[resolve_names([name])[0]]
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        if err.name == module:
            raise ImportError(f"benchmark {name!r}: its module {module} does not exist (yet)") from None
        raise


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when a CUDA device is usable, else ``cpu``; anything else unchanged."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``; ``platform.processor()`` elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def machine(device: str) -> dict[str, Any]:
    """The columns every CSV row carries: CPU model, usable cores, GPU name (``none``), torch version, device and
    the date (UTC, ISO 8601)."""
    import torch

    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 0
    gpu = "none"
    if torch.cuda.is_available():
        index = torch.device(device).index if device.startswith("cuda") else None
        gpu = torch.cuda.get_device_name(index or 0)
    return {"cpu": cpu_model(), "cores": cores, "gpu": gpu, "torch": torch.__version__, "device": device,
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}


def rows_for(benchmark: str, case: str, metric: str, unit: str, values: Mapping[str, float], *,
             baseline: str | None, n: int | Mapping[str, int], goal: str = "",
             met: Callable[[str, float, float | None], bool | None] | None = None) -> list[dict[str, Any]]:
    """Contract rows of one case and metric: one per candidate of ``values`` (candidate -> median), ``ratio`` =
    value / ``values[baseline]`` (None for the baseline itself and without a baseline); ``met(candidate, value,
    ratio)`` decides the goal (None: no verdict)."""
    base = values[baseline] if baseline is not None else None
    rows = []
    for candidate, value in values.items():
        ratio = None if base is None or candidate == baseline or not base else value / base
        verdict = met(candidate, value, ratio) if met is not None else None
        rows.append({"benchmark": benchmark, "case": case, "candidate": candidate, "metric": metric,
                     "value": float(value), "unit": unit, "ratio": ratio,
                     "goal": goal if verdict is not None else "", "met": verdict,
                     "n": n[candidate] if isinstance(n, Mapping) else int(n)})
    return rows


def check_rows(name: str, rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` as plain dicts with exactly :data:`ROW_KEYS`; ValueError naming the benchmark otherwise."""
    out = []
    for row in rows:
        missing = [k for k in ROW_KEYS if k not in row]
        if missing:
            raise ValueError(f"benchmark {name!r} returned a row without {missing}: {dict(row)}")
        out.append({k: row[k] for k in ROW_KEYS})
    return out


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        a = abs(value)
        if a >= 100:
            return f"{value:,.0f}"
        return f"{value:.3g}" if a >= 0.001 or a == 0 else f"{value:.2e}"
    return str(value)


def format_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """An aligned text table: case, candidate, metric, median (with its unit), ratio, goal, met."""
    head = ("case", "candidate", "metric", "median", "ratio", "goal", "met")
    body = [(str(r["case"]), str(r["candidate"]), str(r["metric"]),
             f"{_fmt(r['value'])} {r['unit']}".strip(), f"{r['ratio']:.2f}x" if r["ratio"] is not None else "",
             str(r["goal"] or ""), _fmt(r["met"])) for r in rows]
    widths = [max(len(line[i]) for line in (head, *body)) for i in range(len(head))]
    right = {3, 4}
    lines = ["  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(line, widths)))
             .rstrip() for line in (head, *body)]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def write_csv(path: str | Path, rows: Sequence[Mapping[str, Any]], replace: Iterable[str] = ()) -> Path:
    """Write ``rows`` (machine columns + :data:`ROW_KEYS`) to ``path``, keeping the rows already there of
    benchmarks not in ``replace`` (so ``bench pipeline`` then ``bench scale`` leaves both in the file)."""
    import pandas as pd

    from ..files import atomic_path

    path = Path(path)
    columns = [*MACHINE_KEYS, *ROW_KEYS]
    new = pd.DataFrame(list(rows), columns=columns)
    if path.is_file():
        old = pd.read_csv(path)
        devices = set(new["device"])   # a GPU run keeps the CPU rows of the same benchmarks, and back
        stale = old["benchmark"].isin(set(replace)) & old["device"].isin(devices) if "benchmark" in old else True
        old = old[~stale] if "benchmark" in old else old.iloc[:0]
        new = pd.concat([old.reindex(columns=columns), new], ignore_index=True) if len(old) else new
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        new.to_csv(tmp, index=False)
    return path


def run_benchmarks(names: Sequence[str] | None = None, *, device: str = "auto", out: str | Path = "runs/bench",
                   tiny: bool = False, repeats: int = 0, echo: Callable[[str], None] = print) -> tuple[list, list]:
    """Run the benchmarks ``names`` (all by default), print a table per benchmark and write ``out/bench.csv``.
    Returns (rows written, names that failed). A benchmark of :data:`NEEDS_CUDA` is skipped with the reason on a
    CPU device unless ``tiny``; a benchmark that raises is reported with its traceback and the others still run."""
    names = resolve_names(names)
    device = resolve_device(device)
    info = machine(device)
    echo(f"machine: {info['cpu']}, {info['cores']} cores, GPU {info['gpu']}, torch {info['torch']}, "
         f"device {device}{', tiny sizes' if tiny else ''}")
    rows: list[dict[str, Any]] = []
    ran, failed = [], []
    for name in names:
        if name in NEEDS_CUDA and not device.startswith("cuda") and not tiny:
            echo(f"\n== {name}: skipped, no CUDA device (device {device}); --tiny runs its code on CPU")
            continue
        echo(f"\n== {name}")
        try:
            module = load(name)
            got = check_rows(name, module.run(tiny=tiny, device=device, repeats=repeats))
        except Exception:  # noqa: BLE001 - one broken benchmark must not stop the others
            echo(traceback.format_exc().rstrip())
            echo(f"{name}: FAILED")
            failed.append(name)
            continue
        ran.append(name)
        echo(format_table(got) if got else "(no rows)")
        rows += [{**info, **row} for row in got]
    if ran:
        path = write_csv(Path(out) / "bench.csv", rows, replace=ran)
        echo(f"\nwrote {path} ({len(rows)} rows)")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return rows, failed
