"""A built wheel carries what the package reads at run time: every architecture's search space,
the DeepSpeed template and the embedded CMU-MOSI, so `pip install .` (not editable) works from
any directory."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from ray_msa.models import REGISTRY

ROOT = Path(__file__).resolve().parents[1]


def test_the_wheel_holds_the_spaces_the_deepspeed_template_and_the_embedded_data(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source)
    shutil.copytree(ROOT / "ray_msa", source / "ray_msa", ignore=shutil.ignore_patterns("__pycache__"))
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
    built = subprocess.run(
        [*pip_wheel, "-w", str(tmp_path / "w"), str(source)], capture_output=True, text=True, timeout=300
    )
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = (tmp_path / "w").glob("ray_msa-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {f"ray_msa/spaces/{spec.space}" for spec in REGISTRY.values()} | {
        "ray_msa/train/deepspeed.json",
        "ray_msa/data/embedded/mosi/label.csv",
        "ray_msa/data/embedded/mosi/ATTRIBUTION.md",
    }
    assert expected <= names, sorted(expected - names)
    assert not [n for n in names if n.startswith("tune_spaces/")]
