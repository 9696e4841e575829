"""Readers on the real CMU-MOSI files, and one-line errors on malformed label.csv files."""

import filecmp
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ray_msa.data import load_dataset
from ray_msa.data.mmsa_csv import load_mmsa_csv_dir, read_label_csv
from ray_msa.data.sources import EMBEDDED
from ray_msa.errors import InputError

GOOD = (
    "video_id,clip_id,text,label,mode\nv1,1,it was great,2.4,train\nv2,1,awful,-1.2,valid\nv3,1,fine i guess,0.0,test\n"
)


def test_real_mosi_labels_and_features():
    ds = load_mmsa_csv_dir(EMBEDDED / "mosi", "mosi")  # the real files, shipped in the package
    assert {s: len(ds.splits[s]) for s in ("train", "valid", "test")} == {"train": 1281, "valid": 229, "test": 685}
    assert ds.modalities == ("text", "audio", "vision")
    assert ds.feature_dims() == {"text": 0, "audio": 73, "vision": 100}
    train = ds.splits["train"]
    assert train.audio.shape == (1281, 1, 73) and train.vision.shape == (1281, 1, 100)
    assert train.ids[0] == "03bSnISJMiM$_$1" and train.raw_text[0] == "anyhow it was really good"
    assert train.labels[0] == pytest.approx(2.4)
    assert len(set(ds.splits["test"].video_ids)) == 31
    assert np.isfinite(train.audio).all()


def test_embedded_copy_is_the_real_data(shared_mosi):
    for name in ("label.csv", "utterance_features.csv.gz"):
        assert filecmp.cmp(EMBEDDED / "mosi" / name, shared_mosi / name, shallow=False)
    assert load_dataset("mosi").fingerprint() == load_mmsa_csv_dir(shared_mosi, "mosi").fingerprint()


def test_label_csv_alone_is_a_text_only_dataset(tmp_path):
    (tmp_path / "label.csv").write_text(GOOD)
    ds = load_dataset("mosei", tmp_path)
    assert ds.modalities == ("text",) and len(ds.splits["valid"]) == 1


BAD_FILES = {
    "missing_column": ("video_id,clip_id,text,mode\nv1,1,hi,train\n", "columns"),
    "label_not_number": (GOOD.replace("2.4", "positive"), "label"),
    "label_out_of_scale": (GOOD.replace("2.4", "7.5"), "label"),
    "label_nan": (GOOD.replace("2.4", "nan"), "label"),
    "unknown_mode": (GOOD.replace("valid", "holdout"), "mode"),
    "no_test_rows": (GOOD.replace(",test", ",valid"), "mode"),
    "duplicate_segment": (GOOD + "v1,1,again,1.0,train\n", "video_id,clip_id"),
    "empty_text": (GOOD.replace("awful", ""), "text"),
    "header_only": ("video_id,clip_id,text,label,mode\n", "rows"),
    "video_in_train_and_test": (GOOD.replace("v3,1", "v1,2"), "video_id"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_malformed_label_csv_names_file_and_field(tmp_path, case):
    content, field = BAD_FILES[case]
    (tmp_path / "label.csv").write_text(content)
    with pytest.raises(InputError) as err:
        load_dataset("mosei", tmp_path)
    assert err.value.field == field
    assert "label.csv" in str(err.value) and "\n" not in str(err.value)


def test_non_utf8_and_empty_file(tmp_path):
    path = tmp_path / "label.csv"
    path.write_bytes(GOOD.replace("great", "gr\xe9at").encode("latin-1"))
    with pytest.raises(InputError, match="not UTF-8"):
        read_label_csv(path)
    path.write_bytes(b"")
    with pytest.raises(InputError, match="unreadable CSV"):
        read_label_csv(path)


def test_feature_table_must_cover_every_segment(tmp_path):
    (tmp_path / "label.csv").write_text(GOOD)
    (tmp_path / "utterance_features.csv").write_text("video_id,clip_id,audio_0\nv1,1,0.5\nv2,1,0.1\n")
    with pytest.raises(InputError, match="1 labelled segments have no features"):
        load_dataset("mosei", tmp_path)
    (tmp_path / "utterance_features.csv").write_text("video_id,clip_id,audio_0\nv1,1,0.5\nv2,1,inf\nv3,1,0\n")
    with pytest.raises(InputError, match="NaN or infinite"):
        load_dataset("mosei", tmp_path)


def start_cli(*args: str, cwd: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "ray_msa.tune", *args]
    return subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_cli_errors_are_one_line_exit_2(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "label.csv").write_text(BAD_FILES["label_out_of_scale"][0])
    cases = (["mosei", "--data", "data"], ["mosei", "--data", "nowhere"], ["sims"], ["mosi", "--arch", "nope"])
    started = [start_cli(*args, cwd=tmp_path) for args in cases]  # side by side: each is mostly imports
    for process in started:
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 2, stderr
        lines = [line for line in stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in stderr, stderr
    assert not (tmp_path / "mlruns").exists()  # nothing was recorded for a refused input
