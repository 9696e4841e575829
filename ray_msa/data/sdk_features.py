"""Features from CMU-MultimodalSDK `.csd` files beside an MMSA `label.csv`.

A directory may hold, next to `label.csv`, a labels sequence (`*Labels*.csd`, e.g.
`CMU_MOSI_Opinion_Labels.csd`) that gives every segment its time interval, and feature
sequences (COVAREP / OpenSMILE audio, FACET / OpenFace vision, GloVe text ...) with
per-frame intervals. Each feature sequence is aligned to the segments by interval
overlap, as sequences (with lengths) or averaged to one vector per segment.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ray_msa.data.csd import align, read_csd, segments_from_labels
from ray_msa.errors import InputError

MODALITY_WORDS = {
    "audio": ("covarep", "opensmile", "audio", "acoustic", "wav2vec"),
    "vision": ("facet", "openface", "visual", "vision", "video"),
    "text": ("glove", "word", "text", "bert"),
}
MAX_FRAMES = 1000  # longer segments keep their first frames; counted


def modality_of(path: Path) -> str | None:
    """The modality a feature file's name announces, or None (the labels file)."""
    name = path.stem.lower()
    if "label" in name:
        return None
    for modality, words in MODALITY_WORDS.items():
        if any(w in name for w in words):
            return modality
    raise InputError(
        path,
        "file name",
        "cannot tell which modality this .csd holds",
        f"name it after its features ({', '.join(w for ws in MODALITY_WORDS.values() for w in ws[:2])} ...)",
    )


def csd_files(directory: Path) -> tuple[Path | None, dict[str, Path]]:
    labels, features = None, {}
    for path in sorted(directory.glob("*.csd")):
        modality = modality_of(path)
        if modality is None:
            labels = path
        elif modality in features:
            raise InputError(
                path,
                modality,
                f"a second {modality} .csd (first: {features[modality].name})",
                "keep one feature file per modality",
            )
        else:
            features[modality] = path
    return labels, features


def segment_times(labels_path: Path, frame: pd.DataFrame) -> pd.DataFrame:
    """`frame`'s (video_id, clip_id) rows with the start/end of the labels .csd, checked against its labels."""
    segments = segments_from_labels(read_csd(labels_path)).set_index(["video_id", "clip_id"])
    keys = pd.MultiIndex.from_frame(frame[["video_id", "clip_id"]].astype(str))
    missing = ~keys.isin(segments.index)
    if missing.any():
        video, clip = keys[np.flatnonzero(missing)[0]]
        raise InputError(
            labels_path,
            f"data/{video}",
            f"{int(missing.sum())} segments of label.csv are not in it, e.g. clip {clip}",
            "use the labels .csd of the same dataset release",
        )
    times = segments.reindex(keys)
    differ = np.flatnonzero(np.abs(times["label"].to_numpy() - frame["label"].to_numpy(np.float64)) > 1e-3)
    if len(differ):
        video, clip = keys[differ[0]]
        raise InputError(
            labels_path,
            f"data/{video}/features",
            f"label of clip {clip} differs from label.csv ({len(differ)} segments)",
            "use the labels .csd of the same dataset release",
        )
    return times.reset_index()


def csd_features(
    directory: Path, frame: pd.DataFrame, mode: str = "sequence"
) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], dict[str, str]]:
    """Per modality (values (N, L, D), lengths (N,)) aligned to `frame`'s segments, and notes of what was repaired."""
    labels_path, features = csd_files(directory)
    if not features:
        return {}, {}
    if labels_path is None:
        raise InputError(
            directory,
            "*Labels*.csd",
            "feature .csd files but no labels .csd with the segment times",
            "add the dataset's labels computational sequence (e.g. CMU_MOSI_Opinion_Labels.csd)",
        )
    segments = segment_times(labels_path, frame)
    out, notes = {}, {}
    for modality, path in features.items():
        seq = read_csd(path)
        neg_inf = 0
        for video, (feats, intervals) in seq.data.items():
            if np.isneginf(feats).any():
                neg_inf += int(np.isneginf(feats).sum())
                seq.data[video] = (np.where(np.isneginf(feats), np.float32(0), feats), intervals)
        if neg_inf:
            notes[f"{modality} -inf set to 0"] = str(neg_inf)
        values, lengths, report = align(seq, segments, mode, None if mode == "average" else MAX_FRAMES)
        if mode == "sequence":
            values = values[:, : int(lengths.max(initial=1))]
        out[modality] = (values, lengths.astype(np.int64))
        if report["no_frames"]:
            notes[f"{modality}: segments without frames (one zero frame)"] = str(report["no_frames"])
        if report["truncated"]:
            notes[f"{modality}: segments cut to {MAX_FRAMES} frames"] = str(report["truncated"])
    return out, notes
