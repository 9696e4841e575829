"""CMU-MultimodalSDK `.csd` reader/writer/aligner: the real MOSI labels, round trips, alignment, bad files."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from ray_msa.data.csd import ComputationalSequence, align, read_csd, segments_from_labels, write_csd
from ray_msa.errors import InputError

LABELS_CSD = "CMU_MOSI_Opinion_Labels.csd"
MOSI_SAMPLE = Path(__file__).parent / "data" / "mosi_sample"  # a committed slice of the real files


def _seq(**overrides) -> ComputationalSequence:
    """A small two-video sequence, rows of video 'a' stored out of time order."""
    data = {
        "a": (
            np.array([[3, 30], [1, 10], [2, 20], [4, 40], [5, 50], [6, 60]], np.float32),
            np.array([[2, 3], [0, 1], [1, 2], [3, 5], [10, 20], [11, 12]], np.float64),
        ),
        "b": (np.array([[7, 70]], np.float32), np.array([[0, 1]], np.float64)),
    }
    metadata = {
        "dimension names": ["x", "y"],
        "md5": None,
        "alignment compatible": True,
        "dataset version": 1.0,
        "creator": "Zoë",
    }
    return ComputationalSequence(**{"name": "Tiny Sequence", "data": data, "metadata": metadata, **overrides})


def _assert_same(got: ComputationalSequence, want: ComputationalSequence) -> None:
    assert got.name == want.name and got.metadata == want.metadata
    assert list(got.data) == sorted(want.data)
    for vid, (feats, ivs) in want.data.items():
        assert got.data[vid][0].dtype == np.float32 and got.data[vid][1].dtype == np.float64
        np.testing.assert_array_equal(got.data[vid][0], feats)
        np.testing.assert_array_equal(got.data[vid][1], ivs)


# 1. The real labels file ------------------------------------------------------------------


def test_real_labels_file_reads_and_clip_ids_match_label_csv() -> None:
    """The committed slice of the real file (five videos, two of them stored out of time order)."""
    seq = read_csd(MOSI_SAMPLE / LABELS_CSD)
    assert seq.name == "Opinion Segment Labels"
    assert sorted(seq.data) == sorted(["03bSnISJMiM", "VbQk4H8hgr0", "ZAIRrfG22O0", "d6hH302o4v8", "nbWiPyCm4g0"])
    assert sum(len(feats) for feats, _ in seq.data.values()) == 130
    assert {feats.shape[1] for feats, _ in seq.data.values()} == {1}
    assert seq.metadata["dataset name"] == "CMU-MOSI" and seq.metadata["dimension names"] == ["sentiment score"]

    segments = segments_from_labels(seq)
    assert list(segments.columns) == ["video_id", "clip_id", "start", "end", "label"] and len(segments) == 130
    labels = pd.read_csv(MOSI_SAMPLE / "label.csv", dtype={"video_id": str, "clip_id": str})
    joined = labels.merge(segments, on=["video_id", "clip_id"], suffixes=("", "_csd"))
    assert len(labels) == len(joined) == 130
    np.testing.assert_allclose(joined["label_csd"], joined["label"], atol=1e-4)
    assert joined.loc[joined["clip_id"] == "1", "label"].iloc[0] == pytest.approx(2.4)  # 03bSnISJMiM's first
    # Ranking by start time instead disagrees: two videos store rows out of time order.
    by_start = labels.merge(segments_from_labels(seq, order="start"), on=["video_id", "clip_id"], suffixes=("", "_csd"))
    wrong = by_start[(by_start["label_csd"] - by_start["label"]).abs() > 1e-4]
    assert set(wrong["video_id"]) == {"VbQk4H8hgr0", "d6hH302o4v8"}


def test_the_whole_real_labels_file_matches_label_csv(shared_mosi: Path) -> None:
    seq = read_csd(shared_mosi / LABELS_CSD)
    assert len(seq.data) == 93 and sum(len(feats) for feats, _ in seq.data.values()) == 2199
    labels = pd.read_csv(shared_mosi / "label.csv", dtype={"video_id": str, "clip_id": str})
    joined = labels.merge(segments_from_labels(seq), on=["video_id", "clip_id"], suffixes=("", "_csd"))
    assert len(labels) == len(joined) == 2195
    np.testing.assert_allclose(joined["label_csd"], joined["label"], atol=1e-4)
    for video in ("03bSnISJMiM", "VbQk4H8hgr0", "d6hH302o4v8"):  # the committed slice is the real file's
        sample = read_csd(MOSI_SAMPLE / LABELS_CSD).data[video]
        np.testing.assert_array_equal(sample[0], seq.data[video][0])
        np.testing.assert_array_equal(sample[1], seq.data[video][1])


# 2. Round trips ---------------------------------------------------------------------------


def test_write_read_round_trip_is_exact(tmp_path: Path) -> None:
    seq = _seq()
    path = write_csd(tmp_path / "tiny.csd", seq)
    _assert_same(read_csd(path), seq)
    with h5py.File(path, "r") as f:  # the SDK layout: one root, one-element JSON strings
        assert list(f) == ["Tiny Sequence"]
        meta = f["Tiny Sequence/metadata/md5"]
        assert meta.shape == (1,) and h5py.check_string_dtype(meta.dtype) is not None and meta[0] == b"null"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.csd"]  # no temp file left behind


def test_real_file_content_round_trips(tmp_path: Path) -> None:
    seq = read_csd(MOSI_SAMPLE / LABELS_CSD)
    _assert_same(read_csd(write_csd(tmp_path / "copy.csd", seq)), seq)
    with h5py.File(MOSI_SAMPLE / LABELS_CSD, "r") as original, h5py.File(tmp_path / "copy.csd", "r") as copy:
        for key, dataset in original["Opinion Segment Labels/metadata"].items():
            assert copy[f"Opinion Segment Labels/metadata/{key}"].shape == dataset.shape == (1,)


# 3. Alignment -----------------------------------------------------------------------------

SEGMENTS = pd.DataFrame(
    {
        "video_id": ["a", "a", "a", "a", "missing", "b", "a"],
        "start": [0.5, 0.5, 5.0, 15.0, 0.0, 0.0, 0.0],
        "end": [2.25, 0.5, 10.0, 16.0, 1.0, 1.0, 100.0],
        "note": list("abcdefg"),  # extra columns are ignored
    }
)


def _brute_force(seq: ComputationalSequence, segments: pd.DataFrame) -> list[tuple[np.ndarray, np.ndarray]]:
    """O(N*M) reference: overlapping rows in (start, end) order and their overlap lengths."""
    out = []
    for vid, start, end in zip(segments["video_id"], segments["start"], segments["end"]):
        dim = next(iter(seq.data.values()))[0].shape[1]
        feats, ivs = seq.data.get(vid, (np.zeros((0, dim), np.float32), np.zeros((0, 2))))
        overlap = np.minimum(end, ivs[:, 1]) - np.maximum(start, ivs[:, 0])
        rows = [i for i in np.lexsort((ivs[:, 1], ivs[:, 0])) if overlap[i] > 0]
        out.append((feats[rows], overlap[rows]))
    return out


def test_align_sequence_picks_overlapping_rows_in_time_order() -> None:
    values, lengths, report = align(_seq(), SEGMENTS)
    assert values.shape == (7, 6, 2) and values.dtype == np.float32 and lengths.dtype == np.int64
    np.testing.assert_array_equal(lengths, [3, 1, 1, 1, 1, 1, 6])
    np.testing.assert_array_equal(values[0, :3, 0], [1, 2, 3])  # rows stored 2nd, 3rd, 1st
    assert not values[0, 3:].any()  # zero padding
    np.testing.assert_array_equal(values[3, 0], [5, 50])  # the long row 10..20 despite a later-starting short one
    np.testing.assert_array_equal(values[5, 0], [7, 70])
    np.testing.assert_array_equal(values[6, :, 0], [1, 2, 3, 4, 5, 6])
    for empty in (1, 2, 4):  # zero-length segment inside a row, touching-only boundaries, absent video
        assert not values[empty].any()
    assert report == {"segments": 7, "no_frames": 3, "truncated": 0}


def test_align_truncates_to_max_len_and_counts() -> None:
    values, lengths, report = align(_seq(), SEGMENTS, max_len=2)
    assert values.shape == (7, 2, 2)
    np.testing.assert_array_equal(lengths, [2, 1, 1, 1, 1, 1, 2])
    np.testing.assert_array_equal(values[0, :, 0], [1, 2])
    assert report == {"segments": 7, "no_frames": 3, "truncated": 2}


def test_align_average_is_overlap_weighted() -> None:
    values, lengths, report = align(_seq(), SEGMENTS, mode="average")
    assert values.shape == (7, 1, 2) and (lengths == 1).all()
    np.testing.assert_allclose(
        values[0, 0], np.array([0.5 * 1 + 1.0 * 2 + 0.25 * 3, 0.5 * 10 + 1.0 * 20 + 0.25 * 30]) / 1.75, rtol=1e-6
    )
    np.testing.assert_allclose(values[6, 0, 0], (1 + 2 + 3 + 2 * 4 + 10 * 5 + 6) / 16, rtol=1e-6)
    assert not values[[1, 2, 4]].any()
    assert report == {"segments": 7, "no_frames": 3, "truncated": 0}


def test_align_matches_brute_force_on_random_overlapping_intervals() -> None:
    rng = np.random.default_rng(0)
    data = {}
    for vid in "pqr":
        starts = rng.uniform(0, 50, 40)
        ivs = np.stack([starts, starts + rng.exponential(3, 40)], axis=1)
        data[vid] = (rng.normal(size=(40, 3)).astype(np.float32), ivs)
    seq = ComputationalSequence("random", data, {})
    starts = rng.uniform(-5, 55, 200)
    segments = pd.DataFrame(
        {"video_id": rng.choice(list("pqrs"), 200), "start": starts, "end": starts + rng.exponential(4, 200)}
    )
    expected = _brute_force(seq, segments)
    values, lengths, _ = align(seq, segments)
    averages, _, _ = align(seq, segments, mode="average")
    for i, (feats, overlap) in enumerate(expected):
        assert lengths[i] == max(1, len(feats))
        np.testing.assert_array_equal(values[i, : len(feats)], feats)
        if len(feats):
            np.testing.assert_allclose(
                averages[i, 0], overlap @ feats.astype(np.float64) / overlap.sum(), rtol=1e-5, atol=1e-6
            )


@pytest.mark.parametrize(
    "segments, kwargs, field",
    [
        (SEGMENTS.drop(columns="end"), {}, "columns"),
        (SEGMENTS.assign(start=[0.0, 0.5, 50.0, 15.0, 0.0, 0.0, 0.0]), {}, "row 2"),
        (SEGMENTS, {"mode": "median"}, "mode"),
        (SEGMENTS, {"max_len": 0}, "max_len"),
        (
            SEGMENTS,
            {"seq": _seq(data={"a": _seq().data["a"], "b": (np.ones((1, 5), np.float32), np.zeros((1, 2)))})},
            "data/b/features",
        ),
    ],
)
def test_align_bad_arguments(segments: pd.DataFrame, kwargs: dict, field: str) -> None:
    seq = kwargs.pop("seq", _seq())
    with pytest.raises(InputError) as err:
        align(seq, segments, **kwargs)
    assert err.value.field == field


# 4. Bad inputs ----------------------------------------------------------------------------

GOOD = {"features": np.ones((3, 2), np.float32), "intervals": np.array([[0, 1], [1, 2], [2, 3]], np.float64)}


def _h5(path: Path, roots: tuple[str, ...] = ("Seq",), data: dict | None = None, with_data: bool = True) -> None:
    """Write an HDF5 file in the .csd layout, broken however the arguments say."""
    with h5py.File(path, "w") as f:
        for root in roots:
            group = f.create_group(root)
            group.create_group("metadata").create_dataset("md5", data=["null"], dtype=h5py.string_dtype())
            if with_data:
                videos = group.create_group("data")
                for vid, arrays in (data if data is not None else {"v1": GOOD}).items():
                    for key, arr in arrays.items():
                        videos.create_dataset(f"{vid}/{key}", data=arr)


def _video(**arrays) -> dict:
    return {"data": {"v0": GOOD, "v1": {k: v for k, v in {**GOOD, **arrays}.items() if v is not None}}}


def _nan(arr: np.ndarray, value: float) -> np.ndarray:
    arr = arr.astype(np.float64).copy()
    arr[1, 0] = value
    return arr


BAD_FILES = {
    "zero roots": ({"roots": ()}, "/"),
    "two roots": ({"roots": ("Seq", "Other")}, "/"),
    "no data group": ({"with_data": False}, "data"),
    "empty data group": ({"data": {}}, "data"),
    "no features": (_video(features=None), "data/v1/features"),
    "no intervals": (_video(intervals=None), "data/v1/intervals"),
    "features 1-D": (_video(features=np.ones(3)), "data/v1/features"),
    "intervals (N, 3)": (_video(intervals=np.ones((3, 3))), "data/v1/intervals"),
    "intervals 1-D": (_video(intervals=np.ones(3)), "data/v1/intervals"),
    "different N": (_video(intervals=GOOD["intervals"][:2]), "data/v1/intervals"),
    "NaN features": (_video(features=_nan(GOOD["features"], np.nan)), "data/v1/features"),
    "inf intervals": (_video(intervals=_nan(GOOD["intervals"], np.inf)), "data/v1/intervals"),
    "NaN intervals": (_video(intervals=_nan(GOOD["intervals"], np.nan)), "data/v1/intervals"),
    "end before start": (_video(intervals=np.array([[0, 1], [2, 1.5], [2, 3]])), "data/v1/intervals"),
    "other feature size": (_video(features=np.ones((3, 4))), "data/v1/features"),
    "text features": (_video(features=np.array([["a", "b"]] * 3, dtype="S1")), "data/v1/features"),
}


def test_metadata_that_is_not_json_reads_as_the_raw_string(tmp_path: Path) -> None:
    path = tmp_path / "meta.csd"
    _h5(path)
    with h5py.File(path, "a") as f:
        f["Seq/metadata"].create_dataset("note", data=["not {json"], dtype=h5py.string_dtype())
        f["Seq/metadata"].create_group("nested")
    with pytest.raises(InputError) as err:
        read_csd(path)
    assert err.value.field == "metadata/nested"
    with h5py.File(path, "a") as f:
        del f["Seq/metadata/nested"]
    assert read_csd(path).metadata == {"md5": None, "note": "not {json"}


def test_corrupted_bytes_never_escape_as_another_exception(tmp_path: Path) -> None:
    whole = (MOSI_SAMPLE / LABELS_CSD).read_bytes()
    rng = np.random.default_rng(0)
    path = tmp_path / "corrupt.csd"
    for offset in range(0, len(whole), len(whole) // 24):
        noise = rng.integers(0, 256, 512, dtype=np.uint8).tobytes()
        path.write_bytes(whole[:offset] + noise + whole[offset + 512 :])
        try:
            read_csd(path)
        except InputError as err:
            assert str(path) in str(err)


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_file_raises_input_error_naming_file_and_field(tmp_path: Path, case: str) -> None:
    kwargs, field = BAD_FILES[case]
    path = tmp_path / "bad.csd"
    _h5(path, **kwargs)
    with pytest.raises(InputError) as err:
        read_csd(path)
    assert err.value.field == field and str(path) in str(err.value) and field in str(err.value)


def test_missing_text_and_truncated_files_raise_input_error(tmp_path: Path) -> None:
    text = tmp_path / "labels.csd"
    text.write_text("video_id,clip_id,label\nabc,1,0.5\n")
    half = tmp_path / "half.csd"
    whole = write_csd(tmp_path / "whole.csd", _seq()).read_bytes()
    half.write_bytes(whole[: len(whole) // 2])
    for path in (tmp_path / "absent.csd", text, half, tmp_path):
        with pytest.raises(InputError) as err:
            read_csd(path)
        assert err.value.field == "file" and str(path) in str(err.value)


def test_truncated_real_file_raises_input_error(tmp_path: Path) -> None:
    half = tmp_path / "half.csd"
    whole = (MOSI_SAMPLE / LABELS_CSD).read_bytes()
    half.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(InputError, match="truncated") as err:
        read_csd(half)
    assert err.value.field == "file" and str(half) in str(err.value)


@pytest.mark.parametrize(
    "broken, field",
    [
        ({"data": {"a": (np.ones((2, 1), np.float32), np.ones((2, 3)))}}, "data/a/intervals"),
        ({"data": {"a": (np.full((1, 1), np.nan, np.float32), np.zeros((1, 2)))}}, "data/a/features"),
        ({"data": {}}, "data"),
        ({"data": {"x/y": _seq().data["b"]}}, "data/x/y"),
        ({"metadata": {"bad": object()}}, "metadata"),
        ({"name": ""}, "name"),
        (
            {
                "data": {
                    "a": (np.ones((1, 1), np.float32), np.zeros((1, 2))),
                    "b": (np.ones((1, 2), np.float32), np.zeros((1, 2))),
                }
            },
            "data/b/features",
        ),
    ],
)
def test_failed_write_leaves_existing_file_untouched(tmp_path: Path, broken: dict, field: str) -> None:
    target = write_csd(tmp_path / "seq.csd", _seq())
    before = target.read_bytes()
    with pytest.raises(InputError) as err:
        write_csd(target, _seq(**broken))
    assert err.value.field == field and str(target) in str(err.value)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["seq.csd"]


def test_write_failing_midway_leaves_existing_file_untouched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = write_csd(tmp_path / "seq.csd", _seq())
    before = target.read_bytes()

    def disk_full(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(h5py.Group, "create_dataset", disk_full)
    with pytest.raises(InputError, match="No space left"):
        write_csd(target, _seq())
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["seq.csd"]
