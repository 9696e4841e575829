"""Cross-validation folds: grouped by video, deterministic for a seed, covering the pool."""

import numpy as np

from ray_msa.data import load_dataset
from ray_msa.data.folds import development_pool, group_folds


def test_folds_never_split_a_video_and_cover_everything():
    pool = development_pool(load_dataset("mosi"))
    assert len(pool) == 1281 + 229
    folds = group_folds(pool.video_ids, 5, seed=3)
    seen = np.concatenate([val for _, val in folds])
    assert sorted(seen) == list(range(len(pool)))
    for train, val in folds:
        assert not set(pool.video_ids[train]) & set(pool.video_ids[val])
        assert len(set(train) | set(val)) == len(pool)


def test_folds_are_deterministic_for_a_seed():
    videos = np.repeat([f"v{i}" for i in range(30)], 4)
    a, b, c = (group_folds(videos, 5, seed) for seed in (1, 1, 2))
    assert all((x[1] == y[1]).all() for x, y in zip(a, b))
    assert any(len(x[1]) != len(y[1]) or (x[1] != y[1]).any() for x, y in zip(a, c))
