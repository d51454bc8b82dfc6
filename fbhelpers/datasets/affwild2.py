"""Aff-Wild2 as distributed for the ABAW challenges (Kollias, Zafeiriou. Expression, Affect, Action Unit
Recognition: Aff-Wild2, Multi-Task Learning and ArcFace. BMVC 2019; ABAW FG 2020 and later editions).

Frames (the folder to pass, e.g. ``DATA/Aff-Wild2``): ``cropped_aligned/<video>/<NNNNN>.jpg`` (5 digits, 1-based).
Videos with two people are two videos, ``<name>_left`` and ``<name>_right``, each with its own frame folder and
its own annotation files. Three annotation layouts, detected in this order (or named with ``layout=``):

- ``"abaw"`` (ABAW3+): ``{VA_Estimation_Challenge,EXPR_Recognition_Challenge,AU_Detection_Challenge}/
  {Train_Set,Validation_Set}/<video>.txt``;
- ``"fg2020"``: ``annotations/{VA_Set,EXPR_Set,AU_Set}/{Training_Set,Validation_Set}/<video>.txt``;
- ``"mtl"`` (s-Aff-Wild2 multi-task challenge): one file per split, ``training_set_annotations.txt`` and
  ``validation_set_annotations.txt`` (``mtl_files=``), header ``image,valence,arousal,expression,aus`` (or with
  the AU names spelled out), rows ``video/00001.jpg,v,a,e,au1,...,au12`` (the 12 ABAW3+ AUs).

The layout folders may also sit in one sub-folder of root (e.g. ``6th ABAW Annotations/``) next to
``cropped_aligned/``; ``annotations=`` names that folder explicitly.

Per-task files: one header line, then one row per frame: the row on line ``i + 1`` is frame ``i``, image
``cropped_aligned/<video>/<i:05d>.jpg``. A blank line before the last row is an error naming the file and line: it
would leave a frame without a row and shift every later frame in parsers that drop blank lines, so which frame a
later row labels is ambiguous; blank lines after the last row are ignored. Headers: VA ``valence,arousal``; EXPR
``Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise,Other`` (FG 2020 without ``Other``); AU the AU names
(ABAW3+ ``AU1,AU2,AU4,AU6,AU7,AU10,AU12,AU15,AU23,AU24,AU25,AU26``, FG 2020 ``AU1,AU2,AU4,AU6,AU12,AU15,AU20,AU25``),
read from the header.

Mappings applied here and nowhere else:

- VA ``-5`` -> NaN (per value); any other value outside [-1, 1] is an error.
- EXPR codes 0..6 (Neutral, Anger, Disgust, Fear, Happiness, Sadness, Surprise) are already the canonical order of
  ``tasks.EXPRESSIONS``, so ``expr`` = code; ``-1`` -> ``<NA>``. Code 7 "Other" (not one of the 7 canonical
  classes): ``other="missing"`` (default) makes ``expr`` ``<NA>`` on that frame, which keeps its AU / VA labels;
  the frames are counted in ``attrs["skipped_detail"]["expression Other set missing"]`` [choice];
  ``other="keep"`` keeps code 7 (``attrs["expr_labels"]`` = :data:`EXPRESSIONS_8`; a study then needs the task
  ``tasks.classification_task("expr", EXPRESSIONS_8)``). Any other code is an error (7 as well when the header has
  no ``Other``).
- AU ``-1`` -> NaN; 0/1 kept; any other value is an error. AU columns are named as in the header (``AU<k>``).
- The three task files of a video in one split folder are merged into one row per frame; a frame with every label
  missing is not a row ("no label (all sentinels)"); with ``check_images`` a frame without its image is not a row
  ("no image file", per video in ``attrs["skipped_detail"]["no image per video"]``).
- Split: ``Train_Set`` / ``Training_Set`` / the training MTL file -> "train", ``Validation_Set`` / the validation
  MTL file -> "val" (the challenge's split; its test labels are not public). The challenge splits each task on
  its own, so a video can have one task's file under Train_Set and another's under Validation_Set:
  ``overlap="keep"`` (default) keeps each task's labels in that task's split (the same frame is then a train row
  and a val row, with different labels); ``overlap="val"`` puts every row of such a video in "val", labels
  merged. Either way ``attrs["overlap_videos"]`` lists them.

Extra columns: ``video`` (str) and ``frame`` (int, 1-based).
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from ..tasks import EXPRESSIONS
from . import common
from .common import DataFormatError

NAME = "affwild2"
FOLDER = "Aff-Wild2"
IMAGES = "cropped_aligned"
LAYOUTS: dict[str, dict[str, str]] = {
    "abaw": {"va": "VA_Estimation_Challenge", "expr": "EXPR_Recognition_Challenge", "au": "AU_Detection_Challenge"},
    "fg2020": {"va": "annotations/VA_Set", "expr": "annotations/EXPR_Set", "au": "annotations/AU_Set"},
}
SPLIT_FOLDERS: dict[str, dict[str, str]] = {
    "abaw": {"Train_Set": "train", "Validation_Set": "val"},
    "fg2020": {"Training_Set": "train", "Validation_Set": "val"},
}
MTL_FILES: dict[str, str] = {"train": "training_set_annotations.txt", "val": "validation_set_annotations.txt"}
MTL_HEADER: tuple[str, ...] = ("image", "valence", "arousal", "expression")
VA_HEADER: tuple[str, ...] = ("valence", "arousal")
EXPR_HEADER: tuple[str, ...] = ("Neutral", "Anger", "Disgust", "Fear", "Happiness", "Sadness", "Surprise")
OTHER = "Other"
CODES: dict[int, str] = {code: name.lower() for code, name in enumerate(EXPR_HEADER)}
EXPRESSIONS_8: tuple[str, ...] = (*EXPRESSIONS, "other")
AUS_ABAW: tuple[str, ...] = ("AU1", "AU2", "AU4", "AU6", "AU7", "AU10", "AU12", "AU15", "AU23", "AU24", "AU25",
                             "AU26")
AUS_FG2020: tuple[str, ...] = ("AU1", "AU2", "AU4", "AU6", "AU12", "AU15", "AU20", "AU25")
VA_MISSING = -5.0
MISSING_CODE = -1
AU_NAME = re.compile(r"^AU0*(\d+)$", re.IGNORECASE)
KEYS = ["split", "video", "frame"]


def _floats(path: Path, rows: list[tuple[int, list[str]]], names: list[str]) -> np.ndarray:
    """The fields of ``rows`` as a float array; DataFormatError naming the first field that is not a number."""
    try:
        return np.array([f for _, f in rows], dtype=float).reshape(len(rows), len(names))
    except ValueError:
        for line, fields in rows:
            for name, text in zip(names, fields):
                common.parse_number(path, line, text, name)
        raise


def _header(path: Path) -> list[str]:
    with common.open_text(path) as fh:
        first = fh.readline().strip()
    if not first:
        raise DataFormatError(path, 1, "empty first line: expected the header line")
    return [h.strip() for h in first.split(",")]


def _va(path: Path, lines: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Valence, arousal with -5 -> NaN; any other value outside [-1, 1] is an error."""
    bad = np.isnan(values) | ((values != VA_MISSING) & ((values < -1) | (values > 1)))
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise DataFormatError(path, int(lines[i]), f"{VA_HEADER[j]} outside [-1, 1] (and not the -5 sentinel)",
                              values[i, j])
    return np.where(values == VA_MISSING, np.nan, values)


