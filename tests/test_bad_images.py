"""Image files as users have them (fbhelpers.images): every Pillow mode decoded to the right 8-bit pixel values
(16-bit, 32-bit and float greyscale, palette with transparency, alpha, CMYK, 1-bit, EXIF orientation) by the one
decoder that training input, the cache and ``predict`` share; non-regular files (FIFO, device, folder) refused
without being opened and counted as skips; ``.gif`` and the other suffixes of ``IMAGE_EXTENSIONS`` in folder mode.

Every decode below is at the image's own size, so the bicubic resize leaves the values as they are."""
from __future__ import annotations

import contextlib
import errno
import os
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from fbhelpers import inference, models
from fbhelpers.__main__ import main
from fbhelpers.batching import decode_image  # the training input's decoder: the one of fbhelpers.images
from fbhelpers.datasets.cache import build_cache
from fbhelpers.models import MultiHeadNet
from fbhelpers.tasks import Task

pytestmark = pytest.mark.usefixtures("one_thread")

GREY16 = np.array([[0, 257 * 100], [32768, 65535]])  # -> 0, 100, 128 (32768 * 255 / 65535 = 127.5), 255
GREY16_8BIT = [[0, 100], [128, 255]]


def _decode(path: Path, mode: str = "L") -> list:
    """``path`` decoded at its own size: the values as nested lists (grey: one number per pixel)."""
    with Image.open(path) as im:
        w, h = im.size
    arr = decode_image(path, (h, w), mode)
    return (arr[..., 0] if mode == "L" else arr).tolist()


# ----------------------------------------------------------------------------------------------- greyscale depths
@pytest.mark.parametrize("mode, suffix", [("I;16", ".png"), ("I;16", ".tif"), ("I;16B", ".tif")])
def test_16bit_greyscale_is_scaled_by_its_full_range_not_clipped_to_white(tmp_path, mode, suffix):
    path = tmp_path / f"grey16{suffix}"
    dtype = ">u2" if mode == "I;16B" else "<u2"
    Image.frombytes(mode, (2, 2), GREY16.astype(dtype).tobytes()).save(path)
    with Image.open(path) as im:
        assert im.mode == mode
    assert _decode(path) == GREY16_8BIT
    assert _decode(path, "RGB") == [[[v] * 3 for v in row] for row in GREY16_8BIT]


def test_16bit_pgm_opened_as_32bit_integers_is_scaled_as_16bit(tmp_path):
    path = tmp_path / "grey16.pgm"
    path.write_bytes(b"P5\n2 2\n65535\n" + GREY16.astype(">u2").tobytes())
    with Image.open(path) as im:
        assert im.mode == "I"
    assert _decode(path) == GREY16_8BIT


def test_32bit_integers_beyond_16bit_use_the_int32_range(tmp_path):
    path = tmp_path / "grey32.tif"
    Image.fromarray(np.array([[-2 ** 31, 2 ** 31 - 1], [0, 70000]], np.int32)).save(path)
    # (v + 2**31) * 255 / (2**32 - 1): 0, 255, 127.50000003 -> 128, 127.5042 -> 128
    assert _decode(path) == [[0, 255], [128, 128]]


@pytest.mark.parametrize("values, expected", [
    ([[0.0, 0.5], [1.0, 0.25]], [[0, 128], [255, 64]]),         # in [0, 1]: times 255
    ([[0.0, 100.0], [255.0, 2.0]], [[0, 100], [255, 2]]),       # in [0, 255]: an 8-bit scale, kept
    ([[-1.0, 3.0], [1.0, 0.0]], [[0, 255], [128, 64]]),         # else min..max -> 0..255
])
def test_float_greyscale_scales(tmp_path, values, expected):
    path = tmp_path / "float.tif"
    Image.fromarray(np.array(values, np.float32)).save(path)
    with Image.open(path) as im:
        assert im.mode == "F"
    assert _decode(path) == expected


def test_float_greyscale_with_nan_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "nan.tif"
    Image.fromarray(np.array([[0.0, np.nan], [np.inf, 0.5]], np.float32)).save(path)
    with pytest.raises(ValueError, match=f"cannot decode image {path}: 2 of its 4 float pixels are NaN or infinite"):
        decode_image(path, 2, "L")


# ----------------------------------------------------------------------------------------------- colour modes
def test_palette_with_a_transparent_entry_is_composited_on_black(tmp_path):
    for suffix in (".png", ".gif"):
        path = tmp_path / f"palette{suffix}"
        im = Image.fromarray(np.array([[0, 1], [1, 2]], np.uint8), "P")
        im.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * 759)
        im.save(path, transparency=1)
        assert _decode(path, "RGB") == [[[255, 0, 0], [0, 0, 0]], [[0, 0, 0], [0, 0, 255]]], suffix


