"""MLflow bookkeeping: idempotent child runs, no secrets in parameters, plots as artifacts."""

import pytest
from conftest import new_store

from ray_msa.tracking import Tracker, public_params


def test_child_runs_are_found_again_and_plots_are_logged(tmp_path):
    tracker = Tracker(new_store(tmp_path / "mlflow.db"))
    experiment = tracker.experiment("ray_msa-test")
    parent = tracker.start(experiment, "trial", {"role": "trial"})
    first = tracker.child(parent, "fold-0", {"role": "fold", "fold": "0"})
    tracker.finish(first, "KILLED")
    again = tracker.child(parent, "fold-0", {"role": "fold", "fold": "0"})  # a restarted worker
    assert again == first and tracker.client.get_run(first).info.status == "RUNNING"
    assert len(tracker.children(parent)) == 1
    history = [{"train_omega_T": 1.0 - 0.1 * e, "train_omega_A": 1.0 + 0.1 * e, "train_loss": 1.0} for e in range(3)]
    tracker.plot_history(first, history, ("omega_", "grad_"))
    artifacts = [a.path for a in tracker.client.list_artifacts(first)]
    assert artifacts == ["omega_over_epochs.png"]


def test_secrets_never_become_parameters():
    params = public_params(
        {"lr": 0.1, "aws_secret_access_key": "x", "db_password": "y", "hf_token": "z", "_private": 1}
    )
    assert params == {"lr": "0.1"}


def test_a_locked_store_is_retried_and_each_value_logged_once(tmp_path, monkeypatch):
    from mlflow.exceptions import MlflowException

    tracker = Tracker(new_store(tmp_path / "mlflow.db"))
    run = tracker.start(tracker.experiment("ray_msa-test"), "trial", {"role": "trial"})
    real, calls = tracker.client.log_batch, []

    def locked_three_times(*args, **kwargs):
        calls.append(kwargs)
        if len(calls) <= 3:  # what SQLite answers another writer holding the lock
            raise MlflowException("(sqlite3.OperationalError) database is locked")
        return real(*args, **kwargs)

    monkeypatch.setattr(tracker.client, "log_batch", locked_three_times)
    tracker.metrics(run, {"val_MAE": 0.8, "val_Corr": 0.6}, step=0)
    assert len(calls) == 4  # three refusals, then the write
    for key, value in (("val_MAE", 0.8), ("val_Corr", 0.6)):
        assert [(m.step, m.value) for m in tracker.client.get_metric_history(run, key)] == [(0, value)]
    tracker.metrics(run, {"val_MAE": 0.8}, step=0)  # a replay after a restart logs nothing again
    assert len(calls) == 4 and len(tracker.client.get_metric_history(run, "val_MAE")) == 1

    def always_locked(*args, **kwargs):
        raise MlflowException("database is locked")

    monkeypatch.setattr(tracker.client, "log_batch", always_locked)
    monkeypatch.setattr("ray_msa.tracking.time.sleep", lambda s: None)
    with pytest.raises(MlflowException, match="locked"):  # a store that stays locked fails loudly, not silently
        tracker.metrics(run, {"val_MAE": 0.7}, step=1)

    def other_error(*args, **kwargs):
        calls.append("other")
        raise MlflowException("no such table: metrics")

    monkeypatch.setattr(tracker.client, "log_batch", other_error)
    with pytest.raises(MlflowException, match="no such table"):  # only a lock is retried
        tracker.metrics(run, {"val_MAE": 0.7}, step=2)
    assert calls.count("other") == 1
