"""The GPU check cannot rot between device loans: its CPU dry run goes through the same wrapper,
rows and agreement checks, and a row that disagrees with fp32 DDP fails it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ROWS = {f"{arch}/{row}" for arch in ("mtl", "mult") for row in ("ddp-fp32", "ddp-bf16", "ds-z0", "ds-z2")}


def dry_run(out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OUT": str(out), "PYTHON": sys.executable}
    return subprocess.run(
        ["bash", str(ROOT / "bench" / "gpu_check.sh"), "--cpu-dry-run", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        cwd=ROOT,
    )


def test_cpu_dry_run_trains_every_row_and_the_engines_agree(tmp_path: Path) -> None:
    done = dry_run(tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    rows = {r["id"]: r for r in report["rows"]}
    assert set(rows) == ROWS
    assert report["verdict"] == "ok" and report["failures"] == []
    for r in rows.values():
        assert r["ok"] and r["error"] is None
        assert r["samples_per_s"] > 0 and r["timed_samples"] > 0
    for arch in ("mtl", "mult"):
        reference = rows[f"{arch}/ddp-fp32"]["loss"]
        # DeepSpeed on CPU trains in fp32: the same arithmetic as DDP, up to summation order
        for row in ("ds-z0", "ds-z2"):
            assert abs(rows[f"{arch}/{row}"]["loss"] - reference) <= 1e-4 * reference
        # bf16 autocast really ran in bf16 (it moved the loss), within the stated tolerance
        bf16 = rows[f"{arch}/ddp-bf16"]
        assert bf16["precision"] == "bf16-autocast"
        assert 0 < abs(bf16["loss"] - reference) <= 3e-2 * reference
    assert "| arch | row |" in (tmp_path / "gpu_check.md").read_text()
    assert "AGREEMENT OK" in (tmp_path / "gpu_check.log").read_text()
    assert "training loop imported" not in done.stdout


def test_a_row_that_disagrees_fails_the_check(tmp_path: Path) -> None:
    done = dry_run(tmp_path, "--arch", "mult", "--perturb-row", "mult/ds-z2")
    assert done.returncode == 1, done.stdout[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["verdict"] == "failed"
    assert [f.split(" ")[0] for f in report["failures"]] == ["mult/ds-z2"]
    assert "AGREEMENT FAILED" in done.stdout
