"""Write the corpus of broken dataset files that `tests/test_bad_inputs.py` feeds to every reader.

    python tests/bad_inputs/make_corpus.py          # rewrite the corpus beside this file
    python tests/bad_inputs/make_corpus.py OUT_DIR  # write it elsewhere (the test compares the two)

Every case starts from a GOOD tiny synthetic file written by `ray_msa.data.synthetic_files`
(6/3/3 samples, a few KB) and breaks it the way a user's copy gets broken: truncated
downloads, foreign or malicious pickles, wrong layouts, bad values, CSVs saved by a
spreadsheet, HTML error pages saved as `.csd`, ... `cases.csv` lists each case: its path
(relative to this directory), the dataset name to load it as, a substring the error's
field must contain, and what is wrong. `good/` holds files that must load (audio -inf is
the standard repair, not an error). Output is deterministic: the same bytes on every run.

The two malicious pickles create the file named by $RAY_MSA_BAD_INPUT_MARKER (default
/tmp/ray_msa_bad_input_marker) when loaded with plain `pickle.load`; the test asserts
that no reader of ours ever creates it.
"""

from __future__ import annotations

import builtins
import collections
import copy
import csv
import datetime
import gzip
import io
import json
import os
import pickle
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd

from ray_msa.data.csd import read_csd
from ray_msa.data.synthetic_files import write_csd_files, write_mmsa_pickle, write_mult_pickle

HERE = Path(__file__).resolve().parent
KEEP = {"make_corpus.py", "__pycache__"}
SIZES = (6, 3, 3)
SHAPES = {"text": (6, 4), "audio": (8, 3), "vision": (8, 4)}
CSD_SHAPES = {"audio": (8, 3), "vision": (8, 4)}
MARKER_ENV = "RAY_MSA_BAD_INPUT_MARKER"
DEFAULT_MARKER = "/tmp/ray_msa_bad_input_marker"
MALICIOUS = ("malicious_os_system.pkl", "malicious_exec.pkl")
CASES_HEADER = ("path", "dataset", "field", "description")


class OsSystemPayload:
    """Unpickles as os.system('touch $MARKER')."""

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return os.system, (f'touch "${{{MARKER_ENV}:-{DEFAULT_MARKER}}}"',)


class ExecPayload:
    """Unpickles as builtins.exec(<code that touches $MARKER>)."""

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        code = f"import os, pathlib; pathlib.Path(os.environ.get({MARKER_ENV!r}, {DEFAULT_MARKER!r})).touch()"
        return builtins.exec, (code,)


class Corpus:
    """Collects the cases while writing their files under `root`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.cases: list[tuple[str, str, str, str]] = []

    def add(self, rel: str, dataset: str, field: str, description: str) -> Path:
        assert all(rel != c[0] for c in self.cases), rel
        self.cases.append((rel, dataset, field, description))
        return self.root / rel

    def pickle(self, rel: str, dataset: str, field: str, description: str, obj: Any) -> None:
        dump(obj, self.add(rel, dataset, field, description))

    def raw(self, rel: str, dataset: str, field: str, description: str, data: bytes) -> None:
        path = self.add(rel, dataset, field, description)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    def csv_dir(self, rel: str, dataset: str, field: str, description: str, label_csv: str | bytes) -> Path:
        directory = self.add(rel, dataset, field, description)
        directory.mkdir(parents=True, exist_ok=True)
        data = label_csv.encode("utf-8") if isinstance(label_csv, str) else label_csv
        (directory / "label.csv").write_bytes(data)
        return directory


def dump(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(obj, protocol=4))


def drop(mapping: dict, key: str) -> None:
    del mapping[key]


def write_csd_raw(
    path: Path, root_name: str, data: dict[str, tuple[np.ndarray, np.ndarray]], metadata: dict[str, Any]
) -> None:
    """The SDK layout without any validation (so broken files can be written), byte-deterministic."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w", libver="latest") as f:
        root = f.create_group(root_name)
        for vid, (feats, ivs) in data.items():
            group = root.create_group(f"data/{vid}")
            group.create_dataset("features", data=feats, track_times=False)
            group.create_dataset("intervals", data=ivs, track_times=False)
        meta = root.create_group("metadata")
        for key, value in metadata.items():
            meta.create_dataset(key, data=[json.dumps(value)], dtype=h5py.string_dtype("utf-8"), track_times=False)


