"""Tests of fbhelpers.losses against hand-computed values and small explicit numpy formulas
(docs/method.md#task-losses, docs/method.md#coupling-terms)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fbhelpers.losses import (
    Coupling,
    LossConfig,
    ccc,
    ccc_loss,
    co_annotation,
    combined_loss,
    distribution_matching,
    masked_bce,
    masked_cross_entropy,
)
from fbhelpers.tasks import AU, EXPR, Task

REL = 1e-5
# Toy relatedness: class 0 "neutral" (empty row), class 1 prototypical {0} + observational 0.5 on 1,
# class 2 prototypical {2} + observational 0.3 on 3.
R = np.array([[0.0, 0.0, 0.0, 0.0], [1.0, 0.5, 0.0, 0.0], [0.0, 0.0, 1.0, 0.3]])
RT = torch.tensor(R, dtype=torch.float64)
CLS = Task("cls", "multiclass", ("neutral", "a", "b"))
ATT = Task("att", "multilabel", ("j0", "j1", "j2", "j3"))


def t(x, dtype=torch.float64, grad=False):
    return torch.tensor(x, dtype=dtype, requires_grad=grad)


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def log_softmax(x):
    x = np.asarray(x, dtype=float)
    return x - x.max(axis=-1, keepdims=True) - np.log(np.exp(x - x.max(axis=-1, keepdims=True)).sum(-1, keepdims=True))


def bce(target, logit):
    p = sigmoid(logit)
    return -(target * np.log(p) + (1 - target) * np.log(1 - p))


# ------------------------------------------------------------------------------------------ task losses
def test_masked_cross_entropy_value():
    logits = [[2.0, 0.5, -1.0], [0.1, 0.2, 0.3], [-1.0, 3.0, 0.0]]
    ref = -(log_softmax(logits[0])[0] + log_softmax(logits[2])[1]) / 2
    loss = masked_cross_entropy(t(logits), t([0, 2, 1], torch.long), t([True, False, True], torch.bool))
    assert loss.item() == pytest.approx(ref, rel=REL)


def test_masked_bce_value_soft_targets():
    logits = np.array([[0.3, -1.2, 2.0], [1.0, 0.0, -0.5]])
    target = np.array([[1.0, 0.25, 0.0], [0.0, 1.0, 0.7]])
    mask = np.array([[True, True, False], [False, True, True]])
    ref = (bce(1.0, 0.3) + bce(0.25, -1.2) + bce(1.0, 0.0) + bce(0.7, -0.5)) / 4
    assert masked_bce(t(logits), t(target), t(mask, torch.bool)).item() == pytest.approx(ref, rel=REL)


def test_ccc_known_pair_and_perfect():
    # pred 1,2,3 vs true 2,4,6: means 2, 4; var 2/3, 8/3; cov 4/3 -> CCC = (8/3) / (2/3 + 8/3 + 4) = 4/11
    assert ccc(t([1.0, 2.0, 3.0]), t([2.0, 4.0, 6.0])).item() == pytest.approx(4 / 11, rel=REL)
    x = t([0.3, -0.2, 0.9, 0.1])
    assert ccc(x, x.clone()).item() == pytest.approx(1.0, rel=REL)
    per_col = ccc(t([[1.0, 0.0], [2.0, 1.0], [3.0, 0.0]]), t([[2.0, 0.0], [4.0, 1.0], [6.0, 0.0]]))
    assert per_col.tolist() == pytest.approx([4 / 11, 1.0], rel=REL)


def test_ccc_loss_masks_per_output_and_skips_outputs_with_one_sample():
    pred = t([[1.0, 0.5], [2.0, 0.1], [3.0, 0.2], [9.0, 0.3]])
    target = t([[2.0, 0.0], [4.0, 0.0], [6.0, 0.0], [-5.0, 0.0]])
    mask = t([[True, True], [True, False], [True, False], [False, False]], torch.bool)
    # column 0: samples 0-2 -> CCC 4/11; column 1: one sample -> contributes nothing
    assert ccc_loss(pred, target, mask).item() == pytest.approx(1 - 4 / 11, rel=REL)
    assert ccc_loss(pred, pred.clone(), t([[True] * 2] * 4, torch.bool)).item() == pytest.approx(0.0, abs=1e-12)


# ------------------------------------------------------------------------------------------ masking
def test_missing_labels_change_nothing():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 3, generator=g, dtype=torch.float64)
    cls_mask = t([True, False, True, False], torch.bool)
    a = masked_cross_entropy(logits, t([1, 0, 2, 0], torch.long), cls_mask)
    b = masked_cross_entropy(logits, t([1, 99, 2, -4], torch.long), cls_mask)
    assert a.item() == b.item()

    ml = torch.randn(4, 4, generator=g, dtype=torch.float64)
    mask = torch.rand(4, 4, generator=g) > 0.5
    y = (torch.rand(4, 4, generator=g) > 0.5).double()
    y2 = torch.where(mask, y, t(float("nan")))
    assert masked_bce(ml, y, mask).item() == masked_bce(ml, y2, mask).item()
    rmask = t([[True, True], [True, True], [True, False], [False, True]], torch.bool)
    reg = torch.randn(4, 2, generator=g, dtype=torch.float64)
    yr = torch.randn(4, 2, generator=g, dtype=torch.float64)
    assert ccc_loss(reg, yr, rmask).item() == ccc_loss(reg, torch.where(rmask, yr, t(123.0)), rmask).item()
    ca = co_annotation(logits, ml, t([1, 0, 2, 0], torch.long), cls_mask, y, mask, RT)
    cb = co_annotation(logits, ml, t([1, 7, 2, 5], torch.long), cls_mask, y2, mask, RT)
    assert ca.item() == cb.item()


def test_all_missing_batch_gives_zero_and_finite_grads():
    cl, al, rl = t(np.ones((3, 3)), grad=True), t(np.ones((3, 4)), grad=True), t(np.ones((3, 2)), grad=True)
    no = torch.zeros(3, dtype=torch.bool)
    y_nan = t(np.full((3, 4), np.nan))
    losses = [
        masked_cross_entropy(cl, t([0, 5, -1], torch.long), no),
        masked_bce(al, y_nan, torch.zeros(3, 4, dtype=torch.bool)),
        ccc_loss(rl, t(np.full((3, 2), np.nan)), torch.zeros(3, 2, dtype=torch.bool)),
        co_annotation(cl, al, t([0, 0, 0], torch.long), no, y_nan, torch.zeros(3, 4, dtype=torch.bool), RT, "soft"),
        co_annotation(cl, al, t([0, 0, 0], torch.long), no, y_nan, torch.zeros(3, 4, dtype=torch.bool), RT, "hard"),
        distribution_matching(cl[:0], al[:0], RT, direction="both"),
    ]
    for loss in losses:
        assert loss.item() == 0.0
        cl.grad = al.grad = rl.grad = None
        loss.backward()
        for x in (cl, al, rl):
            assert x.grad is None or (torch.isfinite(x.grad).all() and (x.grad == 0).all())


# ------------------------------------------------------------------------------------------ co-annotation
def _coann_batch():
    # s0 class a, no attributes        -> class->attr targets R[a] on all 4 attributes
    # s1 class b, j0 annotated         -> class->attr targets R[b] on j1, j2, j3
    # s2 no class, y = 1 1 0 0 (all)   -> soft t = (0, 1, 0); hard: a
    # s3 no class, j2 = 1, j3 = 0      -> soft: a has no annotated related attribute, b = 1/1.3 -> t = (0, 0, 1); hard b
    # s4 no class, y = 0 0 0 0 (all)   -> soft neutral (product 1) -> t = (1, 0, 0); hard neutral
    # s5 no class, y = 1 0 1 1 (all)   -> soft s = (0, 2/3, 1) -> t = (0, .4, .6); hard: a and b match -> skipped
    # s6 nothing                       -> skipped both ways
    cls = t([1, 2, 0, 0, 0, 0, 0], torch.long)
    cmask = t([True, True, False, False, False, False, False], torch.bool)
    y = t([[0, 0, 0, 0], [1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0], [1, 0, 1, 1], [0, 0, 0, 0]])
    amask = t([[0, 0, 0, 0], [1, 0, 0, 0], [1, 1, 1, 1], [0, 0, 1, 1], [1, 1, 1, 1], [1, 1, 1, 1], [0, 0, 0, 0]],
              torch.bool)
    g = torch.Generator().manual_seed(1)
    cl = torch.randn(7, 3, generator=g, dtype=torch.float64)
    al = torch.randn(7, 4, generator=g, dtype=torch.float64)
    return cl, al, cls, cmask, y, amask


@pytest.mark.parametrize("mode,attributes,entries", [
    ("soft", "all", [(0, 0, 1.0), (0, 1, 0.5), (0, 2, 0.0), (0, 3, 0.0), (1, 1, 0.0), (1, 2, 1.0), (1, 3, 0.3)]),
    # hard (P0): prototypical entries -> 1, R = 0 -> 0, observational entries (0 < R < 1: a j1, b j3) -> no target
    ("hard", "all", [(0, 0, 1.0), (0, 2, 0.0), (0, 3, 0.0), (1, 1, 0.0), (1, 2, 1.0)]),
    ("soft", "related", [(0, 0, 1.0), (0, 1, 0.5), (1, 2, 1.0), (1, 3, 0.3)]),
])
def test_co_annotation_class_to_attr(mode, attributes, entries):
    cl, al, cls, cmask, y, amask = _coann_batch()
    a = al.numpy()
    ref = np.mean([bce(target, a[i, j]) for i, j, target in entries])
    loss = co_annotation(cl, al, cls, cmask, y, amask, RT, mode=mode, direction="class_to_attr", attributes=attributes)
    assert loss.item() == pytest.approx(ref, rel=REL)


@pytest.mark.parametrize("mode,empty_row,targets", [
    ("soft", "product", {2: [0, 1, 0], 3: [0, 0, 1], 4: [1, 0, 0], 5: [0, 0.4, 0.6]}),
    ("soft", "none", {2: [0, 1, 0], 3: [0, 0, 1], 5: [0, 0.4, 0.6]}),
    # inactive fraction: s2 neutral 2/4 -> (0.5, 1, 0)/1.5; s3 neutral 1/2 -> (0.5, 0, 1/1.3) normalised
    ("soft", "inactive_fraction", {2: [1 / 3, 2 / 3, 0], 3: [0.5 / (0.5 + 1 / 1.3), 0, (1 / 1.3) / (0.5 + 1 / 1.3)],
                                   4: [1, 0, 0], 5: [0.25 / (0.25 + 2 / 3 + 1), (2 / 3) / (0.25 + 2 / 3 + 1),
                                                     1 / (0.25 + 2 / 3 + 1)]}),
    ("hard", "product", {2: [0, 1, 0], 3: [0, 0, 1], 4: [1, 0, 0]}),
    ("hard", "none", {2: [0, 1, 0], 3: [0, 0, 1]}),
])
def test_co_annotation_attr_to_class(mode, empty_row, targets):
    cl, al, cls, cmask, y, amask = _coann_batch()
    ls = log_softmax(cl.numpy())
    ref = np.mean([-(np.array(tc) * ls[i]).sum() for i, tc in targets.items()])
    loss = co_annotation(cl, al, cls, cmask, y, amask, RT, mode=mode, direction="attr_to_class", empty_row=empty_row)
    assert loss.item() == pytest.approx(ref, rel=REL)
    both = co_annotation(cl, al, cls, cmask, y, amask, RT, mode=mode, direction="both", empty_row=empty_row)
    c2a = co_annotation(cl, al, cls, cmask, y, amask, RT, mode=mode, direction="class_to_attr")
    assert both.item() == pytest.approx(loss.item() + c2a.item(), rel=REL)


@pytest.mark.parametrize("direction", ["class_to_attr", "attr_to_class", "both"])
def test_hard_co_annotation_refuses_a_table_without_prototypical_sets(direction):
    cl, al, cls, cmask, y, amask = _coann_batch()
    estimated = RT * 0.9  # e.g. an estimate: no entry reaches 1, so no class has a prototypical set
    with pytest.raises(ValueError, match=r"hard co-annotation needs binary prototypical sets.*2 non-empty rows"):
        co_annotation(cl, al, cls, cmask, y, amask, estimated, mode="hard", direction=direction)
    assert co_annotation(cl, al, cls, cmask, y, amask, estimated, mode="soft", direction=direction).item() > 0
    # a threshold the table reaches makes it usable again
    loss = co_annotation(cl, al, cls, cmask, y, amask, estimated, mode="hard", direction=direction, threshold=0.9)
    ref = co_annotation(cl, al, cls, cmask, y, amask, RT, mode="hard", direction=direction)
    assert loss.item() == pytest.approx(ref.item(), rel=REL)


# ------------------------------------------------------------------------------------------ distribution matching
CL = np.array([[1.0, -0.5, 0.3], [0.2, 2.0, -1.0]])
AL = np.array([[0.5, -1.0, 1.5, 0.0], [-0.3, 0.8, -2.0, 1.0]])


def test_dm_class_to_attr_sum_and_mean():
    q = np.exp(log_softmax(CL)) @ R  # q_j = Σ_c p(c|x) R[c, j]
    per = bce(q, AL)  # (B, K)
    ref_sum, ref_mean = per.sum(1).mean(), per.mean(1).mean()
    assert distribution_matching(t(CL), t(AL), RT, reduction="sum").item() == pytest.approx(ref_sum, rel=REL)
    assert distribution_matching(t(CL), t(AL), RT, reduction="mean").item() == pytest.approx(ref_mean, rel=REL)
    assert distribution_matching(t(CL), t(AL), RT, reduction="sum", detach=True).item() == pytest.approx(ref_sum,
                                                                                                     rel=REL)
    # one default for the bare function and LossConfig: the mean over attributes
    assert LossConfig().dm_reduction == "mean"
    assert distribution_matching(t(CL), t(AL), RT).item() == pytest.approx(ref_mean, rel=REL)


def _kl(q, log_p):
    return (q * (np.log(q) - log_p)).sum(1).mean()


@pytest.mark.parametrize("temperature", [1.0, 0.5, 3.0])
def test_dm_attr_to_class_weighted_mean(temperature):
    p = sigmoid(AL)
    s = np.stack([np.prod(1 - p, 1), (p[:, 0] + 0.5 * p[:, 1]) / 1.5, (p[:, 2] + 0.3 * p[:, 3]) / 1.3], 1)
    q = s ** (1 / temperature)  # the temperature applies to the weighted mean too: q ∝ s^(1/T)
    q = q / q.sum(1, keepdims=True)
    lp = log_softmax(CL)
    kw = dict(direction="attr_to_class", variant="weighted_mean", temperature=temperature)
    assert distribution_matching(t(CL), t(AL), RT, **kw).item() == pytest.approx(_kl(q, lp), rel=REL)
    ce = -(q * lp).sum(1).mean()
    assert distribution_matching(t(CL), t(AL), RT, divergence="ce", **kw).item() == pytest.approx(ce, rel=REL)
    # empty_row="none" excludes the neutral row (score 0) at every temperature
    none = distribution_matching(t(CL), t(AL), RT, empty_row="none", **{**kw, "temperature": 10.0 * temperature})
    s_none = s[:, 1:] ** (1 / (10.0 * temperature))
    q_none = s_none / s_none.sum(1, keepdims=True)
    assert none.item() == pytest.approx(_kl(q_none, lp[:, 1:]), rel=1e-4)


def test_dm_bernoulli_kl_gradient_is_the_exact_kl_for_a_confident_class_head():
    # DU's table, a class head 99.99 % sure of happiness: most q_j are below 1e-4 (the eps of attributes -> class);
    # the gradient into the class head must still be the KL's, not the BCE's (a clip at eps would flip its sign).
    from fbhelpers.relatedness import prior

    r = torch.tensor(prior("du2014_basic").table.to_numpy(), dtype=torch.float64)
    cl = torch.full((1, 7), -5.0, dtype=torch.float64)
    cl[0, 4] = 5.0
    al = torch.full((1, 17), -3.0, dtype=torch.float64)
    cl.requires_grad_()
    distribution_matching(cl, al, r, reduction="mean", bernoulli_kl=True).backward()
    q = torch.softmax(cl.detach(), 1) @ r
    assert int((q < 1e-4).sum()) >= 10
    exact = cl.detach().clone().requires_grad_()
    used = r.sum(0) > 0  # an AU in no row (AU14) has q = 0 whatever the class head: no gradient either way
    qe, pe = torch.softmax(exact, 1) @ r[:, used], torch.sigmoid(al[:, used])
    kl = qe * torch.log(qe / pe) + (1 - qe) * torch.log((1 - qe) / (1 - pe))
    (kl.sum() / 17).backward()
    np.testing.assert_allclose(cl.grad.numpy(), exact.grad.numpy(), rtol=1e-6, atol=1e-12)
    with pytest.raises(ValueError, match="no effect"):
        LossConfig(dm="attr_to_class", dm_bernoulli_kl=True)
    with pytest.raises(ValueError, match="no effect"):
        LossConfig(dm="class_to_attr", dm_bernoulli_kl=True, dm_detach=True)
    with pytest.raises(ValueError, match="dm_eps"):
        LossConfig(dm="attr_to_class", dm_eps=0.7)


def test_dm_bernoulli_kl_is_bce_minus_entropy_and_pulls_q_towards_p():
    q = np.exp(log_softmax(CL)) @ R
    qc = np.clip(q, 1e-300, 1)  # 0 log 0 = 0
    entropy = -(qc * np.log(qc) + np.where(qc < 1, (1 - qc) * np.log1p(-np.minimum(qc, 1 - 1e-16)), 0))
    ref = (bce(q, AL) - entropy).mean(1).mean()
    loss = distribution_matching(t(CL), t(AL), RT, reduction="mean", bernoulli_kl=True)
    assert loss.item() == pytest.approx(ref, rel=REL)
    # What the class head learns: one attribute, classes with rows 0.2 and 0.8, the attribute head at 0.6. The BCE
    # is linear in q: its minimum over p(c|x) is the one-hot on class 1 (q = 0.8, a pseudo-label); the KL's is
    # q = 0.6, the attribute head's own probability.
    r = torch.tensor([[0.2], [0.8]], dtype=torch.float64)
    logit_p = torch.linspace(-8, 8, 321, dtype=torch.float64)
    cl = torch.stack([torch.zeros_like(logit_p), logit_p], 1)
    al = torch.full((321, 1), float(np.log(0.6 / 0.4)), dtype=torch.float64)
    q_grid = (torch.softmax(cl, 1) @ r)[:, 0]
    for kl, best_q in ((False, float(q_grid.max())), (True, 0.6)):
        per = torch.stack([distribution_matching(cl[i:i + 1], al[i:i + 1], r, bernoulli_kl=kl) for i in range(321)])
        assert float(q_grid[per.argmin()]) == pytest.approx(best_q, abs=0.005)


@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_dm_attr_to_class_bernoulli(temperature):
    p, eps = sigmoid(AL), 1e-4
    rc = np.clip(R, eps, 1 - eps)
    ll = np.array([[sum(p[b, j] * np.log(rc[c, j]) + (1 - p[b, j]) * np.log(1 - rc[c, j]) for j in range(4))
                    for c in range(3)] for b in range(2)])
    ll[:, 0] = np.log(1 - p).sum(1)  # empty_row="product": log Π_j (1 - p_j)
    q = np.exp(log_softmax(ll / temperature))
    ref = _kl(q, log_softmax(CL))
    loss = distribution_matching(t(CL), t(AL), RT, direction="attr_to_class", temperature=temperature)
    assert loss.item() == pytest.approx(ref, rel=REL)
    both = distribution_matching(t(CL), t(AL), RT, direction="both", temperature=temperature)
    assert both.item() == pytest.approx(ref + distribution_matching(t(CL), t(AL), RT).item(), rel=REL)


def test_dm_bernoulli_is_finite_for_many_classes():
    g = torch.Generator().manual_seed(2)
    r = (torch.rand(2000, 50, generator=g) > 0.8).float()
    cl = torch.randn(4, 2000, generator=g, requires_grad=True)
    al = (10 * torch.randn(4, 50, generator=g)).requires_grad_()
    loss = distribution_matching(cl, al, r, direction="attr_to_class")
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(cl.grad).all() and torch.isfinite(al.grad).all()


@pytest.mark.parametrize("direction,frozen", [("class_to_attr", "class"), ("attr_to_class", "attr")])
def test_dm_gradients_reach_both_heads_unless_detached(direction, frozen):
    for detach in (False, True):
        cl, al = t(CL, grad=True), t(AL, grad=True)
        distribution_matching(cl, al, RT, direction=direction, detach=detach).backward()
        grads = {"class": cl.grad, "attr": al.grad}
        other = "attr" if frozen == "class" else "class"
        assert grads[other].abs().sum() > 0
        if detach:
            assert grads[frozen] is None or (grads[frozen] == 0).all()
        else:
            assert grads[frozen].abs().sum() > 0


# ------------------------------------------------------------------------------------------ combined loss
REG = Task("reg", "regression", ("v", "w"))


def _combined_inputs():
    g = torch.Generator().manual_seed(3)
    outputs = {"cls": torch.randn(5, 3, generator=g), "att": torch.randn(5, 4, generator=g),
               "reg": torch.randn(5, 2, generator=g)}
    batch = {"targets": {"cls": torch.tensor([1, 2, 0, 0, 0]), "att": (torch.rand(5, 4, generator=g) > .5).float(),
                         "reg": torch.randn(5, 2, generator=g)},
             "masks": {"cls": torch.tensor([True, True, False, False, True]),
                       "att": torch.tensor([[0] * 4, [0] * 4, [1] * 4, [1, 1, 0, 0], [1] * 4]).bool(),
                       "reg": torch.ones(5, 2, dtype=torch.bool)}}
    return outputs, batch


def test_combined_loss_weights_terms():
    outputs, batch = _combined_inputs()
    cfg = LossConfig(task_weights={"cls": 2.0, "att": 0.5}, coann="soft", coann_weight=3.0, dm="both", dm_weight=0.25,
                     dm_warmup_steps=4)
    tasks, coup = (CLS, ATT, REG), [Coupling("cls", "att", torch.tensor(R, dtype=torch.float32))]
    total, terms = combined_loss(outputs, batch, tasks, coup, cfg)
    assert set(terms) == {"cls", "att", "reg", "coann", "dm"}
    o, tg, m = outputs, batch["targets"], batch["masks"]
    assert terms["cls"].item() == pytest.approx(masked_cross_entropy(o["cls"], tg["cls"], m["cls"]).item(), rel=REL)
    assert terms["reg"].item() == pytest.approx(ccc_loss(o["reg"], tg["reg"], m["reg"]).item(), rel=REL)
    dm = distribution_matching(o["cls"], o["att"], R, direction="both", reduction="mean")
    assert terms["dm"].item() == pytest.approx(dm.item(), rel=REL)
    ref = 2 * terms["cls"] + 0.5 * terms["att"] + terms["reg"] + 3 * terms["coann"] + 0.25 * terms["dm"]
    assert total.item() == pytest.approx(ref.item(), rel=REL)
    warm, _ = combined_loss(outputs, batch, tasks, coup, cfg, step=0)  # warm-up: λ_dm · 1/4
    assert warm.item() == pytest.approx((ref - 0.75 * 0.25 * terms["dm"]).item(), rel=REL)
    plain_total, plain = combined_loss(outputs, batch, tasks, coup, LossConfig())
    assert set(plain) == {"cls", "att", "reg"}
    assert plain_total.item() == pytest.approx(sum(v.item() for v in plain.values()), rel=REL)


@pytest.mark.parametrize("settings,kwargs", [
    ({"dm": "attr_to_class", "dm_eps": 0.25}, {"direction": "attr_to_class", "eps": 0.25}),
    ({"dm": "class_to_attr", "dm_bernoulli_kl": True}, {"bernoulli_kl": True}),
    ({"dm": "attr_to_class", "dm_variant": "weighted_mean", "dm_temperature": 2.0},
     {"direction": "attr_to_class", "variant": "weighted_mean", "temperature": 2.0}),
])
def test_combined_loss_passes_every_dm_setting(settings, kwargs):
    outputs, batch = _combined_inputs()
    coup = [Coupling("cls", "att", torch.tensor(R, dtype=torch.float32))]
    _, terms = combined_loss(outputs, batch, (CLS, ATT, REG), coup, LossConfig(**settings))
    ref = distribution_matching(outputs["cls"], outputs["att"], R, reduction="mean", **kwargs)
    default = distribution_matching(outputs["cls"], outputs["att"], R, reduction="mean",
                                    direction=kwargs.get("direction", "class_to_attr"))
    assert terms["dm"].item() == pytest.approx(ref.item(), rel=REL)
    assert abs(ref.item() - default.item()) > 1e-3  # the setting changes the loss


def test_combined_loss_with_du_prior_is_order_independent():
    relatedness = pytest.importorskip("fbhelpers.relatedness")
    prior = relatedness.prior("du2014_basic")
    shuffled = relatedness.Relatedness(table=prior.table.iloc[::-1, ::-1], name="shuffled")
    g = torch.Generator().manual_seed(4)
    outputs = {"expr": torch.randn(3, 7, generator=g), "au": torch.randn(3, 17, generator=g)}
    batch = {"targets": {"expr": torch.tensor([4, 0, 0]), "au": torch.zeros(3, 17)},
             "masks": {"expr": torch.tensor([True, False, False]), "au": torch.zeros(3, 17, dtype=torch.bool)}}
    batch["masks"]["au"][1:] = True
    cfg = LossConfig(coann="soft", dm="both")
    a = combined_loss(outputs, batch, (EXPR, AU), [Coupling("expr", "au", prior)], cfg)[0]
    b = combined_loss(outputs, batch, (EXPR, AU), [Coupling("expr", "au", shuffled)], cfg)[0]
    c = combined_loss(outputs, batch, (EXPR, AU), [Coupling("expr", "au", prior.tensor())], cfg)[0]
    assert a.item() == pytest.approx(b.item(), rel=REL)
    assert a.item() == pytest.approx(c.item(), rel=REL)


# ------------------------------------------------------------------------------------------ bad input
def test_bad_inputs_raise_informative_errors():
    with pytest.raises(ValueError, match=r"target has shape \(2,\).*\(3, 3\)"):
        masked_cross_entropy(torch.zeros(3, 3), torch.zeros(2, dtype=torch.long), torch.ones(2, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"class label 7 out of range \[0, 2\]"):
        masked_cross_entropy(torch.zeros(2, 3), torch.tensor([1, 7]), torch.ones(2, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"mask has shape \(2, 3\).*\(2, 4\)"):
        masked_bce(torch.zeros(2, 4), torch.zeros(2, 4), torch.ones(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"\[0, 1\].*1\.5"):
        masked_bce(torch.zeros(1, 2), torch.tensor([[1.5, 0.0]]), torch.ones(1, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"relatedness has shape \(3, 4\).*5 classes.*4 attributes"):
        distribution_matching(torch.zeros(2, 5), torch.zeros(2, 4), RT)
    with pytest.raises(ValueError, match=r"direction must be one of .*'sideways'"):
        distribution_matching(torch.zeros(2, 3), torch.zeros(2, 4), RT, direction="sideways")
    with pytest.raises(ValueError, match=r"coann must be one of .*'medium'"):
        LossConfig(coann="medium")
    outputs, batch = _combined_inputs()
    with pytest.raises(ValueError, match=r"coupling \('cls', 'att'\): relatedness has shape \(4, 3\).*\(3, 4\)"):
        combined_loss(outputs, batch, (CLS, ATT), [Coupling("cls", "att", RT.T)], LossConfig(dm="class_to_attr"))
    with pytest.raises(KeyError, match=r"'nope'"):
        combined_loss(outputs, batch, (CLS, ATT), [Coupling("cls", "nope", RT)], LossConfig(dm="class_to_attr"))
    with pytest.raises(KeyError, match=r"'att' missing from outputs"):
        combined_loss({"cls": outputs["cls"]}, batch, (CLS, ATT), [], LossConfig())
    batch["targets"]["cls"] = torch.tensor([1, 3, 0, 0, 0])
    with pytest.raises(ValueError, match=r"task 'cls'.*class label 3 out of range \[0, 2\]"):
        combined_loss(outputs, batch, (CLS, ATT), [], LossConfig())


# ------------------------------------------------------------------------------------------ validate=False
@pytest.mark.parametrize("coann", ["soft", "hard"])
def test_validate_false_gives_the_same_losses_and_gradients(coann):
    """The trainer's path (checks done once at set-up) computes exactly what the checked public default does."""
    def run(validate):
        outputs, batch = _combined_inputs()
        outputs = {k: v.clone().requires_grad_() for k, v in outputs.items()}
        cfg = LossConfig(coann=coann, dm="both", dm_warmup_steps=3)
        reg = Task("reg", "regression", ("v", "a"))
        total, terms = combined_loss(outputs, batch, (CLS, ATT, reg), [Coupling("cls", "att", RT)], cfg, step=1,
                                     validate=validate)
        total.backward()
        return total, terms, {k: v.grad for k, v in outputs.items()}

    (a, ta, ga), (b, tb, gb) = run(True), run(False)
    assert torch.equal(a, b) and ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)
    assert all(torch.equal(ga[k], gb[k]) for k in ga)


