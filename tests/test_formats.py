"""Every public format round-trips: generate real files with the public shapes, read them
(through the HDF5 cache), train one epoch, evaluate. Plus the reader details that matter:
repairs are counted, MulT lengths are recovered, the cache is lazy and deterministic."""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import numpy as np
import pytest

from ray_msa.data.dataset import SPLITS
from ray_msa.data.h5cache import H5Rows
from ray_msa.data.sources import load_dataset
from ray_msa.data.synthetic_files import MULT_SHAPES, _synthetic, write_csd_files, write_mmsa_pickle, write_mult_pickle
from ray_msa.data.text import prepare_text
from ray_msa.errors import InputError
from ray_msa.metrics import METRIC_SETS
from ray_msa.search_space import trial_config
from ray_msa.train.loop import WorkerContext, run_cross_validation, run_final_training

SIZES = (24, 8, 10)
ONE_EPOCH = dict(  # training settings and the final refit
    folds=2,
    seed=0,
    max_epochs=1,
    patience=1,
    batch_size=8,
    lr=1e-3,
    weight_decay=0.0,
    grad_clip=1.0,
    final_epochs=1,
)


def train_and_evaluate(dataset, arch: str = "lf_lstm") -> dict[str, float]:
    model = {
        "lf_lstm": dict(hidden=16, post_fusion=16, dropout=0.1),
        "mult": dict(dim=10, heads=2, layers=1),
        "mtl": {},
    }[arch]
    config = trial_config(arch, {**ONE_EPOCH, **model})
    summary = run_cross_validation(config, dataset, lambda m, s: None, WorkerContext())
    test, _, _ = run_final_training(config, dataset, WorkerContext())
    names = METRIC_SETS[dataset.metric_set]
    assert set(names) <= set(test) and all(f"mean_{n}" in summary for n in names)
    assert all(np.isfinite(test[n]) for n in names if not n.startswith("Non0"))
    return test


@pytest.mark.parametrize(
    "dataset,alignment", [("mosi", "unaligned"), ("mosi", "aligned"), ("mosei", "unaligned"), ("sims", "unaligned")]
)
def test_mmsa_pickle_round_trip(tmp_path, dataset, alignment):
    path = write_mmsa_pickle(tmp_path, dataset, alignment, SIZES, neg_inf_frames=3)
    ds = load_dataset(dataset, tmp_path, cache_root=tmp_path / "cache")
    train = ds.splits["train"]
    assert (
        train.audio.shape[1:] == {"mosi": (375, 5), "mosei": (500, 74), "sims": (400, 33)}[dataset]
        or alignment == "aligned"
    )
    assert ds.notes == {"audio -inf set to 0": "9"}  # 3 per split, repaired and counted
    assert not np.isneginf(train.audio[np.arange(len(train))]).any()
    if dataset == "sims":
        assert (
            ds.metric_set == "sims" and train.unimodal_labels.shape == (SIZES[0], 3) and ds.label_range == (-1.0, 1.0)
        )
    with path.open("rb") as handle:
        raw = pickle.load(handle)["train"]
    assert train.ids.tolist() == list(raw["id"]) and np.allclose(train.labels, raw["regression_labels"])
    train_and_evaluate(prepare_text(ds, "features"))


@pytest.mark.parametrize("dataset,alignment", [("mosi", "unaligned"), ("mosei", "aligned"), ("iemocap", "unaligned")])
def test_mult_pickle_round_trip(tmp_path, dataset, alignment):
    write_mult_pickle(tmp_path, dataset, alignment, SIZES)
    ds = load_dataset(dataset, tmp_path, cache_root=tmp_path / "cache")
    if dataset == "iemocap":  # front padding moved back: the lengths and frames of the generator come back
        truth = _synthetic(dataset, MULT_SHAPES[(dataset, alignment)], SIZES, 0)
        for m in ("text", "audio", "vision"):
            got, expected = ds.splits["test"], truth.splits["test"]
            assert np.array_equal(getattr(got, f"{m}_lengths"), getattr(expected, f"{m}_lengths"))
            assert np.allclose(np.asarray(getattr(got, m)), getattr(expected, m))
        assert ds.metric_set == "emotions" and ds.splits["train"].labels.shape == (SIZES[0], 4)
        test = train_and_evaluate(ds, "mult")
        assert 0.0 <= test["Mean_F1"] <= 1.0
    else:
        train_and_evaluate(ds)


