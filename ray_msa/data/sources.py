"""Find and read a dataset by name: the embedded MOSI copy, or any directory (--data)."""

from __future__ import annotations

from pathlib import Path

from ray_msa.data.dataset import MSADataset
from ray_msa.data.mmsa_csv import FEATURE_TABLE_NAMES, load_mmsa_csv_dir
from ray_msa.errors import InputError

EMBEDDED = Path(__file__).parent / "embedded"
KNOWN = ("mosi", "mosei", "sims", "iemocap")
LABEL_RANGES = {"sims": (-1.0, 1.0)}
ACCEPTED = "label.csv (MMSA layout) with an optional " + " / ".join(FEATURE_TABLE_NAMES)


def dataset_dir(name: str, data: str | Path | None) -> Path:
    """Where the files of `name` are: --data if given, else the embedded copy."""
    if data is not None:
        path = Path(data).expanduser().resolve()
        if not path.exists():
            raise InputError(path, "--data", "no such directory", f"point --data at a directory holding {ACCEPTED}")
        return path
    embedded = EMBEDDED / name
    if embedded.is_dir():
        return embedded
    raise InputError(
        f"--data (looked in {embedded})", name, "no embedded copy of this dataset ships with ray_msa",
        f"download it and pass --data DIR, where DIR holds {ACCEPTED}",
    )


def load_dataset(name: str, data: str | Path | None = None) -> MSADataset:
    """Read dataset `name` from `data` (or its embedded copy) and validate it."""
    directory = dataset_dir(name, data)
    if directory.is_file():
        directory = directory.parent
    if not (directory / "label.csv").is_file():
        raise InputError(directory / "label.csv", "label.csv", "file not found", f"put in {directory} {ACCEPTED}")
    return load_mmsa_csv_dir(directory, name, LABEL_RANGES.get(name, (-3.0, 3.0)))
