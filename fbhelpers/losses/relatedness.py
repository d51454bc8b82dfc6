"""The relatedness R as the coupling terms read it: a validated tensor aligned to the tasks' label orders, with its
derived constants kept (P1 §3.1; docs/method.md#relatedness).

A *relatedness* is a ``Relatedness`` (anything with ``.tensor()``) or a plain ``(C, K)`` tensor / array with
R[c, j] = p(attribute j | class c) in [0, 1]. Checking R's entries reads them back to the host (a device sync on
CUDA): the trainer aligns and validates every coupling's R once at set-up (``coupling_tensor``) and marks its
private copy with ``keep_constants``.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from ..study import Coupling
from ..tasks import Task, find_task


def relatedness_tensor(relatedness: Any, like: Tensor | None = None, validate: bool = True) -> Tensor:
    """R as a validated 2-D tensor (dtype/device of ``like``) from a ``Relatedness`` or a tensor/array (P1 §3.1).

    Duck-typed: anything with ``.tensor()`` is a ``Relatedness``. Entries must be finite and in [0, 1] (checked
    when ``validate``: one host sync; a tensor already of that dtype and device is not copied). R is a fixed
    prior here, so the result is detached.
    """
    dtype = like.dtype if like is not None and like.is_floating_point() else torch.float32
    device = like.device if like is not None else None
    if hasattr(relatedness, "tensor"):
        r = relatedness.tensor(dtype=dtype, device=device)
    else:
        r = torch.as_tensor(relatedness, dtype=dtype, device=device)
    if r.ndim != 2:
        raise ValueError(f"relatedness must be a 2-D (classes, attributes) matrix, got shape {tuple(r.shape)}")
    if validate:
        bad = ~((r >= 0) & (r <= 1))
        if bool(bad.any()):
            raise ValueError(f"relatedness entries must lie in [0, 1] (p(attribute | class)), got {float(r[bad][0])}")
    return r.detach() if r.requires_grad else r  # the same tensor every step (see keep_constants)


def keep_constants(r: Tensor) -> Tensor:
    """``r`` (a relatedness tensor), marked so that the losses compute what they derive from R alone (its empty
    rows, log R clipped, row sums, prototypical sets) once and keep it on ``r``, instead of at every call; an
    in-place torch change of ``r`` is noticed (its version counter) and recomputes them. Only for a tensor the
    caller owns and never changes behind torch's back (e.g. through a numpy array sharing its memory): the trainer
    marks its private aligned copy of each coupling's R. The same operations either way, so the same values."""
    r._fb_constants = None
    return r


def _constant(r: Tensor, key: tuple, compute: Callable[[], Tensor]) -> Tensor:
    """``compute()``, kept on ``r`` when ``r`` is marked by :func:`keep_constants` (recomputed after an in-place
    change of ``r``)."""
    if not hasattr(r, "_fb_constants"):
        return compute()
    try:
        version = r._version
    except RuntimeError:  # an inference-mode tensor has no version counter: nothing kept
        return compute()
    store = r._fb_constants
    if store is None or store[0] != version:
        store = (version, {})
        r._fb_constants = store
    if key not in store[1]:
        store[1][key] = compute()
    return store[1][key]


def _check_relatedness(fn: str, r: Tensor, class_logits: Tensor, attr_logits: Tensor) -> None:
    c, k = class_logits.shape[1], attr_logits.shape[1]
    if tuple(r.shape) != (c, k):
        raise ValueError(
            f"{fn}: relatedness has shape {tuple(r.shape)} but the heads give {c} classes "
            f"(class_logits {tuple(class_logits.shape)}) and {k} attributes (attr_logits {tuple(attr_logits.shape)})"
        )
    if class_logits.shape[0] != attr_logits.shape[0]:
        raise ValueError(
            f"{fn}: class_logits {tuple(class_logits.shape)} and attr_logits {tuple(attr_logits.shape)} "
            "have different batch sizes"
        )


def coupling_tensor(
    coupling: Coupling, tasks: Sequence[Task], like: Tensor | None = None, validate: bool = True
) -> tuple[Task, Task, Tensor]:
    """(class task, attribute task, R aligned to their label orders) for one coupling (P1 §3.1).

    A ``Relatedness`` is reordered with ``.matrix(class labels, attribute labels)``; a plain tensor must already
    have shape (number of classes, number of attributes). ``validate`` checks R's entries (see
    :func:`relatedness_tensor`).
    """
    ct, at = find_task(tasks, coupling.class_task), find_task(tasks, coupling.attr_task)
    if ct.kind != "multiclass" or at.kind != "multilabel":
        raise ValueError(
            f"coupling ({ct.name!r}, {at.name!r}): needs a multiclass and a multilabel task, "
            f"got {ct.kind!r} and {at.kind!r}"
        )
    rel = coupling.relatedness
    if hasattr(rel, "matrix"):
        rel = rel.matrix(ct.labels, at.labels)
    try:
        r = relatedness_tensor(rel, like, validate)
    except ValueError as err:
        raise ValueError(f"coupling ({ct.name!r}, {at.name!r}): {err}") from None
    if tuple(r.shape) != (ct.n_outputs, at.n_outputs):
        raise ValueError(
            f"coupling ({ct.name!r}, {at.name!r}): relatedness has shape {tuple(r.shape)} but tasks "
            f"{ct.name!r} x {at.name!r} need ({ct.n_outputs}, {at.n_outputs})"
        )
    return ct, at, r