def test_csd_round_trip(tmp_path):
    shapes = {"audio": (40, 5), "vision": (30, 20)}
    write_csd_files(tmp_path, "mosi", SIZES, shapes=shapes)
    ds = load_dataset("mosi", tmp_path, cache_root=tmp_path / "cache")
    truth = _synthetic("mosi", shapes, SIZES, 0)
    for split in SPLITS:  # aligned by interval overlap: exactly the frames that were written
        got, expected = ds.splits[split], truth.splits[split]
        for m in shapes:
            assert np.array_equal(getattr(got, f"{m}_lengths"), getattr(expected, f"{m}_lengths"))
            values = np.asarray(getattr(got, m))
            assert np.allclose(values, getattr(expected, m)[:, : values.shape[1]])
    train_and_evaluate(prepare_text(ds, "frozen"))


def test_emotions_need_a_classifier_head(tmp_path):
    write_mult_pickle(tmp_path, "iemocap", "aligned", SIZES)
    ds = load_dataset("iemocap", tmp_path, cache_root=tmp_path / "cache")
    with pytest.raises(InputError, match="cannot predict IEMOCAP.s four emotions"):
        train_and_evaluate(ds, "mtl")


def test_cache_is_lazy_deterministic_and_reused(tmp_path):
    write_mmsa_pickle(tmp_path / "src", "mosei", "unaligned", SIZES)
    first = load_dataset("mosei", tmp_path / "src", cache_root=tmp_path / "a")
    again = load_dataset("mosei", tmp_path / "src", cache_root=tmp_path / "a")
    other = load_dataset("mosei", tmp_path / "src", cache_root=tmp_path / "b")
    files = [next((tmp_path / d / "datasets").glob("*.h5")) for d in ("a", "b")]
    assert first.fingerprint() == again.fingerprint() == other.fingerprint()
    assert hashlib.sha256(files[0].read_bytes()).digest() == hashlib.sha256(files[1].read_bytes()).digest()
    audio = first.splits["train"].audio
    assert (
        isinstance(audio, H5Rows) and len(pickle.dumps(audio)) < 4096
    )  # what Ray ships to a worker: a path and row numbers
    rows = np.array([5, 1, 5])
    assert np.array_equal(audio[rows], np.asarray(audio)[rows])
    assert first.fingerprint() == load_dataset("mosei", tmp_path / "src", cache_root=tmp_path / "c").fingerprint()


def test_small_arrays_stay_resident_and_both_reads_agree(tmp_path, monkeypatch):
    write_mmsa_pickle(tmp_path / "src", "mosei", "unaligned", SIZES)
    resident = load_dataset("mosei", tmp_path / "src", cache_root=tmp_path / "a").splits["train"].vision
    monkeypatch.setenv("RAY_MSA_RESIDENT_MB", "0")  # nothing fits: every batch reads and decompresses its rows
    lazy = load_dataset("mosei", tmp_path / "src", cache_root=tmp_path / "b").splits["train"].vision
    assert isinstance(resident, H5Rows) and isinstance(lazy, H5Rows)
    rows = np.array([7, 0, 7, 3])
    assert np.array_equal(resident[rows], lazy[rows]) and np.array_equal(resident[2], lazy[2])


def test_a_node_without_the_cache_converts_its_own_copy(tmp_path):
    """A worker on another machine gets the dataset from the driver, but not its HDF5 file."""
    from ray_msa.data.sources import ensure_cache_on_this_node

    write_mmsa_pickle(tmp_path / "src", "mosei", "unaligned", SIZES)
    dataset = load_dataset("mosei", tmp_path / "src")
    path = Path(dataset.splits["train"].audio.path)
    expected = np.asarray(dataset.splits["train"].audio[np.array([1, 2])])
    path.unlink()
    ensure_cache_on_this_node(dataset)
    assert path.is_file() and np.array_equal(dataset.splits["train"].audio[np.array([1, 2])], expected)
    path.unlink()
    for source in (tmp_path / "src").glob("*.pkl"):
        source.unlink()  # this node has no copy of the source either
    with pytest.raises(InputError) as err:
        ensure_cache_on_this_node(dataset)
    assert str(tmp_path / "src") in str(err.value)


