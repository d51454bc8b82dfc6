"""Learnability of SynthFaces (docs/results.md#synthfaces-learnability): a small CNN vs linear models on raw pixels,
fully labelled.

    python benchmarks/learnability.py                          # 5,000 train + 2,000 test, 64 px (~6 to 9 min, one core)
    python benchmarks/learnability.py --steps 300 --no-linear --out runs/learnability_quick

Data: :func:`fbhelpers.synthetic.make_faces` with the default :class:`FaceConfig` (the generator of every
SynthFaces study), a training set and an independent test set (other seed), every image labelled with its true
expression, its 17 binary AUs and valence / arousal (no label noise; ``face_study("pair", "full")`` draws from the
same distribution but adds 10 % expression noise and 2 % AU flips to its training labels). Uniform class prior, so
the Bayes ceiling is ``bayes_ceiling(au_miss, au_spont)`` of that config (0.869): the best expression accuracy
reachable even from the true binary AUs, since the image carries no further class information. The row
``bayes rule on true AUs`` applies that rule to this test set's true AUs (the ceiling up to sampling error).

Models, scored on the test set with ``fbhelpers.metrics.score_task`` (the metrics ``train.evaluate`` reports):
- ``cnn4``: ``MultiHeadNet(FACE_TASKS, "cnn4", pool=3, head_inputs={"expr": "au"})`` trained by ``train.fit`` on
  EXPR + AU + VA without coupling (``LossConfig()``): the expression head is a 17 x 7 linear layer over the AU
  head's probabilities, gradient stopped there (``--expr-head features``: a linear head on the shared features,
  as FaceBehaviorNet has it). CPU-sized [choice]s: widths 16-32-64-128, 3,000 steps of 64 images, AdamW lr 5e-3
  with cosine decay and weight decay 0.05, horizontal flips (the twin is left/right symmetric), channels_last,
  one torch thread (on a small shared CPU two threads spin-wait);
- ``linear``: on the flattened pixels in [0, 1], standardised per pixel: scikit-learn ``LogisticRegression``
  (multinomial) for the expression, one L2 logistic regression per AU (probability >= 0.5, like the CNN's
  sigmoid), ``Ridge`` for valence and arousal (predictions clipped to [-1, 1]).

Criteria: CNN AU mean F1 >= 0.85 and CNN expression accuracy within 5 points of the Bayes ceiling; the
linear model should do clearly worse. docs/results.md#synthfaces-learnability records the measured table. The diagnosis
line also applies the Bayes rule (the generator's own table) to the CNN's AU predictions, thresholded and as
probabilities: how much expression the AU head carries. A head on the shared features stays 1.4 to 3 points below that:
it memorises the ~13 % of training faces whose label the AUs cannot decide (training accuracy 1.00); the head on the AU
probabilities cannot (training accuracy near the ceiling).
Writes ``table.csv`` (the printed table), ``per_au_f1.csv``, ``cnn_curve.csv`` and ``summary.json`` to ``--out``.
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from fbhelpers.losses import DIRECTIONS, Coupling, LossConfig  # noqa: E402
from fbhelpers.metrics import score_task  # noqa: E402
from fbhelpers.models import MultiHeadNet  # noqa: E402
from fbhelpers.relatedness import prior  # noqa: E402
from fbhelpers.source import Source  # noqa: E402
from fbhelpers.synthetic import FaceConfig, au_probabilities, bayes_ceiling, make_faces  # noqa: E402
from fbhelpers.tasks import AU, AUS, EXPR, FACE_TASKS, VA, VA_LABELS  # noqa: E402
from fbhelpers.train import fit, predict  # noqa: E402

AUGMENT = {"none": False, "flip": {"crop": None, "rotate": 0.0, "brightness": 0.0, "contrast": 0.0},
           "default": True}  # fit(augment=...) per --augment
EXPR_HEADS = {"au": {"expr": "au"}, "features": None}  # MultiHeadNet(head_inputs=...) per --expr-head
AU_F1_MIN = 0.85   # the goal: AU mean F1 of the CNN
EXPR_GAP_MAX = 0.05  # the goal: CNN expression accuracy at most 5 points below the Bayes ceiling


def faces_source(n: int, size: int, split: str, seed: int, config: FaceConfig) -> tuple[Source, pd.DataFrame]:
    """``n`` fully labelled SynthFaces (true expression, AUs, VA) as one ``split`` of a Source, plus the truth."""
    images, truth = make_faces(n, size=size, config=config, seed=seed)
    table = pd.DataFrame({"split": split, "source": "synthfaces", "expr": truth["expr"].astype("Int64")})
    table = pd.concat([table, truth[list(AUS) + list(VA_LABELS)]], axis=1)
    return Source("synthfaces", table, images), truth


def bayes_rule(aus: np.ndarray, config: FaceConfig, prevalence: np.ndarray | None = None) -> np.ndarray:
    """Bayes-optimal expression code from AUs ``(n, 17)`` under ``config`` (uniform or given prior).

    ``prevalence`` None: ``aus`` are binary (the true AUs, or a model's thresholded ones). Given (the training
    prevalence m_j of each AU): ``aus`` are a model's probabilities p_j, read as soft evidence, each AU's
    likelihood ratio p_j / m_j against (1 - p_j) / (1 - m_j), so a class scores
    sum_j log(P[c, j] p_j / m_j + (1 - P[c, j]) (1 - p_j) / (1 - m_j)) (AUs independent given the class).
    """
    p = au_probabilities(None, config.au_miss, config.au_spont).to_numpy()
    prior = np.full(len(p), 1.0 / len(p)) if config.class_prior is None else np.asarray(config.class_prior, float)
    if prevalence is None:
        loglik = aus @ np.log(p).T + (1.0 - aus) @ np.log1p(-p).T
    else:
        m = np.clip(prevalence, 1e-4, 1 - 1e-4)
        on = np.clip(aus, 1e-4, 1 - 1e-4) / m
        off = (1.0 - np.clip(aus, 1e-4, 1 - 1e-4)) / (1.0 - m)
        loglik = np.log(on[:, None, :] * p[None] + off[:, None, :] * (1.0 - p[None])).sum(axis=2)
    return (loglik + np.log(prior / prior.sum())).argmax(axis=1)


def targets(src: Source) -> dict[str, np.ndarray]:
    t = src.table
    return {"expr": t["expr"].to_numpy(float), "au": t[list(AUS)].to_numpy(float),
            "va": t[list(VA_LABELS)].to_numpy(float)}


def score(truth: dict[str, np.ndarray], pred: dict[str, np.ndarray]) -> dict[str, float]:
    """Metrics of ``fbhelpers.metrics.score_task`` for the tasks present in ``pred`` (flat ``task/metric`` keys)."""
    out = {}
    for task in (EXPR, AU, VA):
        if task.name in pred:
            out.update({f"{task.name}/{k}": v for k, v in score_task(task, truth[task.name], pred[task.name]).items()})
    return out


def train_cnn(train: Source, test: Source, args) -> tuple[MultiHeadNet, float, pd.DataFrame]:
    torch.manual_seed(args.seed)
    model = MultiHeadNet(FACE_TASKS, "cnn4", widths=tuple(int(w) for w in args.widths.split(",")),
                         pool=args.pool, dropout=args.dropout, head_inputs=EXPR_HEADS[args.expr_head])
    start = time.perf_counter()
    dm = None if args.dm == "none" else args.dm
    couplings = [Coupling("expr", "au", prior("du2014_basic"))] if dm else []
    loss = LossConfig(dm=dm, task_weights={"expr": args.expr_weight})
    history = fit(model, {"synthfaces": train}, FACE_TASKS, couplings, loss, steps=args.steps,
                  quota=args.batch, lr=args.lr, weight_decay=args.weight_decay, augment=AUGMENT[args.augment],
                  channels_last=True, device="cpu", seed=args.seed, progress=False,
                  eval_sources={"synthfaces": test} if args.eval_every else None, eval_every=args.eval_every or None)
    return model, time.perf_counter() - start, history


def train_linear(train: Source, test: Source, args) -> tuple[dict[str, np.ndarray], float]:
    """Pixel-linear baselines; returns test predictions (probabilities / values) and the fitting seconds."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.preprocessing import StandardScaler

    start = time.perf_counter()
    scaler = StandardScaler()
    x_train = scaler.fit_transform(train.images.reshape(len(train), -1).astype(np.float32) / 255.0)
    x_test = scaler.transform(test.images.reshape(len(test), -1).astype(np.float32) / 255.0)
    y = targets(train)
    pred: dict[str, np.ndarray] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf = LogisticRegression(C=args.linear_c, max_iter=args.linear_iter).fit(x_train, y["expr"].astype(int))
        pred["expr"] = clf.predict_proba(x_test)
        au = np.zeros((len(test), len(AUS)))
        for j in range(len(AUS)):
            clf = LogisticRegression(C=args.linear_c, max_iter=args.linear_iter).fit(x_train, y["au"][:, j].astype(int))
            au[:, j] = clf.predict_proba(x_test)[:, 1]
        pred["au"] = au
    pred["va"] = np.clip(Ridge(alpha=args.ridge_alpha).fit(x_train, y["va"]).predict(x_test), -1.0, 1.0)
    return pred, time.perf_counter() - start


