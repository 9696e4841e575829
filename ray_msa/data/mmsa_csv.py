"""Readers for MMSA's `label.csv` and for per-segment feature tables keyed like it.

`label.csv` columns: `video_id,clip_id,text,label[,label_T,label_A,label_V,annotation],mode`.
A feature table is a CSV (optionally gzipped) with `video_id,clip_id` and numeric
columns named `audio_<i>` and `vision_<i>`: one utterance-level vector per segment.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from ray_msa.data.checks import check_dataset
from ray_msa.data.dataset import SPLITS, MSADataset, Split
from ray_msa.data.sdk_features import csd_features
from ray_msa.errors import InputError

LABEL_COLUMNS = ("video_id", "clip_id", "text", "label", "mode")
MODE_ALIASES = {"train": "train", "valid": "valid", "dev": "valid", "val": "valid", "test": "test"}
UNIMODAL_COLUMNS = ("label_T", "label_A", "label_V")
FEATURE_TABLE_NAMES = ("utterance_features.csv.gz", "utterance_features.csv", "features.csv.gz", "features.csv")


def read_csv(path: Path, what: str) -> pd.DataFrame:
    """Read a CSV as strings-first, turning every failure into a one-line InputError."""
    if not path.is_file():
        raise InputError(path, what, "file not found", f"put the {what} at this path or pass --data DIR")
    try:
        return pd.read_csv(path, encoding="utf-8", keep_default_na=False, na_values=[""])
    except UnicodeDecodeError:
        raw = path.read_bytes()
        try:
            raw.decode("utf-8")
            where = "somewhere"
        except UnicodeDecodeError as err:  # pandas reports offsets inside a field: find the byte in the file
            line = raw[: err.start].count(b"\n") + 1
            where = f"at line {line} (byte {err.start})"
        raise InputError(path, what, f"not UTF-8 {where}", "re-save the file as UTF-8") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, EOFError, OSError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InputError(path, what, f"unreadable CSV ({reason})", "check that the file is a complete CSV") from None


def read_label_csv(path: Path, label_range: tuple[float, float] = (-3.0, 3.0)) -> pd.DataFrame:
    """Read and validate an MMSA label.csv; rows keep file order, `mode` is normalised."""
    frame = read_csv(path, "label.csv")
    missing = [c for c in LABEL_COLUMNS if c not in frame.columns]
    if missing:
        raise InputError(
            path,
            "columns",
            f"missing {missing} (found {list(frame.columns)})",
            "use MMSA's header video_id,clip_id,text,label,mode",
        )
    if frame.empty:
        raise InputError(path, "rows", "no segments", "add one row per segment")
    frame["video_id"] = frame["video_id"].astype(str)
    frame["clip_id"] = frame["clip_id"].astype(str)
    labels = pd.to_numeric(frame["label"], errors="coerce")
    bad = frame.index[labels.isna() | ~np.isfinite(labels.fillna(0.0))]
    if len(bad):
        row = bad[0]
        raw = frame.loc[row, "label"]
        raise InputError(
            path,
            "label",
            f"not a finite number at line {row + 2} ({'empty' if pd.isna(raw) else repr(str(raw))})",
            "give every segment a numeric sentiment score",
        )
    low, high = label_range
    outside = frame.index[(labels < low) | (labels > high)]
    if len(outside):
        row = outside[0]
        raise InputError(
            path,
            "label",
            f"{labels[row]} at line {row + 2} is outside [{low}, {high}]",
            "use the dataset's sentiment scale or pick the matching dataset name",
        )
    frame["label"] = labels.astype(np.float32)
    modes = frame["mode"].astype(str).str.strip().str.lower()
    unknown = sorted(set(modes) - set(MODE_ALIASES))
    if unknown:
        raise InputError(path, "mode", f"unknown values {unknown}", "use train, valid or test")
    frame["mode"] = modes.map(MODE_ALIASES)
    text = frame["text"].fillna("").astype(str).str.strip()
    empty = frame.index[text == ""]
    if len(empty):
        row = empty[0]
        raise InputError(
            path,
            "text",
            f"empty at line {row + 2} (clip {frame.loc[row, 'video_id']}$_${frame.loc[row, 'clip_id']})",
            "give every segment its transcript",
        )
    frame["text"] = text
    dup = frame.duplicated(["video_id", "clip_id"], keep="first")
    if dup.any():
        row = frame.index[dup][0]
        raise InputError(
            path,
            "video_id,clip_id",
            f"duplicate segment {frame.loc[row, 'video_id']}$_${frame.loc[row, 'clip_id']} at line {row + 2}",
            "keep one row per segment",
        )
    for split in ("train", "test"):
        if not (frame["mode"] == split).any():
            raise InputError(path, "mode", f"no '{split}' rows", f"mark the {split} segments with mode={split}")
    return frame


def read_feature_table(path: Path, keys: pd.DataFrame) -> dict[str, np.ndarray]:
    """Per-segment feature vectors for the (video_id, clip_id) rows of `keys`, in order."""
    table = read_csv(path, "feature table")
    for column in ("video_id", "clip_id"):
        if column not in table.columns:
            raise InputError(path, column, "missing", "key every row by video_id,clip_id like label.csv")
    table = table.astype({"video_id": str, "clip_id": str})
    if table.duplicated(["video_id", "clip_id"]).any():
        row = table.index[table.duplicated(["video_id", "clip_id"])][0]
        raise InputError(path, "video_id,clip_id", f"duplicate segment at line {row + 2}", "keep one row per segment")
    wanted = pd.MultiIndex.from_frame(keys[["video_id", "clip_id"]])
    absent = np.flatnonzero(~wanted.isin(pd.MultiIndex.from_frame(table[["video_id", "clip_id"]])))
    if len(absent):
        video, clip = wanted[absent[0]]
        raise InputError(
            path,
            "video_id,clip_id",
            f"{len(absent)} labelled segments have no features, e.g. {video}$_${clip}",
            "add a feature row for every segment of label.csv",
        )
    merged = table.set_index(["video_id", "clip_id"]).reindex(wanted)
    out = {}
    for modality in ("audio", "vision"):
        columns = sorted(
            (c for c in table.columns if re.fullmatch(rf"{modality}_\d+", str(c))), key=lambda c: int(c.split("_")[-1])
        )
        if not columns:
            continue
        values = merged[columns].apply(pd.to_numeric, errors="coerce").to_numpy(np.float64)
        if not np.isfinite(values).all():
            row, col = np.argwhere(~np.isfinite(values))[0]
            video, clip = wanted[row]
            raise InputError(
                path,
                columns[col],
                f"NaN or infinite for segment {video}$_${clip}",
                "fill or drop the broken feature rows",
            )
        out[modality] = values.astype(np.float32)[:, None, :]  # utterance vectors: sequences of length 1
    if not out:
        raise InputError(
            path, "columns", "no audio_<i> or vision_<i> columns", "name feature columns audio_0.. and vision_0.."
        )
    return out


def unimodal_labels(frame: pd.DataFrame, path: Path, label_range: tuple[float, float]) -> np.ndarray:
    """SIMS's label_T, label_A, label_V as (N, 3), checked like the label."""
    values = frame[list(UNIMODAL_COLUMNS)].apply(pd.to_numeric, errors="coerce").to_numpy(np.float64)
    low, high = label_range
    bad = np.argwhere(~np.isfinite(values) | (values < low) | (values > high))
    if len(bad):
        row, col = bad[0]
        raise InputError(
            path,
            UNIMODAL_COLUMNS[col],
            f"{str(frame.iloc[row][UNIMODAL_COLUMNS[col]]).strip() or 'empty'} at line {row + 2} is not a "
            f"number in [{low}, {high}]",
            "give every segment its unimodal scores on the dataset's scale",
        )
    return values.astype(np.float32)


