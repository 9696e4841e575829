"""How a study proposes, stops and selects: the sampler and scheduler each setting gives."""

from __future__ import annotations

from optuna.samplers import RandomSampler, TPESampler
from ray.tune.schedulers import ASHAScheduler

from ray_msa.search_space import load_space
from ray_msa.study import StudySettings, search_algorithms


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
