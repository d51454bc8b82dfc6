"""Data path: label arrays, multi-source sampling (quotas, sharding, resume), augmentation; the cache: test_cache."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fbhelpers.batching import (
    MultiSourceLoader, MultiSourceSampler, TaskDataset, augment, collate, task_arrays, to_float,
)
from fbhelpers.tasks import AU, EXPR, FACE_TASKS, VA
from helpers import blank_source, gappy_source


def test_missing_labels_stay_missing():
    src = gappy_source("a", 12, va=False)
    ds = TaskDataset(src, FACE_TASKS, source_id=3)
    codes = src.table["expr"]
    assert ds.masks["expr"].tolist() == codes.notna().tolist()
    assert (ds.targets["expr"][codes.isna().to_numpy()] == 0).all()
    assert ds.targets["expr"][~codes.isna().to_numpy()].tolist() == codes.dropna().astype(int).tolist()
    assert ds.masks["au"][1, :5].tolist() == [False] * 5 and ds.masks["au"][1, 5:].all()
    assert not ds.masks["va"].any() and ds.labelled == {"expr": True, "au": True, "va": False}
    item = ds[1]
    assert item["image"].shape == (3, 8, 8) and item["image"].dtype == torch.uint8
    assert int(item["source"]) == 3 and item["masks"]["au"].dtype == torch.bool


def test_gather_matches_items_and_collate():
    ds = TaskDataset(gappy_source("a", 10, va=True), FACE_TASKS)
    idx = np.array([4, 0, 7])
    batch = ds.gather(idx)
    joined = collate([ds[int(i)] for i in idx])
    assert torch.equal(batch["image"], joined["image"])
    assert torch.equal(batch["image"][1], torch.from_numpy(ds.source.images[0]).permute(2, 0, 1))
    for k in ("expr", "au", "va"):
        assert torch.equal(batch["targets"][k], joined["targets"][k])
        assert torch.equal(batch["masks"][k], joined["masks"][k])
    assert batch["targets"]["expr"].dtype == torch.long and batch["targets"]["va"].dtype == torch.float32


def test_label_validation_names_source_row_value():
    src = gappy_source("rafdb", 6)
    src.table.loc[4, "expr"] = 7
    with pytest.raises(ValueError, match=r"'rafdb'.*row 4.*7"):
        TaskDataset(src, FACE_TASKS)
    partial = gappy_source("disfa", 5).table.drop(columns=["AU26"])
    with pytest.raises(ValueError, match=r"'disfa'.*lacks \['AU26'\]"):
        task_arrays(blank_source("disfa", partial, size=2), AU)
    bad_au = gappy_source("bp4d", 5)
    bad_au.table.loc[2, "AU4"] = 9.0
    with pytest.raises(ValueError, match=r"'bp4d'.*'AU4' row 2.*9\.0"):
        task_arrays(bad_au, AU)
    text = gappy_source("x", 4)
    text.table["expr"] = ["happy", None, 1, 2]
    with pytest.raises(ValueError, match=r"'x'.*'expr' row 0.*'happy'"):
        task_arrays(text, EXPR)
    inf_va = gappy_source("aff", 4, va=True)
    inf_va.table.loc[3, "arousal"] = np.inf
    with pytest.raises(ValueError, match=r"'aff'.*'arousal' row 3"):
        task_arrays(inf_va, VA)


def test_every_batch_holds_each_source_quota():
    sources = {"a": gappy_source("a", 50), "b": gappy_source("b", 7, expr=False), "c": gappy_source("c", 20)}
    loader = MultiSourceLoader.from_sources(sources, FACE_TASKS, {"a": 5, "b": 3, "c": 2}, seed=1)
    assert len(loader) == 10  # a: 50 / 5 steps per pass
    for _ in range(12):
        batch = loader.next_batch()
        assert torch.bincount(batch["source"], minlength=3).tolist() == [5, 3, 2]
        assert batch["image"].shape == (10, 3, 8, 8) and batch["image"].dtype == torch.uint8
        assert not batch["masks"]["expr"][5:8].any()  # source b has no expression labels
    with pytest.raises(ValueError, match=r"unknown sources \['z'\]"):
        MultiSourceLoader.from_sources(sources, FACE_TASKS, {"a": 1, "b": 1, "c": 1, "z": 1})


def test_streams_reshuffle_and_cover_each_source():
    sampler = MultiSourceSampler({"a": 12, "b": 5}, {"a": 4, "b": 5}, seed=3)
    it = iter(sampler)
    steps = [next(it) for _ in range(6)]
    a = np.concatenate([s["a"] for s in steps])
    assert sorted(a[:12]) == list(range(12)) and sorted(a[12:]) == list(range(12))
    assert a[:12].tolist() != a[12:].tolist()  # reshuffled when exhausted
    b = [s["b"].tolist() for s in steps]
    assert all(sorted(x) == list(range(5)) for x in b) and len({tuple(x) for x in b}) > 1


def test_ddp_shards_are_disjoint_and_equal_length():
    sizes, quota = {"a": 40, "b": 9}, {"a": 4, "b": 2}
    ranks = [MultiSourceSampler(sizes, quota, seed=0, rank=r, world_size=2) for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == 5
    seen = {"a": [], "b": []}
    for step in range(5):
        parts = [s.indices_at(step) for s in ranks]
        for name in sizes:
            assert len(parts[0][name]) == len(parts[1][name]) == quota[name]
            assert not set(parts[0][name]) & set(parts[1][name])
            seen[name] += parts[0][name].tolist() + parts[1][name].tolist()
    assert sorted(seen["a"]) == list(range(40))  # one epoch of a, split across the ranks
    single = MultiSourceSampler(sizes, {"a": 8, "b": 4}, seed=0)
    assert sorted(seen["a"][:8]) == sorted(single.indices_at(0)["a"].tolist())


def test_state_dict_resumes_the_same_sequence():
    sources = {"a": gappy_source("a", 30), "b": gappy_source("b", 11)}
    run = MultiSourceLoader.from_sources(sources, FACE_TASKS, 4, seed=5)
    full = [run.next_batch()["image"] for _ in range(9)]
    first = MultiSourceLoader.from_sources(sources, FACE_TASKS, 4, seed=5)
    for _ in range(4):
        first.next_batch()
    state = first.state_dict()
    second = MultiSourceLoader.from_sources(sources, FACE_TASKS, 4, seed=5, prefetch=2)
    second.load_state_dict(state)
    rest = [second.next_batch()["image"] for _ in range(5)]
    second.close()
    assert all(torch.equal(x, y) for x, y in zip(full[4:], rest))
    with pytest.raises(ValueError, match="seed"):
        MultiSourceLoader.from_sources(sources, FACE_TASKS, 4, seed=6).load_state_dict(state)


def test_sampling_weights():
    w = np.zeros(10)
    w[[2, 7]] = 1.0
    sampler = MultiSourceSampler({"a": 10, "b": 4}, 6, weights={"a": w})
    drawn = np.concatenate([sampler.indices_at(t)["a"] for t in range(20)])
    assert set(drawn.tolist()) == {2, 7}
    assert 0.35 < (drawn == 2).mean() < 0.65
    with pytest.raises(ValueError, match=r"weights\['b'\]"):
        MultiSourceSampler({"a": 10, "b": 4}, 6, weights={"b": np.ones(3)})
    with pytest.raises(ValueError, match=r"without rows.*\['e'\]"):
        MultiSourceSampler({"a": 10, "e": 0}, 6)


def test_augment_flip_is_exact_and_ranges_hold():
    x = to_float(torch.randint(0, 256, (16, 3, 12, 12), dtype=torch.uint8))
    assert x.dtype == torch.float32 and float(x.max()) <= 1.0
    g = torch.Generator().manual_seed(0)
    y = augment(x, g, crop=None, rotate=0.0, brightness=0.0, contrast=0.0, flip=True)
    flipped = [torch.allclose(y[i], x[i].flip(-1), atol=1e-5) for i in range(16)]
    kept = [torch.allclose(y[i], x[i], atol=1e-5) for i in range(16)]
    assert all(f or k for f, k in zip(flipped, kept)) and 0 < sum(flipped) < 16
    z1 = augment(x, torch.Generator().manual_seed(1))
    z2 = augment(x, torch.Generator().manual_seed(1))
    assert torch.equal(z1, z2) and z1.shape == x.shape
    assert float(z1.min()) >= 0.0 and float(z1.max()) <= 1.0 and not torch.allclose(z1, x)
    with pytest.raises(ValueError, match="uint8"):
        to_float(x)