def _au_names(path: Path, names: list[str]) -> list[str]:
    """Header AU names as ``AU<k>``; DataFormatError for any other name."""
    out = []
    for name in names:
        match = AU_NAME.match(name)
        if not match:
            raise DataFormatError(path, 1, "AU header names must look like AU1, AU12", name)
        out.append(f"AU{int(match.group(1))}")
    return out


def _aus(path: Path, lines: np.ndarray, values: np.ndarray, names: list[str]) -> dict[str, np.ndarray]:
    for j, name in enumerate(names):
        common.check_codes(path, lines, values[:, j], (MISSING_CODE, 0, 1), f"{name} value")
    return {name: np.where(values[:, j] == MISSING_CODE, np.nan, values[:, j]) for j, name in enumerate(names)}


def _expr(path: Path, lines: np.ndarray, codes: np.ndarray, n_classes: int, keep_other: bool,
          counts: dict[str, int]) -> pd.array:
    """``expr`` codes (identity on 0..6, -1 -> <NA>, 7 Other -> <NA> and counted, or 7 with ``keep_other``)."""
    common.check_codes(path, lines, codes, (MISSING_CODE, *range(n_classes)), "expression code")
    other = codes == len(EXPR_HEADER)
    counts["expression Other set missing"] += 0 if keep_other else int(other.sum())
    mapping = {**CODES, **({len(EXPR_HEADER): "other"} if keep_other else {})}
    names = EXPRESSIONS_8 if keep_other else EXPRESSIONS
    index = {code: names.index(name) for code, name in mapping.items()}
    return pd.array([index.get(int(c), pd.NA) for c in codes], dtype="Int64")


