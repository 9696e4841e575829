"""How a study proposes, stops and selects: the sampler and scheduler each setting gives, the CV objective,
the best trial and the refit's epoch count."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
from optuna.samplers import RandomSampler, TPESampler
from ray.tune.schedulers import ASHAScheduler

from ray_msa.search_space import load_space
from ray_msa.study import StudySettings, best_result, refit_epochs, search_algorithms
from ray_msa.train.loop import Fold, fold_summary


def settings(**changes) -> StudySettings:
    space = load_space("lf_dnn")
    flags = {"metric": "MAE", "seed": 3, "max_epochs": 12}
    return StudySettings("mosi", space, trials=12, workers=1, tracking_uri="", storage="", flags=flags, **changes)


def test_the_default_tuner_is_tpe_with_asha_and_the_baseline_random_search_trains_every_trial():
    sampler, scheduler = search_algorithms(settings())
    assert isinstance(sampler, TPESampler) and sampler._n_startup_trials == 4  # a third of 12 trials random first
    assert isinstance(scheduler, ASHAScheduler)
    assert [milestone for milestone, _ in scheduler._brackets[0]._rungs] == [8, 4, 2]  # laggards stop at 2, 4, 8
    sampler, scheduler = search_algorithms(settings(sampler="random", pruner="none"))
    assert type(sampler) is RandomSampler and scheduler is None  # Tune's FIFO: no trial is stopped early
    # the study's seed seeds the sampler: the same seed proposes the same configurations
    first, again = (search_algorithms(settings(sampler="random"))[0] for _ in range(2))
    assert first._rng.rng.random() == again._rng.rng.random()


def result(mae: float | None, acc: float = 0.5, error: str | None = None) -> SimpleNamespace:
    metrics = {} if mae is None else {"mean_MAE": mae, "mean_Acc": acc}
    return SimpleNamespace(metrics=metrics, config={"lr": mae}, error=error)


def test_the_objective_is_the_mean_of_the_folds_best_epoch_metrics():
    folds = [Fold(i, np.arange(2), np.arange(2), engine=None) for i in range(3)]
    for fold, (mae, corr) in zip(folds, [(0.8, 0.5), (0.7, 0.7), (0.9, 0.6)]):
        fold.best_metrics = {"MAE": mae, "Corr": corr}
    summary = fold_summary(folds, ("MAE", "Corr"))
    assert summary["mean_MAE"] == pytest.approx(0.8, abs=1e-12) and summary["mean_Corr"] == pytest.approx(0.6)
    assert summary["std_MAE"] == pytest.approx(np.sqrt(((0.0) ** 2 + 0.1**2 + 0.1**2) / 3), abs=1e-12)


def test_the_best_trial_is_the_arg_min_or_arg_max_of_the_objective():
    results = [result(0.81, 0.6), result(None, error="worker died"), result(math.nan), result(0.74, 0.4)]
    results.append(result(0.74, 0.9))  # a tie on MAE: the earlier trial is kept
    assert best_result(results, "mean_MAE", "min") is results[3]
    assert best_result(results, "mean_Acc", "max") is results[4]
    with pytest.raises(RuntimeError, match="worker died"):  # nothing reported: the error says why
        best_result([result(None, error="worker died")], "mean_MAE", "min")


def test_the_refit_trains_for_the_rounded_mean_of_the_folds_best_epochs():
    assert refit_epochs([3, 4, 4, 5, 6]) == 4  # mean 4.4
    assert refit_epochs([3, 5, 6]) == 5  # mean 4.67
    assert refit_epochs([2, 3]) == 2 and refit_epochs([3, 4]) == 4  # halves go to the even neighbour
    assert refit_epochs([0, 0]) == 1  # at least one epoch