def find_feature_table(directory: Path) -> Path | None:
    for name in FEATURE_TABLE_NAMES:
        if (directory / name).is_file():
            return directory / name
    return None


def load_mmsa_csv_dir(
    directory: Path, name: str, label_range: tuple[float, float] = (-3.0, 3.0), metric_set: str = "mmsa"
) -> MSADataset:
    """A dataset from `label.csv` (text, and SIMS's unimodal labels) plus an optional feature table (audio, vision)."""
    frame = read_label_csv(directory / "label.csv", label_range)
    table_path = find_feature_table(directory)
    features, lengths, notes = {}, {}, {}
    if table_path:
        features = read_feature_table(table_path, frame)
    else:
        aligned, notes = csd_features(directory, frame)
        features = {m: values for m, (values, _) in aligned.items()}
        lengths = {m: n for m, (_, n) in aligned.items()}
    splits = {}
    for split in SPLITS:
        rows = np.flatnonzero((frame["mode"] == split).to_numpy())
        part = frame.iloc[rows]
        arrays: dict[str, np.ndarray] = {
            "ids": (part["video_id"] + "$_$" + part["clip_id"]).to_numpy(dtype=str),
            "video_ids": part["video_id"].to_numpy(dtype=str),
            "labels": part["label"].to_numpy(np.float32),
            "raw_text": part["text"].to_numpy(dtype=str),
        }
        if all(c in frame.columns for c in UNIMODAL_COLUMNS):
            arrays["unimodal_labels"] = unimodal_labels(frame, directory / "label.csv", label_range)[rows]
        for modality, values in features.items():
            arrays[modality] = values[rows]
            arrays[f"{modality}_lengths"] = (
                lengths[modality][rows] if modality in lengths else np.ones(len(rows), dtype=np.int64)
            )
        splits[split] = Split(**arrays)
    leaked = set(splits["train"].video_ids) & set(splits["test"].video_ids)
    if leaked:
        raise InputError(
            directory / "label.csv",
            "video_id",
            f"video {sorted(leaked)[0]} is in both train and test",
            "keep each video in one split",
        )
    extra = [table_path.name] if table_path else sorted(p.name for p in directory.glob("*.csd")) if features else []
    source = " + ".join([str(directory / "label.csv"), *extra])
    dataset = MSADataset(
        name=name, splits=splits, source=source, label_range=label_range, metric_set=metric_set, notes=notes
    )
    return check_dataset(dataset, directory / "label.csv")
