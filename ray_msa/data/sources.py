"""Find a dataset by name, read whichever public format it is in, and cache it in HDF5.

Where: `--data PATH` (a directory or one file), else `$RAY_MSA_DATA/<name>`, else
`./data/<name>`, else the copy embedded in the package (MOSI only). What: in a
directory, the first of an MMSA pickle, a MulT pickle, or an MMSA `label.csv` (with an
optional utterance feature table, or CMU-MultimodalSDK `.csd` feature files aligned to
the segments of a labels `.csd`). Every source is converted once into an HDF5 cache
(see `h5cache`); later loads read the cache.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any

from ray_msa.data.dataset import MSADataset
from ray_msa.data.h5cache import H5Rows, cache_path, read_cache, write_cache
from ray_msa.data.mmsa_csv import FEATURE_TABLE_NAMES, load_mmsa_csv_dir
from ray_msa.data.mmsa_pickle import PICKLE_NAMES as MMSA_FILES
from ray_msa.data.mmsa_pickle import mmsa_dataset
from ray_msa.data.mult_pickle import PICKLE_NAMES as MULT_FILES
from ray_msa.data.mult_pickle import mult_dataset
from ray_msa.data.mvsa import load_mvsa_dataset
from ray_msa.data.safe_pickle import load_pickle
from ray_msa.data.text import cache_dir
from ray_msa.errors import InputError

EMBEDDED = Path(__file__).parent / "embedded"
KNOWN = ("mosi", "mosei", "sims", "iemocap", "mvsa")
MVSA_FILES = "train.txt + test_without_label.txt + data/<guid>.jpg and data/<guid>.txt"
LABEL_RANGES = {"sims": (-1.0, 1.0)}
METRIC_SETS = {"sims": "sims", "iemocap": "emotions"}
TASKS = {"iemocap": "emotions", "mvsa": "classes"}  # what a model must predict; the rest are sentiment scores


def task_of(name: str) -> str:
    """The task of dataset `name`, known before any file is read (so the space is checked first)."""
    return TASKS.get(name, "score")


def accepted_files(name: str) -> list[str]:
    """The file names a directory for `name` may hold, in the order they are tried."""
    if name == "mvsa":
        return [MVSA_FILES]
    mmsa = [f for f in MMSA_FILES if ("39" in f) == (name == "sims")]
    csv = "label.csv (+ " + " or ".join(FEATURE_TABLE_NAMES[:2]) + ", or .csd feature files)"
    return [*mmsa, *MULT_FILES.get(name, ()), csv]


def search_paths(name: str, data: str | Path | None) -> list[Path]:
    if data is not None:
        return [Path(data).expanduser().resolve()]
    paths = [Path(os.environ["RAY_MSA_DATA"]).expanduser() / name] if os.environ.get("RAY_MSA_DATA") else []
    return [*paths, Path.cwd() / "data" / name, EMBEDDED / name]


def locate(name: str, data: str | Path | None) -> tuple[str, Path]:
    """(kind, path): kind is "pickle" (a file), "csv" (a directory with label.csv) or "mvsa" (image+text posts)."""
    looked = search_paths(name, data)
    for path in looked:
        if path.is_file():
            if path.suffix in (".pkl", ".pickle"):
                return "pickle", path
            if path.name == "label.csv":
                return "csv", path.parent
            raise InputError(
                path,
                "--data",
                "not a dataset file this reader knows",
                f"pass a directory or one of: {', '.join(accepted_files(name))}",
            )
        if path.is_dir() and name == "mvsa":
            if any((path / f).is_file() for f in ("train.txt", "test_without_label.txt")) and (path / "data").is_dir():
                return "mvsa", path
            continue
        if path.is_dir():
            for file_name in [*accepted_files(name)[:-1]]:
                if (path / file_name).is_file():
                    return "pickle", path / file_name
            if (path / "label.csv").is_file():
                return "csv", path
    where = ", ".join(str(p) for p in looked)
    raise InputError(
        where,
        name,
        f"no {name} data found (looked in {len(looked)} place{'s' * (len(looked) > 1)})",
        f"put one of [{', '.join(accepted_files(name))}] in one of these directories, or pass --data PATH",
    )


def read_source(name: str, kind: str, path: Path) -> MSADataset:
    """Read with the matching reader; a layout no check anticipated still ends in one InputError."""
    try:
        return _read_source(name, kind, path)
    except InputError:
        raise
    except (ValueError, TypeError, IndexError, KeyError, AttributeError, OverflowError, MemoryError) as err:
        raise InputError(
            path,
            "layout",
            f"not the layout this format defines ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''})",
            "compare the file with the format's layout in the README, or re-export it from the original source",
        ) from None


def _read_source(name: str, kind: str, path: Path) -> MSADataset:
    label_range = LABEL_RANGES.get(name, (-3.0, 3.0))
    if kind == "mvsa":
        return load_mvsa_dataset(path)
    if kind == "csv":
        return load_mmsa_csv_dir(path, name, label_range, METRIC_SETS.get(name, "mmsa"))
    data = load_pickle(path, "pickle")
    first: Any = data.get("train") if isinstance(data, dict) else None
    if isinstance(first, dict) and "labels" in first and "regression_labels" not in first:
        return mult_dataset(data, path, name, label_range)
    return mmsa_dataset(data, path, name, label_range, METRIC_SETS.get(name, "mmsa"))


def source_files(kind: str, path: Path) -> list[Path]:
    if kind == "pickle":
        return [path]
    if kind == "mvsa":
        return sorted(
            [
                *(p for p in (path / "train.txt", path / "test_without_label.txt") if p.is_file()),
                *(path / "data").iterdir(),
            ]
        )
    return sorted(
        p
        for p in path.iterdir()
        if p.is_file() and (p.name == "label.csv" or p.name in FEATURE_TABLE_NAMES or p.suffix == ".csd")
    )


def load_dataset(name: str, data: str | Path | None = None, cache_root: Path | None = None) -> MSADataset:
    """Dataset `name` from `data` (or the default places), via its HDF5 cache."""
    kind, path = locate(name, data)
    target = cache_path(cache_root or cache_dir(), name, source_files(kind, path))
    if target.is_file():
        try:
            return read_cache(target)
        except (OSError, KeyError, ValueError):  # unreadable cache: convert again (the source is the truth)
            target.unlink(missing_ok=True)
    started = time.perf_counter()
    dataset = read_source(name, kind, path)
    files = source_files(kind, path)
    listed = (
        ", ".join(p.name for p in files) if len(files) <= 20 else f"{files[0].name}, ... ({len(files)} files)"
    )  # HDF5 attributes are small
    write_cache(dataset, target, {"kind": kind, "path": str(path), "files": listed})
    print(
        f"converted {path} to the HDF5 cache {target} in {time.perf_counter() - started:.0f}s (later loads read "
        f"the cache)",
        flush=True,
    )
    return read_cache(target)


def ensure_cache_on_this_node(dataset: MSADataset) -> None:
    """A worker on another machine of a cluster may lack the driver's HDF5 cache file: it
    converts its own copy of the source (same path, same files: same cache name and bytes)."""
    files = {a.path for split in dataset.splits.values() for a in split.arrays().values() if isinstance(a, H5Rows)}
    missing = sorted(p for p in files if not os.path.exists(p))
    if not missing:
        return
    load_dataset(dataset.name, dataset.source)
    still = [p for p in missing if not os.path.exists(p)]
    if still:
        raise InputError(
            still[0],
            "HDF5 cache",
            f"absent on node {socket.gethostname()}, and its copy of {dataset.source} converts to another file",
            "give every node the same data at the same path (cluster.yaml file_mounts) and the same RAY_MSA_CACHE",
        )
