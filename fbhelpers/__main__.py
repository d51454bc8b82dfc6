"""Command line: ``python -m fbhelpers COMMAND``, COMMAND one of run, demo, check-data, make-fixture-root, cache,
predict, render-faces, export-model, bench, refresh-references (docs/design.md#modules).

    python -m fbhelpers run --profile demo [--only 02,05] [--out runs/NAME] [-p KEY VALUE ...] [--jobs 2]
    python -m fbhelpers demo [--profile demo]            # run + where the summary is + a short table
    python -m fbhelpers check-data [--data-root PATH] [--manifest data_manifest.yaml] [--strict] [--record]
    python -m fbhelpers make-fixture-root DIR            # tiny copies of every database, official layouts
    python -m fbhelpers cache build NAME --root DIR --size 112 [--workers N] [--cache DIR] [--strict]
    python -m fbhelpers predict MODEL --images DIR_OR_GLOB_OR_CSV --out predictions.csv [--device auto] [--score]
    python -m fbhelpers render-faces DIR [--n 300] [--size 48] [--seed 0]   # twin faces + labels.csv
    python -m fbhelpers export-model CHECKPOINT OUT [--meta KEY VALUE ...]   # a fit checkpoint -> a model file
    python -m fbhelpers bench [NAME ...] [--device auto] [--out runs/bench] [--tiny] [--repeats N]
    python -m fbhelpers refresh-references [--profile smoke]
"""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import Any, Sequence

import pandas as pd
import yaml

from . import bench, datasets, manifest, paths, runner
from .files import atomic_path

# The commands that predict, render or run notebooks import what they need (models, inference, synthetic, profiles)
# when they run, so that `check-data` and `--help` import no torch (tests/test_layering.py checks it).


def parse_value(text: str) -> Any:
    """A ``-p`` value as a YAML scalar ("50" -> 50, "0.1" -> 0.1, "true" -> True, "null" -> None, "[1, 2]" ->
    list), plus "1e-3" -> 0.001 (YAML 1.1 reads that as a string); anything else stays a string."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _profile(name: str) -> str:
    """A ``--profile`` value: a name of ``fbhelpers.profiles.PROFILES``."""
    from .profiles import PROFILES

    if name not in PROFILES:
        raise argparse.ArgumentTypeError(f"invalid choice: {name!r} (choose from {', '.join(sorted(PROFILES))})")
    return name


def _add_run_options(parser: argparse.ArgumentParser, default_profile: str) -> None:
    parser.add_argument("--profile", default=default_profile, type=_profile,
                        help="a profile of fbhelpers.profiles.PROFILES (default: %(default)s)")
    parser.add_argument("--only", default=None, help="comma-separated notebook prefixes, e.g. 02,05")
    parser.add_argument("--out", default=None, help="output directory (default runs/<profile>)")
    parser.add_argument("-p", "--param", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"),
                        help="notebook parameter or profile setting (values parsed as YAML), e.g. -p steps 50")
    parser.add_argument("--notebooks-dir", default="notebooks")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars or status lines")
    parser.add_argument("--jobs", type=int, default=0,
                        help="notebooks run at once, each on cores/jobs threads (default 0: one per core, at most 2)")


def _run(args: argparse.Namespace) -> runner.SuiteResult:
    only = [p for p in args.only.split(",") if p.strip()] if args.only else None
    params = {key: parse_value(value) for key, value in args.param}
    return runner.run_suite(profile=args.profile, only=only, out=args.out, params=params,
                            notebooks_dir=args.notebooks_dir, progress=not args.no_progress, jobs=args.jobs)


def _short_table(result: runner.SuiteResult, n_metrics: int = 3) -> str:
    """notebook | status | seconds | first few recorded numbers, as aligned plain text."""
    rows = [("notebook", "status", "time", "metrics (first recorded)")]
    for nb in result.notebooks:
        flat = runner.flatten_metrics(nb.metrics)
        shown = ", ".join(f"{k}={runner.format_value(v)}" for k, v in list(flat.items())[:n_metrics])
        more = f" (+{len(flat) - n_metrics})" if len(flat) > n_metrics else ""
        rows.append((nb.name, "ok" if nb.ok else "FAILED", f"{nb.seconds:.1f}s", shown + more))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r[:3], widths)) + "  " + r[3] for r in rows)


def cmd_run(args: argparse.Namespace) -> int:
    result = _run(args)
    print(f"summary: {result.summary_md}")
    return result.exit_code


def cmd_demo(args: argparse.Namespace) -> int:
    result = _run(args)
    print()
    print(_short_table(result))
    print(f"\nsummary: {result.summary_md}")
    return result.exit_code


def _check_line(check: manifest.DatasetCheck, width: int) -> str:
    """One dataset's line of ``check-data``: status, folder, counts against the manifest, notebooks it serves."""
    head = f"{check.name.ljust(width)}  {check.status.ljust(10)}"
    if check.rows is None:
        return f"{head}  {check.folder or ''}"
    expected = f" (the release has ~{check.expected_rows:,})" if check.expected_rows else ""
    uses = f"; used by {', '.join(nb[:2] for nb in check.notebooks)}" if check.notebooks else ""
    return (f"{head}  {check.folder}: {check.read:,} label rows read{expected}, {check.rows:,} kept, "
            f"{check.images:,} images, {check.no_image:,} label rows without an image{uses}")


