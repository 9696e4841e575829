"""Optuna's pictures of a study: the Tune trials replayed into an Optuna study with the values the
selection ranked, and the three plots logged as PNG artifacts of the study run."""

from __future__ import annotations

from types import SimpleNamespace

import optuna
import pandas as pd
import pytest
from conftest import new_store

from ray_msa.search_space import load_space
from ray_msa.study_plots import PLOTS, log_study_plots, optuna_study
from ray_msa.tracking import Tracker


def fake_results() -> list[SimpleNamespace]:
    """Four finished-looking Tune results of mtl's space; the second stopped early by ASHA."""
    out = []
    for i, (heads, lr, value) in enumerate([(2, 1e-3, 0.90), (4, 5e-4, 0.95), (8, 3e-4, 0.80), (4, 2e-3, 0.85)]):
        config = {"alpha": 1.0, "beta": 0.5, "gamma": 0.1 * i, "heads": heads, "ffn": 256, "lr": lr}
        config |= {"batch_size": 64, "dropout": 0.2}
        epochs = [1, 2] if i == 1 else [1, 2, 3]
        history = pd.DataFrame({"epoch": epochs, "mean_MAE": [value + 0.1 * (len(epochs) - e) for e in epochs]})
        metrics = {"mean_MAE": value, "cv_complete": i != 1}
        out.append(SimpleNamespace(config=config, metrics=metrics, metrics_dataframe=history))
    out.append(SimpleNamespace(config={"heads": 2}, metrics={}, metrics_dataframe=None))  # failed at once
    return out


def test_the_optuna_study_holds_what_the_selection_ranked():
    study = optuna_study(fake_results(), load_space("mtl"), "MAE", "min")
    assert [t.value for t in study.trials] == [0.90, 0.95, 0.80, 0.85]  # the failed trial has no value: left out
    assert study.best_trial.params["heads"] == 8 and study.best_value == 0.80
    assert [t.user_attrs["stopped_early"] for t in study.trials] == [False, True, False, False]
    assert study.trials[1].intermediate_values == {1: pytest.approx(1.05), 2: pytest.approx(0.95)}
    assert isinstance(study.trials[0].distributions["lr"], optuna.distributions.FloatDistribution)
    assert study.trials[0].distributions["lr"].log and study.direction == optuna.study.StudyDirection.MINIMIZE


def test_the_three_plots_are_artifacts_of_the_study_run(tmp_path):
    tracker = Tracker(new_store(tmp_path / "mlflow.db"))
    run_id = tracker.start(tracker.experiment("plots"), "study", {"role": "study"})
    study = optuna_study(fake_results(), load_space("mtl"), "MAE", "min")
    assert log_study_plots(tracker, run_id, study) == list(PLOTS)
    artifacts = {a.path: a.file_size for a in tracker.client.list_artifacts(run_id)}
    assert set(artifacts) == set(PLOTS) and all(size > 5000 for size in artifacts.values())  # drawn, not blank


def test_a_plot_the_study_cannot_draw_is_left_out_with_a_reason(tmp_path, capsys):
    tracker = Tracker(new_store(tmp_path / "mlflow.db"))
    run_id = tracker.start(tracker.experiment("plots"), "study", {"role": "study"})
    one = optuna_study(fake_results()[:1], load_space("mtl"), "MAE", "min")
    logged = log_study_plots(tracker, run_id, one)
    assert "optuna_history.png" in logged and "optuna_importances.png" not in logged
    assert "study plot optuna_importances.png left out:" in capsys.readouterr().out