def test_pickles_written_by_numpy_1_load(tmp_path):
    """The public files were pickled by NumPy 1.x, whose arrays name `numpy.core.multiarray`."""
    from ray_msa.data.safe_pickle import load_pickle

    data = {
        "train": {"audio": np.arange(6, dtype=np.float32).reshape(1, 2, 3), "id": np.array(["v$_$1"], dtype=object)}
    }
    blob = pickle.dumps(data, protocol=2).replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert b"numpy.core.multiarray" in blob
    (tmp_path / "old.pkl").write_bytes(blob)
    loaded = load_pickle(tmp_path / "old.pkl")
    assert np.array_equal(loaded["train"]["audio"], data["train"]["audio"]) and loaded["train"]["id"][0] == "v$_$1"


def test_sims_metrics_follow_mmsa():
    from ray_msa.metrics import sims_metrics

    truth = np.array([-1.0, -0.5, -0.1, 0.0, 0.1, 0.5, 0.8, 1.0])
    pred = np.array([-1.4, -0.6, 0.05, -0.05, 0.1, 0.75, 0.7, 0.9])
    m = sims_metrics(pred, truth)
    # zero is negative for Acc-2: classes of truth 0 0 0 0 1 1 1 1, of clipped pred 0 0 1 0 1 1 1 1
    assert m["Mult_acc_2"] == pytest.approx(7 / 8)
    # Acc-3 bins [-1,-0.1] (-0.1,0.1] (0.1,1]: truth 0 0 0 1 1 2 2 2, pred 0 0 1 1 1 2 2 2
    assert m["Mult_acc_3"] == pytest.approx(7 / 8)
    # Acc-5 bins at ±0.7, ±0.1: truth 0 1 1 2 2 3 4 4, pred 0 1 2 2 2 4 3 4
    assert m["Mult_acc_5"] == pytest.approx(5 / 8)
    assert m["MAE"] == pytest.approx(np.mean(np.abs(np.clip(pred, -1, 1) - truth)))


def test_missing_dataset_says_where_it_looked_and_what_it_accepts(tmp_path, monkeypatch, capsys):
    from ray_msa.tune import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RAY_MSA_DATA", str(tmp_path / "datasets"))
    with pytest.raises(SystemExit) as exit_info:
        main(["sims"])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1 and err.startswith("error: ")
    for expected in (
        str(tmp_path / "datasets" / "sims"),
        str(tmp_path / "data" / "sims"),
        "unaligned_39.pkl",
        "label.csv",
        "--data",
    ):
        assert expected in err


def test_sims_label_csv_keeps_chinese_text_and_unimodal_labels(tmp_path):
    rows = [
        ("video_0001", "1", "我今天很开心", "0.8", "0.6", "1.0", "0.4", "train"),
        ("video_0001", "2", "这部电影太无聊了", "-0.6", "-0.8", "-0.2", "0.0", "train"),
        ("video_0002", "1", "还可以吧", "0.0", "0.2", "-0.2", "0.0", "valid"),
        ("video_0003", "1", "演员演得很好", "1.0", "1.0", "0.8", "0.6", "test"),
    ]
    with (tmp_path / "label.csv").open("w", encoding="utf-8") as handle:
        handle.write("video_id,clip_id,text,label,label_T,label_A,label_V,mode\n")
        handle.writelines(",".join(r) + "\n" for r in rows)
    ds = load_dataset("sims", tmp_path, cache_root=tmp_path / "cache")
    train = ds.splits["train"]
    assert ds.metric_set == "sims" and ds.label_range == (-1.0, 1.0)
    assert train.raw_text.tolist() == ["我今天很开心", "这部电影太无聊了"]
    assert np.allclose(train.unimodal_labels, [[0.6, 1.0, 0.4], [-0.8, -0.2, 0.0]])