def test_validate_false_skips_the_value_checks_only():
    bad_r = RT.clone()
    bad_r[1, 1] = 1.5
    with pytest.raises(ValueError, match=r"relatedness entries must lie in \[0, 1\].*1\.5"):
        distribution_matching(torch.zeros(2, 3), torch.zeros(2, 4), bad_r)
    distribution_matching(torch.zeros(2, 3), torch.zeros(2, 4), bad_r, validate=False)  # not read back
    masked_bce(torch.zeros(1, 2), torch.tensor([[1.5, 0.0]]), torch.ones(1, 2, dtype=torch.bool), validate=False)
    with pytest.raises(ValueError, match=r"relatedness has shape \(3, 4\).*5 classes"):  # shapes: always checked
        distribution_matching(torch.zeros(2, 5), torch.zeros(2, 4), RT, validate=False)
    with pytest.raises(ValueError, match=r"hard co-annotation needs binary prototypical sets"):
        co_annotation(torch.zeros(2, 3), torch.zeros(2, 4), torch.tensor([1, 2]), torch.ones(2, dtype=torch.bool),
                      torch.zeros(2, 4), torch.zeros(2, 4, dtype=torch.bool), RT * 0.9, mode="hard")
    co_annotation(torch.zeros(2, 3), torch.zeros(2, 4), torch.tensor([1, 2]), torch.ones(2, dtype=torch.bool),
                  torch.zeros(2, 4), torch.zeros(2, 4, dtype=torch.bool), RT * 0.9, mode="hard", validate=False)


def test_constants_kept_on_r_follow_an_in_place_change():
    """keep_constants (the trainer's aligned R): R's derived tensors (log R, empty rows) are computed once and kept
    on R, recomputed after an in-place change; the values are those computed afresh."""
    from fbhelpers.losses import keep_constants

    g = torch.Generator().manual_seed(0)
    cl, al = torch.randn(5, 3, generator=g), torch.randn(5, 4, generator=g)
    r = keep_constants(RT.clone().float())
    fresh = RT.clone().float()
    first = distribution_matching(cl, al, r, direction="attr_to_class", validate=False)
    assert r._fb_constants is not None and not hasattr(fresh, "_fb_constants")
    assert torch.equal(first, distribution_matching(cl, al, fresh, direction="attr_to_class"))
    assert torch.equal(first, distribution_matching(cl, al, r, direction="attr_to_class", validate=False))
    r[1, 1] = 0.9
    fresh[1, 1] = 0.9
    changed = distribution_matching(cl, al, r, direction="attr_to_class", validate=False)
    assert torch.equal(changed, distribution_matching(cl, al, fresh, direction="attr_to_class"))
    assert not torch.equal(changed, first)
