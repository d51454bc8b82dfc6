"""The VA (regression) head's start: a random head collapsed to CCC 0 on one output in some seeds.

Mechanism (``benchmarks/va_collapse.py``): d(1 - CCC)/d(mean prediction) = 4 cov (mu_p - mu_t) / D^2 pushes the
mean *away* from the target mean while the covariance is negative, which a random head has for about half its
outputs; Adam (per-weight steps on ~500 positive features) turns that into mean shifts of O(1) per step, ``tanh``
saturates (pre-activation mean ~6-10) and its gradient vanishes for good. ``MultiHeadNet(regression_init="zeros")``
(the default) starts every regression output at the constant 0: covariance 0, no gradient on the mean.
"""
import pytest
import torch

from fbhelpers.losses import ccc_loss
from helpers import tiny_net


def _net(seed=0, **kw):
    return tiny_net(seed=seed, widths=(8, 16, 32, 64), pool=3, **kw)


def test_regression_heads_start_at_zero_and_other_draws_are_unchanged():
    zero, rand = _net(), _net(regression_init="default")
    assert torch.count_nonzero(zero.heads["va"].weight) == 0 and torch.count_nonzero(zero.heads["va"].bias) == 0
    assert torch.count_nonzero(rand.heads["va"].weight) > 0
    for (name, a), (_, b) in zip(zero.state_dict().items(), rand.state_dict().items()):
        if not name.startswith("heads.va."):
            assert torch.equal(a, b), name  # the head is drawn, then zeroed: every other draw is the same
    with torch.no_grad():
        assert torch.count_nonzero(zero(torch.rand(4, 3, 48, 48))["va"]) == 0


def test_ccc_gradient_of_a_fresh_head_has_no_mean_component():
    """At the start the CCC loss must not push any VA output's mean (the bias gradient): with a random head
    it does, in the direction away from the target mean for outputs with a negative covariance."""
    torch.manual_seed(1)
    x, target = torch.rand(40, 3, 48, 48), torch.rand(40, 2) * 1.6 - 0.8
    mask = torch.ones(40, 2, dtype=torch.bool)
    for init, moves_mean in (("zeros", False), ("default", True)):
        net = _net(2, regression_init=init).train()
        ccc_loss(net(x)["va"], target, mask).backward()
        bias, weight = net.heads["va"].bias.grad, net.heads["va"].weight.grad
        assert bool((bias.abs() > 1e-4).any()) == moves_mean, (init, bias)
        assert bool((weight.norm(dim=1) > 1e-3).all()), (init, weight.norm(dim=1))  # both outputs still learn


def test_unknown_regression_init_is_refused():
    with pytest.raises(ValueError, match="regression_init"):
        _net(regression_init="xavier")


@pytest.mark.claims
@pytest.mark.usefixtures("one_thread")
def test_seed_that_collapsed_keeps_its_va_head():
    """The compare_coupling run of docs/results.md#distribution-matching-on-the-scarce-au-twin, MT + DM seed 2 (VA CCC
    0.365 with a random head, arousal saturated at a pre-tanh mean of 6-10); about 20 s on one core."""
    from fbhelpers.experiments import fit_variant, largest_first_quota
    from fbhelpers.synthetic import face_study

    study = face_study(regime="paper", preset="scarce_au", size=48, seed=0)
    quota = largest_first_quota(study.split("train"), 32, small=8)
    run = fit_variant(study, "mt_dm", 2, steps=800, quota=quota, backbone_kw={"widths": (8, 16, 32, 64), "pool": 3},
                      lr=5e-3, channels_last=True, augment=False)
    s = run.scores
    ccc = s[(s.task == "va") & s.metric.str.startswith("ccc_")].groupby("metric")["value"].mean()
    assert ccc.tolist() == [pytest.approx(0.72, abs=0.15)] * 2, ccc  # arousal, valence (0.000 and 0.731 before)
