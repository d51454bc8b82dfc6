"""The total objective: ``LossConfig`` selects registered coupling terms by name with their options, and
``combined_loss`` sums the masked task losses and the selected terms (P0 §3.2, P1 §3; docs/method.md#the-total-loss).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Mapping, NamedTuple, Sequence

import torch
from torch import Tensor

from ._inputs import _choice, _float
from .coannotation import ATTRIBUTE_SETS, COANN_MODES, EMPTY_ROWS, CoannMode
from .distribution_matching import DIVERGENCES, REDUCTIONS, VARIANTS
from .registry import DIRECTIONS, CouplingTerm, Direction, coupling_term
from .relatedness import coupling_tensor
from .task import ccc_loss, masked_bce, masked_cross_entropy
from ..study import Coupling
from ..tasks import Task

# the options every selected term takes besides its own: its weight λ and its linear warm-up (0 = off)
_GENERIC = {"weight": 1.0, "warmup_steps": 0}


class Selected(NamedTuple):
    """One coupling term ``LossConfig`` selects: the term, its full options, its weight and its warm-up steps."""

    term: CouplingTerm
    options: dict[str, Any]
    weight: float
    warmup_steps: int


@dataclass
class LossConfig:
    """Loss settings for :func:`combined_loss` (P1 §3; docs/method.md#the-total-loss): task weights and the coupling
    terms, selected by name from ``COUPLINGS`` with their options.

    ``task_weights``: λ_t per task name (missing -> 1; weights are not published). ``couplings``: registered term
    name -> its options (see the term's direction functions), plus ``weight`` (λ, default 1) and
    ``warmup_steps`` [choice] (λ ramps linearly from 1/N to 1 over the first N steps; 0 = off), e.g.
    ``{"dm_js": {"weight": 1.0}}``. The flat fields are presets over the two terms of the papers, kept for
    notebook parameters: ``coann``: None | "hard" | "soft" selects ``"coann"`` with ``coann_weight``,
    ``coann_direction``, ``coann_threshold``, ``coann_attributes``, ``coann_empty_row``; ``dm``: None |
    "class_to_attr" | "attr_to_class" | "both" selects ``"dm"`` in that direction with ``dm_weight``,
    ``dm_reduction`` ("mean" = stable default [choice], "sum" = the literal paper objective), ``dm_detach``,
    ``dm_variant``, ``dm_divergence``, ``dm_temperature``, ``dm_empty_row``, ``dm_bernoulli_kl``, ``dm_eps`` and
    ``dm_warmup_steps``. A term is selected once: a flat preset and a ``couplings`` entry of the same name clash.
    """

    task_weights: dict[str, float] = field(default_factory=dict)
    coann: CoannMode | None = None
    coann_weight: float = 1.0
    coann_direction: Direction = "both"
    coann_threshold: float = 1.0
    coann_attributes: Literal["all", "related"] = "all"
    coann_empty_row: Literal["product", "inactive_fraction", "none"] = "product"
    dm: Direction | None = None
    dm_weight: float = 1.0
    dm_reduction: Literal["sum", "mean"] = "mean"
    dm_detach: bool = False
    dm_variant: Literal["bernoulli", "weighted_mean"] = "bernoulli"
    dm_divergence: Literal["kl", "ce"] = "kl"
    dm_temperature: float = 1.0
    dm_empty_row: Literal["product", "inactive_fraction", "none"] = "product"
    dm_bernoulli_kl: bool = False
    dm_eps: float = 1e-4
    dm_warmup_steps: int = 0
    couplings: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _choice("coann", self.coann, (None, *COANN_MODES))
        _choice("coann_direction", self.coann_direction, DIRECTIONS)
        _choice("coann_attributes", self.coann_attributes, ATTRIBUTE_SETS)
        _choice("coann_empty_row", self.coann_empty_row, EMPTY_ROWS)
        _choice("dm", self.dm, (None, *DIRECTIONS))
        _choice("dm_reduction", self.dm_reduction, REDUCTIONS)
        _choice("dm_variant", self.dm_variant, VARIANTS)
        _choice("dm_divergence", self.dm_divergence, DIVERGENCES)
        _choice("dm_empty_row", self.dm_empty_row, EMPTY_ROWS)
        if self.dm_warmup_steps < 0:
            raise ValueError(f"dm_warmup_steps must be >= 0, got {self.dm_warmup_steps!r}")
        if not 0 < self.dm_eps < 0.5:
            raise ValueError(f"dm_eps must lie in (0, 0.5), got {self.dm_eps!r}")
        if self.dm_bernoulli_kl and (self.dm not in ("class_to_attr", "both") or self.dm_detach):
            raise ValueError(f"dm_bernoulli_kl acts on DM class -> attributes with gradients through q; it has no "
                             f"effect with dm={self.dm!r}, dm_detach={self.dm_detach!r}")
        self.coupling_terms()  # every selected term's name and options checked now

    def task_weight(self, name: str) -> float:
        """λ_t for task ``name`` (1.0 unless set)."""
        return float(self.task_weights.get(name, 1.0))

    def _presets(self) -> dict[str, dict[str, Any]]:
        """The flat fields as ``couplings`` entries."""
        out: dict[str, dict[str, Any]] = {}
        if self.coann:
            out["coann"] = {"weight": self.coann_weight, "mode": self.coann, "direction": self.coann_direction,
                            "threshold": self.coann_threshold, "attributes": self.coann_attributes,
                            "empty_row": self.coann_empty_row}
        if self.dm:
            out["dm"] = {"weight": self.dm_weight, "warmup_steps": self.dm_warmup_steps, "direction": self.dm,
                         "reduction": self.dm_reduction, "detach": self.dm_detach, "variant": self.dm_variant,
                         "divergence": self.dm_divergence, "temperature": self.dm_temperature,
                         "empty_row": self.dm_empty_row, "bernoulli_kl": self.dm_bernoulli_kl, "eps": self.dm_eps}
        return out

    def coupling_terms(self) -> list[Selected]:
        """The selected coupling terms in order (the flat presets, then ``couplings``), options checked."""
        presets = self._presets()
        clash = sorted(set(presets) & set(self.couplings))
        if clash:
            raise ValueError(f"couplings {clash} are also selected by the flat fields ({', '.join(clash)}=...); "
                             "select each term once")
        selected = []
        for name, given in {**presets, **self.couplings}.items():
            given = dict(given)
            weight, warmup = (given.pop(k, d) for k, d in _GENERIC.items())
            if warmup < 0:
                raise ValueError(f"coupling term {name!r}: warmup_steps must be >= 0, got {warmup!r}")
            term = coupling_term(name)
            selected.append(Selected(term, term.options(given), weight, warmup))
        return selected

    def check_relatedness(self, r: Tensor) -> None:
        """The selected terms' set-up checks of one coupling's aligned R (host syncs: the trainer runs them once),
        e.g. hard co-annotation's prototypical sets; ValueError if one fails."""
        for s in self.coupling_terms():
            if s.term.check_relatedness is not None:
                s.term.check_relatedness(r, s.options)


def combined_loss(
    outputs: Mapping[str, Tensor],
    batch: Mapping[str, Any],
    tasks: Sequence[Task],
    couplings: Sequence[Coupling],
    config: LossConfig,
    step: int | None = None,
    *,
    validate: bool = True,
) -> tuple[Tensor, dict[str, Tensor]]:
    """L = Σ_t λ_t L_t + Σ_term λ_term L_term (P0 §3.2, P1 §3; docs/method.md#the-total-loss).

    ``outputs``: task name -> head output; ``batch`` as in the contract (``targets``/``masks`` per task name).
    L_t: multiclass -> :func:`masked_cross_entropy`, multilabel -> :func:`masked_bce`, regression ->
    :func:`ccc_loss`. Each coupling term ``config`` selects is summed over the couplings. Returns (total, terms)
    with unweighted terms keyed by task name and by term name ("coann", "dm", ...; only active ones). ``step``
    drives the terms' warm-up (None = fully on). ``validate=False`` skips every value check (labels, R,
    prototypical sets: host syncs) for callers that validated their data and couplings once (the trainer).
    """
    if not tasks:
        raise ValueError("combined_loss: no tasks given")
    terms: dict[str, Tensor] = {}
    unknown = sorted(set(config.task_weights) - {t.name for t in tasks})
    if unknown:
        raise KeyError(f"task_weights names unknown tasks {unknown}; tasks are {[t.name for t in tasks]}")
    targets, masks = batch["targets"], batch["masks"]

    def get(task: Task) -> tuple[Tensor, Tensor, Tensor]:
        for what, d in (("outputs", outputs), ("batch['targets']", targets), ("batch['masks']", masks)):
            if task.name not in d:
                raise KeyError(f"task {task.name!r} missing from {what} (keys {sorted(d)})")
        out = outputs[task.name]
        if out.ndim != 2 or out.shape[1] != task.n_outputs:
            raise ValueError(
                f"task {task.name!r}: output has shape {tuple(out.shape)}, expected (B, {task.n_outputs})"
            )
        return out, targets[task.name], masks[task.name]

    loss_fns = {"multiclass": masked_cross_entropy, "multilabel": masked_bce, "regression": ccc_loss}
    parts: list[Tensor] = []
    for task in tasks:
        out, tgt, msk = get(task)
        try:
            terms[task.name] = loss_fns[task.kind](out, tgt, msk, validate=validate)
        except ValueError as err:
            raise ValueError(f"task {task.name!r}: {err}") from err
        parts.append(config.task_weight(task.name) * terms[task.name])

    selected = config.coupling_terms()
    values: dict[str, list[Tensor]] = {s.term.name: [] for s in selected}
    for coupling in couplings if selected else ():
        like = outputs.get(coupling.class_task)
        ct, at, r = coupling_tensor(coupling, tasks, None if like is None else _float(like), validate)
        (c_out, c_tgt, c_msk), (a_out, a_tgt, a_msk) = get(ct), get(at)
        try:
            for s in selected:
                values[s.term.name].append(s.term(c_out, a_out, r, c_tgt, c_msk, a_tgt, a_msk, validate=validate,
                                                  **s.options))
        except ValueError as err:
            raise ValueError(f"coupling ({ct.name!r}, {at.name!r}): {err}") from err
    for s in selected:
        if values[s.term.name]:
            terms[s.term.name] = torch.stack(values[s.term.name]).sum()
            ramp = min(1.0, (step + 1) / s.warmup_steps) if s.warmup_steps and step is not None else 1.0
            parts.append(s.weight * ramp * terms[s.term.name])
    return torch.stack(parts).sum(), terms
