"""Every broken dataset file of `tests/bad_inputs/` ends in one line naming the file, the
field and a fix (exit code 2, no traceback), runs none of its code, and damages nothing
already written (the HDF5 dataset cache, an MLflow store). The corpus is written by
`tests/bad_inputs/make_corpus.py`; `cases.csv` lists path, dataset name, field, description.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import ray_msa.data.text  # noqa: F401  (tune.main imports these lazily; import them here so no import-time
import ray_msa.models  # noqa: F401  output lands inside a captured stderr)
import ray_msa.search_space  # noqa: F401
import ray_msa.study  # noqa: F401
from ray_msa import tune
from ray_msa.data import load_dataset
from ray_msa.errors import InputError

CORPUS = Path(__file__).resolve().parent / "bad_inputs"
CASES = list(csv.DictReader((CORPUS / "cases.csv").open(encoding="utf-8")))
BY_PATH = {case["path"]: case for case in CASES}
MARKER_ENV = "RAY_MSA_BAD_INPUT_MARKER"
MALICIOUS = ("malicious_os_system.pkl", "malicious_exec.pkl")
GOOD_NEG_INF = CORPUS / "good" / "mmsa_neginf_audio.pkl"
GOOD_CSD = CORPUS / "good" / "csd_mosi"
NUMPY_REPR = re.compile(r"\bnp\.\w+\(|dtype=|array\(")

# Cases that once exposed reader bugs (fixed): kept empty so a regression shows as a plain failure.
RAISES_OTHER: dict[str, str] = {}
BAD_MESSAGE: dict[str, str] = {}


def cases(xfail: dict[str, str]) -> list:
    return [
        pytest.param(
            c,
            id=c["path"],
            marks=[pytest.mark.xfail(strict=True, reason=xfail[c["path"]])] if c["path"] in xfail else [],
        )
        for c in CASES
    ]


def files(root: Path) -> dict[str, str]:
    """sha256 of every file under `root`, by relative path (hidden and temporary files included)."""
    return (
        {
            str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*"))
            if p.is_file()
        }
        if root.exists()
        else {}
    )


def cli_args(case: dict[str, str], tmp: Path) -> list[str]:
    return [
        case["dataset"],
        "--data",
        str(CORPUS / case["path"]),
        "--tracking-uri",
        f"sqlite:///{tmp}/mlflow.db",
        "--storage",
        str(tmp / "ray"),
    ]


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """A fresh cache, cwd and marker location; nothing of the user's is reachable."""
    monkeypatch.setenv("RAY_MSA_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv(MARKER_ENV, str(tmp_path / "PWNED"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_corpus_is_complete():
    assert len(CASES) >= 30
    listed = {c["path"] for c in CASES}
    on_disk = {p.name for p in CORPUS.iterdir()} - {"make_corpus.py", "cases.csv", "good", "__pycache__"}
    assert listed == on_disk
    assert all(c["dataset"] in ("mosi", "mosei", "sims", "iemocap") and c["field"] and c["description"] for c in CASES)
    assert set(MALICIOUS) <= listed and set(RAISES_OTHER) | set(BAD_MESSAGE) <= listed


def test_generator_is_deterministic_and_matches_the_corpus(tmp_path):
    """Two runs write the same bytes; the committed corpus has the same cases and files. (Bytes are not
    compared with the committed copy: they follow `ray_msa.data.synthetic`, which may change.)"""
    spec = importlib.util.spec_from_file_location("make_corpus", CORPUS / "make_corpus.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    first, second = (files(module.main([str(tmp_path / name)])) for name in ("a", "b"))
    assert first == second
    committed = {k for k in files(CORPUS) if not k.startswith(("make_corpus.py", "__pycache__"))}
    assert set(first) == committed, "corpus out of date: run python tests/bad_inputs/make_corpus.py"
    assert (tmp_path / "a" / "cases.csv").read_bytes() == (CORPUS / "cases.csv").read_bytes()


@pytest.mark.parametrize("case", cases({**RAISES_OTHER, **BAD_MESSAGE}))
def test_load_dataset_names_file_field_and_fix(case, isolated):
    path = CORPUS / case["path"]
    with pytest.raises(InputError) as info:
        load_dataset(case["dataset"], path, cache_root=isolated / "cache")
    err, message = info.value, str(info.value)
    assert "\n" not in message and "\r" not in message
    assert str(path) in err.source, f"the error must name {path}: {message}"
    assert case["field"] in err.field, f"expected field {case['field']!r}: {message}"
    assert err.problem.strip() and err.fix.strip() and err.fix.strip() != err.problem.strip()
    assert message == f"{err.source}: {err.field}: {err.problem}. Fix: {err.fix}"
    assert not NUMPY_REPR.search(message), f"Python/NumPy repr in a user message: {message}"
    assert "Traceback" not in message
    if case["path"] in ("no_accepted_files", "features.npy"):  # the user learns what to put where
        assert "unaligned_50.pkl" in err.fix and "mosi_data.pkl" in err.fix and "label.csv" in err.fix
    assert files(isolated / "cache") == {}, "a failed load must leave no cache file (nor a .tmp)"
    assert not (isolated / "PWNED").exists()


@pytest.mark.parametrize("case", cases(RAISES_OTHER))
def test_cli_prints_one_line_and_exits_2(case, isolated, capsys):
    with pytest.raises(SystemExit) as info:
        tune.main(cli_args(case, isolated))
    assert info.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.endswith("\n") and len(err.splitlines()) == 1, err
    line = err.rstrip("\n")
    assert line.startswith("error: ") and "Traceback" not in line
    assert str(CORPUS / case["path"]) in line and f": {case['field']}" in line and ". Fix: " in line
    assert sorted(p.name for p in isolated.iterdir()) == [], "nothing (cache, mlflow.db, ray storage) may be created"


def test_real_entry_point(isolated):
    """`python -m ray_msa.tune` itself: same one line and exit 2, and the malicious pickle runs nothing."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    chosen = ["malicious_os_system.pkl", "csv_not_utf8", "no_accepted_files"]
    runs = {}
    for name in chosen:
        work = isolated / name
        work.mkdir()
        env_case = dict(env, RAY_MSA_CACHE=str(work / "cache"), **{MARKER_ENV: str(work / "PWNED")})
        runs[name] = (
            work,
            subprocess.Popen(
                [sys.executable, "-m", "ray_msa.tune", *cli_args(BY_PATH[name], work)],
                cwd=work,
                env=env_case,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            ),
        )
    for name, (work, proc) in runs.items():
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 2, (name, out, err)
        assert out == "" and "Traceback" not in err
        assert len(err.splitlines()) == 1 and err.startswith("error: "), err
        assert str(CORPUS / name) in err and f": {BY_PATH[name]['field']}" in err
        assert sorted(p.name for p in work.iterdir()) == [], name
        assert not (work / "PWNED").exists()


@pytest.mark.parametrize("name", MALICIOUS)
def test_malicious_pickle_never_runs(name, isolated, capsys):
    marker = isolated / "PWNED"
    with pytest.raises(InputError, match="refused global"):
        load_dataset("mosi", CORPUS / name, cache_root=isolated / "cache")
    with pytest.raises(SystemExit):
        tune.main(cli_args(BY_PATH[name], isolated))
    assert "refused global" in capsys.readouterr().err
    assert not marker.exists()


@pytest.mark.parametrize("name", MALICIOUS)
def test_malicious_pickle_is_really_malicious(name, tmp_path):
    """Plain pickle.load (in a child process) does run the payload: the test above proves something."""
    marker = tmp_path / "PWNED"
    env = dict(os.environ, **{MARKER_ENV: str(marker)})
    subprocess.run(
        [sys.executable, "-c", "import pickle, sys; pickle.load(open(sys.argv[1], 'rb'))", str(CORPUS / name)],
        env=env,
        cwd=tmp_path,
        check=True,
        capture_output=True,
        timeout=60,
    )
    assert marker.exists()


def test_neg_inf_audio_is_repaired_not_an_error(isolated):
    dataset = load_dataset("mosi", GOOD_NEG_INF, cache_root=isolated / "cache")
    assert dataset.notes == {"audio -inf set to 0": "6"}  # two frames per split
    for split in dataset.splits.values():
        assert np.isfinite(np.asarray(split.audio)).all()
    assert "audio -inf set to 0" in dataset.summary()
    csd = load_dataset("mosi", GOOD_CSD, cache_root=isolated / "cache")
    assert csd.modalities == ("text", "audio", "vision") and len(csd.splits["train"]) == 6


def test_bad_inputs_damage_nothing_already_written(isolated, capsys):
    """A good dataset's HDF5 cache and an MLflow store with one run survive every bad case byte for byte."""
    import mlflow

    store = isolated / "mlflow"
    store.mkdir()
    uri = f"sqlite:///{store / 'mlflow.db'}"
    good = {
        path: load_dataset("mosi", path).fingerprint() for path in (GOOD_NEG_INF, GOOD_CSD)
    }  # cache: $RAY_MSA_CACHE
    client = mlflow.MlflowClient(uri)
    experiment = client.create_experiment("kept", artifact_location=(store / "artifacts").as_uri())
    run = client.create_run(experiment, run_name="kept").info.run_id
    client.log_metric(run, "MAE", 0.5)
    client.set_terminated(run)
    cache_files = [name for name in files(isolated / "cache") if name.endswith(".h5")]
    assert len(cache_files) == 2
    before, corpus_before = files(isolated), files(CORPUS)
    assert "mlflow/mlflow.db" in before

    for case in CASES:
        path = CORPUS / case["path"]
        known_bug = case["path"] in RAISES_OTHER  # whatever it raises, it must damage nothing
        with pytest.raises(Exception if known_bug else InputError):
            load_dataset(case["dataset"], path)
        argv = [case["dataset"], "--data", str(path), "--tracking-uri", uri, "--storage", str(isolated / "ray")]
        with pytest.raises((SystemExit, Exception) if known_bug else SystemExit) as info:
            tune.main(argv)
        assert known_bug or info.value.code == 2
    capsys.readouterr()

    assert files(isolated) == before, "a bad input changed, removed or added a file in the cache or the MLflow store"
    assert files(CORPUS) == corpus_before, "a reader wrote beside the bad inputs"
    assert not (isolated / "PWNED").exists()
    assert {path: load_dataset("mosi", path).fingerprint() for path in good} == good
    assert [m.value for m in mlflow.MlflowClient(uri).get_metric_history(run, "MAE")] == [0.5]


def test_non_utf8_error_points_at_the_bad_byte(isolated):
    path = CORPUS / "csv_not_utf8" / "label.csv"
    offset = path.read_bytes().index(b"\xe8")
    with pytest.raises(InputError) as info:
        load_dataset("mosi", path.parent, cache_root=isolated / "cache")
    assert f"byte {offset}" in str(info.value) or "line 2" in str(info.value)
