"""Synthetic twins of case study ii (identity + attributes, CelebA-like) and "beyond faces" (species + attributes,
CUB-like), each with a known classes x attributes relatedness (docs/method.md#tasks, docs/method.md#relatedness; P2
arXiv 2401.01219).

One recipe serves both twins. Every class owns (a) a *prevalence profile* p(attribute | class) over visible
attributes, organised in groups (a binary attribute, or mutually exclusive values such as a hair colour or a
bill shape) and (b) persistent *looks* (geometry, shades): a class mean in a standard-normal latent space around which
each image jitters. Each image draws its attributes from its class profile and its looks around the class mean, and
is rendered with vectorised numpy under nuisance (position, scale, rotation, background, lighting, pixel noise).
The profile table is the true relatedness. Sources follow the papers' regime of non-overlapping annotations: one
source labels the class only, one labels attributes only, a small one labels both, and every test split is fully
labelled; each source's ``val`` split (a tenth of its training size) is drawn and labelled like its training
split, for model selection. Attributes that are not part of the task (``n_attributes`` smaller than the
catalogue) are still drawn and rendered: visual variation nobody annotated, as in the real datasets.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pandas as pd

from ..relatedness import Relatedness, estimate
from ..source import Source, split_sizes
from ..tasks import attribute_task, classification_task
from ..study import Coupling, LabelGroups, Roles, Study

_F = np.float32

# ----------------------------------------------------------------------------------------------- catalogues
HAIR_COLOURS: tuple[str, ...] = ("Black_Hair", "Blond_Hair", "Brown_Hair", "Gray_Hair")
# name -> (base rate, persistence spread, weight of the identity's masculinity latent) [choice]
_BINARY_FACE: dict[str, tuple[float, float, float]] = {
    "Eyeglasses": (0.07, 2.5, 0.3),
    "Wearing_Hat": (0.05, 1.5, 0.0),
    "Bangs": (0.15, 2.0, -0.5),
    "No_Beard": (0.83, 2.5, -2.5),
    "Mustache": (0.06, 2.0, 1.5),
    "Smiling": (0.48, 0.8, 0.0),
    "Mouth_Slightly_Open": (0.48, 0.6, 0.0),
    "Wearing_Earrings": (0.19, 2.0, -1.5),
    "Heavy_Makeup": (0.39, 2.0, -2.0),
    "Wearing_Lipstick": (0.47, 2.0, -2.5),
    "Rosy_Cheeks": (0.07, 1.5, -0.5),
    "Pale_Skin": (0.04, 2.0, 0.0),
    "Bushy_Eyebrows": (0.14, 2.5, 0.8),
    "Big_Nose": (0.23, 3.0, 0.5),
    "Narrow_Eyes": (0.12, 2.0, 0.0),
    "Sideburns": (0.06, 2.0, 1.5),
}
_FACE_ORDER = ("Eyeglasses", "Wearing_Hat", *HAIR_COLOURS, "Bangs", "No_Beard", "Mustache", "Smiling",
               "Mouth_Slightly_Open", "Wearing_Earrings", "Heavy_Makeup", "Wearing_Lipstick", "Rosy_Cheeks",
               "Pale_Skin", "Bushy_Eyebrows", "Big_Nose", "Narrow_Eyes", "Sideburns")
IDENTITY_ATTRIBUTES: tuple[str, ...] = _FACE_ORDER  # CelebA names; n_attributes takes the first n
_HAIR_POPULARITY = np.array([0.30, 0.20, 0.35, 0.07, 0.08])  # the 4 named colours + an unnamed (red) one [choice]
_HAIR_RGB = np.array([[0.09, 0.08, 0.08], [0.92, 0.80, 0.45], [0.45, 0.28, 0.14], [0.72, 0.72, 0.74],
                      [0.70, 0.28, 0.10]], _F)

PALETTE: tuple[str, ...] = ("blue", "brown", "iridescent", "purple", "rufous", "grey", "yellow", "olive", "green",
                            "pink", "orange", "black", "white", "red", "buff")  # CUB's 15 colours
_PALETTE_RGB = np.array([
    [0.20, 0.35, 0.85], [0.45, 0.30, 0.16], [0.15, 0.55, 0.60], [0.50, 0.22, 0.62], [0.72, 0.30, 0.12],
    [0.55, 0.56, 0.58], [0.97, 0.86, 0.18], [0.50, 0.50, 0.18], [0.18, 0.62, 0.22], [0.96, 0.60, 0.72],
    [0.98, 0.55, 0.08], [0.07, 0.07, 0.08], [0.96, 0.96, 0.95], [0.85, 0.08, 0.10], [0.87, 0.77, 0.56]], _F)
SPECIES_GROUPS: dict[str, tuple[str, ...]] = {
    "has_bill_shape": ("all-purpose", "cone", "dagger", "hooked", "needle", "spatulate"),
    "has_bill_length": ("shorter_than_head", "about_the_same_as_head", "longer_than_head"),
    "has_bill_color": PALETTE,
    "has_crown_color": PALETTE,
    "has_head_pattern": ("plain", "capped", "crested", "eyebrow", "eyering", "masked"),
    "has_breast_color": PALETTE,
    "has_breast_pattern": ("solid", "spotted", "striped", "multi-colored"),
    "has_wing_color": PALETTE,
    "has_wing_pattern": ("solid", "spotted", "striped", "multi-colored"),
    "has_upper_tail_color": PALETTE,
    "has_tail_shape": ("forked_tail", "rounded_tail", "notched_tail", "fan-shaped_tail", "pointed_tail",
                       "squared_tail"),
    "has_leg_color": PALETTE,
    "has_size": ("very_small_(3_-_5_in)", "small_(5_-_9_in)", "medium_(9_-_16_in)", "large_(16_-_32_in)",
                 "very_large_(32_-_72_in)"),
    "has_shape": ("perching-like", "duck-like", "long-legged-like", "upright-perching_water-like"),
}
SPECIES_ATTRIBUTES: tuple[str, ...] = tuple(f"{g}::{v}" for g, vs in SPECIES_GROUPS.items() for v in vs)

# The roles of the three sources of both object twins (``Study.roles``).
_ROLES: dict[str, Roles] = {cls: Roles(class_source=cls, attr_source="attributes", full_source="coannotated")
                            for cls in ("identity", "species")}
_ID_PRESETS: dict[str, dict[str, float]] = {
    "default": dict(images_per_identity=50, attr_images_per_identity=25, coann_images_per_identity=3,
                    test_images_per_identity=10, attr_label_fraction=0.5, identity_label_fraction=1.0),
    "scarce_attr": dict(images_per_identity=50, attr_images_per_identity=8, coann_images_per_identity=1,
                        test_images_per_identity=10, attr_label_fraction=0.25, identity_label_fraction=1.0),
    "full": dict(images_per_identity=50, attr_images_per_identity=25, coann_images_per_identity=3,
                 test_images_per_identity=10, attr_label_fraction=1.0, identity_label_fraction=1.0),
}
_SP_PRESETS: dict[str, dict[str, float]] = {
    "default": dict(images_per_species=30, attr_images_per_species=15, coann_images_per_species=2,
                    test_images_per_species=6, attr_label_fraction=0.5),
    "scarce_attr": dict(images_per_species=30, attr_images_per_species=5, coann_images_per_species=1,
                        test_images_per_species=6, attr_label_fraction=0.25),
    "full": dict(images_per_species=30, attr_images_per_species=15, coann_images_per_species=2,
                 test_images_per_species=6, attr_label_fraction=1.0),
}
PRESETS: tuple[str, ...] = tuple(_ID_PRESETS)


# ----------------------------------------------------------------------------------------------- argument checks
def _check_int(name: str, value: Any, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < low or (high is not None and value > high):
        span = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be {span}, got {value!r}")
    return int(value)


def _check_fraction(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) or not 0 <= value <= 1:
        raise ValueError(f"{name} must be a fraction in [0, 1], got {value!r}")
    return float(value)


def _check_positive(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not value > 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")


def _check_nonnegative(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not value >= 0:
        raise ValueError(f"{name} must be a number >= 0, got {value!r}")


def _resolve(preset: str, table: dict[str, dict[str, float]], given: dict[str, Any]) -> dict[str, Any]:
    if preset not in table:
        raise ValueError(f"unknown preset {preset!r}; choose one of {tuple(table)}")
    return {k: (table[preset][k] if given.get(k) is None else given[k]) for k in table[preset]}


# ----------------------------------------------------------------------------------------------- generative model
@dataclass(frozen=True)
class _Model:
    """Class-level truth: attribute prevalences (C, A) in groups, look means (C, D) and their within-class jitter."""

    classes: tuple[str, ...]
    attributes: tuple[str, ...]
    groups: tuple[np.ndarray, ...]  # column indices; the values of a group are mutually exclusive
    prevalence: np.ndarray
    looks: np.ndarray
    jitter: float

    def sample(self, labels: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Attributes (N, A) uint8 and looks (N, D) of images of classes ``labels``."""
        n = len(labels)
        attrs = np.zeros((n, len(self.attributes)), np.uint8)
        u = rng.random((n, len(self.groups)))
        for g, cols in enumerate(self.groups):
            cum = np.cumsum(self.prevalence[labels][:, cols], axis=1)
            cum[cum[:, -1] > 1 - 1e-9, -1] = 1.0  # a complete group always yields one of its values
            pick = (u[:, g, None] >= cum).sum(axis=1)  # == len(cols): none of the group's named values
            hit = pick < len(cols)
            attrs[np.flatnonzero(hit), cols[pick[hit]]] = 1
        looks = self.looks[labels] + self.jitter * rng.standard_normal((n, self.looks.shape[1]))
        return attrs, looks.astype(_F)

    def bayes_accuracy(self, labels: np.ndarray, attrs: np.ndarray, looks: np.ndarray) -> float:
        """Accuracy of the Bayes classifier that sees the latents (uniform prior): an upper bound for images."""
        if len(labels) == 0:
            return float("nan")
        p = np.clip(self.prevalence, 1e-6, 1 - 1e-6)
        loglik = np.zeros((len(labels), len(self.classes)))
        for cols in self.groups:
            rest = np.log(np.clip(1 - self.prevalence[:, cols].sum(axis=1), 1e-6, 1))
            y = attrs[:, cols].astype(np.float64)
            loglik += y @ np.log(p[:, cols]).T + (1 - y.sum(axis=1, keepdims=True)) * rest[None, :]
        d2 = ((looks[:, None, :].astype(np.float64) - self.looks[None]) ** 2).sum(axis=2)
        loglik -= 0.5 * d2 / self.jitter ** 2
        return float((loglik.argmax(axis=1) == labels).mean())