def good_csd_dir(scratch: Path) -> dict[str, Any]:
    """label.csv text and the three sequences (labels, COVAREP, FACET) of a good tiny MOSI directory."""
    directory = write_csd_files(scratch / "csd", "mosi", SIZES, seed=0, shapes=CSD_SHAPES)
    out: dict[str, Any] = {"label.csv": (directory / "label.csv").read_text(encoding="utf-8")}
    for path in sorted(directory.glob("*.csd")):
        seq = read_csd(path)
        out[path.name] = (seq.name, {v: (f.copy(), i.copy()) for v, (f, i) in seq.data.items()}, seq.metadata)
    return out


def write_csd_dir(directory: Path, files: dict[str, Any]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        if name == "label.csv":
            (directory / name).write_text(content, encoding="utf-8")
        elif isinstance(content, bytes):
            (directory / name).write_bytes(content)
        else:
            write_csd_raw(directory / name, *content)


def edit_csv(text: str, edit) -> str:
    """Apply `edit(rows)` to label.csv rows (header first) and write them back."""
    rows = list(csv.reader(io.StringIO(text)))
    edit(rows)
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    return out.getvalue()


def build(root: Path) -> Corpus:
    corpus = Corpus(root)
    scratch = Path(tempfile.mkdtemp(prefix="bad_inputs_"))
    try:
        mosi_bytes = write_mmsa_pickle(scratch / "mmsa", "mosi", "unaligned", SIZES, seed=0, shapes=SHAPES).read_bytes()
        mosi = pickle.loads(mosi_bytes)
        sims = pickle.loads(
            write_mmsa_pickle(scratch / "sims", "sims", "unaligned", SIZES, seed=1, shapes=SHAPES).read_bytes()
        )
        mult_mosi = pickle.loads(
            write_mult_pickle(scratch / "mult", "mosi", "unaligned", SIZES, seed=2, shapes=SHAPES).read_bytes()
        )
        mult_iemocap = pickle.loads(
            write_mult_pickle(scratch / "mult", "iemocap", "unaligned", SIZES, seed=3, shapes=SHAPES).read_bytes()
        )
        csd = good_csd_dir(scratch)
        add_good(root, mosi, csd)
        add_pickle_level(corpus, mosi, mosi_bytes)
        add_mmsa_layout(corpus, mosi, sims)
        add_mult(corpus, mult_mosi, mult_iemocap)
        add_label_csv(corpus, csd["label.csv"])
        add_csd(corpus, csd)
        add_other(corpus, csd["label.csv"])
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    with (root / "cases.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(CASES_HEADER)
        writer.writerows(corpus.cases)
    return corpus


def add_good(root: Path, mosi: dict, csd: dict) -> None:
    """Files that must load: MMSA audio with -inf frames (repaired to 0, counted) and the good .csd directory."""
    good = copy.deepcopy(mosi)
    for split in good.values():  # two real audio frames per split are -inf, as in MMSA's real files
        lengths = np.asarray(split["audio_lengths"])
        for row in (0, 1):
            split["audio"][row, lengths[row] - 1, 0] = -np.inf
    dump(good, root / "good" / "mmsa_neginf_audio.pkl")
    write_csd_dir(root / "good" / "csd_mosi", csd)


def add_pickle_level(corpus: Corpus, mosi: dict, mosi_bytes: bytes) -> None:
    """Files that are not (safe) pickles of containers and arrays."""
    corpus.raw(
        "truncated.pkl",
        "mosi",
        "pickle",
        "download cut off: first 40% of a good MMSA pickle",
        mosi_bytes[: len(mosi_bytes) * 2 // 5],
    )
    corpus.raw("empty_file.pkl", "mosi", "pickle", "zero-byte .pkl (failed copy)", b"")
    corpus.raw(
        "text_named_pkl.pkl",
        "mosi",
        "pickle",
        "a text file renamed to .pkl",
        b"This is not the dataset. Download unaligned_50.pkl from the MMSA page.\n",
    )
    corpus.raw(
        "html_error_page.pkl",
        "mosi",
        "pickle",
        "an HTML 'access denied' page saved as .pkl",
        b"<!DOCTYPE html>\n<html><head><title>403 Forbidden</title></head><body>Access denied</body></html>\n",
    )
    corpus.raw(
        "gzipped.pkl",
        "mosi",
        "pickle",
        "a gzip-compressed pickle still named .pkl",
        gzip.compress(mosi_bytes[:2000], mtime=0),
    )
    counter = copy.deepcopy(mosi)
    counter["train"]["annotations"] = collections.Counter(["Positive", "Negative", "Positive"])
    corpus.pickle("foreign_counter.pkl", "mosi", "pickle", "holds a collections.Counter (a non-numpy global)", counter)
    stamped = copy.deepcopy(mosi)
    stamped["created"] = datetime.datetime(2021, 5, 4, 12, 0, 0)
    corpus.pickle("foreign_datetime.pkl", "mosi", "pickle", "holds a datetime.datetime", stamped)
    frame = pd.DataFrame({"id": mosi["train"]["id"], "label": mosi["train"]["regression_labels"]})
    corpus.pickle(
        "pandas_dataframe.pkl",
        "mosi",
        "pickle",
        "a pickled pandas DataFrame instead of MMSA's dict",
        {"train": frame, "valid": frame, "test": frame},
    )
    system = copy.deepcopy(mosi)
    system["test"]["audio"] = OsSystemPayload()
    corpus.pickle(
        MALICIOUS[0], "mosi", "pickle", "MALICIOUS: __reduce__ calls os.system to touch a marker file", system
    )
    execd = copy.deepcopy(mosi)
    execd["valid"]["vision"] = ExecPayload()
    corpus.pickle(
        MALICIOUS[1], "mosi", "pickle", "MALICIOUS: __reduce__ calls builtins.exec to touch a marker file", execd
    )


def add_mmsa_layout(corpus: Corpus, mosi: dict, sims: dict) -> None:
    """Safe pickles whose MMSA layout or values are wrong."""

    def case(rel: str, field: str, description: str, edit, base: dict = mosi, dataset: str = "mosi") -> None:
        data = copy.deepcopy(base)
        data = edit(data) or data
        corpus.pickle(rel, dataset, field, description, data)

    case(
        "top_level_list.pkl",
        "top level",
        "top level is a list of splits, not a dict",
        lambda d: [d["train"], d["valid"], d["test"]],
    )
    case("missing_split.pkl", "test", "no test split", lambda d: drop(d, "test"))
    case(
        "split_is_list.pkl",
        "train",
        "train is a list of per-sample dicts",
        lambda d: d.update(train=[{"id": i} for i in d["train"]["id"]]),
    )
    case("missing_audio.pkl", "train/audio", "train has no audio key", lambda d: drop(d["train"], "audio"))
    case(
        "audio_short.pkl",
        "train/audio",
        "train audio has N-1 rows",
        lambda d: d["train"].update(audio=d["train"]["audio"][:-1]),
    )
    case(
        "vision_2d.pkl",
        "train/vision",
        "vision stored utterance-level (N, D) instead of (N, L, D)",
        lambda d: d["train"].update(vision=d["train"]["vision"].mean(1)),
    )

    def nan_vision(d: dict) -> None:
        d["valid"]["vision"][1, 0, 2] = np.nan

    case("nan_vision.pkl", "valid/vision", "a NaN in valid vision", nan_vision)

    def posinf_audio(d: dict) -> None:
        d["train"]["audio"][2, 0, 1] = np.inf

    case("posinf_audio.pkl", "train/audio", "+inf in train audio (-inf would be repaired, +inf is not)", posinf_audio)

    def label(split: str, row: int, value: float):
        def edit(d: dict) -> None:
            d[split]["regression_labels"][row] = value

        return edit

    case(
        "mosi_label_out_of_range.pkl", "train/labels", "a MOSI score of 4.5 (scale is [-3, 3])", label("train", 3, 4.5)
    )
    case(
        "sims_label_out_of_range.pkl",
        "test/labels",
        "a SIMS score of -1.8 (scale is [-1, 1])",
        label("test", 0, -1.8),
        sims,
        "sims",
    )
    case("mosi_labels_nan.pkl", "valid/labels", "a NaN label in valid", label("valid", 2, np.nan))
    case(
        "string_labels.pkl",
        "train/regression_labels",
        "labels stored as words ('positive', ...)",
        lambda d: d["train"].update(regression_labels=d["train"]["annotations"].copy()),
    )

    def duplicate_id(d: dict) -> None:
        d["train"]["id"][4] = d["train"]["id"][1]

    case("duplicate_ids.pkl", "train/id", "two train samples share an id", duplicate_id)

    def leak(d: dict) -> None:
        d["test"]["id"][0] = d["train"]["id"][0]

    case("id_in_train_and_test.pkl", "test/id", "the same id in train and test", leak)

    def empty_valid(d: dict) -> None:
        d["valid"] = {k: (v[:0] if isinstance(v, np.ndarray | list) else v) for k, v in d["valid"].items()}

    case("empty_split.pkl", "valid", "valid has zero samples", empty_valid)

    def empty_text(d: dict) -> None:
        d["train"]["raw_text"][2] = "   "

    case("empty_raw_text.pkl", "train/raw_text", "a blank transcript", empty_text)

    def long_lengths(d: dict) -> None:
        d["test"]["audio_lengths"][1] = d["test"]["audio"].shape[1] + 5

    case("audio_lengths_too_long.pkl", "test/audio_lengths", "audio_lengths larger than the sequence", long_lengths)
    case(
        "text_bert_two_channels.pkl",
        "train/text_bert",
        "text_bert (N, 2, L): segment ids dropped",
        lambda d: d["train"].update(text_bert=d["train"]["text_bert"][:, :2]),
    )
    case(
        "vision_width_differs.pkl",
        "test/vision",
        "test vision has 3 features, train 4",
        lambda d: d["test"].update(vision=d["test"]["vision"][:, :, :3].copy()),
    )


def add_mult(corpus: Corpus, mosi: dict, iemocap: dict) -> None:
    def case(rel: str, dataset: str, field: str, description: str, base: dict, edit) -> None:
        data = copy.deepcopy(base)
        edit(data)
        corpus.pickle(rel, dataset, field, description, data)

    def score_labels(d: dict) -> None:
        for split in d.values():
            split["labels"] = split["labels"][:, :1, :1].astype(np.float32)

    case(
        "mult_iemocap_score_labels.pkl",
        "iemocap",
        "train/labels",
        "MulT IEMOCAP file with (N, 1, 1) score labels",
        iemocap,
        score_labels,
    )
    case(
        "mult_mosi_emotion_labels.pkl",
        "mosi",
        "train/labels",
        "MulT IEMOCAP-style (N, 4, 2) labels loaded as mosi",
        iemocap,
        lambda d: None,
    )
    case(
        "mult_missing_vision.pkl",
        "mosi",
        "train/vision",
        "MulT file without vision",
        mosi,
        lambda d: drop(d["train"], "vision"),
    )

    def nan_label(d: dict) -> None:
        d["test"]["labels"][1, 0, 0] = np.nan

    case("mult_nan_label.pkl", "mosi", "test/labels", "MulT file with a NaN label", mosi, nan_label)

    def empty_test(d: dict) -> None:
        d["test"] = {key: value[:0] for key, value in d["test"].items()}

    case("mult_empty_split.pkl", "mosi", "test", "MulT file whose test split has zero samples", mosi, empty_test)


def add_label_csv(corpus: Corpus, label_csv: str) -> None:
    """MMSA label.csv files broken as spreadsheets and hand edits break them."""
    lines = label_csv.splitlines(keepends=True)
    latin1 = label_csv.replace(lines[1].split(",")[2], "très bon film", 1)
    corpus.csv_dir("csv_not_utf8", "mosi", "label.csv", "label.csv saved as Latin-1 ('très')", latin1.encode("latin-1"))

    def set_cell(row: int, column: int, value: str):
        def edit(rows: list[list[str]]) -> None:
            rows[row][column] = value

        return edit

    corpus.csv_dir(
        "csv_empty_text", "mosi", "text", "a segment with an empty transcript", edit_csv(label_csv, set_cell(3, 2, ""))
    )
    corpus.csv_dir(
        "csv_unknown_mode",
        "mosi",
        "mode",
        "mode 'holdout' instead of valid",
        edit_csv(label_csv, set_cell(8, 4, "holdout")),
    )
    corpus.csv_dir(
        "csv_label_not_number",
        "mosi",
        "label",
        "label 'positive' instead of a score",
        edit_csv(label_csv, set_cell(2, 3, "positive")),
    )
    corpus.csv_dir(
        "csv_label_decimal_comma",
        "mosi",
        "label",
        "label '1,2' written with a decimal comma",
        edit_csv(label_csv, set_cell(2, 3, "1,2")),
    )
    corpus.csv_dir(
        "csv_label_out_of_range",
        "mosi",
        "label",
        "label 6.0 outside MOSI's [-3, 3]",
        edit_csv(label_csv, set_cell(5, 3, "6.0")),
    )

    def duplicate(rows: list[list[str]]) -> None:
        rows.insert(3, list(rows[1]))

    corpus.csv_dir(
        "csv_duplicate_segment",
        "mosi",
        "video_id,clip_id",
        "the same (video_id, clip_id) twice",
        edit_csv(label_csv, duplicate),
    )

    def drop_label(rows: list[list[str]]) -> None:
        for row in rows:
            del row[3]

    corpus.csv_dir("csv_missing_columns", "mosi", "columns", "no label column", edit_csv(label_csv, drop_label))
    corpus.csv_dir("csv_header_only", "mosi", "rows", "header line and no segments", lines[0])

    def no_test(rows: list[list[str]]) -> None:
        for row in rows[1:]:
            row[4] = "valid" if row[4] == "test" else row[4]

    corpus.csv_dir("csv_no_test_rows", "mosi", "mode", "no segment marked test", edit_csv(label_csv, no_test))

    def sims(rows: list[list[str]]) -> None:
        rows[0][4:4] = ["label_T", "label_A", "label_V", "annotation"]
        for i, row in enumerate(rows[1:]):
            score = f"{float(row[3]) / 3:.4f}"
            row[3] = score
            row[4:4] = [score, score, score, "Positive" if float(score) > 0 else "Negative"]
            if i == 4:
                row[4] = "1.6"

    corpus.csv_dir(
        "sims_label_T_out_of_range",
        "sims",
        "label_T",
        "SIMS label.csv with label_T = 1.6 (scale [-1, 1])",
        edit_csv(label_csv, sims),
    )


def add_csd(corpus: Corpus, good: dict) -> None:
    """Directories of label.csv + CMU-MultimodalSDK .csd files (labels and COVAREP audio), one thing broken in each."""
    audio, vision, labels = "CMU_MOSI_COVAREP.csd", "CMU_MOSI_Visual_Facet_42.csd", "CMU_MOSI_Opinion_Labels.csd"
    first_video = sorted(good[labels][1])[0]

    def case(rel: str, field: str, description: str, edit) -> None:
        files = {name: content for name, content in copy.deepcopy(good).items() if name != vision}
        edit(files)
        write_csd_dir(corpus.add(rel, "mosi", field, description), files)

    def short_intervals(files: dict) -> None:
        feats, ivs = files[audio][1][first_video]
        files[audio][1][first_video] = (feats, ivs[:-3])

    case(
        "csd_intervals_features_differ",
        f"data/{first_video}/intervals",
        "COVAREP .csd: a video has 3 fewer intervals than feature rows",
        short_intervals,
    )
    case(
        "csd_not_hdf5",
        "file",
        "COVAREP .csd is an HTML error page saved by a browser",
        lambda f: f.update({audio: b"<html><body><h1>404 Not Found</h1></body></html>\n"}),
    )

    def labels_disagree(files: dict) -> None:
        feats, ivs = files[labels][1][first_video]
        feats = feats.copy()
        feats[1, 0] += 1.0
        files[labels][1][first_video] = (feats, ivs)

    case(
        "csd_labels_disagree",
        f"data/{first_video}/features",
        "labels .csd score differs from label.csv by 1.0",
        labels_disagree,
    )
    case("csd_without_labels", "*Labels*.csd", "feature .csd files but no labels .csd", lambda f: drop(f, labels))

    def nan_audio(files: dict) -> None:
        feats, ivs = files[audio][1][first_video]
        feats = feats.copy()
        feats[2, 1] = np.nan
        files[audio][1][first_video] = (feats, ivs)

    case("csd_nan_features", f"data/{first_video}/features", "COVAREP .csd with a NaN feature", nan_audio)
    case(
        "csd_two_audio_files",
        "audio",
        "two audio .csd (COVAREP and OpenSMILE)",
        lambda f: f.update({"CMU_MOSI_openSMILE_IS09.csd": f[audio]}),
    )
    case(
        "csd_unknown_name",
        "file name",
        "a feature .csd whose name gives no modality",
        lambda f: f.update({"CMU_MOSI_extra.csd": f.pop(audio)}),
    )
    case(
        "csd_labels_missing_video",
        f"data/{first_video}",
        "labels .csd lacks a video of label.csv",
        lambda f: drop(f[labels][1], first_video),
    )

    def truncated(files: dict) -> None:
        scratch = Path(tempfile.mkdtemp(prefix="bad_inputs_csd_"))
        try:
            write_csd_raw(scratch / audio, *files[audio])
            data = (scratch / audio).read_bytes()
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        files[audio] = data[: len(data) // 2]

    case("csd_truncated", "file", "COVAREP .csd cut off half way (interrupted download)", truncated)


def add_other(corpus: Corpus, label_csv: str) -> None:
    directory = corpus.add(
        "no_accepted_files", "mosi", "mosi", "a directory with none of the accepted file names (labels.csv, notes.txt)"
    )
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "labels.csv").write_text(label_csv, encoding="utf-8")
    (directory / "notes.txt").write_text("CMU-MOSI, downloaded 2021\n", encoding="utf-8")
    array = io.BytesIO()
    np.save(array, np.zeros((2, 3), np.float32))
    corpus.raw("features.npy", "mosi", "--data", "--data points at a .npy array, not a dataset file", array.getvalue())
    table = "video_id,clip_id,audio_0,audio_1,vision_0\n"
    rows = list(csv.reader(io.StringIO(label_csv)))[1:]
    for i, row in enumerate(rows):
        table += f"{row[0]},{row[1]},{0.1 * i:.1f},{'nan' if i == 4 else '0.5'},0.2\n"
    directory = corpus.csv_dir(
        "feature_table_nan", "mosi", "audio_1", "utterance_features.csv with 'nan' in audio_1", label_csv
    )
    (directory / "utterance_features.csv").write_text(table, encoding="utf-8")
    directory = corpus.csv_dir(
        "feature_table_missing_segment",
        "mosi",
        "video_id,clip_id",
        "utterance_features.csv lacks a labelled segment",
        label_csv,
    )
    (directory / "utterance_features.csv").write_text(
        "".join(table.replace("nan", "0.4").splitlines(keepends=True)[:-1]), encoding="utf-8"
    )


def main(argv: list[str] | None = None) -> Path:
    argv = sys.argv[1:] if argv is None else argv
    root = Path(argv[0]).resolve() if argv else HERE
    root.mkdir(parents=True, exist_ok=True)
    for child in root.iterdir():  # rewrite: nothing stale survives
        if child.name not in KEEP:
            shutil.rmtree(child) if child.is_dir() else child.unlink()
    corpus = build(root)
    print(f"{len(corpus.cases)} cases in {root}")
    return root


if __name__ == "__main__":
    main()
