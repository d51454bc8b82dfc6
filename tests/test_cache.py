"""The packed image cache (fbhelpers.datasets.cache): bytes, index, crops, the lazy view, resume after SIGKILL,
undecodable / missing images, reuse, and the trainer reading it end to end."""
from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from fbhelpers import train
from fbhelpers.batching import TaskDataset, decode_image
from fbhelpers.datasets.cache import CachedImages, PackedCache, build_cache, image_source
from fbhelpers.source import Source
from fbhelpers.tasks import EXPR
from helpers import tiny_net

pytestmark = pytest.mark.usefixtures("one_thread")
SKIP = "image not decodable"


def write_images(folder: Path, n: int, seed: int = 0, suffix: str = ".png") -> list[str]:
    """``n`` random images of varied sizes (PNG: lossless; JPEG with ``suffix=".jpg"``), relative names."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(n):
        h, w = rng.integers(20, 48, 2)
        name = f"img{i:03d}{suffix}"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / name)
        names.append(name)
    return names


def cache_files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_cache_bytes_index_and_repeated_rows(tmp_path):
    names = write_images(tmp_path / "data", 6)
    table = pd.DataFrame({"path": [names[i] for i in (3, 0, 3, 5, 1, 3, 0, 2, 4)], "split": "train",
                          "source": "toy", "expr": [0, 1, 2, 3, 4, 5, 6, 0, 1]})
    src = image_source(table, tmp_path / "data", (12, 10), tmp_path / "cache", workers=1, progress=False)
    assert isinstance(src.images, CachedImages) and src.name == "toy"
    assert src.images.shape == (9, 12, 10, 3) and src.images.dtype == np.uint8 and src.images.ndim == 4
    packed = build_cache(table["path"], tmp_path / "data", (12, 10), tmp_path / "cache", progress=False)
    assert packed.stats.decoded == 0 and len(packed) == 6 and packed.images.shape == (6, 12, 10, 3)
    assert list(packed.keys["path"]) == sorted(names)  # one row per distinct image, sorted by path
    for i, name in enumerate(table["path"]):
        expected = decode_image(tmp_path / "data" / name, (12, 10))
        assert np.array_equal(src.images[i], expected)
        assert np.array_equal(packed.images[packed.rows([name])[0]], expected)
    assert np.array_equal(src.images.rows, packed.rows(table["path"]))
    assert src.images.rows[0] == src.images.rows[2] == src.images.rows[5]  # repeated rows share one cache row
    assert packed.folder.parent == tmp_path / "cache"
    assert sorted(p.name for p in packed.folder.iterdir()) == [
        "failed.json", "images.npy", "index.json", "meta.json", "status.npy"]
    assert json.loads((packed.folder / "meta.json").read_text())["shape"] == [6, 12, 10, 3]
    with pytest.raises(KeyError, match="nope.png"):
        packed.rows(["nope.png"])


def test_a_new_decoder_gets_a_new_cache(tmp_path, monkeypatch):
    from fbhelpers.datasets import cache

    names = write_images(tmp_path / "data", 2)
    first = build_cache(names, tmp_path / "data", 8, tmp_path / "cache", progress=False)
    assert build_cache(names, tmp_path / "data", 8, tmp_path / "cache", progress=False).stats.decoded == 0
    monkeypatch.setattr(cache, "DECODER_VERSION", cache.DECODER_VERSION + 1)
    second = build_cache(names, tmp_path / "data", 8, tmp_path / "cache", progress=False)
    assert second.stats.decoded == 2 and second.folder != first.folder


def test_crop_boxes_match_manual_pil_crop_and_resize(tmp_path):
    names = write_images(tmp_path, 3, seed=1, suffix=".jpg")
    nan = np.nan
    table = pd.DataFrame({
        "path": [names[0], names[0], names[1], names[2], names[0]],
        "box_x": [2, nan, 5.4, -3, 2], "box_y": [3, nan, 1, 4, 3],
        "box_w": [12, nan, 9, 30, 12], "box_h": [10, nan, 14, 8, 10],
    })
    for mode in ("RGB", "L"):
        src = image_source(table, tmp_path, 8, tmp_path / "cache", crop="box", mode=mode, workers=1, progress=False,
                           name="crops")
        assert src.images.shape == (5, 8, 8, 3 if mode == "RGB" else 1)
        assert len(np.unique(src.images.rows)) == 4  # (path, box) keys: the repeated box shares a row
        for i, row in table.iterrows():
            with Image.open(tmp_path / row["path"]) as im:
                if not np.isnan(row["box_x"]):
                    x, y, w, h = row[["box_x", "box_y", "box_w", "box_h"]]
                    im = im.crop((x, y, x + w, y + h))
                expected = np.asarray(im.convert(mode).resize((8, 8), Image.Resampling.BICUBIC))
            assert np.array_equal(src.images[i].reshape(expected.shape), expected), (mode, i)
    bad = table.assign(box_w=[12, nan, 9, 30, 0])
    with pytest.raises(ValueError, match=f"{names[0]}: crop box"):
        image_source(bad, tmp_path, 8, tmp_path / "cache", crop="box", progress=False)
    with pytest.raises(KeyError, match="box_x"):
        image_source(table[["path"]], tmp_path, 8, tmp_path / "cache", crop="box", progress=False)


def test_cached_images_indexing_take_and_source_laziness():
    array = np.random.default_rng(0).integers(0, 256, (7, 4, 5, 3), dtype=np.uint8)
    rows = np.array([6, 0, 0, 3, 5, 1, 6, 2])
    view, dense = CachedImages(array, rows), array[rows]
    assert view.shape == dense.shape and len(view) == 8 and view.dtype == np.uint8 and view.ndim == 4
    mask = np.array([True, False, True, True, False, False, True, False])
    for key in (3, -1, slice(2, 6), slice(None, None, 3), np.array([7, 0, 0, 4]), [1, 2], mask, (2, 1), (mask, 0)):
        got = view[key]
        assert type(got) is np.ndarray and np.array_equal(got, dense[key]), key
    assert np.array_equal(np.asarray(view), dense) and np.asarray(view, dtype=np.float32).dtype == np.float32
    sub = view.take(mask).take([3, 0])
    assert isinstance(sub, CachedImages) and np.array_equal(np.asarray(sub), dense[mask][[3, 0]])
    with pytest.raises(ValueError, match="rows"):
        CachedImages(array, [0, 7])

    # a million-row source over a few images: subset / rows stay lazy (materialised: 1e6 * 60 bytes = 60 MB)
    n = 1_000_000
    table = pd.DataFrame({"split": np.where(np.arange(n) % 10 == 0, "test", "train")})
    big = Source("big", table, CachedImages(array, np.arange(n) % 7))
    tracemalloc.start()
    test, picked = big.subset("test"), big.rows(np.arange(0, n, 3))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert isinstance(test.images, CachedImages) and isinstance(picked.images, CachedImages)
    assert len(test) == n // 10 and np.array_equal(test.images[:3], array[[0, 3, 6]])
    assert np.array_equal(picked.images[1], array[3])
    assert peak < 30e6, peak
    plain = Source("plain", table.iloc[:8], dense).subset("test")  # plain arrays: indexing as before
    assert type(plain.images) is np.ndarray and np.array_equal(plain.images, dense[[0]])


def test_fit_evaluate_predict_read_the_cache_lazily(tmp_path):
    names = write_images(tmp_path / "data", 12, seed=2, suffix=".jpg")
    n = 200_000  # materialised at 16 px: 150 MB
    rng = np.random.default_rng(0)
    table = pd.DataFrame({"path": np.asarray(names, dtype=object)[np.arange(n) % 12],
                          "split": np.where(np.arange(n) < 40, "test", "train"), "source": "toy",
                          "expr": pd.array(rng.integers(0, 7, n), dtype="Int64")})
    src = image_source(table, tmp_path / "data", 16, tmp_path / "cache", workers=1, progress=False)
    model = tiny_net((EXPR,), widths=(4, 8, 8, 8))
    import torch._dynamo  # noqa: F401  (AdamW imports it lazily: seconds under tracemalloc, so before it)
    tracemalloc.start()
    history = train.fit(model, {"toy": src}, (EXPR,), steps=3, quota=8, device="cpu", progress=False)
    scores = train.evaluate(model, {"toy": src}, (EXPR,), split="test", device="cpu", batch_size=16)
    test = src.subset("test")
    probs = train.predict(model, test, batch_size=16, device="cpu")["expr"]
    feats = train.features(model, test, batch_size=16, device="cpu")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert len(history) == 3 and np.isfinite(history["total"]).all()
    assert set(scores["source"]) == {"toy"} and scores["value"].notna().all()
    assert probs.shape == (40, 7) and feats.shape[0] == 40
    assert np.allclose(probs, train.predict(model, np.asarray(test.images), batch_size=16, device="cpu")["expr"])
    assert peak < 100e6, f"{peak / 1e6:.0f} MB traced: the images were materialised"
    batch = TaskDataset(src, (EXPR,)).gather(np.array([5, 17, 5]))
    expected = decode_image(tmp_path / "data" / names[5], 16)
    assert batch["image"].shape == (3, 3, 16, 16)
    assert np.array_equal(batch["image"][2].permute(1, 2, 0).numpy(), expected)


def test_undecodable_and_missing_images_are_skipped_or_strict(tmp_path, caplog):
    names = write_images(tmp_path, 4, seed=3)
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    table = pd.DataFrame({"path": [names[0], "broken.jpg", names[1], "gone.png", "broken.jpg", names[2]],
                          "split": "train", "source": "toy"})
    table.attrs["skipped"] = {"no label": 2, SKIP: 1}
    with caplog.at_level(logging.WARNING, logger="fbhelpers.datasets"):
        src = image_source(table, tmp_path, 8, tmp_path / "cache", workers=1, progress=False)
    assert len(src) == 3 and list(src.table["path"]) == [names[0], names[1], names[2]]
    assert src.table.attrs["skipped"] == {"no label": 2, SKIP: 1 + 3} and table.attrs["skipped"][SKIP] == 1
    assert "broken.jpg" in caplog.text and "gone.png" in caplog.text
    packed = build_cache(table["path"], tmp_path, 8, tmp_path / "cache", progress=False)
    assert packed.stats.decoded == 0 and sorted(packed.stats.failed) == ["broken.jpg", "gone.png"]
    assert "not found" in packed.stats.failed["gone.png"] and "cannot decode" in packed.stats.failed["broken.jpg"]
    bad = packed.rows(["broken.jpg", "gone.png"])
    assert not packed.ok[bad].any() and not packed.images[bad].any()  # failed slots stay zero
    assert "5 images: 0 decoded now, 3 cached, 2 failed" in packed.stats.summary()
    for path, reason in (("broken.jpg", "cannot identify image file"), ("gone.png", "not found")):
        with pytest.raises(ValueError, match=path) as err:  # fresh build
            build_cache([names[0], path], tmp_path, 8, tmp_path / f"strict-{path}", strict=True, progress=False)
        assert reason in str(err.value)
        assert err.value.__cause__ is None and err.value.__context__ is None  # no Pillow traceback attached
    with pytest.raises(ValueError, match="broken.jpg"):  # a finished cache that holds failures
        build_cache(table["path"], tmp_path, 8, tmp_path / "cache", strict=True, progress=False)


def test_second_call_reuses_and_key_depends_on_size_mode_and_root(tmp_path, monkeypatch):
    names = write_images(tmp_path, 3, seed=4)
    monkeypatch.setenv("FBHELPERS_CACHE", str(tmp_path / "env-cache"))
    first = build_cache(names, tmp_path, 8, workers=1, progress=False)
    assert first.folder.parent == tmp_path / "env-cache" and first.stats.decoded == 3
    stamp = (first.folder / "images.npy").stat().st_mtime_ns
    again = build_cache(list(reversed(names)) + names, tmp_path, (8, 8), progress=False)
    assert again.folder == first.folder and again.stats.decoded == 0
    assert (again.folder / "images.npy").stat().st_mtime_ns == stamp
    assert PackedCache.open(first.folder).stats.n == 3
    other = {build_cache(names, tmp_path, 9, progress=False).folder,
             build_cache(names, tmp_path, 8, mode="L", progress=False).folder,
             build_cache(names[:2], tmp_path, 8, progress=False).folder}
    assert len(other) == 3 and first.folder not in other


def test_worker_processes_after_torch_threads_give_the_same_bytes(tmp_path):
    names = write_images(tmp_path, 9, seed=5, suffix=".jpg")
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        torch.ones(256, 256) @ torch.ones(256, 256)  # torch's thread pool is up before the workers start
        pooled = build_cache(names, tmp_path, 10, tmp_path / "a", workers=2, chunk=2, progress=False)
    finally:
        torch.set_num_threads(threads)
    single = build_cache(names, tmp_path, 10, tmp_path / "b", workers=1, progress=False)
    assert pooled.stats.decoded == single.stats.decoded == 9
    assert cache_files(pooled.folder) == cache_files(single.folder)


CHILD = """
import contextlib, sys, threading
from multiprocessing.pool import ThreadPool
from fbhelpers.datasets import cache

