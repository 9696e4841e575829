"""A grid of named, fully resolved configurations, each a K-fold cross-validation on Ray: the
runner behind `sweep` (one or two settings varied) and any caller that compares fixed points.

One Ray Tune `Tuner` grid-searches over the point names (no search algorithm, no scheduler:
every point runs to its last epoch), and each Tune trial is one cross-validation run as a study's trial runs
(`cross_validate_trial`: in the trial's process with one CPU worker, else a Ray Train run), fitted to the cluster
by the study's `plan_cluster`, so points run side by side as a study's trials would. MLflow: a parent run
(the caller's role) in `ray_msa-<dataset>`, a child per point (role `<role>-point`, tag
`point`, the point's resolved parameters), the fold runs under each child.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from ray import tune

from ray_msa.data.dataset import MSADataset
from ray_msa.metrics import DEFAULT_METRIC
from ray_msa.plan import Plan
from ray_msa.search_space import SpaceFile
from ray_msa.study import StudySettings, cross_validate_trial, plan_cluster, tune_fault_tolerance
from ray_msa.study_progress import StudyCallback, close_stopped_trial
from ray_msa.tracking import Tracker, git_commit
from ray_msa.trial import RunContext, TrialConfig


class GridInterrupted(Exception):
    """Tune stopped on SIGINT/SIGTERM before every point finished; the parent run is KILLED."""


@dataclass(frozen=True)
class PointResult:
    """One point's final report: fold mean and std of every metric, and each fold's best value."""

    name: str
    trial: TrialConfig
    run_id: str  # the point's MLflow child run; its fold runs are under it
    mean: dict[str, float]
    std: dict[str, float]
    folds: dict[str, list[float]]  # metric -> each fold's best-epoch value, by fold index
    best_epochs: list[int]
    wall_s: float

    def summary(self) -> dict[str, float]:
        """`mean_<metric>` / `std_<metric>`, as `run_cross_validation` returns them."""
        return {**{f"mean_{k}": v for k, v in self.mean.items()}, **{f"std_{k}": v for k, v in self.std.items()}}


@dataclass(frozen=True)
class GridResult:
    parent_run_id: str
    metric: str  # the points' validation metric (early stopping, the primary column)
    points: dict[str, PointResult]  # in the caller's order
    wall_s: float
    plan: Plan


def _trial_dirname(trial: Any) -> str:
    """Point names hold '=' and ',' (and a value could hold '/'): name trial folders by id."""
    return f"point_{trial.trial_id}"


def run_point(config: dict[str, Any], dataset_ref: list, context: dict[str, Any]) -> None:
    """Tune trainable: one point = its MLflow child run + the cross-validation of its K folds."""
    name, plan = config["point"], context["plan"]
    trial = context["points"][name].with_train(engine=plan.engine)
    tracker = Tracker(context["tracking_uri"])
    child = tracker.child(context["parent"], name, {"role": f"{context['role']}-point", "point": name})
    tracker.params(child, trial.params())
    run = RunContext(context["tracking_uri"], context["parent"], child, name, dataset_ref, plan.threads)
    run_name = f"{context['name']}-{tune.get_context().get_trial_id()}"
    try:
        cross_validate_trial(trial, run, plan, run_name)
    except BaseException:  # never leave the point or its folds RUNNING
        close_stopped_trial(tracker, child, "error", "FAILED")
        raise


def _metric_of(dataset: MSADataset, points: Mapping[str, TrialConfig]) -> str:
    metrics = {t.train.metric or DEFAULT_METRIC[dataset.metric_set] for t in points.values()}
    if len(metrics) != 1:
        raise ValueError(f"the points of a grid must share one validation metric, got {sorted(metrics)}")
    return metrics.pop()


def _collect(grid: Any, points: Mapping[str, TrialConfig]) -> dict[str, PointResult]:
    """Each point's last report (its complete CV), in the caller's order; a failed point raises."""
    failed = [(r.config.get("point"), r.error) for r in grid if r.error or not (r.metrics or {}).get("cv_complete")]
    if failed:
        name, error = failed[0]
        raise RuntimeError(f"{len(failed)} of {len(points)} points did not finish; {name}: {error or 'incomplete'}")
    by_name = {}
    for r in grid:
        m = r.metrics
        by_name[r.config["point"]] = PointResult(
            name=r.config["point"],
            trial=points[r.config["point"]],
            run_id=m["trial_run_id"],
            mean={k[len("mean_") :]: float(v) for k, v in m.items() if k.startswith("mean_")},
            std={k[len("std_") :]: float(v) for k, v in m.items() if k.startswith("std_")},
            folds={
                k[len("folds_") :]: [float(x) for x in v]
                for k, v in m.items()
                if k.startswith("folds_") and isinstance(v, list)
            },
            best_epochs=[int(e) for e in m.get("best_epochs", [])],
            wall_s=float(m.get("time_total_s", float("nan"))),
        )
    return {name: by_name[name] for name in points}


def run_points(
    dataset: MSADataset,
    points: Mapping[str, TrialConfig],
    *,
    tracking_uri: str,
    storage: str,
    role: str,
    parent_name: str,
    tags: Mapping[str, str] | None = None,
    params: Mapping[str, Any] | None = None,
    workers: int = 1,
    cpus_per_worker: float | None = None,
    use_gpu: bool | None = None,
    engine: str | None = None,
    concurrent: int | None = None,
    on_result: Callable[[GridResult], None] | None = None,
) -> GridResult:
    """Cross-validate every point on Ray (joining the caller's Ray, else starting a local one).
    `on_result` runs while the parent run is still open (log tables, plots to it); the parent
    ends FINISHED, FAILED (a point or `on_result` failed) or KILLED (interrupted)."""
    if not points:
        raise ValueError("run_points needs at least one point")
    started = time.time()
    metric = _metric_of(dataset, points)
    archs = sorted({t.arch for t in points.values()})
    tracker = Tracker(tracking_uri)
    experiment = tracker.experiment(f"ray_msa-{dataset.name}")
    parent_tags = {
        "role": role,
        "arch": "+".join(archs),
        "dataset": dataset.name,
        "data_fingerprint": dataset.fingerprint(),
        "data_source": dataset.source,
        "mlflow.source.git.commit": git_commit(),
        **(tags or {}),
    }
    own_ray = not ray.is_initialized()  # a Ray this call starts, it stops (a second local Ray breaks the first)
    parent = tracker.start(experiment, parent_name, parent_tags)
    tracker.params(parent, {"points": len(points), "workers": workers, "metric": metric, **(params or {})})
    try:
        settings = StudySettings(  # only what `plan_cluster` reads: the cluster options; no space is sampled
            dataset=dataset.name,
            space=SpaceFile(Path(f"<{parent_name}>"), archs[0]),
            trials=len(points),
            workers=workers,
            tracking_uri=tracking_uri,
            storage=storage,
            engine=engine,
            cpus_per_worker=cpus_per_worker,
            use_gpu=use_gpu,
            concurrent=concurrent,
        )
        plan = plan_cluster(settings)
        tracker.params(parent, {"engine": plan.engine, "use_gpu": plan.use_gpu})
        dataset_ref = [ray.put(dataset)]
        name = f"{parent_name}-{parent[:8]}"
        context = {
            "points": dict(points),
            "plan": plan,
            "parent": parent,
            "role": role,
            "name": name,
            "tracking_uri": tracking_uri,
        }
        trainable = tune.with_resources(
            tune.with_parameters(run_point, dataset_ref=dataset_ref, context=context), plan.trial_resources
        )
        tuner = tune.Tuner(
            trainable,
            param_space={"point": tune.grid_search(list(points))},
            tune_config=tune.TuneConfig(
                num_samples=1,
                max_concurrent_trials=plan.concurrent,
                trial_dirname_creator=_trial_dirname,
                reuse_actors=plan.reuse_trial_processes,
            ),
            run_config=tune.RunConfig(
                name=name,
                storage_path=storage,
                callbacks=[StudyCallback(tracker, metric, len(points))],
                verbose=0,
                **tune_fault_tolerance(plan),
            ),
        )
        grid = tuner.fit()
        if grid.num_terminated + grid.num_errors < len(points):
            raise GridInterrupted(name)  # Tune stopped on SIGINT with points unfinished
        result = GridResult(parent, metric, _collect(grid, points), time.time() - started, plan)
        tracker.metrics(parent, {"wall_time_s": result.wall_s})
        if on_result is not None:
            on_result(result)
        tracker.finish(parent)
        return result
    except BaseException as err:  # a failed or interrupted grid is never left RUNNING
        interrupted = isinstance(err, (KeyboardInterrupt, GridInterrupted))
        status = "KILLED" if interrupted else "FAILED"
        for child in tracker.children(parent):
            if child.info.status == "RUNNING":
                close_stopped_trial(tracker, child.info.run_id, "interrupted" if interrupted else "error", status)
        tracker.finish(parent, status)
        raise
    finally:
        if own_ray and ray.is_initialized():
            ray.shutdown()