def _task_file(path: Path, task: str, keep_other: bool, counts: dict[str, int]) -> pd.DataFrame:
    """``frame`` + label columns of one per-task file (row on line i + 1 = frame i)."""
    header = _header(path)
    if task == "va" and [h.lower() for h in header] != list(VA_HEADER):
        raise DataFormatError(path, 1, f"VA header must be {','.join(VA_HEADER)}", ",".join(header))
    if task == "expr" and tuple(header) not in (EXPR_HEADER, (*EXPR_HEADER, OTHER)):
        raise DataFormatError(path, 1, f"EXPR header must be {','.join(EXPR_HEADER)}[,{OTHER}]", ",".join(header))
    names = {"va": list(VA_HEADER), "expr": ["expression code"]}.get(task) or _au_names(path, header)
    rows = list(common.text_rows(path, sep=",", skip=1, n_fields=len(names)))
    lines = np.array([line for line, _ in rows], dtype=int)
    gaps = np.flatnonzero(lines != np.arange(2, 2 + len(lines)))
    if gaps.size:
        raise DataFormatError(path, int(gaps[0]) + 2, "blank line between frame rows (the row on line i + 1 is frame "
                              "i): delete it, or write the missing-label value (-5 VA, -1 EXPR / AU) for its frame")
    values = _floats(path, rows, names)
    out = {"frame": lines - 1}
    if task == "va":
        out.update(zip(VA_HEADER, _va(path, lines, values).T))
    elif task == "expr":
        out["expr"] = _expr(path, lines, values[:, 0], len(header), keep_other, counts)
    else:
        out.update(_aus(path, lines, values, names))
    return pd.DataFrame(out)


def _read_tasks(folder: Path, layout: str, keep_other: bool, counts: dict[str, int]) -> pd.DataFrame:
    """The per-task files of ``layout`` under ``folder`` merged into one row per (split, video, frame)."""
    merged = None
    for task, rel in LAYOUTS[layout].items():
        base = folder / rel
        if not base.is_dir():
            continue
        present = [name for name in SPLIT_FOLDERS[layout] if (base / name).is_dir()]
        if not present:
            raise FileNotFoundError(f"{NAME}: {base} has none of the split folders {list(SPLIT_FOLDERS[layout])}")
        parts = [_task_file(path, task, keep_other, counts).assign(split=SPLIT_FOLDERS[layout][name], video=path.stem)
                 for name in present for path in sorted((base / name).glob("*.txt"))]
        if not parts:
            continue
        table = pd.concat(parts, ignore_index=True)
        merged = table if merged is None else merged.merge(table, on=KEYS, how="outer")
    if merged is None:
        raise FileNotFoundError(f"{NAME}: no annotation file (*.txt) under {folder} in the {layout!r} layout")
    return merged