def cmd_check_data(args: argparse.Namespace) -> int:
    manifest_path = paths.find_repo_path(args.manifest)
    try:
        root = paths.data_root(args.data_root)
        print(f"data root: {root}")
    except (ValueError, FileNotFoundError) as err:
        root = None
        print(f"data root: {err}")
    checks = manifest.check_data(manifest_path, root)
    width = max((len(c.name) for c in checks), default=0)
    for check in checks:
        print(_check_line(check, width))
        for problem in check.problems:
            print(f"{'':{width}}    {problem}")
    n_found = sum(c.usable for c in checks)
    print(f"{n_found}/{len(checks)} datasets found")
    missing = manifest.missing_for_notebooks(checks)
    print("paper profile: " + ", ".join(f"{nb} {'needs ' + ', '.join(names) if names else 'ready'}"
                                        for nb, names in missing.items()))
    if args.record:
        if root is None:
            raise ValueError("--record needs a data root")
        path, n = manifest.record_lock(manifest_path, root)
        print(f"recorded the sha256 of {n} annotation files in {path}")
    return 1 if args.strict and n_found < len(checks) else 0


def cmd_make_fixture_root(args: argparse.Namespace) -> int:
    root = datasets.make_fixture_root(args.directory, seed=args.seed)
    print(f"wrote tiny copies of {len(datasets.NAMES)} databases in their official layouts under {root}")
    print(f"try: python -m fbhelpers check-data --data-root {root}")
    return 0