def stalling_decode(path, *args, **kwargs):  # the build stalls inside the chunk holding this image
    if path.name == sys.argv[4]:
        threading.Event().wait()
    return decode(path, *args, **kwargs)

@contextlib.contextmanager
def threads(workers, n_tasks):  # two threads instead of two processes, so that they see the stall above
    with ThreadPool(2) as pool:
        yield pool.imap_unordered

if __name__ == "__main__":
    decode, cache.decode_image, cache._mapper = cache.decode_image, stalling_decode, threads
    names = sys.argv[3].split(",")
    cache.build_cache(names, sys.argv[1], 24, sys.argv[2], workers=2, chunk=4, progress=False)
"""


def test_resume_after_sigkill_gives_the_bytes_of_an_uninterrupted_build(tmp_path):
    names = write_images(tmp_path / "data", 30, seed=6, suffix=".jpg")
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(CHILD))
    child = subprocess.Popen([sys.executable, str(script), str(tmp_path / "data"), str(tmp_path / "killed"),
                              ",".join(names), names[9]], start_new_session=True, stderr=subprocess.PIPE)
    try:
        deadline, done = time.monotonic() + 60, 0
        while done < 26 and time.monotonic() < deadline and child.poll() is None:
            time.sleep(0.05)
            status = list((tmp_path / "killed").glob("*.partial/status.npy"))
            done = int((np.load(status[0]) != 0).sum()) if status else 0
        assert done == 26 and child.poll() is None, child.stderr.read().decode()[-2000:]  # all but the stalled chunk
    finally:
        os.killpg(child.pid, signal.SIGKILL)  # the build and its workers
        child.wait()
    partial = status[0].parent
    array = np.load(partial / "images.npy", mmap_mode="r+")
    array[8:12] = 77  # a half-written chunk (its status is still pending) must be redone
    array.flush()
    del array
    resumed = build_cache(names, tmp_path / "data", 24, tmp_path / "killed", workers=1, progress=False)
    assert resumed.stats.decoded == 4 and not partial.exists()
    whole = build_cache(names, tmp_path / "data", 24, tmp_path / "whole", workers=1, progress=False)
    assert whole.stats.decoded == 30 and resumed.folder.name == whole.folder.name
    assert cache_files(resumed.folder) == cache_files(whole.folder)