def _categorical(rng: np.random.Generator, n: int, popularity: np.ndarray, purity: tuple[float, float]) -> np.ndarray:
    """(n, k) profiles: weight w ~ Beta(purity) on a main value (drawn by popularity), the rest Dirichlet(0.5)."""
    k = len(popularity)
    main = rng.choice(k, size=n, p=popularity)
    w = rng.beta(*purity, size=(n, 1))
    return w * np.eye(k)[main] + (1 - w) * rng.dirichlet(np.full(k, 0.5), size=n)


# ----------------------------------------------------------------------------------------------- raster primitives
def _c(x: Any) -> np.ndarray:
    return np.asarray(x, _F).reshape(-1, 1, 1)


def _edge(sd: np.ndarray, px: np.ndarray) -> np.ndarray:
    """Coverage in [0, 1] from a signed distance (local units, > 0 inside): about one pixel of anti-aliasing."""
    return np.clip(sd * px + 0.5, 0.0, 1.0)


class _View:
    """Coordinates ``u`` (right) and ``v`` (down), pixels per unit ``px`` and per-image parameters (``view[key]``)
    of some images of a chunk; ``frame`` gives the coordinates along / across a rotated axis."""

    def __init__(self, u: np.ndarray, v: np.ndarray, px: np.ndarray, p: dict, idx: np.ndarray | None = None,
                 cache: dict | None = None):
        self.u, self.v, self.px, self._p, self._idx = u, v, px, p, idx
        self._cache = {} if cache is None else cache

    def __getitem__(self, key: str) -> np.ndarray:
        if self._idx is None:
            return self._p[key]
        if key not in self._cache:
            self._cache[key] = self._p[key][self._idx]
        return self._cache[key]

    def frame(self, ox: Any, oy: Any, angle: Any) -> "_View":
        ca, sa = _c(np.cos(angle)), _c(np.sin(angle))
        du, dv = self.u - _c(ox), self.v - _c(oy)
        return _View(ca * du + sa * dv, ca * dv - sa * du, self.px, self._p, self._idx, self._cache)


def _ellipse(g: _View, cx, cy, rx, ry, angle=None) -> np.ndarray:
    du, dv = g.u - _c(cx), g.v - _c(cy)
    if angle is not None:
        ca, sa = _c(np.cos(angle)), _c(np.sin(angle))
        du, dv = ca * du + sa * dv, ca * dv - sa * du
    rx, ry = _c(rx), _c(ry)
    r2 = (du / rx) ** 2 + (dv / ry) ** 2
    return _edge((1 - r2) * (0.5 * np.minimum(rx, ry)), g.px)  # (1 - r^2) / 2 ~ 1 - r at the rim


def _capsule(g: _View, ax, ay, bx, by, r) -> np.ndarray:
    ax, ay, r = _c(ax), _c(ay), _c(r)
    dx, dy = _c(bx) - ax, _c(by) - ay
    pu, pv = g.u - ax, g.v - ay
    t = np.clip((pu * dx + pv * dy) / np.maximum(dx * dx + dy * dy, 1e-9), 0, 1)
    d2 = (pu - t * dx) ** 2 + (pv - t * dy) ** 2
    return _edge((r * r - d2) / (2 * r), g.px)


def _ring(g: _View, cx, cy, radius, width) -> np.ndarray:
    d = np.sqrt((g.u - _c(cx)) ** 2 + (g.v - _c(cy)) ** 2)
    return _edge(_c(width) - np.abs(d - _c(radius)), g.px)