def test_alpha_is_composited_on_black(tmp_path):
    Image.fromarray(np.array([[[200, 100, 50, 128], [10, 20, 30, 255]]], np.uint8), "RGBA").save(tmp_path / "a.png")
    assert _decode(tmp_path / "a.png", "RGB") == [[[100, 50, 25], [10, 20, 30]]]  # 200 * 128 / 255 = 100.4
    Image.fromarray(np.array([[[200, 128], [10, 0]]], np.uint8), "LA").save(tmp_path / "la.png")
    assert _decode(tmp_path / "la.png") == [[100, 0]]


def test_every_alpha_mode_and_the_background_constant():
    from fbhelpers.images import BACKGROUND, to_8bit

    assert BACKGROUND == (0, 0, 0)
    pa = Image.new("PA", (1, 1), (1, 128))
    pa.putpalette([0, 0, 0, 200, 100, 50] + [0] * 762)
    assert np.asarray(to_8bit(pa)).tolist() == [[[100, 50, 25]]]
    assert np.asarray(to_8bit(Image.new("La", (1, 1), (100, 128)))).tolist() == [[[100] * 3]]  # premultiplied
    assert np.asarray(to_8bit(Image.new("RGBa", (1, 1), (100, 50, 20, 128)))).tolist() == [[[100, 50, 20]]]


def test_cmyk_one_bit_and_exif_orientation(tmp_path):
    cmyk = Image.new("CMYK", (2, 1))
    cmyk.putpixel((1, 0), (255, 0, 0, 0))
    cmyk.save(tmp_path / "c.tif")
    assert _decode(tmp_path / "c.tif", "RGB") == [[[255, 255, 255], [0, 255, 255]]]  # no ink: white; cyan
    Image.fromarray(np.array([[False, True]])).save(tmp_path / "one.png")
    assert _decode(tmp_path / "one.png") == [[0, 255]]
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    Image.fromarray(np.array([[0, 50, 100], [150, 200, 250]], np.uint8)).save(tmp_path / "e.png", exif=exif)
    assert decode_image(tmp_path / "e.png", (3, 2), "L")[..., 0].tolist() == [[150, 0], [200, 50], [250, 100]]


@pytest.mark.parametrize("mode, suffix", [("RGB", ".png"), ("L", ".png"), ("RGB", ".jpg"), ("L", ".jpg")])
def test_8bit_rgb_and_grey_decode_as_pillow_converts_them(tmp_path, mode, suffix):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (30, 26, 3), dtype=np.uint8)).convert(mode).save(tmp_path / f"x{suffix}")
    for target in ("RGB", "L"):
        for box in (None, (-3.0, 4.0, 20.0, 31.0)):
            with Image.open(tmp_path / f"x{suffix}") as im:
                im = im.crop((box[0], box[1], box[0] + box[2], box[1] + box[3])) if box else im
                expected = np.asarray(im.convert(target).resize((11, 13), Image.Resampling.BICUBIC))
            got = decode_image(tmp_path / f"x{suffix}", (13, 11), target, box=box)
            np.testing.assert_array_equal(got, expected.reshape(got.shape))


# ----------------------------------------------------------------------------------------------- cache and predict
def _grey_pair(folder: Path) -> tuple[Path, Path]:
    """The same random grey image as an 8-bit PNG and as a 16-bit PNG (each value times 257)."""
    values = np.random.default_rng(1).integers(0, 256, (20, 16))
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(values.astype(np.uint8)).save(folder / "grey8.png")
    Image.frombytes("I;16", (16, 20), (values * 257).astype("<u2").tobytes()).save(folder / "grey16.png")
    return folder / "grey8.png", folder / "grey16.png"


def test_cache_build_decodes_16bit_as_its_8bit_twin(tmp_path):
    _grey_pair(tmp_path / "data")
    packed = build_cache(["grey8.png", "grey16.png"], tmp_path / "data", (20, 16), tmp_path / "cache", workers=1,
                         progress=False)
    assert packed.stats.failed == {}
    rows = packed.rows(["grey8.png", "grey16.png"])
    np.testing.assert_array_equal(packed.images[rows[1]], packed.images[rows[0]])
    assert packed.images[rows[1]].min() < 200  # not white


TASKS = (Task("expr", "multiclass", ("neutral", "happiness", "surprise")),)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    net = MultiHeadNet(TASKS, "cnn4", widths=(4, 4, 4, 4))
    return models.save(net, tmp_path_factory.mktemp("model") / "model.pt", input_size=(20, 16))


def test_predict_decodes_16bit_as_its_8bit_twin(tmp_path, model_file):
    grey8, grey16 = _grey_pair(tmp_path)
    frame = inference.predict_table(model_file, [grey8, grey16], progress=False)
    assert frame.attrs["skipped"] == []
    probs = frame[["expr_neutral", "expr_happiness", "expr_surprise"]].to_numpy()
    np.testing.assert_array_equal(probs[1], probs[0])


