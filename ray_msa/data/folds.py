"""Cross-validation folds over train+valid, grouped by video so no video is in two folds."""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import GroupKFold, StratifiedGroupKFold

from ray_msa.data.dataset import MSADataset, Split


def development_pool(dataset: MSADataset) -> Split:
    """Train and valid together: the data that folds, tuning and the final model may see."""
    return Split.concat([dataset.splits["train"], dataset.splits["valid"]])


def group_folds(
    video_ids: np.ndarray, k: int, seed: int, classes: np.ndarray | None = None
) -> list[tuple[np.ndarray, np.ndarray]]:
    """K (train_index, val_index) pairs, grouped by video, the same for the same seed; with
    `classes` (class labels) also stratified, so every fold keeps the class balance."""
    n_videos = len(np.unique(video_ids))
    if k < 2 or k > n_videos:
        raise ValueError(f"{k} folds need 2..{n_videos} videos")
    if classes is not None:
        splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
        return [(train, val) for train, val in splitter.split(np.zeros(len(video_ids)), classes, groups=video_ids)]
    splitter = GroupKFold(n_splits=k, shuffle=True, random_state=seed)
    return [(train, val) for train, val in splitter.split(np.zeros(len(video_ids)), groups=video_ids)]
