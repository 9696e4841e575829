"""MLflow bookkeeping: idempotent child runs, no secrets in parameters, plots as artifacts."""

from ray_msa.tracking import Tracker, public_params


def test_child_runs_are_found_again_and_plots_are_logged(tmp_path):
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}")
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