def _read_mtl(path: Path, split: str, keep_other: bool, counts: dict[str, int]) -> pd.DataFrame:
    """One MTL challenge file: ``image,valence,arousal,expression`` then the AUs (named, or ``aus`` = ABAW3+'s 12)."""
    header = _header(path)
    if [h.lower() for h in header[:4]] != list(MTL_HEADER) or len(header) < 5:
        raise DataFormatError(path, 1, f"MTL header must start with {','.join(MTL_HEADER)}, then aus or AU names",
                              ",".join(header))
    aus = list(AUS_ABAW) if [h.lower() for h in header[4:]] == ["aus"] else _au_names(path, header[4:])
    rows = list(common.text_rows(path, sep=",", skip=1, n_fields=4 + len(aus)))
    lines = np.array([line for line, _ in rows], dtype=int)
    images = [f[0] for _, f in rows]
    videos, frames = [], []
    for line, image in zip(lines, images):
        parts = image.split("/")
        if len(parts) != 2 or not re.fullmatch(r"\d+\.jpg", parts[1]):
            raise DataFormatError(path, int(line), "image must be <video>/<NNNNN>.jpg", image)
        videos.append(parts[0])
        frames.append(int(parts[1][:-4]))
    values = _floats(path, [(line, f[1:]) for line, f in rows], ["valence", "arousal", "expression", *aus])
    out = {"split": split, "video": videos, "frame": frames, **dict(zip(VA_HEADER, _va(path, lines, values[:, :2]).T)),
           "expr": _expr(path, lines, values[:, 2], len(EXPR_HEADER) + 1, keep_other, counts),
           **_aus(path, lines, values[:, 3:], aus)}
    return pd.DataFrame(out)


def _detect(base: Path, layout: str | None, mtl_files: Mapping[str, str]) -> str | None:
    """The first layout present in ``base`` (or ``layout`` when it is there), None otherwise."""
    present = {
        "abaw": any((base / rel).is_dir() for rel in LAYOUTS["abaw"].values()),
        "fg2020": any((base / rel).is_dir() for rel in LAYOUTS["fg2020"].values()),
        "mtl": any((base / rel).is_file() for rel in mtl_files.values()),
    }
    if layout is not None:
        return layout if present[layout] else None
    return next((name for name, here in present.items() if here), None)


def _subfolders(base: Path) -> list[Path]:
    return sorted(d for d in base.iterdir() if d.is_dir() and d.name != IMAGES)


def _holds(folder: Path, layout: str | None, mtl_files: Mapping[str, str]) -> Path | None:
    """The annotation folder of a dataset folder: itself, or one sub-folder next to ``cropped_aligned/``."""
    if _detect(folder, layout, mtl_files):
        return folder
    if (folder / IMAGES).is_dir():
        return next((d for d in _subfolders(folder) if _detect(d, layout, mtl_files)), None)
    return None


def _locate(root: str | Path, layout: str | None, annotations: str | Path | None,
            mtl_files: Mapping[str, str]) -> tuple[Path, Path, str]:
    """(dataset folder, annotation folder, layout); FileNotFoundError naming what is missing, and the folder to
    pass when a parent folder was given (the annotations one or two levels further down)."""
    base = Path(root).expanduser().resolve()
    if not base.is_dir():
        raise FileNotFoundError(f"{NAME}: root {base} is not a folder")
    folder = base / annotations if annotations is not None else _holds(base, layout, mtl_files)
    if folder is not None and folder.is_dir() and _detect(folder, layout, mtl_files):
        return base, folder, _detect(folder, layout, mtl_files)
    if annotations is None:
        below = [d for d in _subfolders(base) if _holds(d, layout, mtl_files) is not None]
        below = below or [d for sub in _subfolders(base) for d in _subfolders(sub)
                          if _holds(d, layout, mtl_files) is not None]
        if below:
            raise FileNotFoundError(f"{NAME}: {base} holds no Aff-Wild2 annotations; they are under {below[0]}: "
                                    "pass that folder as root")
    names = [layout] if layout else [*SPLIT_FOLDERS, "mtl"]
    expected = {n: list(mtl_files.values()) if n == "mtl" else list(LAYOUTS[n].values()) for n in names}
    raise FileNotFoundError(f"{NAME}: {folder or base} holds no Aff-Wild2 annotations; expected one of {expected} "
                            f"(root: the dataset's own folder, usually named {FOLDER!r}; annotations= names a "
                            "sub-folder holding them)")


