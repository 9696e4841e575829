"""`python -m ray_msa.sweep`: a grid of fixed configurations, each a K-fold CV on Ray (Tune grid
search over the points, a Ray Train run per point), recorded as sweep -> point -> fold runs
with the table and plot on the sweep run; bad input stops before Ray starts."""

from __future__ import annotations

import csv
import io
import math

import numpy as np
import pytest
import ray
from conftest import library_records, new_store
from mlflow.tracking import MlflowClient

from ray_msa.data.synthetic_files import write_mult_pickle
from ray_msa.search_space import trial_config
from ray_msa.sweep import Cell, main, parse_axis, plot_sweep, render_table

TINY = {"text": (12, 30), "audio": (20, 5), "vision": (20, 8)}  # MulT features: no transcripts, no LM


@pytest.mark.parametrize(
    "args, line",
    [
        (["--param", "lr", "--values", "1e-3,fast"], "error: --values: lr=fast: expected a number, got 'fast'. Fix: "),
        (
            ["--param", "lrr", "--values", "1e-3"],
            "error: --param: lrr: not a training or model setting of lf_dnn. Fix: did you mean 'lr'?",
        ),
        (["--param", "lr", "--values", "1e-3", "--param2", "hidden", "--values2", "32,0"], "hidden=0: 0 is below 1"),
    ],
)
def test_bad_input_exits_2_with_one_line_before_ray(args, line, tmp_path, capsys, no_ray):
    db = tmp_path / "mlflow.db"
    with pytest.raises(SystemExit) as stopped:
        main(["mosi", "--arch", "lf_dnn", *args, "--tracking-uri", f"sqlite:///{db}"])
    err = capsys.readouterr().err.strip()
    assert stopped.value.code == 2 and len(err.splitlines()) == 1, err
    assert line in err, err
    assert not db.exists()  # nothing written to MLflow