def _polygon(g: _View, pts: list[tuple[Any, Any]]) -> np.ndarray:
    """Convex polygon through ``pts`` (pairs of scalars or per-image arrays), either orientation."""
    m = g.u.shape[0]
    x = np.stack([np.broadcast_to(np.asarray(a, _F), (m,)) for a, _ in pts], 1)
    y = np.stack([np.broadcast_to(np.asarray(b, _F), (m,)) for _, b in pts], 1)
    area = (x * np.roll(y, -1, 1) - np.roll(x, -1, 1) * y).sum(axis=1)
    sign = np.where(area >= 0, 1.0, -1.0)
    sd = None
    for i in range(len(pts)):
        j = (i + 1) % len(pts)
        ex, ey = x[:, j] - x[:, i], y[:, j] - y[:, i]
        length = np.maximum(np.hypot(ex, ey), 1e-9)
        d = (g.v - _c(y[:, i])) * _c(sign * ex / length) - (g.u - _c(x[:, i])) * _c(sign * ey / length)
        sd = d if sd is None else np.minimum(sd, d)
    return _edge(sd, g.px)


def _above(g: _View, y) -> np.ndarray:
    """Soft half-plane v < y."""
    return _edge(_c(y) - g.v, g.px)


class _Canvas:
    """One chunk of images: the pixel grid in object-local coordinates and a channel-first RGB canvas."""

    def __init__(self, size: int, p: dict[str, np.ndarray]):
        n = len(p["tx"])
        g = ((np.arange(size, dtype=_F) + 0.5) / size * 2 - 1)
        self.x, self.y = g[None, None, :], g[None, :, None]
        dx, dy = self.x - _c(p["tx"]), self.y - _c(p["ty"])
        ca, sa, s = _c(np.cos(p["angle"])), _c(np.sin(p["angle"])), _c(p["scale"])
        u = (ca * dx + sa * dy) / s
        if "flip" in p:
            u = u * _c(p["flip"])
        self.p, self.n, self.hw = p, n, size * size
        self.local = _View(u, (ca * dy - sa * dx) / s, s * (size / 2), p)
        shape = (n, size, size)
        self.screen = _View(np.broadcast_to(self.x, shape), np.broadcast_to(self.y, shape),
                            np.full((n, 1, 1), size / 2, _F), p)
        grad = 1 + _c(p["bg_grad"]) * self.y
        self.rgb = np.stack([np.broadcast_to(_c(p["bg"][:, c]) * grad, shape) for c in range(3)]).astype(_F)

    def layer(self, fn: Callable[[_View], np.ndarray], colour: str | Any, on: np.ndarray | None = None,
              strength: float = 1.0, screen: bool = False) -> None:
        """Blend colour (a per-image parameter name or one RGB) with coverage ``fn(view)`` on the images ``on``."""
        base, idx = (self.screen if screen else self.local), None
        g = base
        if on is not None and not on.all():
            idx = np.flatnonzero(on)
            if len(idx) == 0:
                return
            g = _View(base.u[idx], base.v[idx], base.px[idx], self.p, idx)
        alpha = fn(g)
        if strength != 1.0:
            alpha = alpha * _F(strength)
        m = alpha.shape[0]
        col = g[colour] if isinstance(colour, str) else np.broadcast_to(np.asarray(colour, _F), (m, 3))
        flat = alpha.reshape(-1)
        hit = np.flatnonzero(flat)
        if len(hit) > 0.3 * flat.size:
            for c in range(3):
                ch = self.rgb[c] if idx is None else self.rgb[c, idx]
                ch += alpha * (_c(col[:, c]) - ch)
                if idx is not None:
                    self.rgb[c, idx] = ch
            return
        img = hit // self.hw
        target = (img if idx is None else idx[img]) * self.hw + hit % self.hw
        w = flat[hit]
        for c in range(3):
            ch = self.rgb[c].reshape(-1)
            vals = ch[target]
            ch[target] = vals + w * (col[img, c] - vals)

    def finish(self, rng: np.random.Generator) -> np.ndarray:
        p = self.p
        shade = (1 + _c(p["light"][:, 0]) * self.x + _c(p["light"][:, 1]) * self.y) * _c(p["gain"])
        img = self.rgb * shade[None] * p["cast"].T[:, :, None, None]
        noise = rng.random(img.shape, dtype=_F) - _F(0.5)  # uniform pixel noise, sd = p["noise"]
        img += noise * (_c(p["noise"]) * _F(12 ** 0.5))[None]
        return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8).transpose(1, 2, 3, 0)


def _nuisance(n: int, rng: np.random.Generator, nuisance: float, base_scale: float, flip: bool) -> dict:
    """Per-image position, scale, rotation, background, lighting, colour cast and noise [choice: magnitudes]."""
    k = nuisance
    p = dict(
        tx=np.clip(rng.normal(0, 0.07 * k, n), -0.2, 0.2), ty=np.clip(rng.normal(0, 0.07 * k, n), -0.2, 0.2),
        scale=base_scale * np.exp(np.clip(rng.normal(0, 0.07 * k, n), -0.2, 0.2)),
        angle=rng.normal(0, 0.08 * k, n), bg=rng.uniform(0.1, 0.9, (n, 3)).astype(_F),
        bg_grad=rng.normal(0, 0.2 * k, n), light=rng.normal(0, 0.15 * k, (n, 2)),
        gain=np.exp(rng.normal(0, 0.12 * k, n)), cast=np.exp(rng.normal(0, 0.04 * k, (n, 3))).astype(_F),
        noise=np.full(n, 0.03 * k),
    )
    if flip:
        p["flip"] = np.where(rng.random(n) < 0.5, -1.0, 1.0)
    return p


