"""Checks every reader runs on what it read, so a bad file fails here with the file, the
field and the fix, instead of as a shape error in a worker an hour into a study."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ray_msa.data.dataset import SPLITS, MSADataset, Split
from ray_msa.errors import InputError

REEXPORT = "re-export the file from its original source"


def check_split(split: Split, path: str | Path, split_name: str, label_range: tuple[float, float] | None) -> None:
    """One split: non-empty, equal N everywhere, finite values, labels on the scale, unique ids, sane lengths."""
    n = len(split.labels)
    if n == 0:
        raise InputError(
            path, f"{split_name}", "empty split (0 samples)", f"give the {split_name} split at least one sample"
        )
    for name, array in split.arrays().items():
        if len(array) != n:
            raise InputError(
                path,
                f"{split_name}/{name}",
                f"{len(array)} rows but {n} labels",
                f"every array of {split_name} must have one row per sample",
            )
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            row = int(np.argwhere(~np.isfinite(array))[0][0])
            raise InputError(
                path,
                f"{split_name}/{name}",
                f"NaN or infinite value (sample {split.ids[row]})",
                f"fill or drop the broken values, or {REEXPORT}",
            )
    if split.labels.dtype.kind == "f" and label_range is not None:
        low, high = label_range
        outside = np.flatnonzero((split.labels < low) | (split.labels > high))
        if len(outside):
            row = outside[0]
            raise InputError(
                path,
                f"{split_name}/labels",
                f"{float(split.labels[row]):.6g} for {split.ids[row]} is outside [{low}, {high}]",
                "use the dataset's sentiment scale or pick the matching dataset name",
            )
    _check_unique(split.ids, path, split_name)
    if split.raw_text is not None:
        empty = np.flatnonzero(np.char.str_len(np.char.strip(split.raw_text.astype(str))) == 0)
        if len(empty):
            raise InputError(
                path,
                f"{split_name}/raw_text",
                f"empty text for {split.ids[empty[0]]} ({len(empty)} of {n} samples)",
                "give every sample its transcript",
            )
    for m in ("audio", "vision", "text"):
        values, lengths = getattr(split, m), getattr(split, f"{m}_lengths")
        if values is None or lengths is None:
            continue
        bad = np.flatnonzero((lengths < 1) | (lengths > values.shape[1]))
        if len(bad):
            raise InputError(
                path,
                f"{split_name}/{m}_lengths",
                f"{int(lengths[bad[0]])} for {split.ids[bad[0]]} is outside 1..{values.shape[1]}",
                f"lengths must count the real frames of {m}",
            )


def _check_unique(ids: np.ndarray, path: str | Path, split_name: str) -> None:
    values, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        dup = values[counts > 1]
        raise InputError(
            path, f"{split_name}/id", f"duplicate id {dup[0]} ({len(dup)} duplicated)", "keep one sample per id"
        )


def check_dataset(dataset: MSADataset, path: str | Path) -> MSADataset:
    """Every split, plus what spans splits: no id and no video in two splits, same feature widths."""
    range_ = dataset.label_range if dataset.metric_set != "emotions" else None
    for name in SPLITS:
        check_split(dataset.splits[name], path, name, range_)
    seen: dict[str, str] = {}
    for name in SPLITS:
        for sample_id in set(dataset.splits[name].ids.tolist()) & set(seen):
            raise InputError(
                path,
                f"{name}/id",
                f"{sample_id} is in both {seen[sample_id]} and {name}",
                "keep each sample in one split",
            )
        seen.update(dict.fromkeys(dataset.splits[name].ids.tolist(), name))
    first = dataset.splits["train"]
    for name in SPLITS[1:]:
        missing = sorted(set(first.arrays()) - set(dataset.splits[name].arrays()))
        if missing:
            raise InputError(
                path, f"{name}/{missing[0]}", "missing here but present in train", "give every split the same fields"
            )
        for field_name, array in dataset.splits[name].arrays().items():
            reference = getattr(first, field_name)
            if reference is None:
                raise InputError(
                    path, f"{name}/{field_name}", "present here but not in train", "give every split the same fields"
                )
            if array.ndim >= 3 and array.shape[2:] != reference.shape[2:]:
                raise InputError(
                    path,
                    f"{name}/{field_name}",
                    f"feature shape {array.shape[2:]} but train has {reference.shape[2:]}",
                    "use the same features for every split",
                )
    return dataset
