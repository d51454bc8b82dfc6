"""ST vs MT vs MT + coupling on SynthFaces (docs/method.md#measuring-the-claims, docs/method.md#where-coupling-matters;
P0 §5, P1 §5): prints the table, writes CSVs.

    python benchmarks/compare_coupling.py                      # scarce_au, 48 px, cnn4, 3 seeds (~15 CPU min)
    python benchmarks/compare_coupling.py --steps 100 --seeds 0 --out runs/compare_quick

CPU-sized [choice]s: a narrow cnn4 (8-16-32-64) that keeps a 3 x 3 layout before the heads (``pool=3``: with
a global average pool the AU head learns far slower, and the expression head stays too weak for its
distribution-matching targets to cross the 0.5 F1 threshold), 800 steps at lr 5e-3 without augmentation, 32 images per step
from the large expression source and 8 from each small one, one torch thread (on a small shared CPU two threads
spin-wait and run several times slower) and channels_last (faster CPU convolutions).

Question: does MT + distribution matching beat MT without coupling on AU mean F1, above all on the AUs no
training source labels, by more than the spread over seeds?
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd
import torch

from fbhelpers.experiments import (
    ABLATIONS, compare_coupling, comparison_table, delta_m_table, largest_first_quota, negative_transfer,
    paired_difference,
)
from fbhelpers.synthetic import face_study


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="scarce_au")
    ap.add_argument("--regime", default="paper")
    ap.add_argument("--size", type=int, default=48)
    ap.add_argument("--n-scale", type=float, default=1.0)
    ap.add_argument("--steps", type=int, default=800)
    ap.add_argument("--quota", type=int, default=8, help="images per step from each small source")
    ap.add_argument("--quota-largest", type=int, default=32, help="images per step from the largest source")
    ap.add_argument("--lr", type=float, default=5e-3)
    ap.add_argument("--widths", default="8,16,32,64", help="cnn4 channel widths")
    ap.add_argument("--pool", type=int, default=3, help="cnn4 output grid (1 = global average pool)")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--variants", default="st,mt,mt_coann,mt_dm,mt_both",
                    help="experiments.VARIANTS keys, 'st' or experiments.ABLATIONS keys (e.g. mt_coann_hard,mt_dm_kl)")
    ap.add_argument("--dm-weight", type=float, default=1.0)
    ap.add_argument("--dm-reduction", default="mean", choices=("mean", "sum"))
    ap.add_argument("--augment", type=int, default=0, help="1 = default augmentation, 0 = none (short budget)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch intra-op threads; 1 is fastest on a small shared CPU (2 threads spin-wait)")
    ap.add_argument("--out", default="runs/compare_coupling")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    study = face_study(regime=args.regime, preset=args.preset, size=args.size, n_scale=args.n_scale, seed=0)
    print(f"study {args.regime}/{args.preset} at {args.size} px: "
          + ", ".join(f"{n} {len(s.subset('train'))}+{len(s.subset('test'))}" for n, s in study.sources.items()))
    print(f"unlabelled AUs (no training source): {list(study.info['unlabelled_aus'])}")
    quota = largest_first_quota(study.split("train"), args.quota_largest, small=args.quota)
    start, cpu = time.perf_counter(), time.process_time()
    results = compare_coupling(
        study, variants=args.variants.split(","), seeds=[int(s) for s in args.seeds.split(",")],
        steps=args.steps, quota=quota, lr=args.lr,
        backbone_kw={"widths": tuple(int(w) for w in args.widths.split(",")), "pool": args.pool},
        loss={"dm_weight": args.dm_weight, "dm_reduction": args.dm_reduction}, configs=ABLATIONS,
        channels_last=True, augment=bool(args.augment),
    ).results
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    results.to_csv(out / "results.csv", index=False)
    pd.Series({f"{v}/{s}": t for (v, s), t in results.attrs["seconds"].items()}).to_csv(out / "seconds.csv")

    pd.set_option("display.width", 200)
    pd.set_option("display.max_columns", 20)
    table = comparison_table(results)
    table.to_csv(out / "table.csv")
    print(f"\n== mean ± std over seeds ({wall / 60:.1f} min wall, {cpu / 60:.1f} min CPU) ==\n{table.to_string()}")
    au = comparison_table(results[results["task"] == "au"], metrics=("mean_f1", "mean_f1_labelled",
                                                                      "mean_f1_unlabelled"))
    print(f"\n== AU F1, labelled vs unlabelled AUs ==\n{au.to_string()}")
    if "st" in set(results["variant"]):
        dm = delta_m_table(results)
        dm.to_csv(out / "delta_m.csv")
        print(f"\n== Δm over single-task (accuracy, AU mean F1, VA mean CCC) ==\n{dm.to_string()}")
        nt = negative_transfer(results, metrics=("accuracy", "mean_f1", "mean_ccc"))
        nt.to_csv(out / "negative_transfer.csv", index=False)
        bad = nt[nt["negative"] & nt["beyond_spread"]]
        print(f"\n== negative transfer beyond the seed spread ({len(bad)} of {len(nt)}) ==\n{bad.to_string()}")
    verdict = {}
    for variant in [v for v in ("mt_dm", "mt_coann", "mt_both") if v in set(results["variant"])]:
        for metric in ("mean_f1", "mean_f1_unlabelled", "mean_f1_labelled"):
            d = paired_difference(results, variant, "mt", metric, task="au")
            print(f"\n== {variant} - mt, AU {metric} (per seed) ==\n{d.to_string(index=False)}")
            verdict[f"{variant}-mt/{metric}"] = d.set_index("source")[["mean_diff", "std_diff"]].to_dict("index")
    (out / "verdict.json").write_text(json.dumps({"wall_s": wall, "cpu_s": cpu, "quota": quota, "args": vars(args), "diff": verdict}, indent=1))
    print(f"\nwrote {out}/results.csv, table.csv, delta_m.csv, negative_transfer.csv, verdict.json")


if __name__ == "__main__":
    main()
