"""End-to-end studies through the real command: Ray Tune + Ray Train + MLflow."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from ray_msa.data.synthetic import make_synthetic, write_label_csv
from ray_msa.metrics import METRICS

pytestmark = pytest.mark.slow


def tune(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}  # mlflow.set_tracking_uri exports it
    env["RAY_MSA_STORAGE"] = str(cwd / "ray_results")
    return subprocess.run(
        [sys.executable, "-m", "ray_msa.tune", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900
    )


def runs_by_role(tracking_uri: str, experiment: str) -> dict[str, list]:
    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    out: dict[str, list] = {}
    for run in runs:
        out.setdefault(run.data.tags.get("role"), []).append(run)
    return out


def test_study_on_embedded_mosi_records_the_tree(tmp_path):
    done = tune("mosi", "--trials", "2", "--folds", "2", "--epochs", "1", cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Has0_Acc2" in done.stdout and "test" in done.stdout
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    runs = runs_by_role(uri, "ray_msa-mosi")
    assert len(runs["study"]) == 1 and len(runs["trial"]) == 2 and len(runs["fold"]) == 4
    study = runs["study"][0]
    trial_ids = {r.info.run_id for r in runs["trial"]}
    assert all(r.data.tags["mlflow.parentRunId"] == study.info.run_id for r in runs["trial"])
    assert all(r.data.tags["mlflow.parentRunId"] in trial_ids for r in runs["fold"])
    for name in METRICS:
        assert f"test_{name}" in study.data.metrics and f"cv_mean_{name}" in study.data.metrics
        assert all(f"mean_{name}" in r.data.metrics and f"std_{name}" in r.data.metrics for r in runs["trial"])
        assert all(name in r.data.metrics and f"val_{name}" in r.data.metrics for r in runs["fold"])
    assert all(r.info.status == "FINISHED" for group in runs.values() for r in group)
    assert study.data.tags["data_fingerprint"] and study.data.tags["mlflow.source.git.commit"]
    assert study.data.params["folds"] == "2" and "best.lr" in study.data.params
    client = MlflowClient(uri)
    history = client.get_metric_history(runs["fold"][0].info.run_id, "val_MAE")
    assert [m.step for m in history] == [0]
    # the final model is an MLflow model that predicts
    import mlflow.pytorch
    import numpy as np

    from ray_msa.data import load_dataset
    from ray_msa.data.text import prepare_text
    from ray_msa.train.batches import batches, in_order

    model_runs = client.search_logged_models([study.info.experiment_id])
    assert len(model_runs) == 1
    mlflow.set_tracking_uri(uri)
    model = mlflow.pytorch.load_model(model_runs[0].model_uri)
    test = prepare_text(load_dataset("mosi"), "frozen").splits["test"]
    batch = next(batches(test, in_order(np.arange(8), 8)))
    assert model(batch).prediction.shape == (8,)
    # the comparison table reads the same store
    from ray_msa.compare import collect, render

    rows = collect(uri, "mosi")
    assert [(r["arch"], r["dataset"], r["trials"]) for r in rows] == [("mtl", "mosi", 2)]
    assert rows[0]["test_MAE"] == study.data.metrics["test_MAE"]
    table = render(rows, "md")
    assert table.startswith("| arch | dataset |") and "| mtl | mosi | 2 |" in table
    assert render(rows, "csv").splitlines()[0].startswith("arch,dataset,folds,CV MAE")


def test_text_only_label_csv_directory(tmp_path):
    data = tmp_path / "mydata"
    write_label_csv(make_synthetic(sizes=(60, 20, 20)), data)
    done = tune(
        "mosei", "--data", str(data), "--trials", "1", "--folds", "2", "--epochs", "1", "--workers", "2", cwd=tmp_path
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "modalities text" in done.stdout
    runs = runs_by_role(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}", "ray_msa-mosei")
    assert len(runs["fold"]) == 2 and runs["study"][0].data.params["workers"] == "2"


def test_a_time_budget_cut_leaves_no_run_running(tmp_path):
    """Tune's time budget ends the study mid-fold: the cut trial is closed in MLflow (KILLED,
    tagged), the best of what ran is retrained, and the study run finishes."""
    space = tmp_path / "endless.yaml"
    space.write_text(
        "study: {time_budget_min: 0.75}\n"
        "train: {max_epochs: 100000, patience: 100000, batch_size: 32}\n"
        "space: {hidden: 32, post_fusion: 32, dropout: 0.1, lr: {loguniform: [1.0e-3, 2.0e-3]}}\n"
    )
    done = tune("mosi", "--arch", "lf_dnn", "--trials", "2", "--folds", "2", "--space", str(space), cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "time budget of 0.75 min used" in done.stdout and "cut mid-trial (KILLED in MLflow)" in done.stdout
    runs = runs_by_role(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}", "ray_msa-mosi")
    assert runs["study"][0].info.status == "FINISHED"
    assert not [r for group in runs.values() for r in group if r.info.status == "RUNNING"]
    cut = [r for r in runs["trial"] if r.data.tags.get("stopped_by") == "time budget"]
    assert cut and all(r.info.status == "KILLED" for r in cut)
    assert all(
        r.info.status == "KILLED"
        for r in runs["fold"]
        if r.data.tags["mlflow.parentRunId"] in {c.info.run_id for c in cut}
    )
