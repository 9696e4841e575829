"""CMU-MultimodalSDK computational sequences (`.csd`): read, write, label segments, align.

A `.csd` is HDF5 with one root group named after the sequence, holding
`data/<video_id>/features` (N, D), `data/<video_id>/intervals` (N, 2) seconds and
`metadata/<key>` one-element JSON strings. Bad files end in an `InputError`.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd

from ray_msa.errors import InputError

H5_ERRORS = (OSError, RuntimeError, ValueError, TypeError, KeyError)
ALIGN_MODES = ("sequence", "average")


@dataclass
class ComputationalSequence:
    """One sequence: video_id -> (features (N, D) float32, intervals (N, 2) float64), rows in file order."""

    name: str
    data: dict[str, tuple[np.ndarray, np.ndarray]]
    metadata: dict[str, Any] = field(default_factory=dict)


def _check_video(source: Path, vid: str, features: Any, intervals: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validate one video's arrays (shared by read and write so both accept the same files)."""
    where, arrays = f"data/{vid}", {}
    for name, value, dtype in (("features", features, np.float32), ("intervals", intervals, np.float64)):
        try:
            arrays[name] = np.asarray(value, dtype=dtype)
        except (TypeError, ValueError) as err:
            raise InputError(source, f"{where}/{name}", f"not numeric ({err})", "store float numbers") from None
    feats, ivs = arrays["features"], arrays["intervals"]
    if feats.ndim != 2:
        raise InputError(
            source, f"{where}/features", f"shape {feats.shape} is not 2-D (N, D)", "store one row per interval"
        )
    if ivs.ndim != 2 or ivs.shape[1] != 2:
        raise InputError(
            source,
            f"{where}/intervals",
            f"shape {ivs.shape} is not (N, 2)",
            "store one (start, end) row per feature row",
        )
    if len(feats) != len(ivs):
        raise InputError(
            source,
            f"{where}/intervals",
            f"{len(ivs)} rows but features has {len(feats)}",
            "give every feature row one interval",
        )
    # -inf is allowed in features: COVAREP writes it for silent frames; readers repair it to 0 and count it
    for name, bad in (("features", np.isnan(feats) | np.isposinf(feats)), ("intervals", ~np.isfinite(ivs))):
        if bad.any():
            row = int(np.argwhere(bad)[0][0])
            raise InputError(source, f"{where}/{name}", f"NaN or inf at row {row}", "replace non-finite values")
    if (ivs[:, 1] < ivs[:, 0]).any():
        row = int(np.argmax(ivs[:, 1] < ivs[:, 0]))
        raise InputError(
            source,
            f"{where}/intervals",
            f"end < start at row {row} ({ivs[row, 0]}, {ivs[row, 1]})",
            "store (start, end) with end >= start",
        )
    return feats, ivs


