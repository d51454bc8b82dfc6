"""What each notebook claims, and how the numbers it records decide whether the claim held.

One row per claim of the claims tier (``tests/test_claims.py``; a claim carries that test's name), stated on the
numbers the notebook itself records with ``record()`` (``<name>``, its seed spread ``<name>_sd``, the paired gain
``<name>_gain`` and its worst seed ``<name>_gain_min``). The claims tier asserts the claims on its own larger runs;
this table reads them off a suite run, so the run report says whether each held there. The thresholds are the claims
tier's. A claim whose numbers are missing (a notebook not run, or a record it does not make) is "n/a"; with one seed
(no spread) the rule still decides, and the report says "1 seed".

Metric paths are dotted: ``"au_f1_unlabelled.mt_dm"`` is ``metrics["au_f1_unlabelled"]["mt_dm"]``.
"""
from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from typing import Any, Callable, Mapping

HOLDS, FAILS, NOT_AVAILABLE = "yes", "no", "n/a"
_OPS: dict[str, Callable[[float, float], bool]] = {">=": operator.ge, ">": operator.gt, "<=": operator.le,
                                                   "==": operator.eq}


@dataclass(frozen=True)
class Condition:
    """``metric op bound``: ``bound`` a number, or a metric path whose value times ``scale`` is the bound."""

    metric: str
    op: str
    bound: float | str
    scale: float = 1.0

    def text(self) -> str:
        """The condition as a reader sees it, e.g. ``au_f1_unlabelled_gain_min.mt_dm >= 0.03``."""
        bound = f"{self.scale:g} × {self.bound}" if isinstance(self.bound, str) and self.scale != 1 else self.bound
        return f"{self.metric} {self.op} {bound}"


@dataclass(frozen=True)
class Claim:
    """One notebook's claim: its ``notebook`` stem, the ``question`` it asks, the ``claim`` (one sentence), the
    metric paths of the measured ``value``, its ``spread`` (sd over seeds), the paired ``gain`` and its worst seed
    ``gain_min`` (None: not recorded for this claim), and the ``rule``: every condition must hold."""

    name: str
    notebook: str
    question: str
    claim: str
    value: str
    rule: tuple[Condition, ...]
    spread: str | None = None
    gain: str | None = None
    gain_min: str | None = None


@dataclass(frozen=True)
class Verdict:
    """A claim decided on one run's metrics: ``holds`` is HOLDS, FAILS or NOT_AVAILABLE; ``one_seed`` when the
    claim has a spread but the run recorded none; ``measured`` the value with its spread and gain as text."""

    claim: Claim
    holds: str
    measured: str
    one_seed: bool


def _mt_dm(name: str) -> dict[str, str]:
    """The metric paths of MT + DM's ``name`` with its spread and paired gain over MT (``comparison_records``)."""
    return {"value": f"{name}.mt_dm", "spread": f"{name}_sd.mt_dm", "gain": f"{name}_gain.mt_dm",
            "gain_min": f"{name}_gain_min.mt_dm"}


