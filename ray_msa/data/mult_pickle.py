"""MulT's pickles (`mosi_data.pkl`, `mosi_data_noalign.pkl`, `mosei_senti_data.pkl`,
`iemocap_data.pkl`, ... of Tsai et al. 2019).

Layout: `{train, valid, test} -> {text (N, L, 300) GloVe, audio, vision, labels, id}`.
MOSI/MOSEI labels are (N, 1, 1) scores; IEMOCAP labels are (N, 4, 2): four binary
emotions one-hot, in MulT's order (neutral, happy, sad, angry). The files carry no
lengths: a sample's real frames are its non-zero ones, and zero padding in front (as
the SDK's alignment leaves it) is moved to the end, where our masks expect it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ray_msa.data.checks import check_dataset
from ray_msa.data.dataset import SPLITS, MSADataset, Split
from ray_msa.data.mmsa_pickle import array, as_text, count, repair_audio, splits_of
from ray_msa.errors import InputError

PICKLE_NAMES = {
    "mosi": ("mosi_data_noalign.pkl", "mosi_data.pkl"),
    "mosei": ("mosei_senti_data_noalign.pkl", "mosei_senti_data.pkl"),
    "iemocap": ("iemocap_data_noalign.pkl", "iemocap_data.pkl"),
}
EMOTIONS = ("neutral", "happy", "sad", "angry")


def real_frames(values: np.ndarray, notes: dict[str, int], key: str) -> tuple[np.ndarray, np.ndarray]:
    """Lengths from the span of non-zero frames; front padding is moved behind the real frames."""
    nonzero = np.abs(values).sum(-1) > 0  # (N, L)
    length = values.shape[1]
    first = np.where(nonzero.any(1), nonzero.argmax(1), 0)
    last = np.where(nonzero.any(1), length - nonzero[:, ::-1].argmax(1), 1)
    shifted = first > 0
    if shifted.any():
        order = (np.arange(length)[None, :] + first[shifted, None]) % length
        values[shifted] = np.take_along_axis(values[shifted], order[:, :, None], axis=1)
        count(notes, f"{key} front padding moved to the end", int(shifted.sum()))
    return values, np.maximum(last - first, 1).astype(np.int64)


def sample_ids(part: dict[str, Any], n: int, split: str, notes: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
    """`video$_$segment` ids and video ids from MulT's id rows; without ids every sample is its own group."""
    if "id" not in part:
        count(notes, "no ids: folds cannot be grouped by video", n)
        ids = np.array([f"{split}_{i}" for i in range(n)])
        return ids, ids
    rows = np.asarray(part["id"]).reshape(n, -1)
    text = np.vectorize(as_text, otypes=[str])(rows)
    videos = text[:, 0]
    ids = np.array(["$_$".join(r[:2]) for r in text])
    if len(np.unique(ids)) < n:
        ids = np.array(["$_$".join(r) for r in text])
    return ids, videos


def read_split(part: Any, path: Path, split: str, emotions: bool, notes: dict[str, int]) -> Split:
    if not isinstance(part, dict):
        raise InputError(
            path,
            split,
            f"is a {type(part).__name__}, not a dict of arrays",
            "use MulT's layout {split: {text, audio, vision, labels, id}}",
        )
    labels = array(part, "labels", path, split)
    n = len(labels)
    if n == 0:
        raise InputError(path, split, "empty split (0 samples)", f"give the {split} split at least one sample")
    if emotions:
        if labels.shape[1:] != (4, 2):
            raise InputError(
                path,
                f"{split}/labels",
                f"has shape {labels.shape}, IEMOCAP needs (N, 4, 2)",
                "use MulT's iemocap_data.pkl labels",
            )
        labels = labels.argmax(-1).astype(np.int64)
    else:
        if labels.reshape(n, -1).shape[1] != 1:
            raise InputError(
                path,
                f"{split}/labels",
                f"has shape {labels.shape}, expected one score per sample (N, 1, 1)",
                "for IEMOCAP's (N, 4, 2) emotions use the dataset name iemocap",
            )
        labels = labels.reshape(n).astype(np.float32)
    ids, videos = sample_ids(part, n, split, notes)
    fields: dict[str, np.ndarray] = {"ids": ids, "video_ids": videos, "labels": labels}
    for key in ("text", "audio", "vision"):
        values = array(part, key, path, split, ndim=3)
        values = repair_audio(values, notes, split, key) if key == "audio" else values.astype(np.float32, copy=False)
        fields[key], fields[f"{key}_lengths"] = real_frames(
            values, notes, key
        )  # in place: the unpickled arrays are ours
    return Split(**fields)


def mult_dataset(data: Any, path: Path, name: str, label_range: tuple[float, float]) -> MSADataset:
    """Read, repair and check the dataset in an unpickled MulT object; IEMOCAP's labels make it an emotions dataset."""
    data = splits_of(data, path, "MulT")
    emotions = name == "iemocap"
    notes: dict[str, int] = {}
    splits = {s: read_split(data[s], path, s, emotions, notes) for s in SPLITS}
    dataset = MSADataset(
        name=name,
        splits=splits,
        source=str(path),
        label_range=label_range,
        metric_set="emotions" if emotions else "mmsa",
        notes={k: str(v) for k, v in notes.items()},
    )
    return check_dataset(dataset, path)
