"""Optuna's pictures of a finished study: the optimisation history, the parameter importances and a
parallel-coordinate plot, as PNG artifacts of the study run, so a user sees which settings mattered.

Tune ran the trials; their sampled values and per-epoch CV objective are replayed into an in-memory
Optuna study. Every trial counts with its last reported objective, which is what the study ranked
when it chose the best trial (a trial ASHA stopped early is marked `stopped_early`)."""

from __future__ import annotations

import warnings
from typing import Any

from ray_msa.search_space import SpaceFile
from ray_msa.tracking import Tracker

PLOTS = {
    "optuna_history.png": "plot_optimization_history",
    "optuna_importances.png": "plot_param_importances",
    "optuna_parallel_coordinate.png": "plot_parallel_coordinate",
}


def optuna_study(results: Any, space: SpaceFile, metric: str, mode: str):
    """An Optuna study holding the Tune trials in `results` (a ResultGrid or a list of Results)."""
    import optuna  # heavy: only the end of a study needs it

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    distributions = space.optuna_distributions()
    study = optuna.create_study(direction="minimize" if mode == "min" else "maximize")
    objective = f"mean_{metric}"
    for result in results:
        if not result.metrics or objective not in result.metrics:
            continue  # failed before its first epoch
        params = {k: v for k, v in result.config.items() if k in distributions}
        history = result.metrics_dataframe
        steps = {} if history is None or objective not in history else dict(zip(history["epoch"], history[objective]))
        study.add_trial(
            optuna.trial.create_trial(
                params=params,
                distributions={k: distributions[k] for k in params},
                value=float(result.metrics[objective]),
                intermediate_values={int(e): float(v) for e, v in steps.items()},
                user_attrs={"stopped_early": not result.metrics.get("cv_complete", False)},
            )
        )
    return study


def log_study_plots(tracker: Tracker, run_id: str, study: Any) -> list[str]:
    """Each plot Optuna can draw for `study` as an artifact of `run_id`; the names logged. A plot that
    needs more than the study has (importances need two trials and a sampled setting) is left out
    with a line saying why."""
    import matplotlib  # heavy: only the end of a study plots

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna.visualization.matplotlib as optuna_plots

    logged = []
    for name, function in PLOTS.items():
        if function == "plot_param_importances" and len(study.trials) < 2:  # Optuna draws an empty chart
            print(f"study plot {name} left out: importances need at least two trials", flush=True)
            continue
        try:
            with warnings.catch_warnings():  # "experimental" notes and flat axes of fixed settings
                warnings.simplefilter("ignore")
                axes = getattr(optuna_plots, function)(study)
        except (ValueError, RuntimeError) as err:
            print(f"study plot {name} left out: {err}", flush=True)
            continue
        figure = (axes.flat[0] if hasattr(axes, "flat") else axes).figure
        figure.set_size_inches(8, 5)
        figure.tight_layout()
        tracker.client.log_figure(run_id, figure, name)
        plt.close(figure)
        logged.append(name)
    return logged
