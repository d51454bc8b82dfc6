"""Coupling terms registered by name (docs/method.md#coupling-terms, docs/method.md#adding-a-coupling-term): the
registry, ``LossConfig``'s selection by name with options (the flat presets mean the same terms), the trainer's
set-up checks through the terms, and the Jensen–Shannon variant (``losses.jensen_shannon``) against a hand
computation, with a training run that it changes."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import fbhelpers as fb
from fbhelpers.losses import COUPLINGS, Coupling, CouplingBatch, LossConfig, combined_loss, register
from fbhelpers.losses.jensen_shannon import bernoulli_js
from fbhelpers.tasks import Task

R = np.array([[0.0, 0.0, 0.0, 0.0], [1.0, 0.5, 0.0, 0.0], [0.0, 0.0, 1.0, 0.3]])
CLS = Task("cls", "multiclass", ("neutral", "a", "b"))
ATT = Task("att", "multilabel", ("j0", "j1", "j2", "j3"))
CL = np.array([[1.0, -0.5, 0.3], [0.2, 2.0, -1.0]])
AL = np.array([[0.5, -1.0, 1.5, 0.0], [-0.3, 0.8, -2.0, 1.0]])


def t(x, grad=False):
    return torch.tensor(x, dtype=torch.float64, requires_grad=grad)


def softmax(x):
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def js_by_hand(q, p):
    """Σ-free element-wise JS of two Bernoullis as ½ KL(q || m) + ½ KL(p || m) (the other form than the code's)."""
    m = (q + p) / 2

    def kl(a, b):
        return np.where(a > 0, a * np.log(np.where(a > 0, a, 1) / b), 0) + \
            np.where(a < 1, (1 - a) * np.log(np.where(a < 1, 1 - a, 1) / (1 - b)), 0)

    return 0.5 * kl(q, m) + 0.5 * kl(p, m)


def _inputs():
    g = torch.Generator().manual_seed(3)
    outputs = {"cls": torch.randn(5, 3, generator=g), "att": torch.randn(5, 4, generator=g)}
    batch = {"targets": {"cls": torch.tensor([1, 2, 0, 0, 0]), "att": (torch.rand(5, 4, generator=g) > .5).float()},
             "masks": {"cls": torch.tensor([True, True, False, False, True]),
                       "att": torch.tensor([[0] * 4, [0] * 4, [1] * 4, [1, 1, 0, 0], [1] * 4]).bool()}}
    return outputs, batch, [Coupling("cls", "att", torch.tensor(R, dtype=torch.float32))]


# ------------------------------------------------------------------------------------------ the registry
def test_registry_holds_one_function_per_term_and_direction():
    assert {name: list(term.directions) for name, term in COUPLINGS.items() if name in ("coann", "dm", "dm_js")} == {
        "coann": ["class_to_attr", "attr_to_class"], "dm": ["class_to_attr", "attr_to_class"],
        "dm_js": ["class_to_attr"]}
    assert COUPLINGS["coann"].labels and not COUPLINGS["dm"].labels and not COUPLINGS["dm_js"].labels
    assert COUPLINGS["dm"].defaults["reduction"] == COUPLINGS["dm_js"].defaults["reduction"] == "mean"
    assert (COUPLINGS["dm"].default_direction, COUPLINGS["dm_js"].default_direction) == ("both", "class_to_attr")
    # the switches keep their names on the package (not shadowed by the modules of the same name)
    assert fb.losses.distribution_matching.__name__ == "distribution_matching"
    assert fb.losses.co_annotation.__name__ == "co_annotation"


def test_flat_presets_select_the_same_terms_as_couplings_by_name():
    outputs, batch, coup = _inputs()
    flat = LossConfig(coann="hard", coann_weight=3.0, dm="class_to_attr", dm_reduction="sum", dm_weight=0.5,
                      dm_warmup_steps=4)
    named = LossConfig(couplings={
        "coann": {"mode": "hard", "weight": 3.0},
        "dm": {"direction": "class_to_attr", "reduction": "sum", "weight": 0.5, "warmup_steps": 4}})
    assert [(s.term.name, s.options, s.weight, s.warmup_steps) for s in flat.coupling_terms()] == [
        (s.term.name, s.options, s.weight, s.warmup_steps) for s in named.coupling_terms()]
    for step in (0, None):
        a_total, a = combined_loss(outputs, batch, (CLS, ATT), coup, flat, step)
        b_total, b = combined_loss(outputs, batch, (CLS, ATT), coup, named, step)
        assert torch.equal(a_total, b_total) and set(a) == set(b) == {"cls", "att", "coann", "dm"}
    assert LossConfig().coupling_terms() == []


def test_a_registered_term_is_selected_by_name_weighted_and_warmed_up():
    @register("test_gap", "class_to_attr")
    def gap(batch: CouplingBatch, *, power: float = 1.0) -> torch.Tensor:
        q = torch.softmax(batch.class_logits, 1) @ batch.relatedness
        return ((q - torch.sigmoid(batch.attr_logits)).abs() ** power).mean()

    try:
        outputs, batch, coup = _inputs()
        plain, _ = combined_loss(outputs, batch, (CLS, ATT), coup, LossConfig())
        cfg = LossConfig(couplings={"test_gap": {"power": 2.0, "weight": 3.0, "warmup_steps": 4}})
        total, terms = combined_loss(outputs, batch, (CLS, ATT), coup, cfg, step=0)
        q = torch.softmax(outputs["cls"], 1) @ coup[0].relatedness
        ref = ((q - torch.sigmoid(outputs["att"])) ** 2).mean()
        assert terms["test_gap"].item() == pytest.approx(ref.item(), rel=1e-6)
        assert total.item() == pytest.approx((plain + 3.0 * 0.25 * ref).item(), rel=1e-6)  # λ · 1/4 at step 0
        with pytest.raises(ValueError, match=r"'test_gap': unknown options \['powr'\]"):
            LossConfig(couplings={"test_gap": {"powr": 2.0}})
        with pytest.raises(ValueError, match=r"direction must be one of \('class_to_attr',\), got 'both'"):
            LossConfig(couplings={"test_gap": {"direction": "both"}})
        @register("test_gap", "class_to_attr")  # the same function defined again (a re-run notebook cell) replaces it
        def gap(batch: CouplingBatch, *, power: float = 3.0) -> torch.Tensor:
            return batch.attr_logits.sum() * 0

        assert COUPLINGS["test_gap"].directions["class_to_attr"] is gap and COUPLINGS["test_gap"].defaults == {
            "power": 3.0}
    finally:
        del COUPLINGS["test_gap"]
    with pytest.raises(ValueError, match=r"unknown coupling term 'test_gap'; registered are \[.*'dm_js'"):
        LossConfig(couplings={"test_gap": {}})


def test_registration_and_selection_errors():
    with pytest.raises(ValueError, match=r"parameters \['power'\] are not keyword-only with a default"):
        register("test_bad")(lambda batch, power: batch)
    COUPLINGS.pop("test_bad", None)
    with pytest.raises(ValueError, match=r"direction 'class_to_attr' is reserved or already registered "
                                         r"\(fbhelpers.losses.distribution_matching.dm_class_to_attr\)"):
        register("dm", "class_to_attr")(lambda batch: batch.attr_logits.sum())
    assert COUPLINGS["dm"].directions["class_to_attr"].__name__ == "dm_class_to_attr"
    with pytest.raises(ValueError, match=r"couplings \['dm'\] are also selected by the flat fields"):
        LossConfig(dm="class_to_attr", couplings={"dm": {}})
    with pytest.raises(ValueError, match=r"reduction must be one of \('sum', 'mean'\), got 'median'"):
        LossConfig(couplings={"dm_js": {"reduction": "median"}})
    with pytest.raises(ValueError, match="warmup_steps must be >= 0"):
        LossConfig(couplings={"dm_js": {"warmup_steps": -1}})


def test_set_up_checks_come_from_the_selected_terms():
    estimated = torch.tensor(R * 0.9)  # no prototypical entry: hard co-annotation cannot use it
    with pytest.raises(ValueError, match="hard co-annotation needs binary prototypical sets"):
        LossConfig(coann="hard").check_relatedness(estimated)
    with pytest.raises(ValueError, match="hard co-annotation needs binary prototypical sets"):
        LossConfig(couplings={"coann": {"mode": "hard"}}).check_relatedness(estimated)
    for cfg in (LossConfig(coann="soft"), LossConfig(dm="both"), LossConfig(couplings={"dm_js": {}})):
        cfg.check_relatedness(estimated)  # nothing to check for these terms


# ------------------------------------------------------------------------------------------ Jensen–Shannon
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_js_matches_a_hand_computation(reduction):
    q = softmax(CL) @ R  # column 3 of the neutral row is 0: q_3 stays away from 0 only through class b
    p = 1 / (1 + np.exp(-AL))
    per = js_by_hand(q, p)
    ref = (per.mean(1) if reduction == "mean" else per.sum(1)).mean()
    loss = COUPLINGS["dm_js"](t(CL), t(AL), t(R), reduction=reduction)
    assert loss.item() == pytest.approx(ref, rel=1e-9)
    # one entry by hand: q = 0.25, p = 0.75 -> m = 0.5: JS = log 2 - H(0.25) = log 2 + 0.25 log 0.25 + 0.75 log 0.75
    assert bernoulli_js(t(0.25), t(0.75)).item() == pytest.approx(
        np.log(2) + 0.25 * np.log(0.25) + 0.75 * np.log(0.75), rel=1e-12)
    assert bernoulli_js(t(0.0), t(1.0)).item() == pytest.approx(np.log(2), rel=1e-12)  # the bound


def test_js_is_symmetric_bounded_and_zero_at_equality():
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(200, generator=g, dtype=torch.float64), torch.rand(200, generator=g, dtype=torch.float64)
    assert torch.equal(bernoulli_js(a, b), bernoulli_js(b, a))
    assert bool((bernoulli_js(a, b) >= -1e-15).all()) and bool((bernoulli_js(a, b) <= np.log(2)).all())
    # the term: the class head's q and the attribute head's p swapped (R = identity, so q = softmax(class))
    eye = torch.eye(3, dtype=torch.float64)
    x, y = np.array([[0.6, 0.1, 0.3]]), np.array([[0.2, 0.5, 0.3]])
    one = COUPLINGS["dm_js"](t(np.log(x)), t(np.log(y / (1 - y))), eye)
    other = COUPLINGS["dm_js"](t(np.log(y)), t(np.log(x / (1 - x))), eye)
    assert one.item() == pytest.approx(other.item(), rel=1e-12) and one.item() > 1e-3
    # zero where the attribute head predicts q itself, with a zero gradient
    q = softmax(CL) @ R
    cl, al = t(CL, grad=True), t(np.log(np.clip(q, 1e-12, 1) / np.clip(1 - q, 1e-12, 1)), grad=True)
    loss = COUPLINGS["dm_js"](cl, al, t(R))
    loss.backward()
    assert loss.item() == pytest.approx(0.0, abs=1e-12)
    assert float(cl.grad.abs().max()) < 1e-9 and float(al.grad.abs().max()) < 1e-9


def test_js_gradients_reach_both_heads_and_stay_finite():
    cl, al = t(CL, grad=True), t(AL, grad=True)
    COUPLINGS["dm_js"](cl, al, t(R)).backward()
    assert float(cl.grad.abs().sum()) > 0 and float(al.grad.abs().sum()) > 0
    # an attribute in no row (q = 0 exactly) and saturated heads: finite
    r0 = t(np.c_[R, np.zeros(3)])
    cl, al = t([[30.0, -30.0, 0.0]], grad=True), t([[40.0, -40.0, 5.0, -5.0, 0.0]], grad=True)
    loss = COUPLINGS["dm_js"](cl, al, r0)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(cl.grad).all() and torch.isfinite(al.grad).all()


def test_training_with_js_differs_from_mt():
    study = fb.synthetic.face_study(regime="paper", preset="scarce_au", size=32, n_scale=0.3, seed=0)
    runs = {}
    for name, cfg in (("mt", LossConfig()), ("js", LossConfig(couplings={"dm_js": {}}))):
        torch.manual_seed(0)
        model = fb.models.MultiHeadNet(study.tasks, "cnn4", widths=(4, 8, 8, 16), pool=2)
        history = fb.train.fit(model, study, loss_config=cfg, steps=4, quota=8, seed=1, progress=False)
        runs[name] = (model.state_dict(), history)
    (mt, mt_hist), (js, js_hist) = runs["mt"], runs["js"]
    assert "dm_js" in js_hist.columns and "dm_js" not in mt_hist.columns
    assert (js_hist["dm_js"] > 0).all() and (js_hist["dm_js"] <= np.log(2)).all()
    # the first step's task losses are the same (same weights, same batch); the trained weights are not
    assert js_hist["expr"].iloc[0] == pytest.approx(mt_hist["expr"].iloc[0], rel=1e-6)
    changed = [k for k in mt if not torch.equal(mt[k], js[k])]
    assert {"backbone.features.0.weight", "heads.expr.weight", "heads.au.weight"} <= set(changed), changed