def _merge_overlap(frame: pd.DataFrame, overlap: str) -> tuple[pd.DataFrame, list[str]]:
    """Videos with rows in both splits; with ``overlap="val"`` all their rows become "val" (labels merged)."""
    splits = frame.groupby("video")["split"].nunique()
    both = sorted(splits.index[splits > 1])
    if overlap == "val" and both:
        moved = frame["video"].isin(both)
        part = frame[moved].sort_values("split", ascending=False, kind="stable").assign(split="val")
        part = part.groupby(KEYS, as_index=False, sort=False).first()
        frame = pd.concat([frame[~moved], part], ignore_index=True)
    return frame, both


def load(root: str | Path, *, layout: str | None = None, annotations: str | Path | None = None,
         mtl_files: Mapping[str, str] = MTL_FILES, other: str = "missing", overlap: str = "keep",
         check_images: bool = True, allow_outside_root: bool = False) -> pd.DataFrame:
    """The canonical table of Aff-Wild2 (Kollias & Zafeiriou, BMVC 2019; ABAW): one row per labelled frame with
    ``expr``, the AUs of the edition and VA (mappings in the module docstring), ``video`` and ``frame`` columns.

    ``layout``: ``"abaw"``, ``"fg2020"``, ``"mtl"`` or None (detected, in that order; ``attrs["layout"]``);
    ``annotations``: the folder (relative to root) holding the layout when it is not root itself; ``mtl_files``:
    {split: file name} of the MTL layout; ``other``: ``"missing"`` or ``"keep"`` (EXPR code 7); ``overlap``:
    ``"keep"`` or ``"val"`` (a video with task files in both splits); ``check_images``: drop and count frames
    without an image under ``cropped_aligned/``; ``allow_outside_root``: keep rows whose image path leaves the dataset
    folder (``..`` or an absolute path in the annotation; counted and skipped by default)."""
    if layout not in (None, *SPLIT_FOLDERS, "mtl"):
        raise ValueError(f"layout must be one of {[*SPLIT_FOLDERS, 'mtl']} or None, got {layout!r}")
    if other not in ("missing", "keep") or overlap not in ("keep", "val"):
        raise ValueError(f"other must be 'missing' or 'keep' and overlap 'keep' or 'val', got {other!r}, {overlap!r}")
    base, folder, layout = _locate(root, layout, annotations, mtl_files)
    counts = {"expression Other set missing": 0}
    if layout == "mtl":
        parts = [_read_mtl(folder / rel, split, other == "keep", counts)
                 for split, rel in mtl_files.items() if (folder / rel).is_file()]
        frame = pd.concat(parts, ignore_index=True)
    else:
        frame = _read_tasks(folder, layout, other == "keep", counts)
    labels = [c for c in frame.columns if c not in KEYS]
    skipped: dict[str, int] = {}
    unlabelled = frame[labels].isna().all(axis=1).to_numpy()
    skipped["no label (all sentinels)"] = int(unlabelled.sum())
    frame, both = _merge_overlap(frame[~unlabelled], overlap)
    frame = frame.sort_values(KEYS, kind="stable").reset_index(drop=True)
    frame["frame"] = frame["frame"].astype("int64")
    frame["path"] = [f"{IMAGES}/{v}/{f:05d}.jpg" for v, f in zip(frame["video"], frame["frame"])]
    detail: dict[str, object] = {"expression Other set missing": counts["expression Other set missing"]}
    frame, no_image = common.keep_images(frame, base, skipped, check_images=check_images,
                                         allow_outside_root=allow_outside_root, per="video")
    if check_images:
        detail["no image per video"] = no_image
    table = common.canonical(frame[["path", *KEYS, *labels]], NAME)
    table.attrs.update(layout=layout, overlap_videos=both,
                       expr_labels=EXPRESSIONS_8 if other == "keep" else EXPRESSIONS)
    return common.report_skips(table, NAME, skipped, detail)


# --- fixture -------------------------------------------------------------------------------------------------------

FIXTURE_VIDEOS: dict[str, dict[str, str]] = {      # video -> {task: split}; the MTL layout uses the VA split
    "1-30-1280x720": {"va": "train", "expr": "train", "au": "train"},
    "10-60-1280x720_left": {"va": "train", "expr": "train", "au": "train"},
    "10-60-1280x720_right": {"va": "train", "expr": "train", "au": "train"},
    "video5": {"va": "train", "expr": "train", "au": "val"},       # one task's file in the other split
    "2-30-640x360": {"va": "val", "expr": "val", "au": "val"},
    "video34": {"va": "val", "expr": "val", "au": "val"},
}
FIXTURE_FRAMES = 10
FIXTURE_NO_IMAGE: dict[str, tuple[int, ...]] = {"1-30-1280x720": (3, 7), "2-30-640x360": (2,),
                                                "10-60-1280x720_right": (10,)}