def _render(draw: Callable[[_Canvas], None], params: dict[str, np.ndarray], n: int, size: int,
            rng: np.random.Generator) -> np.ndarray:
    out = np.empty((n, size, size, 3), np.uint8)
    chunk = max(16, 2 ** 20 // (size * size))
    for start in range(0, n, chunk):
        canvas = _Canvas(size, {k: v[start:start + chunk] for k, v in params.items()})
        draw(canvas)
        out[start:start + chunk] = canvas.finish(rng)
    return out


def _rgb(x: np.ndarray) -> np.ndarray:
    return np.clip(x, 0, 1).astype(_F)


# ----------------------------------------------------------------------------------------------- faces
_FACE_LOOKS = ("face_rx", "face_ry", "eye_dx", "eye_y", "eye_r", "nose_len", "mouth_w", "mouth_y", "hairline",
               "hair_len", "skin", "hair_shade")
_FACE_BASE = np.array([0.56, 0.74, 0.25, -0.08, 0.075, 0.20, 0.17, 0.38, -0.42, 0.45, 0.45, 1.0], _F)
_FACE_STEP = np.array([0.04, 0.04, 0.025, 0.03, 0.008, 0.035, 0.025, 0.03, 0.06, 0.35, 0.22, 0.12], _F)
_SKIN_LIGHT, _SKIN_DARK = np.array([0.98, 0.84, 0.72], _F), np.array([0.42, 0.27, 0.18], _F)


def _face_model(n_identities: int, rng: np.random.Generator, jitter: float) -> _Model:
    names = tuple(f"id_{i:03d}" for i in range(n_identities))
    hair = _categorical(rng, n_identities, _HAIR_POPULARITY, (6.0, 1.5))
    masculine = rng.standard_normal(n_identities)
    cols = {}
    for name, (base, spread, weight) in _BINARY_FACE.items():
        logit = np.log(base / (1 - base)) + spread * rng.standard_normal(n_identities) + weight * masculine
        cols[name] = 1 / (1 + np.exp(-logit))
    cols.update({name: hair[:, j] for j, name in enumerate(HAIR_COLOURS)})
    prevalence = np.stack([cols[a] for a in _FACE_ORDER], axis=1)
    hair_cols = np.array([_FACE_ORDER.index(a) for a in HAIR_COLOURS])
    groups = (hair_cols, *[np.array([j]) for j, a in enumerate(_FACE_ORDER) if a not in HAIR_COLOURS])
    looks = rng.standard_normal((n_identities, len(_FACE_LOOKS)))
    return _Model(names, _FACE_ORDER, groups, prevalence, looks, jitter)


def _face_params(attrs: np.ndarray, looks: np.ndarray, rng: np.random.Generator, nuisance: float) -> dict:
    n = len(attrs)
    p = _nuisance(n, rng, nuisance, base_scale=0.88, flip=False)
    geo = (_FACE_BASE + _FACE_STEP * looks).astype(_F)
    g = {k: geo[:, j] for j, k in enumerate(_FACE_LOOKS)}
    on = {a: attrs[:, j].astype(bool) for j, a in enumerate(_FACE_ORDER)}
    p.update({f"on_{a}": v for a, v in on.items()})
    t = np.clip(g["skin"], 0, 1)[:, None]
    skin = _SKIN_LIGHT * (1 - t) + _SKIN_DARK * t
    skin = np.where(on["Pale_Skin"][:, None], skin + 0.45 * (1 - skin), skin)
    hair_idx = np.full(n, 4)
    for j, a in enumerate(HAIR_COLOURS):
        hair_idx[on[a]] = j
    hair = _rgb(_HAIR_RGB[hair_idx] * g["hair_shade"][:, None])
    big = on["Big_Nose"].astype(_F)
    er = np.clip(g["eye_r"], 0.05, 0.1)
    p.update(
        rx=g["face_rx"], ry=g["face_ry"], ex=g["eye_dx"], ey=g["eye_y"], er=er, mw=g["mouth_w"], my=g["mouth_y"],
        hl=g["hairline"], hair_len=np.clip(g["hair_len"], 0.0, 1.2),
        skin_rgb=_rgb(skin), neck_rgb=_rgb(skin * 0.85), ear_rgb=_rgb(skin * 0.93), nose_rgb=_rgb(skin * 0.72),
        hair_rgb=hair, beard_rgb=_rgb(hair * 0.8), moustache_rgb=_rgb(hair * 0.65), brow_rgb=_rgb(0.5 * hair + 0.5 * np.array([0.1, 0.07, 0.05])),
        lips_rgb=_rgb(np.where(on["Wearing_Lipstick"][:, None], [0.82, 0.05, 0.15],
                               skin * 0.62 + np.array([0.12, 0.0, 0.0]))),
        shirt=rng.uniform(0.1, 0.9, (n, 3)).astype(_F), hat=rng.uniform(0.05, 0.95, (n, 3)).astype(_F),
        eye_h=er * np.where(on["Narrow_Eyes"], 0.45, 1.0).astype(_F),
        brow_r=np.where(on["Bushy_Eyebrows"], 0.042, 0.018).astype(_F),
        nose_w=0.06 + 0.05 * big, nose_tip=g["eye_y"] + 0.02 + g["nose_len"] * (1 + 0.35 * big),
        smile_r=(g["mouth_w"] ** 2 + 0.01) / 0.2,  # circle through (+-mw, my - 0.05) and (0, my + 0.05)
        glass_r=er * 2.1,
    )
    return p


def _pair(fn: Callable[[int], np.ndarray]) -> np.ndarray:
    """Union of a left (-1) and right (+1) feature."""
    return np.maximum(fn(-1), fn(1))


def _draw_face(cv: _Canvas) -> None:
    L, p = cv.layer, cv.p
    L(lambda g: _ellipse(g, 0, -0.1 + 0.35 * g["hair_len"], g["rx"] * 1.22, g["ry"] * (0.95 + 0.35 * g["hair_len"])),
      "hair_rgb")
    L(lambda g: _ellipse(g, 0, 1.25, 0.95, 0.5), "shirt")
    L(lambda g: _ellipse(g, 0, 0.75, 0.2, 0.35), "neck_rgb")
    L(lambda g: _pair(lambda s: _ellipse(g, s * g["rx"], g["ey"] + 0.12, 0.08, 0.13)), "ear_rgb")
    L(lambda g: _ellipse(g, 0, 0, g["rx"], g["ry"]), "skin_rgb")
    L(lambda g: _pair(lambda s: _ellipse(g, s * g["rx"], g["ey"] + 0.29, 0.055, 0.055)), [0.98, 0.82, 0.15],
      p["on_Wearing_Earrings"])
    L(lambda g: _ellipse(g, 0, 0.02, g["rx"] * 1.04, g["ry"] * 1.05) * (1 - _above(g, g["my"] - 0.15)),
      "beard_rgb", ~p["on_No_Beard"])
    L(lambda g: _pair(lambda s: _capsule(g, s * (g["rx"] - 0.05), g["hl"] + 0.12, s * (g["rx"] - 0.07),
                                         g["ey"] + 0.3, 0.055)), "beard_rgb", p["on_Sideburns"])
    L(lambda g: _ellipse(g, 0, -0.08, g["rx"] * 1.1, g["ry"] * 1.02) * _edge(_c(g["hl"]) + 0.6 * g.u ** 2 - g.v, g.px),
      "hair_rgb")
    L(lambda g: _ellipse(g, 0, -0.05, g["rx"] * 1.05, g["ry"])
      * _edge(_c(g["ey"] - 0.16) + 0.025 * np.sin(g.u * 30) - g.v, g.px), "hair_rgb", p["on_Bangs"])
    L(lambda g: _pair(lambda s: _ellipse(g, s * g["ex"], g["ey"] - 0.035, g["er"] * 1.9, g["er"] * 1.3)),
      [0.55, 0.25, 0.62], p["on_Heavy_Makeup"], 0.85)
    L(lambda g: _pair(lambda s: _ellipse(g, s * (g["ex"] + 0.03), g["ey"] + 0.25, 0.11, 0.08)), [0.95, 0.35, 0.42],
      p["on_Rosy_Cheeks"], 0.7)
    L(lambda g: _pair(lambda s: _ellipse(g, s * g["ex"], g["ey"], g["er"] * 1.5, g["eye_h"])), [0.97, 0.97, 0.97])
    L(lambda g: _pair(lambda s: _ellipse(g, s * g["ex"], g["ey"], g["er"] * 0.75,
                                         np.minimum(g["er"] * 0.75, g["eye_h"]))), [0.15, 0.1, 0.08])
    L(lambda g: _pair(lambda s: _capsule(g, s * (g["ex"] - 0.1), g["ey"] - 0.15, s * (g["ex"] + 0.1),
                                         g["ey"] - 0.17, g["brow_r"])), "brow_rgb")
    L(lambda g: _polygon(g, [(0, g["ey"] + 0.02), (-g["nose_w"], g["nose_tip"]), (g["nose_w"], g["nose_tip"])]),
      "nose_rgb", strength=0.8)
    L(lambda g: _capsule(g, -g["mw"] * 0.95, g["my"] - 0.07, g["mw"] * 0.95, g["my"] - 0.07, 0.048), "moustache_rgb",
      p["on_Mustache"])
    L(lambda g: _ellipse(g, 0, g["my"] + 0.015, g["mw"] * 0.72, 0.065), [0.25, 0.04, 0.05],
      p["on_Mouth_Slightly_Open"])
    L(lambda g: _ring(g, 0, g["my"] + 0.05 - g["smile_r"], g["smile_r"], 0.028) * (1 - _above(g, g["my"] - 0.06)),
      "lips_rgb", p["on_Smiling"])
    L(lambda g: _capsule(g, -g["mw"], g["my"], g["mw"], g["my"], 0.028), "lips_rgb", ~p["on_Smiling"])
    glasses = p["on_Eyeglasses"]
    L(lambda g: _pair(lambda s: _ellipse(g, s * g["ex"], g["ey"], g["glass_r"], g["glass_r"])), [0.6, 0.7, 0.8],
      glasses, 0.25)
    L(lambda g: np.maximum.reduce([
        _pair(lambda s: _ring(g, s * g["ex"], g["ey"], g["glass_r"], 0.024)),
        _pair(lambda s: _capsule(g, s * (g["ex"] + g["glass_r"]), g["ey"], s * g["rx"], g["ey"] - 0.02, 0.02)),
        _capsule(g, g["glass_r"] - g["ex"], g["ey"], g["ex"] - g["glass_r"], g["ey"], 0.02)]),
      [0.08, 0.08, 0.1], glasses)
    L(lambda g: np.maximum(_capsule(g, -g["rx"] * 1.35, g["hl"] - 0.02, g["rx"] * 1.35, g["hl"] - 0.02, 0.055),
                           _ellipse(g, 0, g["hl"] - 0.02, g["rx"] * 0.98, 0.42) * _above(g, g["hl"] - 0.02)),
      "hat", p["on_Wearing_Hat"])


# ----------------------------------------------------------------------------------------------- birds
_BIRD_LOOKS = ("aspect", "head", "tail", "bill_angle", "legs", "shade", "warmth", "head_y")
_BIRD_BASE = np.array([1.0, 1.0, 1.0, 0.05, 1.0, 1.0, 0.0, 0.0], _F)
_BIRD_STEP = np.array([0.1, 0.1, 0.15, 0.12, 0.15, 0.1, 0.06, 0.04], _F)
_SIZE_SCALE = np.array([0.74, 0.84, 0.94, 1.04, 1.14], _F)
# has_shape -> (body rx, body ry, leg length, body tilt) [choice]
_SHAPES = np.array([[0.40, 0.25, 0.16, -0.30], [0.48, 0.22, 0.05, 0.0], [0.36, 0.22, 0.36, -0.15],
                    [0.27, 0.34, 0.14, -0.75]], _F)


def _bird_model(n_species: int, rng: np.random.Generator, jitter: float) -> _Model:
    names = tuple(f"species_{i:03d}" for i in range(n_species))
    blocks, groups, start = [], [], 0
    for values in SPECIES_GROUPS.values():
        popularity = rng.dirichlet(np.full(len(values), 2.0))
        blocks.append(_categorical(rng, n_species, popularity, (4.0, 1.5)))
        groups.append(np.arange(start, start + len(values)))
        start += len(values)
    looks = rng.standard_normal((n_species, len(_BIRD_LOOKS)))
    return _Model(names, SPECIES_ATTRIBUTES, tuple(groups), np.concatenate(blocks, axis=1), looks, jitter)


def _bird_params(attrs: np.ndarray, looks: np.ndarray, rng: np.random.Generator, nuisance: float) -> dict:
    n = len(attrs)
    p = _nuisance(n, rng, nuisance, base_scale=1.1, flip=True)
    geo = (_BIRD_BASE + _BIRD_STEP * looks).astype(_F)
    g = {k: geo[:, j] for j, k in enumerate(_BIRD_LOOKS)}
    start = 0
    for group, values in SPECIES_GROUPS.items():
        p[group] = attrs[:, start:start + len(values)].argmax(axis=1)  # each bird group yields exactly one value
        start += len(values)
    tint = np.array([1.0, 0.0, -1.0], _F) * g["warmth"][:, None]
    for group in SPECIES_GROUPS:
        if group.endswith("_color"):
            p[group] = _rgb(_PALETTE_RGB[p[group]] * g["shade"][:, None] + tint)
    shape, k = _SHAPES[p["has_shape"]], _SIZE_SCALE[p["has_size"]] * 0.9
    brx, bry, tilt = shape[:, 0] * k * g["aspect"], shape[:, 1] * k, shape[:, 3]
    legs = shape[:, 2] * k * g["legs"]
    by = 0.05 - legs * 0.6
    ca, sa = np.cos(tilt), np.sin(tilt)
    hr = 0.19 * k * g["head"]
    hx, hy = brx * 0.8 * ca + hr * 0.5, by + brx * 0.8 * sa - hr * 0.8 + g["head_y"]
    p.update(
        k=k, brx=brx, bry=bry, tilt=tilt, by=by, feet=by + bry * 0.85 + legs,
        tail_x=-brx * 0.8 * ca, tail_y=by - brx * 0.8 * sa, tail_angle=np.pi + tilt + 0.25, tl=0.36 * k * g["tail"],
        wx=-0.06 * k, wy=by - 0.04 * k, hr=hr, hx=hx, hy=hy, eye_x=hx + hr * 0.35, eye_y=hy - hr * 0.15,
        bill_x=hx + hr * 0.85, bill_y=hy + hr * 0.15, bill_angle=g["bill_angle"],
        bl=hr * np.array([1.0, 1.7, 2.6], _F)[p["has_bill_length"]],
        breast_dark=_rgb(p["has_breast_color"] * 0.4), wing_dark=_rgb(p["has_wing_color"] * 0.35 + 0.05),
        perch=rng.random(n) < 0.7, perch_rgb=_rgb(np.array([0.4, 0.27, 0.14]) * rng.uniform(0.6, 1.3, (n, 1))),
        blob_xy=rng.uniform(-1, 1, (n, 3, 2)).astype(_F),
    )
    for b in range(3):
        p[f"blob{b}"] = rng.uniform(0.1, 0.9, (n, 3)).astype(_F)
    return p


def _tail(shape_id: int, f: _View, length: np.ndarray) -> np.ndarray:
    """Tail coverage in the tail's frame (t along the tail from its root, s across)."""
    L, z = length, 0 * length
    if shape_id == 0:  # forked: two diverging prongs
        return np.maximum(_polygon(f, [(z, -0.06), (z, 0.02), (L * 1.15, -0.14)]),
                          _polygon(f, [(z, 0.06), (z, -0.02), (L * 1.15, 0.14)]))
    if shape_id == 1:
        return _ellipse(f, L * 0.5, 0, L * 0.55, 0.1)
    if shape_id == 2:  # notched: square with a bite out of the tip
        return (_polygon(f, [(z, -0.07), (L, -0.08), (L, 0.08), (z, 0.07)])
                * (1 - _polygon(f, [(L * 0.75, z), (L * 1.1, -0.06), (L * 1.1, 0.06)])))
    if shape_id == 3:
        return _polygon(f, [(z, -0.04), (L, -0.17), (L, 0.17), (z, 0.04)])
    if shape_id == 4:
        return _polygon(f, [(z, -0.08), (L * 1.1, z), (z, 0.08)])
    return _polygon(f, [(z, -0.07), (L, -0.07), (L, 0.07), (z, 0.07)])


def _bill(shape_id: int, f: _View, L: np.ndarray, h: np.ndarray) -> np.ndarray:
    """Bill coverage in the bill's frame (t along the bill from its base, s across); L length, h head radius."""
    z = 0 * L
    if shape_id == 0:  # all-purpose
        return _polygon(f, [(z, -0.3 * h), (L, z), (z, 0.3 * h)])
    if shape_id == 1:  # cone: short and thick
        return _polygon(f, [(-0.1 * h, -0.5 * h), (L * 0.7, z), (-0.1 * h, 0.5 * h)])
    if shape_id == 2:  # dagger
        return _polygon(f, [(z, -0.22 * h), (L * 1.1, z), (z, 0.22 * h)])
    if shape_id == 3:  # hooked: a hook at the tip
        return np.maximum(_polygon(f, [(z, -0.3 * h), (L, -0.05 * h), (z, 0.3 * h)]),
                          _capsule(f, L * 0.85, -0.05 * h, L * 1.0, 0.4 * h, 0.11 * h))
    if shape_id == 4:  # needle
        return _polygon(f, [(z, -0.14 * h), (L * 1.3, z), (z, 0.14 * h)])
    return _polygon(f, [(z, -0.2 * h), (L, -0.32 * h), (L, 0.32 * h), (z, 0.2 * h)])  # spatulate


def _pattern(which: int, f: _View, k: np.ndarray) -> np.ndarray:
    """Spots (1), bars (2) or a second colour on one half (3) in a part's frame."""
    if which == 1:
        return np.clip((np.sin(f.u * 40 / k) * np.sin(f.v * 40 / k) - 0.35) * 4, 0, 1)
    if which == 2:
        return np.clip(np.sin(f.u * 35 / k) * 3 - 1, 0, 1)
    return np.clip(f.v / 0.02, 0, 1)


def _draw_bird(cv: _Canvas) -> None:
    L, p = cv.layer, cv.p
    for b in range(3):
        L(lambda g, b=b: _ellipse(g, g["blob_xy"][:, b, 0], g["blob_xy"][:, b, 1], 0.35, 0.25), f"blob{b}",
          strength=0.45, screen=True)
    L(lambda g: _capsule(g, -1.2, g["feet"] + 0.03, 1.2, g["feet"] + 0.03, 0.045), "perch_rgb", p["perch"])
    L(lambda g: np.maximum.reduce([
        _capsule(g, dx * g["k"], g["by"] + g["bry"] * 0.5, dx * g["k"] + 0.02, g["feet"], 0.022) for dx in (-0.07, 0.07)]
        + [_capsule(g, dx * g["k"] - 0.02, g["feet"], dx * g["k"] + 0.07, g["feet"], 0.018) for dx in (-0.07, 0.07)]),
      "has_leg_color")
    for i in range(6):
        L(lambda g, i=i: _tail(i, g.frame(g["tail_x"], g["tail_y"], g["tail_angle"]), g["tl"]),
          "has_upper_tail_color", p["has_tail_shape"] == i)

    def body(g):
        return _ellipse(g, 0, g["by"], g["brx"], g["bry"], g["tilt"])

    def wing(g):
        return _ellipse(g, g["wx"], g["wy"], g["brx"] * 0.75, g["bry"] * 0.55, g["tilt"] + 0.15)

    L(body, "has_breast_color")
    for which, colour in ((1, "breast_dark"), (2, "breast_dark"), (3, "has_upper_tail_color")):
        L(lambda g, w=which: body(g) * _pattern(w, g.frame(0, g["by"], g["tilt"]), _c(g["k"])), colour,
          p["has_breast_pattern"] == which)
    L(wing, "has_wing_color")
    for which, colour in ((1, "wing_dark"), (2, "wing_dark"), (3, "has_breast_color")):
        L(lambda g, w=which: wing(g) * _pattern(w, g.frame(g["wx"], g["wy"], g["tilt"] + 0.15), _c(g["k"])),
          colour, p["has_wing_pattern"] == which)
    hp = p["has_head_pattern"]
    L(lambda g: _polygon(g, [(g["hx"] - 0.5 * g["hr"], g["hy"] - 0.6 * g["hr"]),
                             (g["hx"] + 0.2 * g["hr"], g["hy"] - 0.85 * g["hr"]),
                             (g["hx"] - 1.2 * g["hr"], g["hy"] - 1.7 * g["hr"])]), "has_crown_color", hp == 2)

    def head(g):
        return _ellipse(g, g["hx"], g["hy"], g["hr"], g["hr"])

    L(head, "has_crown_color")
    L(lambda g: head(g) * _above(g, g["hy"] - 0.25 * g["hr"]), [0.08, 0.08, 0.08], hp == 1)
    L(lambda g: _capsule(g, g["eye_x"] - 0.6 * g["hr"], g["eye_y"] - 0.42 * g["hr"], g["eye_x"] + 0.5 * g["hr"],
                         g["eye_y"] - 0.42 * g["hr"], 0.13 * g["hr"]), [0.97, 0.97, 0.95], hp == 3)
    L(lambda g: _ellipse(g, g["eye_x"], g["eye_y"], 0.4 * g["hr"], 0.4 * g["hr"]), [0.97, 0.97, 0.95], hp == 4)
    L(lambda g: head(g) * _edge(_c(0.28 * g["hr"]) - np.abs(g.v - _c(g["eye_y"])), g.px), [0.06, 0.06, 0.06],
      hp == 5)
    L(lambda g: _ellipse(g, g["eye_x"], g["eye_y"], 0.2 * g["hr"], 0.2 * g["hr"]), [0.03, 0.03, 0.03])
    for i in range(6):
        L(lambda g, i=i: _bill(i, g.frame(g["bill_x"], g["bill_y"], g["bill_angle"]), g["bl"], g["hr"]),
          "has_bill_color", p["has_bill_shape"] == i)


# ----------------------------------------------------------------------------------------------- assembly
@dataclass
class _Spec:
    name: str
    train: np.ndarray  # class codes of training images
    test: np.ndarray
    class_known: bool
    attr_known: np.ndarray  # (K,) bool over the task's attributes, for training rows


VAL_EVERY = 10  # the val split: every 10th training class code, drawn and labelled like train [choice]


def _per_class(classes: np.ndarray, count: int) -> np.ndarray:
    return np.repeat(classes, count)


def _assemble(model: _Model, task_cols: np.ndarray, class_col: str, specs: list[_Spec], size: int, seed: int,
              params: Callable, draw: Callable, nuisance: float) -> tuple[dict, dict, float]:
    """Sample, render and label every source; return sources, truth tables and the latent Bayes accuracy."""
    attr_names = [model.attributes[j] for j in task_cols]
    sources, truth, bayes = {}, {}, ([], [], [])
    for s_idx, spec in enumerate(specs):
        tables, masked, images = [], [], []
        splits = (("train", spec.train), ("test", spec.test), ("val", spec.train[::VAL_EVERY]))
        for split_idx, (split, codes) in enumerate(splits):
            rng = np.random.default_rng([seed, 1 + s_idx, split_idx])
            labels = rng.permutation(codes).astype(np.int64)
            attrs, looks = model.sample(labels, rng)
            images.append(_render(draw, params(attrs, looks, rng, nuisance), len(labels), size, rng))
            table = pd.DataFrame({"split": pd.Series([split] * len(labels), dtype=object),
                                  "source": pd.Series([spec.name] * len(labels), dtype=object),
                                  class_col: pd.array(labels, dtype="Int64")})
            values = attrs[:, task_cols].astype(np.float64)
            table = pd.concat([table, pd.DataFrame(values, columns=attr_names)], axis=1)
            tables.append(table)
            hidden = table.copy()
            if split != "test":  # val is drawn and labelled like train
                if not spec.class_known:
                    hidden[class_col] = pd.array([pd.NA] * len(labels), dtype="Int64")
                for name in np.array(attr_names)[~spec.attr_known]:
                    hidden[name] = np.nan
            else:
                for part, value in zip(bayes, (labels, attrs, looks)):
                    part.append(value)
            masked.append(hidden)
        truth[spec.name] = pd.concat(tables, ignore_index=True)
        sources[spec.name] = Source(spec.name, pd.concat(masked, ignore_index=True), np.concatenate(images))
    accuracy = model.bayes_accuracy(*(np.concatenate(part) for part in bayes))
    return sources, truth, accuracy


def _labelled_subset(n: int, fraction: float, rng: np.random.Generator) -> np.ndarray:
    keep = np.zeros(n, bool)
    keep[rng.permutation(n)[:int(round(fraction * n))]] = True
    return keep


def identity_study(n_identities: int = 40, n_attributes: int = len(IDENTITY_ATTRIBUTES),
                   images_per_identity: int | None = None, attr_images_per_identity: int | None = None,
                   coann_images_per_identity: int | None = None, test_images_per_identity: int | None = None,
                   size: int = 48, seed: int = 0, attr_label_fraction: float | None = None,
                   identity_label_fraction: float | None = None, preset: str = "default",
                   relatedness: str = "truth", look_jitter: float = 0.6, nuisance: float = 1.0) -> Study:
    """Synthetic twin of case study ii: face identity + CelebA-style attributes (docs/method.md#tasks,
    docs/method.md#relatedness; P2 arXiv 2401.01219, identity + attributes on CelebA; the relatedness of a CelebA
    identity is estimated on the training split).

    Each identity has persistent looks (face shape, feature spacing, skin tone, hair length and shade, standard-normal
    latents with within-identity jitter ``look_jitter`` [choice, default 0.6]) and a prevalence profile over
    ``IDENTITY_ATTRIBUTES[:n_attributes]`` (CelebA names; hair colour is one mutually exclusive group with an unnamed
    fifth colour; binary attributes follow ``sigmoid(logit(base) + spread * z + w * masculinity)`` [choice]).
    Sources (each with ``train`` and fully labelled ``test`` rows, ``test_images_per_identity`` per identity):
    ``identity`` labels identities only, on the ``round(identity_label_fraction * n)`` covered identities (its test
    split covers all identities); ``attributes`` labels only the ``round(attr_label_fraction * K)`` training
    attributes, no identity; ``coannotated`` (small) labels the identity and every attribute. Presets set the
    sizes and fractions (explicit arguments win): ``default`` (0.5 of the attributes), ``scarce_attr`` (0.25, few
    attribute images) and ``full`` (every attribute and identity covered: the control where coupling should not
    matter, docs/method.md#where-coupling-matters). ``relatedness``: ``"truth"`` couples with the true table,
    ``"estimated"`` with
    :func:`fbhelpers.relatedness.estimate` on the co-annotated training rows. ``study.relatedness`` is the
    coupling's table, ``study.true_relatedness`` always the truth (name ``synthetic_identity_truth``);
    ``study.label_groups["attr"]``: the attributes the attribute source labels and the others; ``study.roles``:
    ``identity`` (class), ``attributes`` and ``coannotated`` (fully labelled); ``info["bayes_accuracy_latent"]``
    is the identity accuracy of the Bayes classifier that sees the latents (test rows of all sources), an upper
    bound for any image model.
    """
    
    n_identities = _check_int("n_identities", n_identities, 2)
    n_attributes = _check_int("n_attributes", n_attributes, 1, len(IDENTITY_ATTRIBUTES))
    size = _check_int("size", size, 32, 128)
    seed = _check_int("seed", seed, 0)
    if relatedness not in ("truth", "estimated"):
        raise ValueError(f"relatedness must be 'truth' or 'estimated', got {relatedness!r}")
    cfg = _resolve(preset, _ID_PRESETS, dict(
        images_per_identity=images_per_identity, attr_images_per_identity=attr_images_per_identity,
        coann_images_per_identity=coann_images_per_identity, test_images_per_identity=test_images_per_identity,
        attr_label_fraction=attr_label_fraction, identity_label_fraction=identity_label_fraction))
    for key in ("images_per_identity", "attr_images_per_identity", "coann_images_per_identity"):
        cfg[key] = _check_int(key, cfg[key], 0)
    cfg["test_images_per_identity"] = _check_int("test_images_per_identity", cfg["test_images_per_identity"], 1)
    for key in ("attr_label_fraction", "identity_label_fraction"):
        cfg[key] = _check_fraction(key, cfg[key])
    _check_positive("look_jitter", look_jitter)
    _check_nonnegative("nuisance", nuisance)
    if relatedness == "estimated" and cfg["coann_images_per_identity"] == 0:
        raise ValueError("relatedness='estimated' needs co-annotated images; coann_images_per_identity is 0")

    rng = np.random.default_rng([seed, 0])
    model = _face_model(n_identities, rng, float(look_jitter))
    task_cols = np.arange(n_attributes)
    attr_names = list(IDENTITY_ATTRIBUTES[:n_attributes])
    known = _labelled_subset(n_attributes, cfg["attr_label_fraction"], rng)
    covered = np.sort(rng.permutation(n_identities)[:int(round(cfg["identity_label_fraction"] * n_identities))])
    everyone = np.arange(n_identities)
    test = _per_class(everyone, cfg["test_images_per_identity"])
    specs = [
        _Spec("identity", _per_class(covered, cfg["images_per_identity"]), test, True, np.zeros(n_attributes, bool)),
        _Spec("attributes", _per_class(everyone, cfg["attr_images_per_identity"]), test, False, known),
        _Spec("coannotated", _per_class(everyone, cfg["coann_images_per_identity"]), test, True,
              np.ones(n_attributes, bool)),
    ]
    sources, truth, bayes = _assemble(model, task_cols, "identity", specs, size, seed, _face_params, _draw_face,
                                      float(nuisance))
    table = pd.DataFrame(model.prevalence[:, task_cols], index=list(model.classes), columns=attr_names)
    true_r = Relatedness(table=table, name="synthetic_identity_truth",
                         citation="fbhelpers.synthetic.objects.identity_study (true prevalence p(attribute | identity))")
    if relatedness == "estimated":
        rows = sources["coannotated"].table
        coupled = estimate(rows[rows["split"] == "train"], "identity", attr_names, class_labels=model.classes,
                           name="synthetic_identity_estimated")
    else:
        coupled = true_r
    tasks = (classification_task("identity", model.classes), attribute_task("attr", attr_names))
    info = dict(
        preset=preset, params=dict(cfg, n_identities=n_identities, n_attributes=n_attributes, size=size, seed=seed,
                                   relatedness=relatedness, look_jitter=look_jitter, nuisance=nuisance),
        attributes_labelled=tuple(np.array(attr_names)[known]),
        attributes_unlabelled=tuple(np.array(attr_names)[~known]),
        identities_labelled=tuple(model.classes[i] for i in covered),
        sizes=split_sizes(sources), bayes_accuracy_latent=bayes,
    )
    return Study(sources, tasks, [Coupling("identity", "attr", coupled)], coupled, truth, info,
                 {"attr": LabelGroups.split(attr_names, np.array(attr_names)[known])}, _ROLES["identity"], true_r)


def _task_attributes(n_attributes: int | None) -> np.ndarray:
    """Catalogue columns of the first ``n_attributes`` in round-robin order over the groups, in catalogue order."""
    if n_attributes is None:
        return np.arange(len(SPECIES_ATTRIBUTES))
    n_attributes = _check_int("n_attributes", n_attributes, 1, len(SPECIES_ATTRIBUTES))
    starts = np.cumsum([0] + [len(v) for v in SPECIES_GROUPS.values()])[:-1]
    order = [s + r for r in range(max(map(len, SPECIES_GROUPS.values())))
             for s, vs in zip(starts, SPECIES_GROUPS.values()) if r < len(vs)]
    return np.sort(np.array(order[:n_attributes]))


def species_study(n_species: int = 50, n_attributes: int | None = None, images_per_species: int | None = None,
                  attr_images_per_species: int | None = None, coann_images_per_species: int | None = None,
                  test_images_per_species: int | None = None, size: int = 48, seed: int = 0,
                  attr_label_fraction: float | None = None, preset: str = "default", look_jitter: float = 0.6,
                  nuisance: float = 1.0) -> Study:
    """Synthetic twin of "beyond faces": species + CUB-style attributes (docs/method.md#tasks,
    docs/method.md#relatedness; P2 arXiv 2401.01219, CUB).

    Each species has a categorical profile over every group of ``SPECIES_GROUPS`` (CUB names
    ``has_<part>_<what>::<value>``, 15-colour palette; profile = ``w * main value + (1 - w) * Dirichlet(0.5)``,
    ``w ~ Beta(4, 1.5)`` [choice]) and persistent looks (body aspect, head size, tail length, bill angle, legs,
    plumage shade and warmth; within-species jitter ``look_jitter`` [choice, default 0.6]). Images are bird glyphs
    (side view, random facing) on cluttered backgrounds. The task uses ``n_attributes`` of the 128 catalogue
    attributes (default all; picked round-robin over groups; the others are still rendered, unlabelled).
    ``study.relatedness`` and ``study.true_relatedness`` are the true table (the role of CUB's
    ``class_attribute_labels_continuous.txt`` / 100) and the coupling uses it; ``study.label_groups["attr"]`` and
    ``study.roles`` as in :func:`identity_study` (class source ``species``). Sources (``train`` + fully labelled
    ``test``): ``species`` (species only), ``attributes`` (no species; only the ``round(attr_label_fraction * K)``
    training attributes) and ``coannotated`` (small; species + the same training attributes), so the other
    attributes are never labelled in training. Presets: ``default`` (0.5), ``scarce_attr`` (0.25, few attribute
    images), ``full`` (1.0).
    ``info["bayes_accuracy_latent"]``: species accuracy of the Bayes classifier on the latents (upper bound).
    """
    
    n_species = _check_int("n_species", n_species, 2)
    size = _check_int("size", size, 32, 128)
    seed = _check_int("seed", seed, 0)
    task_cols = _task_attributes(n_attributes)
    cfg = _resolve(preset, _SP_PRESETS, dict(
        images_per_species=images_per_species, attr_images_per_species=attr_images_per_species,
        coann_images_per_species=coann_images_per_species, test_images_per_species=test_images_per_species,
        attr_label_fraction=attr_label_fraction))
    for key in ("images_per_species", "attr_images_per_species", "coann_images_per_species"):
        cfg[key] = _check_int(key, cfg[key], 0)
    cfg["test_images_per_species"] = _check_int("test_images_per_species", cfg["test_images_per_species"], 1)
    cfg["attr_label_fraction"] = _check_fraction("attr_label_fraction", cfg["attr_label_fraction"])
    _check_positive("look_jitter", look_jitter)
    _check_nonnegative("nuisance", nuisance)

    rng = np.random.default_rng([seed, 0])
    model = _bird_model(n_species, rng, float(look_jitter))
    attr_names = [SPECIES_ATTRIBUTES[j] for j in task_cols]
    known = _labelled_subset(len(task_cols), cfg["attr_label_fraction"], rng)
    everyone = np.arange(n_species)
    test = _per_class(everyone, cfg["test_images_per_species"])
    specs = [
        _Spec("species", _per_class(everyone, cfg["images_per_species"]), test, True, np.zeros(len(task_cols), bool)),
        _Spec("attributes", _per_class(everyone, cfg["attr_images_per_species"]), test, False, known),
        _Spec("coannotated", _per_class(everyone, cfg["coann_images_per_species"]), test, True, known),
    ]
    sources, truth, bayes = _assemble(model, task_cols, "species", specs, size, seed, _bird_params, _draw_bird,
                                      float(nuisance))
    table = pd.DataFrame(model.prevalence[:, task_cols], index=list(model.classes), columns=attr_names)
    true_r = Relatedness(table=table, name="synthetic_species_truth",
                         citation="fbhelpers.synthetic.objects.species_study (true prevalence p(attribute | species))")
    tasks = (classification_task("species", model.classes), attribute_task("attr", attr_names))
    info = dict(
        preset=preset, params=dict(cfg, n_species=n_species, n_attributes=len(task_cols), size=size, seed=seed,
                                   look_jitter=look_jitter, nuisance=nuisance),
        attributes_labelled=tuple(np.array(attr_names)[known]),
        attributes_unlabelled=tuple(np.array(attr_names)[~known]),
        sizes=split_sizes(sources), bayes_accuracy_latent=bayes,
    )
    return Study(sources, tasks, [Coupling("species", "attr", true_r)], true_r, truth, info,
                 {"attr": LabelGroups.split(attr_names, np.array(attr_names)[known])}, _ROLES["species"], true_r)
