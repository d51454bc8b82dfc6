"""SynthFaces: procedurally rendered cartoon faces whose expression is visible only through 17 action units.

The synthetic twin of case study i (docs/method.md#tasks, docs/method.md#synthetic-twins; P0 arXiv 1910.11111, P1 arXiv
2105.03790). Generative story, per sample (:func:`sample_labels`, then :func:`render_faces`):

1. expression ``c`` ~ class prior (uniform by default);
2. each AU ``j`` independently ~ Bernoulli(P[c, j]) with P = R (1 - ``au_miss``) + (1 - R) ``au_spont``, R the
   relatedness table (default DU Table 1, ``prior("du2014_basic")``) **[choice]**: a prototypical AU is missed
   with probability ``au_miss``, any other AU fires spontaneously with probability ``au_spont``
   (:func:`au_probabilities`). Without this noise DU's prototypical sets make the 7 expressions perfectly
   separable (docs/method.md#synthetic-twins);
3. an active AU gets an intensity ~ Uniform(``intensity_min``, 1), independent of the expression;
4. the image is rendered from the AU intensities and nuisance parameters only (identity, pose, lighting, noise,
   occluders; :func:`sample_nuisance`), so image ⟂ expression | binary AUs and the Bayes ceiling of expression
   accuracy given the true AUs (:func:`bayes_ceiling`) bounds any image classifier;
5. valence / arousal = circumplex position of ``c`` scaled by the mean active intensity, plus linear AU effects
   and Gaussian noise, clipped to [-1, 1] **[choice]** (:data:`CIRCUMPLEX`, :data:`VA_AU_WEIGHTS`);
6. the annotated expression equals ``c`` except with probability ``expr_noise`` (uniform over the other classes).

Each AU changes pixels only inside its region (:data:`AU_REGIONS`, boxes in face coordinates; :func:`region_mask`
maps them to pixels for a given pose, grown by the one-pixel antialiased edge), which
``tests/test_synthetic_faces.py`` checks; :data:`AU_EFFECTS` says what each AU draws. An AU of intensity ``x`` is
drawn at strength ``x ** 0.5`` **[choice]** so that the weakest active intensity stays visible at 48 px
(at intensity 0.25 every AU changes on average 12 to 45 pixels of a 48 px face by more than 8 grey levels).

Face coordinates: ``u`` to the viewer's right, ``v`` downwards, the face ellipse has half-height about 1 and
half-width about 0.77 and is centred at the origin; the face is mirror-symmetric in ``u``.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..relatedness import Relatedness, prior
from ..source import Source
from ..tasks import AUS, EXPRESSIONS, VA_LABELS

Box = tuple[float, float, float, float]


def _mirror(u0: float, v0: float, u1: float, v1: float) -> tuple[Box, Box]:
    return ((-u1, v0, -u0, v1), (u0, v0, u1, v1))


_MOUTH: tuple[Box, ...] = ((-0.64, 0.20, 0.64, 0.92),)
# AU -> boxes (u0, v0, u1, v1) in face coordinates outside which the AU never changes a pixel.
AU_REGIONS: dict[str, tuple[Box, ...]] = {
    "AU1": ((-0.46, -0.74, 0.46, -0.02),),           # inner brows + central forehead
    "AU2": _mirror(0.18, -0.74, 0.66, -0.12),         # outer brows + lateral forehead
    "AU4": ((-0.64, -0.56, 0.64, -0.02),),            # brows + glabella
    "AU5": _mirror(0.08, -0.32, 0.56, 0.06),          # upper eyelids
    "AU6": _mirror(0.14, -0.22, 0.72, 0.32),          # cheeks + outer eye corners
    "AU7": _mirror(0.08, -0.32, 0.56, 0.12),          # eyelids (lower lid raised, upper lid lowered)
    "AU9": ((-0.22, -0.16, 0.22, 0.38),),             # nose bridge + nostrils
    "AU10": ((-0.46, 0.16, 0.46, 0.74),),             # upper lip + nasolabial folds
    "AU12": _MOUTH,                                    # lip corners up, mouth wider
    "AU14": _mirror(0.14, 0.20, 0.62, 0.84),          # dimples beside the lip corners
    "AU15": _MOUTH,                                    # lip corners down + marionette lines
    "AU17": ((-0.50, 0.30, 0.50, 1.22),),             # lower lip + chin
    "AU20": _MOUTH,                                    # lips stretched sideways
    "AU23": _MOUTH,                                    # lips tightened (narrower, darker, rimmed)
    "AU24": _MOUTH,                                    # lips pressed + bulges above/below
    "AU25": ((-0.50, 0.30, 0.50, 0.92),),             # lips part (teeth)
    "AU26": ((-0.86, 0.32, 0.86, 1.32),),             # jaw drop: mouth opens, chin lowers
}

AU_EFFECTS: dict[str, str] = {
    "AU1": "inner brow raise + central forehead lines", "AU2": "outer brow raise + lateral forehead lines",
    "AU4": "brow lower, drawn together + glabella furrows", "AU5": "upper-lid raise (white above iris)",
    "AU6": "cheek raise: cheek bulge + crow's feet", "AU7": "lid tighten: lower lid raised + lid crease",
    "AU9": "nose wrinkle: bridge lines + nostrils lifted", "AU10": "upper-lip raise (teeth) + nasolabial folds",
    "AU12": "lip-corner pull: corners up, mouth wider", "AU14": "dimpler: dimples beside the corners",
    "AU15": "lip-corner depress: corners down + marionette lines", "AU17": "chin raise: chin texture, lower lip out",
    "AU20": "lip stretch: mouth wide and flat, thin lips",
    "AU23": "lip tighten: narrow, dark lips with a pressed rim",
    "AU24": "lip press: thin lips + light bulges above and below", "AU25": "lips part: small opening with teeth",
    "AU26": "jaw drop: wide opening, chin lowered",
}

# Circumplex positions (valence, arousal) of the 7 expressions [choice], after Russell (1980) and the AffectNet
# per-class means (Mollahosseini et al., IEEE TAC 2017).
CIRCUMPLEX: dict[str, tuple[float, float]] = {
    "neutral": (0.0, 0.0), "anger": (-0.55, 0.6), "disgust": (-0.6, 0.35), "fear": (-0.5, 0.7),
    "happiness": (0.7, 0.35), "sadness": (-0.6, -0.4), "surprise": (0.2, 0.75),
}
# Linear effect of each AU's intensity on (valence, arousal) [choice].
VA_AU_WEIGHTS: dict[str, tuple[float, float]] = {
    "AU12": (0.15, 0.0), "AU6": (0.1, 0.0), "AU4": (-0.08, 0.03), "AU15": (-0.08, -0.03), "AU9": (-0.05, 0.0),
    "AU10": (-0.05, 0.0), "AU5": (0.0, 0.12), "AU26": (0.0, 0.1), "AU25": (0.0, 0.05), "AU1": (0.0, 0.04),
    "AU2": (0.0, 0.04), "AU20": (-0.03, 0.05),
}


@dataclass
class FaceConfig:
    """Knobs of the generative story and of the nuisance variation (all **[choice]**, defaults documented).

    Label model: ``au_miss`` (0.25) P(prototypical AU absent), ``au_spont`` (0.05) P(unrelated AU active); with
    DU's table and a uniform prior these give a Bayes ceiling of 0.869. ``intensity_min`` (0.25): active AU
    intensity ~ U(intensity_min, 1). ``expr_noise`` (0.0 here; sources add their own): P(annotated expression is
    wrong). ``va_noise`` (0.1): sd of the Gaussian VA noise; ``va_floor`` (0.4): VA = circumplex *
    (va_floor + (1 - va_floor) * mean active intensity) + AU effects + noise.
    Nuisance: ``shift`` (0.05 of the image size), ``scale`` (0.92, 1.08), ``rotation`` (10 degrees),
    ``light`` gain range (0.8, 1.15) and ``light_gradient`` (0.35 max across the image), ``noise_sd`` (1.5, 6)
    grey levels at mid-grey (multiplicative, like shot noise), ``occlusion`` (0.1) probability of an occluder.
    ``class_prior``: weights of the 7 expressions (None = uniform).
    """

    au_miss: float = 0.25
    au_spont: float = 0.05
    intensity_min: float = 0.25
    expr_noise: float = 0.0
    va_noise: float = 0.1
    va_floor: float = 0.4
    shift: float = 0.05
    scale: tuple[float, float] = (0.92, 1.08)
    rotation: float = 10.0
    light: tuple[float, float] = (0.8, 1.15)
    light_gradient: float = 0.35
    noise_sd: tuple[float, float] = (1.5, 6.0)
    occlusion: float = 0.1
    class_prior: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        for name in ("au_miss", "au_spont", "expr_noise", "occlusion"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"FaceConfig.{name} must be in [0, 1], got {value!r}")
        if not 0.0 < self.intensity_min <= 1.0:
            raise ValueError(f"FaceConfig.intensity_min must be in (0, 1], got {self.intensity_min!r}")
        for name in ("va_noise", "shift", "rotation", "light_gradient"):
            if getattr(self, name) < 0:
                raise ValueError(f"FaceConfig.{name} must be >= 0, got {getattr(self, name)!r}")
        for name in ("scale", "light", "noise_sd"):
            lo, hi = getattr(self, name)
            if not 0 <= lo <= hi:
                raise ValueError(f"FaceConfig.{name} must be a range (low, high) with 0 <= low <= high, "
                                 f"got {getattr(self, name)!r}")


# ---------------------------------------------------------------------------------------------------- label model


def check_table(relatedness: Relatedness, classes: tuple[str, ...] | None = EXPRESSIONS) -> pd.DataFrame:
    """``relatedness.table`` as classes x AUS (absent AU columns filled with 0), validated (P1 §3 tables).

    Unknown AU names -> ValueError naming them; ``classes`` given and the table's rows differ -> ValueError naming
    the missing and extra classes. ``classes=None`` keeps the table's own rows (e.g. compound expressions).
    """
    if not isinstance(relatedness, Relatedness):
        raise ValueError(f"relatedness must be a fbhelpers.relatedness.Relatedness, got {type(relatedness).__name__}")
    table = relatedness.table
    unknown = [a for a in table.columns if a not in AUS]
    if unknown:
        raise ValueError(f"relatedness {relatedness.name!r} has unknown AU names {unknown}; valid AUs: {list(AUS)}")
    if classes is not None and set(table.index) != set(classes):
        missing = [c for c in classes if c not in table.index]
        extra = [c for c in table.index if c not in classes]
        raise ValueError(f"relatedness {relatedness.name!r} classes do not match the expressions {list(classes)}: "
                         f"missing {missing}, extra {extra}")
    rows = list(classes) if classes is not None else list(table.index)
    return table.reindex(index=rows, columns=list(AUS), fill_value=0.0).astype("float64")


def au_probabilities(relatedness: Relatedness | None = None, au_miss: float = 0.25, au_spont: float = 0.05,
                     classes: tuple[str, ...] | None = EXPRESSIONS) -> pd.DataFrame:
    """Effective p(AU_j = 1 | class c) = R[c, j] (1 - au_miss) + (1 - R[c, j]) au_spont **[choice]**.

    The data-generating table of the twin (DU Table 1 by default, docs/method.md#du-2014-basic-expressions);
    ``relatedness`` is the expert prior the couplings use, this is the truth the sampler draws from.
    """
    rel = prior("du2014_basic") if relatedness is None else relatedness
    table = check_table(rel, classes)
    return table * (1.0 - au_miss) + (1.0 - table) * au_spont


def _class_prior(class_prior: tuple[float, ...] | np.ndarray | None, n_classes: int) -> np.ndarray:
    if class_prior is None:
        return np.full(n_classes, 1.0 / n_classes)
    p = np.asarray(class_prior, dtype=np.float64)
    if p.shape != (n_classes,) or (p < 0).any() or not p.sum() > 0:
        raise ValueError(f"class_prior must be {n_classes} non-negative weights, got {class_prior!r}")
    return p / p.sum()


def bayes_ceiling(relatedness: Relatedness | None = None, au_miss: float = 0.25, au_spont: float = 0.05,
                  class_prior: tuple[float, ...] | None = None, expr_noise: float = 0.0,
                  method: str = "exact", n_mc: int = 200_000, seed: int = 0) -> float:
    """Bayes-optimal expression accuracy given the true binary AUs: E_aus[max_c p(c | aus)]
    (docs/method.md#synthetic-twins).

    ``method="exact"`` enumerates all 2^17 AU patterns: sum_a max_c pi_c prod_j P[c,j]^a_j (1-P[c,j])^(1-a_j),
    with P from :func:`au_probabilities`; ``"mc"`` averages max_c p(c | a) over ``n_mc`` sampled patterns.
    Intensities, nuisance and rendering carry no further class information, so this bounds any image
    classifier. ``expr_noise`` > 0 scores against noisy labels instead: acc (1 - eta) + (1 - acc) eta / (C - 1)
    (symmetric noise keeps the Bayes rule's argmax).
    """
    p = au_probabilities(relatedness, au_miss, au_spont).to_numpy()
    pi = _class_prior(class_prior, len(p))
    logp, log1p = np.log(np.clip(p, 1e-300, 1.0)), np.log(np.clip(1.0 - p, 1e-300, 1.0))
    if method == "exact":
        bits = ((np.arange(2 ** p.shape[1])[:, None] >> np.arange(p.shape[1])) & 1).astype(np.float64)
        joint = np.exp(bits @ logp.T + (1.0 - bits) @ log1p.T) * pi
        acc = float(joint.max(axis=1).sum())
    elif method == "mc":
        rng = np.random.default_rng(seed)
        c = rng.choice(len(pi), size=n_mc, p=pi)
        a = (rng.random((n_mc, p.shape[1])) < p[c]).astype(np.float64)
        log_joint = a @ logp.T + (1.0 - a) @ log1p.T + np.log(np.clip(pi, 1e-300, 1.0))
        post = np.exp(log_joint - log_joint.max(axis=1, keepdims=True))
        acc = float(np.mean(post.max(axis=1) / post.sum(axis=1)))
    else:
        raise ValueError(f"unknown method {method!r}; valid: 'exact', 'mc'")
    return acc * (1.0 - expr_noise) + (1.0 - acc) * expr_noise / (len(pi) - 1)


def _draw_aus(codes: np.ndarray, p: np.ndarray, intensity_min: float,
              rng: np.random.Generator) -> np.ndarray:
    """(n, 17) intensities: 0 where inactive, U(intensity_min, 1) where active."""
    active = rng.random((len(codes), p.shape[1])) < p[codes]
    level = intensity_min + (1.0 - intensity_min) * rng.random(active.shape)
    return np.where(active, level, 0.0)


def sample_labels(n: int, relatedness: Relatedness | None = None, config: FaceConfig | None = None,
                  seed: int | np.random.Generator = 0) -> pd.DataFrame:
    """Labels of ``n`` faces without rendering (steps 1-3, 5, 6 of the module's story; P1 §3, DU Table 1).

    Columns: ``expr`` (Int64 true code, EXPRESSIONS order), ``expr_obs`` (annotated code, with ``expr_noise``),
    AU1..AU26 (0/1 float), ``i_AU1``..``i_AU26`` (intensity in [0, 1]), ``valence``, ``arousal``.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n!r}")
    cfg = config or FaceConfig()
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    p = au_probabilities(relatedness, cfg.au_miss, cfg.au_spont).to_numpy()
    pi = _class_prior(cfg.class_prior, len(EXPRESSIONS))
    codes = rng.choice(len(pi), size=n, p=pi)
    inten = _draw_aus(codes, p, cfg.intensity_min, rng)
    flip = rng.random(n) < cfg.expr_noise
    other = (codes + rng.integers(1, len(pi), size=n)) % len(pi)
    observed = np.where(flip, other, codes)
    active = inten > 0
    mean_int = np.where(active.any(axis=1), inten.sum(axis=1) / np.maximum(active.sum(axis=1), 1), 0.0)
    circ = np.array([CIRCUMPLEX[e] for e in EXPRESSIONS])[codes]
    weights = np.array([VA_AU_WEIGHTS.get(a, (0.0, 0.0)) for a in AUS])
    va = circ * (cfg.va_floor + (1.0 - cfg.va_floor) * mean_int)[:, None] + inten @ weights
    va = np.clip(va + cfg.va_noise * rng.standard_normal((n, 2)), -1.0, 1.0)
    table = pd.DataFrame({"expr": pd.array(codes, dtype="Int64"), "expr_obs": pd.array(observed, dtype="Int64")})
    table = pd.concat([table, pd.DataFrame(active.astype(np.float64), columns=list(AUS)),
                       pd.DataFrame(inten, columns=[f"i_{a}" for a in AUS])], axis=1)
    table["valence"], table["arousal"] = va[:, 0], va[:, 1]
    return table


# ----------------------------------------------------------------------------------------------- nuisance model

_SKIN = np.array([[240, 208, 182], [214, 170, 135], [176, 128, 92], [112, 76, 56]], dtype=np.float64)
_HAIR = np.array([[28, 24, 24], [66, 42, 28], [118, 78, 46], [196, 160, 98], [150, 148, 146], [140, 62, 32]],
                 dtype=np.float64)
_IRIS = np.array([[58, 40, 30], [100, 66, 36], [70, 110, 160], [80, 112, 72], [98, 108, 120]], dtype=np.float64)

# name -> (low, high) of a uniform draw, in face units unless stated.
_IDENTITY: dict[str, tuple[float, float]] = {
    "face_w": (0.70, 0.84), "face_h": (0.95, 1.06), "taper": (0.05, 0.22),
    "eye_x": (0.28, 0.34), "eye_y": (-0.12, -0.04), "eye_w": (0.13, 0.16), "eye_up": (0.05, 0.065),
    "eye_low": (0.04, 0.05), "iris_size": (0.038, 0.047),
    "brow_gap": (0.17, 0.23), "brow_in": (0.08, 0.12), "brow_out": (0.0, 0.05), "brow_th": (0.026, 0.045),
    "brow_arch": (0.0, 0.05), "nose_y": (0.22, 0.31), "nose_w": (0.055, 0.08),
    "mouth_y": (0.50, 0.58), "mouth_w": (0.20, 0.27), "lip_up": (0.035, 0.05), "lip_low": (0.045, 0.062),
    "hairline": (-0.92, -0.70), "hair_vol": (1.04, 1.16), "hair_len": (-0.2, 0.9),
}


def sample_nuisance(n: int, config: FaceConfig | None = None,
                    seed: int | np.random.Generator = 0) -> pd.DataFrame:
    """Identity, pose, lighting, noise and occluder parameters of ``n`` faces (one row each) **[choice]**.

    Identity: face shape, feature positions and sizes (ranges in ``_IDENTITY``), skin / hair / iris / lip /
    background colours (RGB 0-255). Pose: ``dx``, ``dy`` (pixels as a fraction of the size), ``scale``, ``rot``
    (radians). ``gain``, ``grad``, ``grad_dir``: lighting; ``noise_sd``, ``noise_seed``: pixel noise;
    ``occ`` (0/1), ``occ_u``, ``occ_v``, ``occ_w``, ``occ_h``, ``occ_round``, ``occ_r/g/b``: occluder.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n!r}")
    cfg = config or FaceConfig()
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    cols: dict[str, np.ndarray] = {k: rng.uniform(lo, hi, n) for k, (lo, hi) in _IDENTITY.items()}
    t = rng.random(n) * (len(_SKIN) - 1)
    k = np.minimum(t.astype(int), len(_SKIN) - 2)
    skin = _SKIN[k] + (t - k)[:, None] * (_SKIN[k + 1] - _SKIN[k]) + rng.normal(0, 6, (n, 3))
    hair = _HAIR[rng.integers(0, len(_HAIR), n)] * rng.uniform(0.85, 1.15, (n, 1))
    iris = _IRIS[rng.integers(0, len(_IRIS), n)] * rng.uniform(0.85, 1.15, (n, 1))
    lips = skin * np.array([0.86, 0.55, 0.56]) * rng.uniform(0.8, 1.0, (n, 1)) + np.array([28.0, 0.0, 4.0])
    bg = rng.uniform(40, 225, (n, 3))
    occ_col = rng.uniform(20, 235, (n, 3))
    for name, rgb in (("skin", skin), ("hair", hair), ("iris", iris), ("lips", lips), ("bg", bg),
                      ("occ", occ_col)):
        for c, ch in enumerate("rgb"):
            cols[f"{name}_{ch}"] = np.clip(rgb[:, c], 0, 255)
    cols["dx"] = rng.uniform(-cfg.shift, cfg.shift, n)
    cols["dy"] = rng.uniform(-cfg.shift, cfg.shift, n)
    cols["scale"] = rng.uniform(*cfg.scale, n)
    cols["rot"] = np.deg2rad(rng.uniform(-cfg.rotation, cfg.rotation, n))
    cols["gain"] = rng.uniform(*cfg.light, n)
    cols["grad"] = rng.uniform(0, cfg.light_gradient, n)
    cols["grad_dir"] = rng.uniform(0, 2 * np.pi, n)
    cols["noise_sd"] = rng.uniform(*cfg.noise_sd, n)
    cols["noise_seed"] = rng.integers(0, 2 ** 32, n, dtype=np.int64)
    cols["occ"] = (rng.random(n) < cfg.occlusion).astype(np.float64)
    cols["occ_u"] = rng.uniform(-0.55, 0.55, n)
    cols["occ_v"] = rng.uniform(-0.45, 0.85, n)
    cols["occ_w"] = rng.uniform(0.12, 0.45, n)
    cols["occ_h"] = rng.uniform(0.1, 0.3, n)
    cols["occ_round"] = rng.uniform(0.0, 1.0, n)
    return pd.DataFrame(cols)


_NUISANCE_COLUMNS: tuple[str, ...] = tuple(sample_nuisance(0).columns)


# ---------------------------------------------------------------------------------------------------- renderer

FACE_SCALE = 0.36  # face half-height in image sizes at scale 1
_GAMMA = 0.5  # rendered strength = intensity ** _GAMMA [choice]: intensity 0.25 draws at 0.5
_CHUNK_PIXELS = 32 * 64 * 64  # pixels per rendered chunk: its working set stays in cache (speed only)


def _pose_order(dx: np.ndarray, dy: np.ndarray, chunk: int) -> np.ndarray:
    """Sample order grouping similar offsets into the same chunk, so that feature windows stay tight (speed only)."""
    n = len(dx)
    band = chunk * max(1, int(np.sqrt(n / chunk)))  # samples per band of similar dy, cut into chunks by dx
    rank = np.empty(n, np.int64)
    rank[np.argsort(dy, kind="stable")] = np.arange(n) // band
    return np.lexsort((dx, rank))


def _alpha(f: np.ndarray, ppu: np.ndarray) -> np.ndarray:
    """Coverage of the shape ``f < 0`` (f ~ signed distance in face units) with a one-pixel antialiased edge."""
    out = f * -ppu
    out += 0.5
    return np.clip(out, 0.0, 1.0, out=out)


def _box(du: np.ndarray, dv: np.ndarray, hu, hv) -> np.ndarray:
    """Signed 'distance' of the box |du| < hu, |dv| < hv."""
    return np.maximum(np.abs(du) - hu, np.abs(dv) - hv)


@functools.lru_cache(maxsize=8)
def _noise_windows(size: int) -> np.ndarray:
    """All size x size windows of a fixed (3 size)^2 texture of uniform noise in [-0.5, 0.5) (read-only view)."""
    texture = np.random.default_rng(0x5EED).random((3 * size, 3 * size), dtype=np.float32) - np.float32(0.5)
    texture.flags.writeable = False
    return np.lib.stride_tricks.sliding_window_view(texture, (size, size))


def _pixel_noise(seeds: np.ndarray, size: int) -> np.ndarray:
    """Per-image noise (n, size, size): the window of the shared texture that the image's seed picks.

    One gather per image instead of a per-pixel hash (speed); batch-independent. The (2 size + 1)^2 windows
    overlap, so images share shifted noise: harmless, since the noise carries no label."""
    windows = _noise_windows(size)
    offset = seeds.reshape(-1) % np.uint32(windows.shape[0] * windows.shape[1])
    return windows[offset // windows.shape[1], offset % windows.shape[1]]


# Face-coordinate windows (u0, v0, u1, v1) that contain every pixel a feature group can touch; each group is
# computed only on the pixel rectangle covering its window under the chunk's poses (speed; never visible).
_WINDOWS: dict[str, Box] = {
    "ears": (-1.05, -0.42, 1.05, 0.42), "neck": (-0.46, 0.38, 0.46, 3.0), "fringe": (-1.0, -1.3, 1.0, -0.3),
    "brows": (-0.68, -0.78, 0.68, 0.0), "eyes": (-0.58, -0.32, 0.58, 0.14), "cheeks": (-0.74, -0.24, 0.74, 0.34),
    "nose": (-0.24, -0.18, 0.24, 0.40), "mouth": (-0.68, 0.10, 0.68, 1.0), "chin": (-0.5, 0.38, 0.5, 1.24),
    "hair": (-1.1, -1.45, 1.1, 1.0), "face": (-0.95, -1.15, 0.95, 1.25), "occluder": (-1.05, -0.8, 1.05, 1.2),
    "features": (-0.74, -0.78, 0.74, 1.24),  # union of brows .. chin: where crease and high can be non-zero
}
_LUMA = np.array([[0.299, 0.587, 0.114]], np.float32)


def _render_chunk(inten: np.ndarray, prm: dict[str, np.ndarray], size: int, channels: int,
                  occluder_layer: bool, workspace: list[np.ndarray]) -> np.ndarray:
    """Render one chunk; ``prm`` maps nuisance columns to float32 arrays (n, 1, 1); ``occluder_layer``: every
    sample of the chunk is occluded; ``workspace``: one float32 buffer for the layer weights, reused across chunks
    and grown when too small (fresh memory for every chunk would cost a page fault per 4 kB)."""
    n = len(inten)
    f32 = np.float32

    def rgb(name: str) -> np.ndarray:
        return np.concatenate([prm[f"{name}_{c}"][:, :, 0] for c in "rgb"], axis=1)

    vis = (inten ** _GAMMA).astype(f32)  # rendered strength [choice]
    a = {au: vis[:, j, None, None] for j, au in enumerate(AUS)}
    on = {au: np.flatnonzero(vis[:, j] > 0) for j, au in enumerate(AUS)}
    # pose: pixel centre -> face coordinates (u, v); ppu = pixels per face unit
    ppu = f32(size * FACE_SCALE) * prm["scale"]
    cos, sin = np.cos(prm["rot"]), np.sin(prm["rot"])
    grid = np.arange(size, dtype=f32) + f32(0.5 - size / 2)
    gx, gy = grid[None, None, :], grid[None, :, None]
    sx, sy = prm["dx"] * f32(size), prm["dy"] * f32(size)
    U = (cos / ppu) * gx + ((sin / ppu) * gy - (cos * sx + sin * sy) / ppu)
    V = (-sin / ppu) * gx + ((cos / ppu) * gy + (sin * sx - cos * sy) / ppu)
    Ua = np.abs(U)

    def window(name: str) -> tuple[slice, slice, slice]:
        u0, v0, u1, v1 = _WINDOWS[name]
        cu, cv = np.array([u0, u1, u0, u1], f32), np.array([v0, v0, v1, v1], f32)
        x = ppu * (cos * cu - sin * cv) + sx + (size / 2 - 0.5)
        y = ppu * (sin * cu + cos * cv) + sy + (size / 2 - 0.5)
        c0, c1 = (int(np.clip(z, 0, size)) for z in (np.floor(x.min()) - 1, np.ceil(x.max()) + 2))
        r0, r1 = (int(np.clip(z, 0, size)) for z in (np.floor(y.min()) - 1, np.ceil(y.max()) + 2))
        return slice(None), slice(r0, r1), slice(c0, c1)

    def add(target: np.ndarray, au: str, gain: float, shape, *arrays: np.ndarray) -> None:
        """target[i] += gain * a[au] * _alpha(shape(*arrays[i])) over the samples i where ``au`` is active."""
        i = on[au]
        if i.size:
            target[i] += (gain * a[au][i]) * _alpha(shape(*(x[i] for x in arrays)), ppu[i])

    skin, hair = rgb("skin"), rgb("hair")
    face_w, face_h = prm["face_w"], prm["face_h"]
    lw = np.maximum(f32(0.014), f32(0.5) / ppu)  # crease half-width: at least half a pixel
    crease = np.zeros_like(U)  # darker skin: wrinkles, furrows, folds
    high = np.zeros_like(U)  # lighter skin: bulges
    layers: list[tuple[np.ndarray, np.ndarray, tuple[slice, slice, slice]]] = []  # (alpha, colour, window)

    # hair behind the head, neck, ears, face (egg-shaped; below v = 0.35 pulled down by the jaw drop, AU26)
    w = window("hair")
    u, v, hv = U[w], V[w], prm["hair_vol"]
    q = np.sqrt((u / (face_w * hv)) ** 2 + ((v + 0.12) / (face_h * 0.98 * hv)) ** 2)
    layers.append((_alpha(np.maximum((q - 1) * face_w, v - prm["hair_len"]), ppu), hair * 0.8, w))
    w = window("neck")
    layers.append((_alpha(np.maximum(Ua[w] - face_w * 0.42, 0.4 - V[w]), ppu), skin * 0.78, w))
    w = window("ears")
    q = np.sqrt(((Ua[w] - face_w - 0.03) / 0.08) ** 2 + ((V[w] - prm["eye_y"] - 0.1) / 0.16) ** 2)
    layers.append((_alpha((q - 1) * 0.08, ppu), skin * 0.88, w))
    w = window("face")
    jaw = f32(0.13) * a["AU26"]
    low = np.clip((V[w] - 0.35) * 2.0, 0.0, 1.0)
    vf = (V[w] - jaw * low * low) / face_h
    wl = face_w * (1 - prm["taper"] * np.clip(vf, 0.0, 1.0))
    q = np.sqrt((U[w] / wl) ** 2 + vf ** 2)
    layers.append((_alpha((q - 1) * face_w, ppu), skin, w))

    # brows (AU1 inner up, AU2 outer up, AU4 down and together) and forehead lines / glabella furrows
    w = window("brows")
    u, v, ua, cr = U[w], V[w], Ua[w], crease[w]
    ey, ex, ew = prm["eye_y"], prm["eye_x"], prm["eye_w"]
    by = ey - prm["brow_gap"]
    bi = prm["brow_in"] - 0.03 * a["AU4"]
    bo = ex + ew + prm["brow_out"]
    tb = (ua - bi) / (bo - bi)
    centre = (by - prm["brow_arch"] * 4 * tb * (1 - tb)
              - 0.11 * a["AU1"] * np.clip(1 - tb / 0.65, 0.0, 1.0)
              - 0.09 * a["AU2"] * np.clip((tb - 0.35) / 0.65, 0.0, 1.0)
              + 0.06 * a["AU4"] + 0.035 * a["AU4"] * np.clip(1 - tb, 0.0, 1.0))
    th = prm["brow_th"] * (1 - 0.35 * np.clip(tb, 0.0, 1.0))
    brow = (_alpha(np.maximum(np.abs(v - centre) - th, (np.abs(tb - 0.5) - 0.5) * (bo - bi)), ppu), hair * 0.75, w)
    period = np.maximum(f32(0.06), f32(2.5) / ppu)  # line spacing: at least 2.5 px
    lines = (v - by + 0.4 * u * u) / period
    dist = np.abs(lines - np.rint(lines)) * period - lw
    dv = v - by + 0.21
    add(cr, "AU1", 0.6, lambda d, u_, dv_: np.maximum(d, _box(u_, dv_, 0.22, 0.09)), dist, u, dv)
    add(cr, "AU2", 0.6, lambda d, ua_, dv_: np.maximum(d, _box(ua_ - 0.385, dv_, 0.135, 0.09)), dist, ua, dv)
    add(cr, "AU4", 0.75, lambda ua_, dv_, lw_: _box(ua_ - 0.045, dv_ - 0.24, lw_, 0.08), ua, dv, lw)

    # eyes (AU5 upper lid up, AU7 lower lid up + lid crease)
    w = window("eyes")
    v, ua = V[w], Ua[w]
    te = (ua - ex) / ew
    we = 1 - te * te
    top = ey - prm["eye_up"] * (1 + 1.2 * a["AU5"] - 0.25 * a["AU7"]) * we
    bot = ey + prm["eye_low"] * (1 - 0.6 * a["AU7"]) * we
    eye = _alpha(np.maximum(top - v, v - bot), ppu)
    iris = _alpha(np.sqrt((ua - ex) ** 2 + (v - ey - 0.005) ** 2) - prm["iris_size"], ppu) * eye
    lid = _alpha(np.maximum(np.abs(v - top + 0.008) - 0.016, (np.abs(te) - 1.08) * ew), ppu)
    eyes = [(eye, np.repeat(np.array([[236, 234, 228]], f32), n, 0), w), (iris, rgb("iris"), w),
            (lid, np.minimum(hair, 60) * 0.6, w)]
    add(crease[w], "AU7", 0.6, lambda v_, b_, we_, te_, ew_, lw_: np.maximum(
        np.abs(v_ - b_ - 0.035 * we_ - 0.01) - lw_, (np.abs(te_) - 0.8) * ew_), v, bot, we, te, ew, lw)

    # cheeks (AU6): bulge highlight, crescent below it, crow's feet at the outer eye corner
    i = on["AU6"]
    if i.size:
        w = window("cheeks")
        v, ua, s6, p6, lw6 = V[w][i], Ua[w][i], 0.85 * a["AU6"][i], ppu[i], lw[i]
        cu, cv, ew6 = ex[i] + 0.04, ey[i] + 0.1, ew[i]
        q = np.sqrt(((ua - cu) / (ew6 * 1.1)) ** 2 + ((v - cv) / 0.1) ** 2)
        lower = np.maximum(cv + 0.04 - v, np.abs(ua - cu) - ew6 * 0.85)
        ox = ua - ex[i] - ew6 - 0.02
        feet = np.maximum(np.abs(np.abs(v - ey[i]) - 0.55 * ox) - lw6, np.abs(ox - 0.06) - 0.05)
        crease[w][i] += s6 * (_alpha(np.maximum(np.abs(q - 1) * 0.1 - lw6, lower), p6) + _alpha(feet, p6))
        high[w][i] += 0.6 * s6 * _alpha(np.maximum((q - 1) * 0.1, cv - v), p6)

    # nose (AU9: bridge lines, nostrils lifted and flared)
    w = window("nose")
    u, v, ua, cr = U[w], V[w], Ua[w], crease[w]
    ny, nw = prm["nose_y"], prm["nose_w"]
    cr += 0.25 * _alpha(_box(ua - nw * 0.75, v - (ey + ny) / 2 - 0.02, lw * 0.8, (ny - ey) / 2 - 0.06), ppu)
    period = np.maximum(f32(0.045), f32(2.5) / ppu)
    add(cr, "AU9", 0.9, lambda u_, dv_, p_, lw_: np.maximum(
        np.abs(dv_ / p_ - np.rint(dv_ / p_)) * p_ - lw_, _box(u_, dv_ - 0.1, 0.1, 0.09)), u, v - ey, period, lw)
    q = np.sqrt(((ua - nw * 0.8) / (0.03 * (1 + 0.6 * a["AU9"]))) ** 2 + ((v - ny + 0.05 * a["AU9"]) / 0.018) ** 2)
    nostril = (_alpha((q - 1) * 0.018, ppu), skin * 0.35, w)

    # mouth (AU10, 12, 14, 15, 20, 23, 24, 25, 26; AU17 thickens the lower lip)
    w = window("mouth")
    u, v, ua, cr = U[w], V[w], Ua[w], crease[w]
    my, mw0 = prm["mouth_y"], prm["mouth_w"]
    mw = mw0 * (1 + 0.35 * a["AU12"] + 0.32 * a["AU20"] - 0.25 * a["AU23"])
    cy = -0.15 * a["AU12"] + 0.11 * a["AU15"] + 0.02 * a["AU20"]
    tm = u / mw
    t2 = tm * tm
    wm = 1 - t2
    c = my + cy * t2
    o_top = c - (0.004 + 0.04 * a["AU25"] + 0.035 * a["AU10"]) * wm
    o_bot = c + (0.004 + 0.045 * a["AU25"] + 0.14 * a["AU26"]) * wm
    thin = np.maximum(1 - 0.4 * a["AU20"] - 0.2 * a["AU23"] - 0.6 * a["AU24"], 0.2)
    up_top = o_top - prm["lip_up"] * thin * wm
    lo_bot = o_bot + prm["lip_low"] * (thin + 0.45 * a["AU17"]) * wm
    opening = _alpha(np.maximum(np.maximum(o_top - v, v - o_bot) - 0.008, (np.abs(tm) - 1) * mw), ppu)
    mouth = [(_alpha(np.maximum(up_top - v, v - lo_bot), ppu), rgb("lips") * (1 - 0.7 * vis[:, [AUS.index("AU23")]]),
              w), (opening, np.repeat(np.array([[72, 24, 30]], f32), n, 0), w),
             (opening * _alpha(v - o_top - 0.035 * wm, ppu), np.repeat(np.array([[236, 230, 216]], f32), n, 0), w)]
    # nasolabial folds (AU10)
    add(cr, "AU10", 0.65, lambda ua_, v_, ny_, my_, nw_, mw_, lw_: np.maximum(
        np.abs(ua_ - nw_ - 0.05 - (mw_ + 0.02 - nw_) * np.clip((v_ - ny_) / (my_ - ny_), 0.0, 1.0)
               - 0.06 * np.clip((v_ - ny_) / (my_ - ny_), 0.0, 1.0) * np.clip((my_ - v_) / (my_ - ny_), 0.0, 1.0))
        - lw_, np.abs(v_ - (ny_ + my_) / 2 - 0.01) - (my_ - ny_) / 2 + 0.01), ua, v, ny, my, nw, mw0, lw)
    # corner marks: dimples (AU14), marionette lines (AU15), stretch lines (AU20); lip-press bulges (AU24);
    # a pressed rim around tightened lips (AU23)
    dc, vc = ua - mw, v - my - cy
    add(cr, "AU14", 1.0, lambda dc_, vc_, lw_: np.minimum(
        np.maximum(np.abs(dc_ - 0.06 - 3.0 * vc_ * vc_) - 1.8 * lw_, np.abs(vc_) - 0.11),
        np.sqrt((dc_ - 0.1) ** 2 + vc_ * vc_) - 0.05), dc, vc, lw)
    add(high[w], "AU14", 0.6, lambda dc_, vc_: _box(dc_ - 0.02, vc_, 0.025, 0.08), dc, vc)
    add(cr, "AU15", 0.85, lambda dc_, vc_, lw_: np.maximum(np.abs(dc_ - 0.02 - 0.25 * vc_) - lw_,
                                                           np.abs(vc_ - 0.08) - 0.08), dc, vc, lw)
    add(cr, "AU20", 0.8, lambda dc_, vc_, lw_: _box(dc_ - 0.08, vc_, 0.07, lw_), dc, vc, lw)
    add(cr, "AU23", 1.0, lambda v_, t_, b_, tm_, mw_, lw_: np.maximum(
        np.abs(np.maximum(t_ - v_, v_ - b_) - 1.5 * lw_) - 1.5 * lw_, (np.abs(tm_) - 1.0) * mw_),
        v, up_top, lo_bot, tm, mw, lw)
    edge = (np.abs(tm) - 0.75) * mw
    add(high[w], "AU24", 1.0, lambda v_, t_, b_, e_, lw_: np.minimum(
        np.maximum(np.abs(v_ - t_ + 0.065) - 1.5 * lw_, e_), np.maximum(np.abs(v_ - b_ - 0.065) - 1.5 * lw_, e_)),
        v, up_top, lo_bot, edge, lw)
    add(cr, "AU17", 0.8, lambda v_, b_, t2_, tm_, mw_, lw_: np.maximum(
        np.abs(v_ - b_ - 0.05 - 0.05 * t2_) - lw_, (np.abs(tm_) - 0.6) * mw_), v, lo_bot, t2, tm, mw, lw)

    # chin (AU17): dimpled chin boss that follows the jaw (AU26)
    i = on["AU17"]
    if i.size:
        w = window("chin")
        u, v, s17, p17 = U[w][i], V[w][i], a["AU17"][i], ppu[i]
        q = np.sqrt((u / 0.17) ** 2 + ((v - my[i] - 0.3 - jaw[i]) / 0.1) ** 2)
        dots = np.cos(u * 60.0) * np.cos(v * 60.0)
        crease[w][i] += 0.7 * s17 * _alpha(np.maximum((q - 1) * 0.1, 0.2 - dots), p17)
        high[w][i] += 0.4 * s17 * _alpha(np.maximum((q - 1) * 0.1, dots + 0.2), p17)

    # hair fringe on top of the face
    w = window("fringe")
    u, v = U[w], V[w]
    q = np.sqrt((u / (face_w * 1.03)) ** 2 + ((v + 0.02) / (face_h * 1.03)) ** 2)
    fringe = (_alpha(np.maximum((q - 1) * face_w, v - prm["hairline"] - 0.3 * (u / face_w) ** 2), ppu), hair, w)

    w = window("features")  # crease and high are zero outside it
    layers += [(np.clip(high[w], 0.0, 1.0), np.minimum(skin * 1.12 + 12, 255), w),
               (np.clip(crease[w], 0.0, 0.85), skin * 0.55, w), nostril, *eyes, brow, *mouth, fringe]
    if occluder_layer:
        w = window("occluder")
        du, dv = U[w] - prm["occ_u"], V[w] - prm["occ_v"]
        hu, hv_ = prm["occ_w"], prm["occ_h"]
        r = prm["occ_round"] * np.minimum(hu, hv_)
        qx, qy = np.maximum(np.abs(du) - hu + r, 0.0), np.maximum(np.abs(dv) - hv_ + r, 0.0)
        layers.append((_alpha(np.sqrt(qx * qx + qy * qy) - r, ppu), rgb("occ"), w))

    # composite top-down: weight_k = alpha_k * prod_{j > k} (1 - alpha_j) inside each layer's window, 0 outside;
    # the background gets the rest; colours mixed by one (C x k) @ (k x HW) product per sample
    k = len(layers) + 1
    if workspace[0].size < n * k * size * size:
        workspace[0] = np.empty(n * k * size * size, f32)
    weights = workspace[0][:n * k * size * size].reshape(n, k, size, size)
    weights.fill(0.0)
    colours = np.empty((n, k, 3), f32)
    rest = weights[:, -1]
    rest.fill(1.0)
    for i, (alpha, colour, w) in enumerate(reversed(layers)):
        wi = weights[:, i][w]
        np.multiply(alpha, rest[w], out=wi)
        rest[w] -= wi
        colours[:, i] = colour
    colours[:, -1] = rgb("bg")
    if channels == 1:
        colours = colours @ _LUMA.T
    img = np.matmul(colours.transpose(0, 2, 1), weights.reshape(n, k, -1)).reshape(n, channels, size, size)
    # lighting (gain x linear gradient) and pixel noise
    gain, grad, gdir = prm["gain"], prm["grad"], prm["grad_dir"]
    light = (gain * grad * np.cos(gdir) / size) * gx + (gain + (gain * grad * np.sin(gdir) / size) * gy)
    light += _pixel_noise(prm["noise_seed"], size) * (prm["noise_sd"] * f32(np.sqrt(12.0)) / 128.0)
    out = np.empty((n, size, size, channels), f32)
    np.multiply(img, light[:, None], out=out.transpose(0, 3, 1, 2))  # lit and interleaved to (n, H, W, C)
    out += f32(0.5)
    return np.clip(out, 0, 255, out=out).astype(np.uint8)


def _check_render_args(size: int, channels: int) -> None:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or not 16 <= size <= 512:
        raise ValueError(f"size must be an integer in [16, 512] pixels (designed for 48-128), got {size!r}")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (grey) or 3 (RGB), got {channels!r}")


def render_faces(intensities: np.ndarray | pd.DataFrame, nuisance: pd.DataFrame, size: int = 64,
                 channels: int = 3) -> np.ndarray:
    """Render faces from AU intensities (n, 17) in AUS order and :func:`sample_nuisance` rows -> uint8 (n, H, W, C).

    Vectorised numpy: each feature is an antialiased implicit shape in face coordinates composited in one
    matrix product (no per-image drawing). A DataFrame with ``i_AU*`` columns (from :func:`sample_labels`) is
    accepted. Row i of the output depends only on row i of the inputs (batch-independent noise).
    """
    _check_render_args(size, channels)
    if isinstance(intensities, pd.DataFrame):
        intensities = intensities[[f"i_{a}" for a in AUS]].to_numpy(np.float64)
    inten = np.asarray(intensities, dtype=np.float64)
    if inten.ndim != 2 or inten.shape[1] != len(AUS):
        raise ValueError(f"intensities must have shape (n, {len(AUS)}), got {inten.shape}")
    if len(inten) != len(nuisance):
        raise ValueError(f"{len(inten)} intensity rows but {len(nuisance)} nuisance rows")
    if len(inten) and (np.isnan(inten).any() or inten.min() < 0 or inten.max() > 1):
        raise ValueError("intensities must lie in [0, 1] without NaN")
    missing = [c for c in _NUISANCE_COLUMNS if c not in nuisance.columns]
    if missing:
        raise KeyError(f"nuisance table lacks columns {missing}; make it with sample_nuisance()")
    prm = {c: nuisance[c].to_numpy(np.float32)[:, None, None] for c in _NUISANCE_COLUMNS if c != "noise_seed"}
    prm["noise_seed"] = nuisance["noise_seed"].to_numpy(np.float64).astype(np.uint32)[:, None, None]
    n, chunk = len(inten), max(1, _CHUNK_PIXELS // (size * size))
    occluded = prm["occ"][:, 0, 0] > 0
    out = np.empty((n, size, size, channels), np.uint8)
    workspace = [np.empty(0, np.float32)]
    for flag in (False, True):  # occluded faces get one more layer
        group = np.flatnonzero(occluded == flag)
        group = group[_pose_order(prm["dx"][group, 0, 0], prm["dy"][group, 0, 0], chunk)]
        for start in range(0, len(group), chunk):
            rows = group[start:start + chunk]
            out[rows] = _render_chunk(inten[rows], {c: x[rows] for c, x in prm.items()}, size, channels, flag,
                                       workspace)
    return out


def region_mask(au: str, nuisance: pd.DataFrame, size: int = 64, margin: float = 1.0) -> np.ndarray:
    """Pixels (n, H, W) whose centre lies in ``AU_REGIONS[au]`` under each face's pose, grown by ``margin`` px."""
    if au not in AU_REGIONS:
        raise KeyError(f"unknown AU {au!r}; valid: {list(AUS)}")
    ppu = size * FACE_SCALE * nuisance["scale"].to_numpy()[:, None, None]
    rot = nuisance["rot"].to_numpy()[:, None, None]
    cos, sin = np.cos(rot), np.sin(rot)
    grid = np.arange(size) + 0.5 - size / 2
    x = grid[None, None, :] - nuisance["dx"].to_numpy()[:, None, None] * size
    y = grid[None, :, None] - nuisance["dy"].to_numpy()[:, None, None] * size
    u, v = (cos * x + sin * y) / ppu, (-sin * x + cos * y) / ppu
    grow = margin / ppu
    mask = np.zeros(u.shape, bool)
    for u0, v0, u1, v1 in AU_REGIONS[au]:
        mask |= (u >= u0 - grow) & (u <= u1 + grow) & (v >= v0 - grow) & (v <= v1 + grow)
    return mask


def make_faces(n: int, size: int = 64, channels: int = 3, relatedness: Relatedness | None = None,
               config: FaceConfig | None = None, seed: int = 0) -> tuple[np.ndarray, pd.DataFrame]:
    """``n`` faces and their truth table (:func:`sample_labels` columns + ``occluded``) for one seed (P1 §3 twin)."""
    _check_render_args(size, channels)
    labels_rng, nuisance_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    truth = sample_labels(n, relatedness, config, labels_rng)
    nuisance = sample_nuisance(n, config, nuisance_rng)
    truth["occluded"] = nuisance["occ"].to_numpy() > 0
    return render_faces(truth, nuisance, size, channels), truth


def write_faces(folder: str | os.PathLike, n: int = 300, size: int = 48, channels: int = 3, seed: int = 0,
                relatedness: Relatedness | None = None, config: FaceConfig | None = None) -> pd.DataFrame:
    """Render ``n`` faces (:func:`make_faces`: uniform class prior, no label noise, as a twin's test split) into
    ``folder/faces/NNNNN.png`` and write their true labels to ``folder/labels.csv`` in the canonical layout
    (``path`` relative to ``folder``, ``expr`` code in EXPRESSIONS order, AU1..AU26 as 0/1, ``valence``,
    ``arousal``): a folder of "your own" face crops, with answers, to try ``python -m fbhelpers predict`` on.
    Returns the labels table."""
    from PIL import Image

    images, truth = make_faces(n, size, channels, relatedness, config, seed)
    folder = Path(folder)
    (folder / "faces").mkdir(parents=True, exist_ok=True)
    paths = [f"faces/{i:05d}.png" for i in range(n)]
    for path, image in zip(paths, images):
        Image.fromarray(image[..., 0] if channels == 1 else image).save(folder / path)
    table = pd.concat([pd.DataFrame({"path": paths}), truth[["expr", *AUS, *VA_LABELS]]], axis=1)
    table.to_csv(folder / "labels.csv", index=False)
    return table


def compound_test_set(n: int, size: int = 64, channels: int = 3, relatedness: Relatedness | None = None,
                      config: FaceConfig | None = None, seed: int = 0) -> Source:
    """Faces of compound expressions for the zero-shot study (docs/method.md#zero-shot-and-few-shot; DU Table 1 compound
    rows).

    Classes and AU profiles from ``relatedness`` (default ``prior("du2014_compound")``), uniform class prior,
    same AU miss / spontaneous / intensity model and nuisance as :func:`make_faces`. The table (all ``test``,
    source ``"compound"``) has ``compound`` (Int64 code into ``relatedness.classes``), the true AUs, and
    ``expr`` / ``valence`` / ``arousal`` missing (no basic label). Never part of a study's training sources.
    """
    _check_render_args(size, channels)
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n!r}")
    rel = prior("du2014_compound") if relatedness is None else relatedness
    cfg = config or FaceConfig()
    p = au_probabilities(rel, cfg.au_miss, cfg.au_spont, classes=None).to_numpy()
    labels_rng, nuisance_rng = (np.random.default_rng(s) for s in np.random.SeedSequence([seed, 1]).spawn(2))
    codes = labels_rng.integers(0, len(p), n)
    inten = _draw_aus(codes, p, cfg.intensity_min, labels_rng)
    images = render_faces(inten, sample_nuisance(n, cfg, nuisance_rng), size, channels)
    table = pd.DataFrame({"split": "test", "source": "compound", "expr": pd.array([pd.NA] * n, dtype="Int64"),
                          "compound": pd.array(codes, dtype="Int64")})
    table = pd.concat([table, pd.DataFrame((inten > 0).astype(np.float64), columns=list(AUS))], axis=1)
    table["valence"], table["arousal"] = np.nan, np.nan
    return Source("compound", table, images)