def _check_dims(source: str | Path, data: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """Every video must have the same feature size, or alignment cannot stack them."""
    sizes = {vid: feats.shape[1] for vid, (feats, _) in data.items()}
    first = next(iter(sizes.values()), None)
    for vid, size in sizes.items():
        if size != first:
            raise InputError(
                source,
                f"data/{vid}/features",
                f"{size} columns, earlier videos have {first}",
                "use one feature size per sequence",
            )


def _read_dataset(source: Path, group: Any, key: str, where: str) -> np.ndarray:
    """Read a dataset fully, so truncated chunks fail here and name the field."""
    item = group.get(key)
    if not isinstance(item, h5py.Dataset):
        raise InputError(
            source,
            f"{where}/{key}",
            "missing or not a dataset",
            "store it as a dataset, in the CMU-MultimodalSDK layout",
        )
    try:
        return item[()]
    except H5_ERRORS as err:
        raise InputError(source, f"{where}/{key}", f"unreadable ({err})", "re-download or re-export the file") from None


def _decode_metadata(raw: Any) -> Any:
    """One-element JSON string -> Python value; the raw string (or number) if it is not JSON."""
    items = np.asarray(raw).reshape(-1).tolist()
    value = items[0] if len(items) == 1 else items
    value = value.decode("utf-8", errors="replace") if isinstance(value, bytes) else value
    try:
        return json.loads(value) if isinstance(value, str) else value
    except ValueError:
        return value


def _read_root(source: Path, f: h5py.File) -> ComputationalSequence:
    """Walk the SDK layout, checking each level so errors name the first broken field."""
    roots = list(f.keys())
    if len(roots) != 1 or not isinstance(f[roots[0]], h5py.Group):
        raise InputError(
            source,
            "/",
            f"expected exactly one root group, found {roots}",
            "store one computational sequence per .csd file",
        )
    root = f[roots[0]]
    if not isinstance(root.get("data"), h5py.Group):
        raise InputError(
            source, "data", f"no data group under root {roots[0]!r}", "store features under <root>/data/<video_id>"
        )
    if len(root["data"]) == 0:
        raise InputError(source, "data", "no videos in the data group", "store at least one video")
    data: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for vid, group in root["data"].items():
        if not isinstance(group, h5py.Group):
            raise InputError(source, f"data/{vid}", "not a group", "store data/<video_id>/features and intervals")
        feats = _read_dataset(source, group, "features", f"data/{vid}")
        data[vid] = _check_video(source, vid, feats, _read_dataset(source, group, "intervals", f"data/{vid}"))
    _check_dims(source, data)
    meta = root.get("metadata")
    metadata = (
        {key: _decode_metadata(_read_dataset(source, meta, key, "metadata")) for key in meta}
        if isinstance(meta, h5py.Group)
        else {}
    )
    return ComputationalSequence(roots[0], data, metadata)


def read_csd(path: str | Path) -> ComputationalSequence:
    """Read and validate a `.csd`; every problem with the file is an InputError naming the field."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "file", "not found", "check the path to the .csd file")
    try:
        with h5py.File(path, "r") as f:
            return _read_root(path, f)
    except H5_ERRORS as err:
        raise InputError(
            path, "file", f"not a readable HDF5 file ({err})", "re-download the .csd; it may be truncated"
        ) from None


def write_csd(path: str | Path, seq: ComputationalSequence) -> Path:
    """Write `seq` in the SDK layout, atomically: a failure never leaves a broken or damaged file."""
    path = Path(path)
    checked = {vid: _check_video(path, vid, *arrays) for vid, arrays in seq.data.items()}
    _check_dims(path, checked)
    names = [("name", seq.name), *((f"data/{v}", v) for v in checked), *((f"metadata/{k}", k) for k in seq.metadata)]
    for where, name in names:
        if not name or "/" in name or name in (".", ".."):
            raise InputError(path, where, f"invalid HDF5 name {name!r}", "use a non-empty name without '/'")
    if not checked:
        raise InputError(path, "data", "no videos", "add at least one video before writing")
    try:
        metadata = {key: json.dumps(value) for key, value in seq.metadata.items()}
    except (TypeError, ValueError) as err:
        raise InputError(path, "metadata", f"not JSON-serialisable ({err})", "use JSON values in metadata") from None
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        with h5py.File(tmp, "w") as f:
            root = f.create_group(seq.name)
            for vid, (feats, ivs) in checked.items():
                group = root.create_group(f"data/{vid}")
                for key, arr in (("features", feats), ("intervals", ivs)):
                    group.create_dataset(key, data=arr, compression="gzip" if arr.size else None)
            meta = root.create_group("metadata")
            for key, text in metadata.items():
                meta.create_dataset(key, data=[text], dtype=h5py.string_dtype("utf-8"))
        os.replace(tmp, path)
    except H5_ERRORS as err:
        raise InputError(
            path, "file", f"cannot write ({err})", "check the directory exists, is writable and has space"
        ) from None
    finally:
        if tmp and os.path.exists(tmp):
            os.unlink(tmp)
    return path


def segments_from_labels(seq: ComputationalSequence, order: str = "file") -> pd.DataFrame:
    """One row per labelled segment: video_id, clip_id, start, end, label (features[:, 0]).

    clip_id is 1-based. order="file" numbers rows as stored, which matches MMSA's
    label.csv for all of CMU-MOSI; order="start" ranks by (start, end) instead,
    which disagrees on 42 MOSI segments (two videos store rows out of time order).
    """
    if order not in ("file", "start"):
        raise InputError("segments_from_labels", "order", f"unknown order {order!r}", "use 'file' or 'start'")
    frames = []
    for vid, (feats, ivs) in seq.data.items():
        rows = np.arange(len(ivs)) if order == "file" else np.lexsort((ivs[:, 1], ivs[:, 0]))
        clip = np.empty(len(ivs), dtype=np.int64)
        clip[rows] = np.arange(1, len(ivs) + 1)
        frames.append(
            pd.DataFrame(
                {
                    "video_id": vid,
                    "clip_id": clip.astype(str),
                    "start": ivs[:, 0],
                    "end": ivs[:, 1],
                    "label": feats[:, 0].astype(np.float64),
                }
            )
        )
    columns = ["video_id", "clip_id", "start", "end", "label"]
    return pd.concat(frames, ignore_index=True)[columns] if frames else pd.DataFrame(columns=columns)


def _overlaps(index: tuple[np.ndarray, ...], start: float, end: float) -> tuple[np.ndarray, np.ndarray]:
    """Rows (in time order) overlapping [start, end] by more than zero, and the overlap lengths.

    Rows are sorted by start, so rows starting before `end` are a prefix; the running
    maximum of ends is sorted too, so rows that all end by `start` are a prefix as well.
    """
    rows, starts, ends, max_ends = index
    lo, hi = np.searchsorted(max_ends, start, "right"), np.searchsorted(starts, end, "left")
    overlap = np.minimum(end, ends[lo:hi]) - np.maximum(start, starts[lo:hi])
    keep = overlap > 0
    return rows[lo:hi][keep], overlap[keep]


def _index(intervals: np.ndarray) -> tuple[np.ndarray, ...]:
    rows = np.lexsort((intervals[:, 1], intervals[:, 0]))
    starts, ends = intervals[rows, 0], intervals[rows, 1]
    return rows, starts, ends, np.maximum.accumulate(ends)


def _check_segments(segments: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    missing = [c for c in ("video_id", "start", "end") if c not in segments.columns]
    if missing:
        raise InputError("segments", "columns", f"missing {missing}", "give segments video_id, start and end columns")
    times = segments[["start", "end"]].apply(pd.to_numeric, errors="coerce").to_numpy(np.float64)
    bad = ~np.isfinite(times).all(axis=1) | (times[:, 1] < times[:, 0])
    if bad.any():
        row = int(np.argmax(bad))
        raise InputError(
            "segments",
            f"row {row}",
            f"start/end {segments[['start', 'end']].iloc[row].tolist()} not finite with end >= start",
            "fix the segment times",
        )
    return segments["video_id"].astype(str).to_numpy(), times[:, 0], times[:, 1]


def align(
    seq: ComputationalSequence, segments: pd.DataFrame, mode: str = "sequence", max_len: int | None = None
) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """Feature rows of `seq` whose interval overlaps each segment's [start, end] (overlap > 0), in time order.

    mode="sequence": (N, L, D) float32 zero-padded, L = max_len if given (longer segments
    keep their first max_len rows and are counted as truncated) else the longest; lengths (N,).
    mode="average": (N, 1, D) overlap-weighted mean of the rows; lengths all 1; max_len unused.
    A segment whose video is absent or that overlaps no row gets one zero frame (length 1).
    Returns (values, lengths, {"segments": N, "no_frames": count, "truncated": count}).
    """
    if mode not in ALIGN_MODES:
        raise InputError("align", "mode", f"unknown mode {mode!r}", f"use one of {ALIGN_MODES}")
    if max_len is not None and max_len < 1:
        raise InputError("align", "max_len", f"{max_len} < 1", "pass a positive max_len or None")
    videos, starts, ends = _check_segments(segments)
    _check_dims("seq", seq.data)
    dim = next((feats.shape[1] for feats, _ in seq.data.values()), 0)
    wanted = set(videos)
    indexes = {vid: _index(ivs) for vid, (_, ivs) in seq.data.items() if vid in wanted}
    empty = (np.zeros(0, np.int64), np.zeros(0))
    hits = [_overlaps(indexes[v], s, e) if v in indexes else empty for v, s, e in zip(videos, starts, ends)]
    counts = np.array([len(rows) for rows, _ in hits], dtype=np.int64)
    average = mode == "average"
    width = 1 if average else max_len or int(counts.max(initial=1))
    values = np.zeros((len(hits), width, dim), np.float32)
    for i, (vid, (rows, overlap)) in enumerate(zip(videos, hits)):
        if len(rows):
            feats = seq.data[vid][0][rows]
            values[i, : min(len(rows), width)] = (
                overlap @ feats.astype(np.float64) / overlap.sum() if average else feats[:width]
            )
    truncated = 0 if average else int((counts > width).sum())
    report = {"segments": len(hits), "no_frames": int((counts == 0).sum()), "truncated": truncated}
    return values, np.clip(counts, 1, width), report
