"""The reverse case: scarce expression labels, plentiful AUs (docs/method.md#where-coupling-matters;
P1 §3.2 / P2 §3, DM attributes -> class).

    python benchmarks/reverse_coupling.py        # 3 seeds x (MT, co-annotation, DM one way / the other / both)
    python benchmarks/reverse_coupling.py --steps 100 --seeds 0 --out runs/reverse_quick

SynthFaces `paper` regime, `scarce_expr` preset: the AffectNet-like source has 300 faces and never labels *fear*
or *disgust*; the AU sources are large (4,000 EmotioNet-like, 1,500 DISFA-like faces). Only a coupling can tell the
expression head what a fearful or disgusted face looks like: attributes -> class (the expression a face's AUs imply,
matched to the expression head) is the direction made for it; class -> attributes teaches the AU head instead.

Question: does DM attributes -> class (alone, or both directions) lift expression recall on the two never-labelled
classes and expression accuracy over plain MT, seed by seed? Soft co-annotation does the same with labels (an
AU-labelled face gets the expression target its AUs imply) and is run beside it. Prints mean ± sd over seeds and
the paired differences against MT; writes results.csv, recall.csv and summary.csv under --out. The same network and
budget as benchmarks/compare_coupling.py (cnn4 8-16-32-64 with a 3 x 3 grid, one torch thread).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from fbhelpers.experiments import ABLATIONS, compare_coupling, largest_first_quota, per_seed
from fbhelpers.synthetic import face_study
from fbhelpers.tasks import EXPRESSIONS
from fbhelpers.train import predict

VARIANTS = {"mt": "MT", "mt_coann": "MT + soft co-annotation", "mt_dm": "MT + DM class → AU",
            "mt_dm_attr": "MT + DM AU → class", "mt_dm_both": "MT + DM both ways"}
COLUMNS = {"expr_accuracy": ("expr", "accuracy"), "expr_uar": ("expr", "uar"), "au_mean_f1": ("au", "mean_f1")}


def unlabelled_recall(models: dict, study, classes: list[str]) -> pd.DataFrame:
    """Recall of each never-labelled class over every test set, per (variant, seed)."""
    codes = [EXPRESSIONS.index(c) for c in classes]
    rows = []
    for (variant, seed, _), model in models.items():
        hits = total = 0
        for src in study.split("test").values():
            truth = src.table["expr"].to_numpy(dtype=float, na_value=np.nan)
            rows_of = np.isin(truth, codes)
            if rows_of.any():
                pred = predict(model, src.rows(np.flatnonzero(rows_of)), device="cpu")["expr"].argmax(axis=1)
                hits += int((pred == truth[rows_of]).sum())
                total += int(rows_of.sum())
        rows.append({"variant": variant, "seed": seed, "recall_unlabelled_classes": hits / max(total, 1)})
    return pd.DataFrame(rows).set_index(["variant", "seed"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=48)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="runs/reverse_coupling")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    study = face_study(regime="paper", preset="scarce_expr", size=args.size, seed=0)
    never = list(study.info["unlabelled_classes"])
    print(f"training faces per source: { {n: len(s.subset('train')) for n, s in study.sources.items()} }; "
          f"expressions never labelled: {never}")
    quota = largest_first_quota(study.split("train"), 32)
    start = time.perf_counter()
    comparison = compare_coupling(study, variants=args.variants.split(","),
                                  seeds=[int(s) for s in args.seeds.split(",")], steps=args.steps, quota=quota,
                                  lr=5e-3, configs=ABLATIONS, keep_models=True,
                                  backbone_kw={"widths": (8, 16, 32, 64), "pool": 3}, channels_last=True,
                                  augment=False, progress=False)
    results, models = comparison.results, comparison.models
    wall = time.perf_counter() - start
    results.to_csv(out / "results.csv", index=False)
    scores = per_seed(results, COLUMNS).join(unlabelled_recall(models, study, never))
    scores.to_csv(out / "recall.csv")
    summary = scores.groupby(level="variant", sort=False).agg(["mean", "std"])
    summary.to_csv(out / "summary.csv")
    pd.set_option("display.width", 200)
    print(f"\n== mean ± sd over seeds ({wall / 60:.1f} min) ==")
    print(summary.rename(index=VARIANTS).round(3).to_string())
    for variant in [v for v in scores.index.unique("variant") if v != "mt"]:
        diff = scores.loc[variant] - scores.loc["mt"]
        print(f"\n== {VARIANTS.get(variant, variant)} - MT, per seed ==\n{diff.round(3).to_string()}")
    print(f"\nwrote {out}/results.csv, recall.csv, summary.csv")


if __name__ == "__main__":
    main()
