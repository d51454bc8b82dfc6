"""Coupling terms registered by name, as backbones are (docs/method.md#coupling-terms,
docs/method.md#adding-a-coupling-term).

A coupling term ties a class head and an attribute head through the relatedness R (P0 §3.2, P1 §3.2, P2 §3). Each
direction of a term is one function ``loss(batch: CouplingBatch, **options) -> Tensor`` decorated with
``@register(name, direction)``; its keyword options, with their defaults, are the term's options. ``COUPLINGS``
maps every name to its ``CouplingTerm``. ``LossConfig`` selects terms by name with their options; ``combined_loss``
and the trainer ask each term what it needs (labels or not, its set-up check of R) and never name one. A term's
name is its column in ``combined_loss``'s terms and in the training history.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Mapping

from torch import Tensor

from ._inputs import _check_logits, _choice, _class_target, _float, _multi_target
from .relatedness import _check_relatedness, relatedness_tensor

Direction = Literal["class_to_attr", "attr_to_class", "both"]
DIRECTIONS: tuple[str, ...] = ("class_to_attr", "attr_to_class", "both")


@dataclass(frozen=True)
class CouplingBatch:
    """One coupling's view of a batch, what every direction function reads: both heads' logits (float32 or float64),
    R ``(C, K)`` aligned to them and checked, and, for a term that reads labels, the safe targets with their bool
    masks (class codes ``long (B,)``, attribute values ``float (B, K)``; unlabelled entries 0); None otherwise."""

    class_logits: Tensor
    attr_logits: Tensor
    relatedness: Tensor
    class_target: Tensor | None = None
    class_mask: Tensor | None = None
    attr_target: Tensor | None = None
    attr_mask: Tensor | None = None


@dataclass
class CouplingTerm:
    """A registered coupling term: its direction functions and what it needs.

    ``directions``: direction name -> loss function (``"both"`` sums them in registration order).
    ``defaults``: every option of the direction functions with its default (besides ``direction``, whose
    default is ``default_direction``). ``labels``: the term reads the heads' labels (co-annotation does,
    distribution matching does not). ``r_like``: the head whose dtype R takes ("class" or "attr"). ``check``:
    ValueError on a bad option value (run on every call, before any tensor is read). ``check_relatedness(r,
    options)``: the set-up check of an aligned
    R that reads it back (a host sync), e.g. hard co-annotation's prototypical sets; the trainer runs it once.
    """

    name: str
    directions: dict[str, Callable[..., Tensor]] = field(default_factory=dict)
    defaults: dict[str, Any] = field(default_factory=dict)
    labels: bool = False
    r_like: Literal["class", "attr"] = "class"
    check: Callable[[Mapping[str, Any]], None] | None = None
    check_relatedness: Callable[[Tensor, Mapping[str, Any]], None] | None = None
    _params: dict[str, tuple[str, ...]] = field(default_factory=dict, repr=False)

    @property
    def default_direction(self) -> str:
        """"both" for a term with several directions, else its one direction."""
        return "both" if len(self.directions) > 1 else next(iter(self.directions))

    def add(self, direction: str, fn: Callable[..., Tensor]) -> None:
        """Register ``fn`` as this term's ``direction``; its keyword-only parameters (with defaults) are options.
        Registering a function of the same name again (a re-run notebook cell) replaces it; another one raises."""
        old = self.directions.get(direction)
        if direction == "both" or (old is not None and _qualname(old) != _qualname(fn)):
            raise ValueError(f"coupling term {self.name!r}: direction {direction!r} is reserved or already "
                             f"registered ({_qualname(old) if old else 'the sum of all directions'})")
        params = list(inspect.signature(fn).parameters.values())[1:]
        bad = [p.name for p in params if p.kind is not p.KEYWORD_ONLY or p.default is p.empty]
        if bad:
            raise ValueError(f"coupling term {self.name!r}: {fn.__name__} must take (batch, *, option=default, "
                             f"...); parameters {bad} are not keyword-only with a default")
        directions = {**self.directions, direction: fn}
        params_of = {**self._params, direction: tuple(p.name for p in params)}
        defaults: dict[str, Any] = {}
        for d, f in directions.items():
            for p in list(inspect.signature(f).parameters.values())[1:]:
                if defaults.setdefault(p.name, p.default) != p.default:
                    raise ValueError(f"coupling term {self.name!r}: option {p.name!r} has default {p.default!r} in "
                                     f"{_qualname(f)} but {defaults[p.name]!r} in another direction")
        self.directions, self._params, self.defaults = directions, params_of, defaults

    def options(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """Every option: the defaults updated by ``given``, whose names and values are checked (ValueError)."""
        known = {"direction", *self.defaults}
        unknown = sorted(set(given) - known)
        if unknown:
            raise ValueError(f"coupling term {self.name!r}: unknown options {unknown}; it takes {sorted(known)}")
        options = {"direction": self.default_direction, **self.defaults, **given}
        _choice("direction", options["direction"],
                (*self.directions, "both") if len(self.directions) > 1 else tuple(self.directions))
        if self.check is not None:
            self.check(options)
        return options

    def __call__(self, class_logits: Tensor, attr_logits: Tensor, relatedness: Any,
                 class_target: Tensor | None = None, class_mask: Tensor | None = None,
                 attr_target: Tensor | None = None, attr_mask: Tensor | None = None, *, validate: bool = True,
                 caller: str | None = None, **options: Any) -> Tensor:
        """The term on one coupling: the selected direction(s) summed. Checks the options, the logits' shapes, R
        (a ``Relatedness`` or ``(C, K)`` tensor) and, for a term with ``labels``, the targets; ``validate=False``
        skips the checks that read values back (R's entries, label ranges, ``check_relatedness``). ``caller`` names
        the function in error messages (default: the term's name)."""
        fn = caller or self.name
        o = self.options(options)
        _check_logits(fn, "class_logits", class_logits)
        _check_logits(fn, "attr_logits", attr_logits)
        class_logits, attr_logits = _float(class_logits), _float(attr_logits)
        r = relatedness_tensor(relatedness, attr_logits if self.r_like == "attr" else class_logits, validate)
        _check_relatedness(fn, r, class_logits, attr_logits)
        batch = CouplingBatch(class_logits, attr_logits, r)
        if self.labels:
            cls, cmask = _class_target(fn, class_logits, class_target, class_mask, validate)
            y, amask = _multi_target(fn, attr_logits, attr_target, attr_mask, unit=True, validate=validate)
            batch = CouplingBatch(class_logits, attr_logits, r, cls, cmask, y, amask)
        if validate and self.check_relatedness is not None:
            self.check_relatedness(r, o)
        chosen = self.directions if o["direction"] == "both" else [o["direction"]]
        return sum(self.directions[d](batch, **{k: o[k] for k in self._params[d]}) for d in chosen)


COUPLINGS: dict[str, CouplingTerm] = {}


def _qualname(fn: Callable) -> str:
    return f"{fn.__module__}.{fn.__qualname__}"


def register(name: str, direction: str = "class_to_attr", *, labels: bool = False,
             r_like: Literal["class", "attr"] = "class", check: Callable[[Mapping[str, Any]], None] | None = None,
             check_relatedness: Callable[[Tensor, Mapping[str, Any]], None] | None = None) -> Callable:
    """Decorator: register the function as direction ``direction`` of the coupling term ``name`` in
    ``COUPLINGS`` (created on its first direction). The term-wide settings (``labels``, ``r_like``, ``check``,
    ``check_relatedness``; see ``CouplingTerm``) may be given with any of its directions."""

    def add(fn: Callable[..., Tensor]) -> Callable[..., Tensor]:
        term = COUPLINGS.setdefault(name, CouplingTerm(name))
        term.add(direction, fn)
        term.labels = term.labels or labels
        if r_like != "class":
            term.r_like = r_like
        term.check = check or term.check
        term.check_relatedness = check_relatedness or term.check_relatedness
        return fn

    return add


def coupling_term(name: str) -> CouplingTerm:
    """The registered term ``name`` (ValueError naming the registered ones otherwise)."""
    if name not in COUPLINGS:
        raise ValueError(f"unknown coupling term {name!r}; registered are {sorted(COUPLINGS)}")
    return COUPLINGS[name]