CLAIMS: tuple[Claim, ...] = (
    Claim("test_dm_teaches_the_aus_no_source_labels", "00_quickstart",
          "Does distribution matching teach the AUs that no source labels?",
          "MT + DM scores higher F1 than MT on the AUs no source labels, in every seed.",
          rule=(Condition("au_f1_unlabelled_gain_min.mt_dm", ">=", 0.03),
                Condition("au_auc_unlabelled_gain_min.mt_dm", ">=", 0.10)),
          **_mt_dm("au_f1_unlabelled")),
    Claim("test_dm_costs_nothing_on_the_labelled_tasks", "02_affect_case_study",
          "Does the coupling cost anything on the tasks that have labels?",
          "MT + DM stays within 0.03 of MT on expressions and labelled AUs, with no negative transfer "
          "beyond the seed spread (measured: Δm over single-task).",
          rule=(Condition("expr_accuracy_gain.mt_dm", ">=", -0.03), Condition("au_f1_labelled_gain.mt_dm", ">=", -0.03),
                Condition("n_negative_beyond_spread.mt_dm", "==", 0)),
          value="delta_m.mt_dm", spread="delta_m_sd.mt_dm"),
    Claim("test_zero_shot_compounds_from_the_au_head", "05_zero_few_shot",
          "Can compound expressions be recognised with no compound label, from the AU head?",
          "Zero-shot accuracy on compound faces is at least twice chance.",
          value="zero_shot_mean_accuracy", rule=(Condition("zero_shot_mean_accuracy", ">=", "zero_shot_chance", 2.0),)),
    Claim("test_dm_lifts_zero_shot_where_aus_are_scarce", "05_zero_few_shot",
          "With scarce AU labels, does DM help zero-shot compound recognition?",
          "MT + DM's zero-shot accuracy beats MT's in every seed.",
          value="scarce_zero_shot_mt_dm", spread="scarce_zero_shot_mt_dm_sd", gain="scarce_zero_shot_gain_over_mt",
          gain_min="scarce_zero_shot_gain_over_mt_min",
          rule=(Condition("scarce_zero_shot_gain_over_mt_min", ">", 0.0),)),
    Claim("test_relatedness_estimate_covers_the_generator", "01_relatedness_study",
          "Does the relatedness estimated from co-annotated data recover the generator's table?",
          "The estimate's 95 % intervals cover at least 85 % of the generator's entries.",
          value="estimate_ci_coverage", rule=(Condition("estimate_ci_coverage", ">=", 0.85),)),
    Claim("test_species_dm_teaches_unlabelled_attributes", "04_beyond_faces",
          "Beyond faces: does DM teach the attributes no source labels?",
          "MT + DM beats MT on unlabelled-attribute F1 (+0.03) and attribute accuracy (+0.1) in every seed.",
          rule=(Condition("attr_f1_unlabelled_gain_min.mt_dm", ">=", 0.03),
                Condition("attr_mean_accuracy_gain_min.mt_dm", ">=", 0.10)),
          **_mt_dm("attr_f1_unlabelled")),
    Claim("test_species_coupling_has_no_negative_transfer", "04_beyond_faces",
          "Does coupling the species and attribute tasks hurt either?",
          "MT + DM is nowhere below single-task beyond the seed spread, and both are well above chance on species.",
          value="species_accuracy.mt_dm", spread="species_accuracy_sd.mt_dm",
          rule=(Condition("n_negative_beyond_spread.mt_dm", "==", 0), Condition("species_accuracy.mt_dm", ">=", 0.3),
                Condition("species_accuracy.st", ">=", 0.3))),
)


def lookup(metrics: Mapping[str, Any], path: str | None) -> float | None:
    """The number at dotted ``path`` in ``metrics``; None when absent, null, NaN or not a number."""
    value: Any = metrics
    for part in (path or "").split(".") if path else ():
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    if path is None or isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        return None
    return value


def _condition_holds(condition: Condition, metrics: Mapping[str, Any]) -> bool | None:
    """Whether ``condition`` holds on ``metrics``; None when a number it needs is missing."""
    value = lookup(metrics, condition.metric)
    bound = lookup(metrics, condition.bound) if isinstance(condition.bound, str) else condition.bound
    if value is None or bound is None:
        return None
    return _OPS[condition.op](value, bound * condition.scale)


def _measured(claim: Claim, metrics: Mapping[str, Any]) -> str:
    """``0.291 ± 0.020 (gain +0.081, worst seed +0.051)``; ``n/a`` without the value."""
    value = lookup(metrics, claim.value)
    if value is None:
        return NOT_AVAILABLE
    sd, gain, worst = (lookup(metrics, p) for p in (claim.spread, claim.gain, claim.gain_min))
    text = f"{value:.3f}" + (f" ± {sd:.3f}" if sd is not None else "")
    extra = [f"gain {gain:+.3f}"] if gain is not None else []
    extra += [f"worst seed {worst:+.3f}"] if worst is not None and sd is not None else []
    return text + (f" ({', '.join(extra)})" if extra else "")


def decide(claim: Claim, metrics: Mapping[str, Any] | None) -> Verdict:
    """``claim`` decided on one notebook's ``metrics`` (None or ``{}``: not run): holds when every condition holds,
    n/a when a number the rule or the measured value needs is missing."""
    metrics = metrics or {}
    results = [_condition_holds(c, metrics) for c in claim.rule]
    measured = _measured(claim, metrics)
    if None in results or measured == NOT_AVAILABLE:
        return Verdict(claim, NOT_AVAILABLE, measured, False)
    one_seed = claim.spread is not None and lookup(metrics, claim.spread) is None
    return Verdict(claim, HOLDS if all(results) else FAILS, measured, one_seed)


def verdicts(metrics: Mapping[str, Mapping[str, Any]], claims: tuple[Claim, ...] = CLAIMS) -> list[Verdict]:
    """Every claim decided on a suite's ``metrics`` (notebook stem -> recorded metrics)."""
    return [decide(claim, metrics.get(claim.notebook)) for claim in claims]