def test_plots_heat_map_for_two_settings_and_log_or_categorical_axes_for_one(tmp_path):
    base = trial_config("mtl")
    heads, ffn = (
        parse_axis(base, "heads", "2,4", "--param", "--values"),
        parse_axis(base, "model.ffn", "128,256,512", "--param2", "--values2"),
    )
    assert (heads.section, heads.values, ffn.values) == ("model", (2, 4), (128, 256, 512))
    cells = [
        Cell(f"heads={h},ffn={f}", (i, j), {"MAE": 0.8 + 0.01 * i + 0.02 * j}, {"MAE": 0.01}, {"MAE": []})
        for i, h in enumerate(heads.written)
        for j, f in enumerate(ffn.written)
    ]
    figure = plot_sweep([heads, ffn], cells, "MAE", "mtl on mosi")
    ax = figure.axes[0]
    grid = ax.images[0].get_array()
    assert grid.shape == (3, 2) and grid[2, 1] == pytest.approx(0.85)  # rows: ffn, columns: heads
    assert sorted(t.get_text() for t in ax.texts) == sorted(
        f"{0.8 + 0.01 * i + 0.02 * j:.3f}\n± 0.010" for i in range(2) for j in range(3)
    )
    assert [t.get_text() for t in ax.get_xticklabels()] == ["2", "4"] and ax.get_ylabel() == "ffn"
    path = tmp_path / "heat.png"
    figure.savefig(path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    lr = parse_axis(base, "train.lr", "1e-4,1e-3,3e-3", "--param", "--values")
    assert lr.values == (1e-4, 1e-3, 3e-3) and isinstance(lr.values[0], float)
    one = [Cell(f"lr={w}", (i,), {"MAE": 1.0 - i / 10}, {"MAE": 0.05}, {}) for i, w in enumerate(lr.written)]
    assert plot_sweep([lr], one, "MAE", "t").axes[0].get_xscale() == "log"
    optimizer = parse_axis(base, "optimizer", "adamw,sgd", "--param", "--values")
    named = plot_sweep([optimizer], one[:2], "MAE", "t").axes[0]
    assert named.get_xscale() == "linear" and [t.get_text() for t in named.get_xticklabels()] == ["adamw", "sgd"]
    md = render_table([heads, ffn], cells[:1], ("MAE",), "md").splitlines()
    assert md == ["| heads | ffn | MAE |", "|---|---|---|", "| 2 | 128 | 0.8000 ± 0.0100 |"]


@pytest.mark.slow
def test_a_sweep_of_two_values_records_two_points_of_k_folds(tmp_path, capsys, ray_cluster, library_loggers):
    data = tmp_path / "mosi"
    write_mult_pickle(data, "mosi", sizes=(48, 16, 16), shapes=TINY)
    uri = new_store(tmp_path / "mlflow.db")
    plot, out = tmp_path / "lr.png", tmp_path / "lr.csv"
    ray.init(logging_level="WARNING")  # the caller's Ray (the test run's cluster), which the sweep joins
    try:
        code = main(
            ["mosi", "--data", str(data), "--arch", "lf_dnn", "--param", "lr", "--values", "1e-3,3e-2"]
            + ["--folds", "2", "--epochs", "1", "--cpus-per-worker", "0.5", "--tracking-uri", uri]
            + ["--storage", str(tmp_path / "ray_results"), "--plot", str(plot), "--out", str(out), "--format", "csv"]
        )
    finally:
        ray.shutdown()
    printed, err = capsys.readouterr()
    assert code == 0, printed[-3000:]
    log = (tmp_path / "ray_results" / "libraries.log").resolve()  # where the libraries' messages went
    assert library_records(printed + err) == [] and log.is_file()
    assert f"Ray's, Tune's, MLflow's and Optuna's messages: {log} (--verbose prints them)" in printed  # its last line
    assert "2 concurrent trial(s)" in printed  # both points side by side on the 2 CPUs
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert [r["lr"] for r in rows] == ["1e-3", "3e-2"]
    for row in rows:
        for metric in ("MAE", "Corr", "Acc7"):
            folds = [float(v) for v in row[f"{metric}_folds"].split(";")]
            assert len(folds) == 2 and all(math.isfinite(v) for v in folds)
            assert float(row[f"{metric}_mean"]) == pytest.approx(np.mean(folds), abs=1e-12)
            assert float(row[f"{metric}_std"]) == pytest.approx(np.std(folds), abs=1e-12)
    assert rows[0]["MAE_mean"] != rows[1]["MAE_mean"]
    assert plot.read_bytes()[:4] == b"\x89PNG"

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("ray_msa-mosi")
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    by_role: dict[str, list] = {}
    for run in runs:
        by_role.setdefault(run.data.tags.get("role"), []).append(run)
    (parent,) = by_role["sweep"]
    points, folds = by_role["sweep-point"], by_role["fold"]
    assert sorted(p.data.tags["point"] for p in points) == ["lr=1e-3", "lr=3e-2"]
    assert all(p.data.tags["mlflow.parentRunId"] == parent.info.run_id for p in points)
    for point in points:
        under = [f for f in folds if f.data.tags["mlflow.parentRunId"] == point.info.run_id]
        assert sorted(f.data.tags["fold"] for f in under) == ["0", "1"]
        row = next(r for r in rows if f"lr={r['lr']}" == point.data.tags["point"])
        assert float(point.data.params["train.lr"]) == float(row["lr"])
        assert point.data.metrics["mean_MAE"] == pytest.approx(float(row["MAE_mean"]))
        assert sorted(f.data.metrics["MAE"] for f in under) == pytest.approx(
            sorted(map(float, row["MAE_folds"].split(";")))
        )
    assert len(folds) == 4 and all(r.info.status == "FINISHED" for r in runs)
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"sweep.png", "sweep.csv", "sweep.md"} <= artifacts
    logged = client.download_artifacts(parent.info.run_id, "sweep.csv", str(tmp_path))
    assert open(logged).read() == out.read_text()
    assert parent.data.params["sweep.lr"] == "1e-3,3e-2" and "train.lr" not in parent.data.params