def cmd_cache_build(args: argparse.Namespace) -> int:
    table = datasets.load(args.name, args.root, **{key: parse_value(value) for key, value in args.option})
    crop = "box" if args.crop and datasets.common.has_boxes(table) else None
    packed = datasets.cache.cache_table(table, args.root, args.size, args.cache, crop=crop, workers=args.workers,
                                        strict=args.strict, progress=not args.no_progress)
    print(f"{args.name}: {len(table):,} label rows; {packed.stats.summary()}; cache {packed.folder}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    """Predict every image of ``--images`` with a model file; write the table (atomically) and one summary line."""
    from . import inference, models

    if args.score and not str(args.images).endswith(".csv"):
        raise ValueError(f"--score needs --images to be a CSV holding the labels, got {args.images!r}")
    model = models.load(args.model)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table = inference.predict_table(model, args.images, recursive=args.recursive,
                                        batch_size=args.batch_size, device=args.device, strict=args.strict,
                                        progress=False if args.no_progress else None)
    for warning in caught:
        print(f"warning: {warning.message}", file=sys.stderr)
    out = Path(args.out)
    with atomic_path(out) as tmp:
        table.to_csv(tmp, index=False)
    print(f"wrote {len(table):,} rows to {out}; skipped {len(table.attrs['skipped']):,} unreadable files; "
          f"model {args.model}; device {table.attrs['device']}")
    if args.score:
        labels = pd.read_csv(args.images)
        scores = inference.score_predictions(table, labels, model.tasks, model.thresholds)
        headline = scores[scores["metric"].isin(["accuracy", "macro_f1", "mean_f1", "mean_ccc"])]
        print(f"scores against the labels of {args.images}:")
        print("\n".join(f"  {r.task}/{r.metric}: {r.value:.4f}" for r in headline.itertuples()))
    return 0


def cmd_render_faces(args: argparse.Namespace) -> int:
    """Twin faces with their labels (``synthetic.write_faces``): a folder to try ``predict`` on."""
    from . import synthetic

    table = synthetic.write_faces(args.directory, n=args.n, size=args.size, channels=args.channels, seed=args.seed)
    print(f"wrote {len(table):,} faces ({args.size} px) to {Path(args.directory) / 'faces'} and their true labels to "
          f"{Path(args.directory) / 'labels.csv'}")
    return 0


def cmd_export_model(args: argparse.Namespace) -> int:
    """A ``train.fit`` checkpoint -> a model file (``models.save_from_checkpoint``), checked by loading it back."""
    from . import models

    path = models.save_from_checkpoint(args.checkpoint, args.out,
                                       **{key: parse_value(value) for key, value in args.meta})
    model = models.load(path)
    tasks = ", ".join(t.name for t in model.tasks)
    print(f"wrote {path}: {model.backbone_name}, tasks {tasks}, input {model.input_size[0]}x{model.input_size[1]}, "
          f"{len(model.couplings)} couplings (from {args.checkpoint})")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    """The benchmarks of ``fbhelpers.bench`` (all by default): a table each, ``OUT/bench.csv``."""

    try:
        names = bench.resolve_names(args.names)
    except ValueError as err:
        print(f"bench: {err}", file=sys.stderr)
        return 2
    _, failed = bench.run_benchmarks(names, device=args.device, out=args.out, tiny=args.tiny, repeats=args.repeats)
    return 1 if failed else 0


def cmd_refresh_references(args: argparse.Namespace) -> int:
    path = Path(args.references or paths.find_repo_path(Path("tests") / "references") / f"{args.profile}.json")
    old = runner.load_references(path)
    result = _run(args)
    fresh = {nb.name: nb.metrics for nb in result.notebooks if nb.ok}
    suite = None if args.only else [nb.name for nb in result.notebooks]
    new, changes = runner.update_references(old, fresh, notebooks=suite)
    runner.write_references(path, new)
    print("\n".join(changes) if changes else "no changes")
    print(f"wrote {path}")
    if not result.ok:
        print("references of failed notebooks were kept:\n" + result.failure_report(), file=sys.stderr)
    return result.exit_code


def build_parser() -> argparse.ArgumentParser:
    usage_lines = "\n".join(line for line in __doc__.splitlines() if line.startswith("    python -m"))
    parser = argparse.ArgumentParser(
        prog="python -m fbhelpers", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run the fbhelpers notebook suite, check the real datasets, predict with a saved model, run the "
                    "benchmarks.",
        epilog="examples:\n" + usage_lines)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="execute the notebooks, write runs/NAME/")
    _add_run_options(run, "demo")
    run.set_defaults(func=cmd_run)
    demo = sub.add_parser("demo", help="run, then print where the summary is and a short table")
    _add_run_options(demo, "demo")
    demo.set_defaults(func=cmd_demo)
    check = sub.add_parser("check-data", help="which datasets of data_manifest.yaml are under the data root")
    check.add_argument("--data-root", default=None, help="default: $FB_DATA_ROOT")
    check.add_argument("--manifest", default="data_manifest.yaml")
    check.add_argument("--strict", action="store_true", help="exit 1 unless every dataset is found")
    check.add_argument("--record", action="store_true",
                       help=f"write the sha256 of the annotation files present to DATA_ROOT/{manifest.LOCK}")
    check.set_defaults(func=cmd_check_data)
    fixture = sub.add_parser("make-fixture-root",
                             help="write tiny copies of every database in its official layout (a test data root)")
    fixture.add_argument("directory")
    fixture.add_argument("--seed", type=int, default=0)
    fixture.set_defaults(func=cmd_make_fixture_root)
    cache = sub.add_parser("cache", help="the packed image cache of a dataset")
    cache_sub = cache.add_subparsers(dest="action", required=True)
    build = cache_sub.add_parser("build", help="decode, crop and resize every image of a dataset once (resumable)")
    build.add_argument("name", choices=datasets.NAMES)
    build.add_argument("--root", required=True, help="the dataset's own folder, e.g. DATA/AffectNet")
    build.add_argument("--size", type=int, default=112, help="image side in pixels (the notebooks' image_size)")
    build.add_argument("--workers", type=int, default=None, help="decoding processes (default: the cores, <= 8)")
    build.add_argument("--cache", default=None, help="cache folder (default $FBHELPERS_CACHE or ~/.cache/fbhelpers)")
    build.add_argument("--strict", action="store_true", help="stop at the first image that does not decode")
    build.add_argument("--no-crop", dest="crop", action="store_false", help="ignore face boxes (AffectNet)")
    build.add_argument("-o", "--option", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"),
                       help="a loader option (values parsed as YAML), e.g. -o images '{subject}/{frame:05d}.jpg'")
    build.add_argument("--no-progress", action="store_true")
    build.set_defaults(func=cmd_cache_build)
    predict = sub.add_parser("predict", help="a model file's predictions on aligned face crops, as a CSV")
    predict.add_argument("model", help="a model file (models.save, export-model)")
    predict.add_argument("--images", required=True,
                         help="a folder of images, a glob pattern, or a CSV with a 'path' column (relative to it)")
    predict.add_argument("--out", required=True, help="the CSV to write (one row per image)")
    predict.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:1, ...")
    predict.add_argument("--batch-size", type=int, default=64)
    predict.add_argument("--no-recursive", dest="recursive", action="store_false",
                         help="only the folder's own files, not its sub-folders")
    predict.add_argument("--strict", action="store_true", help="stop at the first file that does not decode")
    predict.add_argument("--no-progress", action="store_true")
    predict.add_argument("--score", action="store_true",
                         help="--images is a CSV that also holds labels (canonical columns): print the scores")
    predict.set_defaults(func=cmd_predict)
    render = sub.add_parser("render-faces", help="twin faces and their true labels (faces/*.png, labels.csv)")
    render.add_argument("directory")
    render.add_argument("--n", type=int, default=300)
    render.add_argument("--size", type=int, default=48, help="pixels; use the model's input size")
    render.add_argument("--channels", type=int, default=3, choices=(1, 3))
    render.add_argument("--seed", type=int, default=0)
    render.set_defaults(func=cmd_render_faces)
    export = sub.add_parser("export-model", help="turn a train.fit checkpoint (last.pt) into a model file")
    export.add_argument("checkpoint")
    export.add_argument("out")
    export.add_argument("--meta", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"),
                        help="metadata stored in the file (values parsed as YAML), e.g. --meta profile paper")
    export.set_defaults(func=cmd_export_model)
    bench_cmd = sub.add_parser("bench", help="the benchmarks (candidates interleaved, medians): a table each, a CSV")
    bench_cmd.add_argument("names", nargs="*", metavar="NAME",
                           help=f"benchmarks to run (default: all): {', '.join(bench.BENCHMARKS)}")
    bench_cmd.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:1, ...")
    bench_cmd.add_argument("--out", default="runs/bench", help="folder of bench.csv (default runs/bench)")
    bench_cmd.add_argument("--tiny", action="store_true", help="tiny sizes: proves the code runs, measures nothing")
    bench_cmd.add_argument("--repeats", type=int, default=0, help="timed rounds (default: each benchmark's own)")
    bench_cmd.set_defaults(func=cmd_bench)
    refresh = sub.add_parser("refresh-references", help="run the suite and rewrite tests/references/<profile>.json")
    _add_run_options(refresh, "smoke")
    refresh.add_argument("--references", default=None, help="default tests/references/<profile>.json")
    refresh.set_defaults(func=cmd_refresh_references)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (non-zero when a notebook fails or the input is wrong)."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, KeyError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