def row(model: str, s: dict[str, float], ceiling: float, seconds: float) -> dict[str, object]:
    acc = s.get("expr/accuracy", np.nan)
    return {"model": model, "au_mean_f1": s.get("au/mean_f1", np.nan), "expr_accuracy": acc,
            "bayes_ceiling": ceiling, "gap_to_ceiling": ceiling - acc, "va_mean_ccc": s.get("va/mean_ccc", np.nan),
            "train_seconds": seconds}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-train", type=int, default=5000)
    ap.add_argument("--n-test", type=int, default=2000)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--data-seed", type=int, default=0, help="training images use this seed, test images seed + 1")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--eval-every", type=int, default=1000,
                    help="score the test set every N steps (learning curve; 0 = off; its time counts in train s)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=5e-3)
    ap.add_argument("--weight-decay", type=float, default=0.05)
    ap.add_argument("--widths", default="16,32,64,128", help="cnn4 channel widths")
    ap.add_argument("--pool", type=int, default=3, help="cnn4 output grid before the heads (1 = global average)")
    ap.add_argument("--dropout", type=float, default=0.0)
    ap.add_argument("--expr-head", choices=list(EXPR_HEADS), default="au",
                    help="au: the expression head reads the AU head's probabilities (17 x 7, gradient stopped); "
                         "features: a linear head on the shared features like the other tasks (FaceBehaviorNet)")
    ap.add_argument("--augment", choices=list(AUGMENT), default="flip",
                    help="flip: horizontal flips only (the twin is left/right symmetric); default: "
                         "fbhelpers.batching.augment's defaults (crop, rotation, flip, brightness, contrast); none")
    ap.add_argument("--dm", choices=["none", *DIRECTIONS], default="none",
                    help="distribution matching with DU's table (docs/method.md#coupling-terms); "
                         "none = plain multi-task")
    ap.add_argument("--expr-weight", type=float, default=1.0,
                    help="loss weight of the expression task (AU and VA keep 1; "
                         "docs/method.md#the-total-loss, lambda_t); with --expr-head au it only scales the small "
                         "head's gradient (AdamW hardly notices)")
    ap.add_argument("--seed", type=int, default=0, help="CNN initialisation and sampling seed")
    ap.add_argument("--linear-c", type=float, default=0.01, help="inverse L2 strength of the logistic regressions")
    ap.add_argument("--linear-iter", type=int, default=100)
    ap.add_argument("--ridge-alpha", type=float, default=1000.0)
    ap.add_argument("--no-linear", action="store_true", help="skip the pixel-linear baselines")
    ap.add_argument("--no-cnn", action="store_true", help="skip the CNN")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch intra-op threads; 1 is fastest on a small shared CPU (2 threads spin-wait)")
    ap.add_argument("--out", default="runs/learnability")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    wall = time.perf_counter()

    config = FaceConfig()
    t0 = time.perf_counter()
    train, _ = faces_source(args.n_train, args.size, "train", args.data_seed, config)
    test, test_truth = faces_source(args.n_test, args.size, "test", args.data_seed + 1, config)
    ceiling = bayes_ceiling(None, config.au_miss, config.au_spont, config.class_prior)
    y_test = targets(test)
    print(f"SynthFaces {args.size} px: {len(train)} train + {len(test)} test images, fully labelled "
          f"({time.perf_counter() - t0:.0f} s to render); Bayes ceiling of expression accuracy {ceiling:.3f} "
          f"(au_miss {config.au_miss}, au_spont {config.au_spont}, uniform prior); "
          f"test faces occluded {test_truth['occluded'].mean():.1%}")

    rows, per_au, summary = [], {}, {"args": vars(args), "bayes_ceiling": ceiling}
    oracle = bayes_rule(y_test["au"], config)
    onehot = np.eye(len(EXPR.labels))[oracle]
    rows.append(row("bayes rule on true AUs", score(y_test, {"expr": onehot}), ceiling, 0.0))

    if not args.no_cnn:
        model, seconds, history = train_cnn(train, test, args)
        pred = predict(model, test.images, FACE_TASKS, device="cpu")
        s = score(y_test, pred)
        rows.append(row(f"cnn4 {args.widths} pool {args.pool}, expr head on {args.expr_head}, {args.steps} steps", s,
                        ceiling, seconds))
        per_au["cnn4"] = {a: s[f"au/f1_{a}"] for a in AUS}
        # diagnosis: the same scores on (a subset of) the training images, and the Bayes rule on the CNN's AUs
        sub = train.rows(np.arange(min(len(train), len(test))))
        s_train = score(targets(sub), predict(model, sub.images, FACE_TASKS, device="cpu"))
        via_aus = bayes_rule((pred["au"] >= 0.5).astype(float), config)
        via_soft = bayes_rule(pred["au"], config, prevalence=targets(train)["au"].mean(axis=0))
        occ = test_truth["occluded"].to_numpy()
        right = pred["expr"].argmax(1) == y_test["expr"]
        curve = [c for c in ("eval/synthfaces/au/mean_f1", "eval/synthfaces/expr/accuracy",
                              "eval/synthfaces/va/mean_ccc") if c in history]
        if curve:
            points = history.dropna(subset=curve[:1])[["step", *curve, "total"]]
            points = points.rename(columns=lambda c: c.split("/", 2)[-1].replace("/", "_"))
            points = points.rename(columns={"total": "loss"})
            points.to_csv(out / "cnn_curve.csv", index=False, float_format="%.4f")
            shown = points.to_string(index=False, float_format=lambda v: f"{v:.3f}")
            print(f"cnn4 test curve (cosine schedule of {args.steps} steps):\n{shown}")
        summary["cnn4"] = {
            "test": s, "train_subset": s_train, "seconds": seconds,
            "images_per_s": float(history["images_per_s"].median()),
            "final_loss": float(history["total"].iloc[-50:].mean()),
            "expr_accuracy_bayes_rule_on_predicted_aus": float((via_aus == y_test["expr"]).mean()),
            "expr_accuracy_bayes_rule_on_au_probabilities": float((via_soft == y_test["expr"]).mean()),
            "expr_accuracy_occluded": float(right[occ].mean()) if occ.any() else None,
            "expr_accuracy_unoccluded": float(right[~occ].mean()),
            "agreement_with_bayes_rule_on_true_aus": float((pred["expr"].argmax(1) == oracle).mean()),
        }
        d = summary["cnn4"]
        print(f"cnn4: {seconds:.0f} s, {d['images_per_s']:.0f} img/s, final loss {d['final_loss']:.3f}; train subset "
              f"AU F1 {s_train['au/mean_f1']:.3f}, expr acc {s_train['expr/accuracy']:.3f}; test expr acc unoccluded "
              f"{d['expr_accuracy_unoccluded']:.3f} / occluded {d['expr_accuracy_occluded']:.3f}; Bayes rule on "
              f"predicted AUs {d['expr_accuracy_bayes_rule_on_predicted_aus']:.3f} (on their probabilities "
              f"{d['expr_accuracy_bayes_rule_on_au_probabilities']:.3f}); agrees with the Bayes rule on "
              f"true AUs {d['agreement_with_bayes_rule_on_true_aus']:.3f}")

    if not args.no_linear:
        pred, seconds = train_linear(train, test, args)
        s = score(y_test, pred)
        rows.append(row("linear on pixels", s, ceiling, seconds))
        per_au["linear"] = {a: s[f"au/f1_{a}"] for a in AUS}
        summary["linear"] = {"test": s, "seconds": seconds}

    table = pd.DataFrame(rows).set_index("model")
    table.to_csv(out / "table.csv", float_format="%.4f")
    if per_au:
        pd.DataFrame(per_au).rename_axis("au").to_csv(out / "per_au_f1.csv", float_format="%.4f")
    pd.set_option("display.width", 200)
    print(f"\n== learnability on {len(test)} test faces ==\n{table.to_string(float_format=lambda v: f'{v:.3f}')}")
    if per_au:
        print(f"\n== AU F1 per AU ==\n{pd.DataFrame(per_au).T.to_string(float_format=lambda v: f'{v:.2f}')}")
    if not args.no_cnn:
        cnn = table.iloc[1]
        verdict = {"au_mean_f1>=0.85": bool(cnn["au_mean_f1"] >= AU_F1_MIN),
                   "expr_within_5_points_of_ceiling": bool(cnn["gap_to_ceiling"] <= EXPR_GAP_MAX)}
        if not args.no_linear:
            lin = table.loc["linear on pixels"]
            verdict["linear_worse_on_au_f1"] = float(cnn["au_mean_f1"] - lin["au_mean_f1"])
            verdict["linear_worse_on_expr_accuracy"] = float(cnn["expr_accuracy"] - lin["expr_accuracy"])
        summary["verdict"] = verdict
        print(f"\nCNN AU mean F1 {cnn['au_mean_f1']:.3f} >= {AU_F1_MIN}: "
              f"{'PASS' if verdict['au_mean_f1>=0.85'] else 'FAIL'}; expression accuracy {cnn['expr_accuracy']:.3f}, "
              f"{100 * cnn['gap_to_ceiling']:.1f} points below the ceiling {ceiling:.3f} (<= 5): "
              f"{'PASS' if verdict['expr_within_5_points_of_ceiling'] else 'FAIL'}")
    summary["wall_s"] = time.perf_counter() - wall
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=float))
    print(f"{summary['wall_s'] / 60:.1f} min wall; wrote {out}/table.csv, per_au_f1.csv, summary.json")


if __name__ == "__main__":
    main()