FIXTURE_SENTINELS: dict[str, int] = {"va": 5, "expr": 6, "au": 8}     # frame carrying each task's sentinel
FIXTURE_UNLABELLED = ("video34", 9)                                    # every task's sentinel on this frame


def _fixture_rows(rng: np.random.Generator, video: str, layout: str) -> dict[str, list[str]]:
    """Per task, the text rows of one video's annotation file (without the header)."""
    index = list(FIXTURE_VIDEOS).index(video)
    n_classes = len(EXPR_HEADER) + (layout != "fg2020")
    n_aus = len(AUS_FG2020 if layout == "fg2020" else AUS_ABAW)
    rows: dict[str, list[str]] = {"va": [], "expr": [], "au": []}
    for i in range(1, FIXTURE_FRAMES + 1):
        off = (video, i) == FIXTURE_UNLABELLED
        va = ["-5", "-5"] if off or i == FIXTURE_SENTINELS["va"] else [f"{v:.3f}" for v in rng.uniform(-1, 1, 2)]
        code = -1 if off or i == FIXTURE_SENTINELS["expr"] else (i + index) % n_classes
        aus = [-1] * n_aus if off or i == FIXTURE_SENTINELS["au"] else rng.integers(0, 2, n_aus).tolist()
        rows["va"].append(",".join(va))
        rows["expr"].append(str(code))
        rows["au"].append(",".join(map(str, aus)))
    return rows


def write_fixture(folder: Path, seed: int = 0, layout: str = "abaw") -> None:
    """A tiny Aff-Wild2 in ``layout`` (``"abaw"`` default, ``"fg2020"`` or ``"mtl"``): the six videos of
    :data:`FIXTURE_VIDEOS` x 10 frames (a ``_left`` / ``_right`` pair; ``video5`` with its AU file under
    Validation_Set), each task's sentinel on one frame per file (VA frame 5, EXPR frame 6, AU frame 8), one frame
    with every label missing, EXPR codes cycling over the classes (7 Other included but in FG 2020), and the
    frames of :data:`FIXTURE_NO_IMAGE` without an image."""
    if layout not in (*SPLIT_FOLDERS, "mtl"):
        raise ValueError(f"layout must be one of {[*SPLIT_FOLDERS, 'mtl']}, got {layout!r}")
    folder, rng = Path(folder), np.random.default_rng(seed)
    headers = {"va": ",".join(VA_HEADER),
               "expr": ",".join(EXPR_HEADER if layout == "fg2020" else (*EXPR_HEADER, OTHER)),
               "au": ",".join(AUS_FG2020 if layout == "fg2020" else AUS_ABAW)}
    mtl: dict[str, list[str]] = {split: ["image,valence,arousal,expression,aus"] for split in MTL_FILES}
    for v, (video, splits) in enumerate(FIXTURE_VIDEOS.items()):
        rows = _fixture_rows(rng, video, layout)
        for i in range(1, FIXTURE_FRAMES + 1):
            if i not in FIXTURE_NO_IMAGE.get(video, ()):
                common.write_image(folder / IMAGES / video / f"{i:05d}.jpg", seed * 1000 + v * 100 + i)
        if layout == "mtl":
            mtl[splits["va"]] += [f"{video}/{i:05d}.jpg,{va},{e},{au}" for i, (va, e, au)
                                  in enumerate(zip(rows["va"], rows["expr"], rows["au"]), start=1)]
            continue
        names = {s: n for n, s in SPLIT_FOLDERS[layout].items()}
        for task, rel in LAYOUTS[layout].items():
            common.write_text(folder / rel / names[splits[task]] / f"{video}.txt", [headers[task], *rows[task]])
    if layout == "mtl":
        for split, rel in MTL_FILES.items():
            common.write_text(folder / rel, mtl[split])