def test_predict_folder_takes_gif_and_the_other_listed_suffixes(tmp_path, model_file):
    from fbhelpers.images import IMAGE_EXTENSIONS

    assert {".gif", ".png", ".jpg", ".tif", ".bmp", ".webp", ".pgm"} <= set(IMAGE_EXTENSIONS)
    rng = np.random.default_rng(2)
    for name in ("a.png", "b.gif", "c.bmp", "d.pgm", "e.TGA"):
        Image.fromarray(rng.integers(0, 256, (20, 16), dtype=np.uint8)).save(tmp_path / name)
    frame = inference.predict_table(model_file, tmp_path, progress=False)
    assert [Path(p).name for p in frame["path"]] == ["a.png", "b.gif", "c.bmp", "d.pgm", "e.TGA"]
    assert frame.attrs["skipped"] == []


# ----------------------------------------------------------------------------------------------- non-regular files
@contextlib.contextmanager
def _released(fifo: Path):
    """While the block runs, a thread lets go of any reader that opens ``fifo`` (it opens the write end and closes
    it: the reader sees an empty file), so that code which opens a FIFO fails the test instead of hanging it."""
    stop = threading.Event()

    def release() -> None:
        while not stop.wait(0.05):
            try:
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))  # succeeds only while a reader waits
            except OSError as err:
                if err.errno not in (errno.ENXIO, errno.ENOENT):
                    raise

    thread = threading.Thread(target=release, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _odd_entries(folder: Path) -> dict[str, str]:
    """A FIFO, a folder and a dangling link, each named like an image, in ``folder``; name -> expected reason."""
    os.mkfifo(folder / "pipe.png")
    (folder / "dir.jpg").mkdir()
    (folder / "gone.png").symlink_to(folder / "nowhere.png")
    return {"pipe.png": "not a regular file: it is a FIFO (named pipe)",
            "dir.jpg": "not a regular file: it is a folder", "gone.png": "image file not found"}


def test_predict_csv_skips_non_regular_files_with_a_count_never_opening_them(tmp_path, model_file, capsys):
    Image.fromarray(np.zeros((20, 16), np.uint8)).save(tmp_path / "ok.png")
    reasons = {**_odd_entries(tmp_path), "/dev/null": "not a regular file: it is a character device"}
    pd.DataFrame({"path": ["ok.png", "pipe.png", "dir.jpg", "gone.png", "/dev/null"]}).to_csv(
        tmp_path / "list.csv", index=False)
    with _released(tmp_path / "pipe.png"), pytest.warns(UserWarning, match="skipped 4 of 5 files"):
        frame = inference.predict_table(model_file, tmp_path / "list.csv", progress=False)
    assert list(frame["path"]) == ["ok.png"]
    for skip in frame.attrs["skipped"]:
        assert reasons[skip["path"]] in skip["reason"], skip
    assert [s["path"] for s in frame.attrs["skipped"]] == ["pipe.png", "dir.jpg", "gone.png", "/dev/null"]
    with _released(tmp_path / "pipe.png"):
        assert main(["predict", str(model_file), "--images", str(tmp_path / "list.csv"), "--out",
                     str(tmp_path / "p.csv"), "--no-progress"]) == 0
    out, err = capsys.readouterr()
    assert "skipped 4 unreadable files" in out
    assert f"cannot decode image {tmp_path / 'pipe.png'}: not a regular file: it is a FIFO (named pipe)" in err


def test_predict_folder_counts_a_fifo_named_like_an_image(tmp_path, model_file):
    Image.fromarray(np.zeros((20, 16), np.uint8)).save(tmp_path / "ok.png")
    reasons = _odd_entries(tmp_path)
    with _released(tmp_path / "pipe.png"), pytest.warns(UserWarning, match="skipped 2 of 3 files"):
        frame = inference.predict_table(model_file, tmp_path, progress=False)
    assert [Path(p).name for p in frame["path"]] == ["ok.png"]
    skipped = {Path(s["path"]).name: s["reason"] for s in frame.attrs["skipped"]}
    assert set(skipped) == {"pipe.png", "gone.png"}  # a folder is searched, never listed
    for name, reason in skipped.items():
        assert reasons[name] in reason


def test_cache_build_fails_a_fifo_row_without_opening_it(tmp_path):
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "ok.png")
    os.mkfifo(tmp_path / "pipe.png")
    with _released(tmp_path / "pipe.png"):
        packed = build_cache(["ok.png", "pipe.png"], tmp_path, 8, tmp_path / "cache", workers=1, progress=False)
    assert packed.stats.failed == {
        "pipe.png": f"cannot decode image {tmp_path / 'pipe.png'}: not a regular file: it is a FIFO (named pipe)"}
