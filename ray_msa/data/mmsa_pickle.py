"""MMSA's feature pickles (`aligned_50.pkl`, `unaligned_50.pkl`, `unaligned_39.pkl` for SIMS).

Layout: `{train, valid, test} -> {raw_text, id ("video$_$clip"), text (N, L, 768) BERT
features, text_bert (N, 3, L) token ids / mask / segment ids, audio, vision,
audio_lengths and vision_lengths (unaligned only), annotations, classification_labels,
regression_labels, and for SIMS regression_labels_T/A/V}`. Aligned files have no
lengths: every modality follows the words, so the text mask gives them. The real files
contain `audio == -inf`; it becomes 0 (as MMSA and MulT do), counted in the notes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ray_msa.data.checks import check_dataset
from ray_msa.data.dataset import SPLITS, MSADataset, Split
from ray_msa.errors import InputError

PICKLE_NAMES = ("unaligned_50.pkl", "aligned_50.pkl", "unaligned_39.pkl", "aligned_39.pkl")
REQUIRED = ("id", "regression_labels", "audio", "vision")
UNIMODAL = ("regression_labels_T", "regression_labels_A", "regression_labels_V")


def array(
    part: dict[str, Any], key: str, path: Path, split: str, ndim: int | None = None, numeric: bool = True
) -> np.ndarray:
    """`part[key]` as an array, with a one-line error when it is missing or malformed."""
    if key not in part:
        raise InputError(
            path,
            f"{split}/{key}",
            f"missing (keys present: {sorted(part)})",
            "use MMSA's or MulT's layout, or re-export the file",
        )
    try:
        value = np.asarray(part[key])
        if numeric and value.dtype.kind not in "fiu":
            value = value.astype(np.float64)
    except (ValueError, TypeError) as err:
        raise InputError(path, f"{split}/{key}", f"not numeric ({err})", "store numbers in this field") from None
    if ndim is not None and value.ndim != ndim:
        raise InputError(
            path,
            f"{split}/{key}",
            f"has shape {value.shape}, expected {ndim} dimensions",
            "re-export the file with the public layout",
        )
    return value


def as_text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def strings(values: Any) -> np.ndarray:
    """Ids and transcripts as str, whether stored as str, bytes or object arrays."""
    return np.array([as_text(v) for v in np.asarray(values).reshape(len(values), -1)[:, 0]])


def count(notes: dict[str, int], what: str, n: int) -> None:
    """Add `n` to the reader note `what` (repairs and fallbacks are counted, never silent)."""
    notes[what] = notes.get(what, 0) + n


def repair_audio(values: np.ndarray, notes: dict[str, int], split: str, key: str) -> np.ndarray:
    """The standard repair: -inf (log of silent frames in COVAREP) becomes 0, counted."""
    values = values.astype(np.float32, copy=False)
    neg_inf = np.isneginf(values)
    if neg_inf.any():
        if values.flags.writeable:  # in place: MOSEI's audio is gigabytes
            values[neg_inf] = 0.0
        else:
            values = np.where(neg_inf, np.float32(0), values)
        count(notes, f"{key} -inf set to 0", int(neg_inf.sum()))
    return values


def lengths_for(
    part: dict[str, Any],
    key: str,
    values: np.ndarray,
    text_lengths: np.ndarray | None,
    path: Path,
    split: str,
    notes: dict[str, int],
) -> np.ndarray:
    """Given lengths (unaligned), else the text lengths (aligned), else full length; 0 becomes 1, counted."""
    if f"{key}_lengths" in part:
        lengths = array(part, f"{key}_lengths", path, split, ndim=1).astype(np.int64)
    elif text_lengths is not None and text_lengths.max(initial=0) <= values.shape[1]:
        lengths = text_lengths.copy()
    else:
        lengths = np.full(len(values), values.shape[1], dtype=np.int64)
    zero = lengths == 0
    if zero.any():
        count(notes, f"{key} zero-length sequences read as one zero frame", int(zero.sum()))
        lengths = np.maximum(lengths, 1)
    return lengths


def read_split(part: Any, path: Path, split: str, notes: dict[str, int]) -> Split:
    if not isinstance(part, dict):
        raise InputError(
            path, split, f"is a {type(part).__name__}, not a dict of arrays", "use MMSA's layout {split: {key: array}}"
        )
    for key in REQUIRED:
        array(part, key, path, split, numeric=key != "id")
    if len(part["regression_labels"]) == 0:
        raise InputError(path, split, "empty split (0 samples)", f"give the {split} split at least one sample")
    ids = strings(part["id"])
    fields: dict[str, np.ndarray] = {
        "ids": ids,
        "video_ids": np.array([i.split("$_$")[0] for i in ids]),
        "labels": array(part, "regression_labels", path, split).reshape(len(ids), -1)[:, 0].astype(np.float32),
    }
    if "raw_text" in part:
        fields["raw_text"] = strings(part["raw_text"])
    text_lengths = None
    if "text_bert" in part:
        bert = array(part, "text_bert", path, split, ndim=3).astype(np.int64)
        if bert.shape[1] != 3:
            raise InputError(
                path,
                f"{split}/text_bert",
                f"has shape {bert.shape}, expected (N, 3, L)",
                "store token ids, mask and segment ids",
            )
        fields["text_ids"], fields["text_mask"] = bert[:, 0], bert[:, 1]
        text_lengths = np.maximum(bert[:, 1].sum(1), 1)
    if "text" in part:
        fields["text"] = array(part, "text", path, split, ndim=3).astype(np.float32, copy=False)
        fields["text_lengths"] = (
            text_lengths
            if text_lengths is not None and text_lengths.max() <= fields["text"].shape[1]
            else np.full(len(ids), fields["text"].shape[1], np.int64)
        )
    if "text" not in fields and "text_ids" not in fields and "raw_text" not in fields:
        raise InputError(path, f"{split}/text", "no text, text_bert or raw_text", "include the text modality")
    for key in ("audio", "vision"):
        values = array(part, key, path, split, ndim=3)
        values = repair_audio(values, notes, split, key) if key == "audio" else values.astype(np.float32, copy=False)
        fields[key] = values
        fields[f"{key}_lengths"] = lengths_for(part, key, values, text_lengths, path, split, notes)
    if all(k in part for k in UNIMODAL):
        fields["unimodal_labels"] = np.stack(
            [array(part, k, path, split).reshape(-1).astype(np.float32) for k in UNIMODAL], axis=1
        )
    return Split(**fields)


def splits_of(data: Any, path: Path, layout: str) -> dict[str, Any]:
    """The {train, valid, test} parts of an unpickled MMSA or MulT object ('dev' read as valid)."""
    if not isinstance(data, dict):
        raise InputError(
            path,
            "top level",
            f"is a {type(data).__name__}, not a dict of splits",
            f"use {layout}'s layout {{train, valid, test}}",
        )
    data = {("valid" if k == "dev" else k): v for k, v in data.items()}
    missing = [s for s in SPLITS if s not in data]
    if missing:
        raise InputError(
            path, missing[0], f"split missing (found {sorted(map(str, data))})", "include train, valid and test"
        )
    return data


def mmsa_dataset(
    data: Any, path: Path, name: str, label_range: tuple[float, float], metric_set: str = "mmsa"
) -> MSADataset:
    """Read, repair (-inf audio) and check the dataset in an unpickled MMSA object."""
    data = splits_of(data, path, "MMSA")
    notes: dict[str, int] = {}
    splits = {s: read_split(data[s], path, s, notes) for s in SPLITS}
    dataset = MSADataset(
        name=name,
        splits=splits,
        source=str(path),
        label_range=label_range,
        metric_set=metric_set,
        notes={k: str(v) for k, v in notes.items()},
    )
    return check_dataset(dataset, path)
