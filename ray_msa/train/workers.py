"""Where a trial's cross-validation and the final training run on Ray: Ray Train workers (several workers, GPUs,
DeepSpeed), or with one CPU worker the Tune trial's own process and a Ray task.

A Ray Train worker gets its TrialConfig and RunContext through `loop_config` as its train-loop config. Each entry
fetches the dataset from the object store (a worker on another node converts its own HDF5 cache), runs the loop of
`loop.py` and reports through Ray Train or Tune, with checkpoints that `torch.load` reads back with
`weights_only=True`.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import ray
import ray.cloudpickle
import ray.train
import ray.tune
import torch

from ray_msa.data.dataset import MSADataset
from ray_msa.data.sources import ensure_cache_on_this_node
from ray_msa.tracking import Tracker
from ray_msa.train.loop import WorkerContext, run_cross_validation, run_final_ensemble, run_final_training
from ray_msa.trial import RunContext, TrialConfig


def ray_context() -> WorkerContext:
    import ray.train.torch  # in Ray Train workers alone: seconds of start-up that a trial's own process saves

    context = ray.train.get_context()
    return WorkerContext(context.get_world_rank(), context.get_world_size(), ray.train.torch.get_device())


def quiet_ray_train() -> None:
    """Ray Train logs every report's full metrics at INFO; progress lines say enough."""
    try:
        from ray.train.v2._internal.execution import context as train_context  # Train V2's private logger
    except ImportError:
        return
    logging.getLogger(train_context.__file__).setLevel(logging.WARNING)


def loop_config(trial: TrialConfig, run: RunContext) -> dict[str, Any]:
    """The train-loop config of a Ray Train run. Its controller actor holds the config but never runs the loop:
    the trial and run travel pickled, so that it does not import the models and scikit-learn to unpickle them
    (seconds of CPU in every run's start-up); the dataset's ObjectRef travels beside them, where Ray tracks it."""
    trial_and_run = ray.cloudpickle.dumps((trial, replace(run, dataset_ref=None)))
    return {"trial_and_run": trial_and_run, "dataset_ref": run.dataset_ref}


def from_loop_config(config: dict[str, Any]) -> tuple[TrialConfig, RunContext]:
    trial, run = ray.cloudpickle.loads(config["trial_and_run"])
    return trial, replace(run, dataset_ref=config["dataset_ref"])


def _prepare(run: RunContext, ctx: WorkerContext) -> tuple[MSADataset, Tracker | None]:
    torch.set_num_threads(run.threads)
    dataset = ray.get(run.dataset_ref[0])
    ensure_cache_on_this_node(dataset)
    tracker = Tracker(run.tracking_uri) if ctx.is_chief and run.tracking_uri else None
    return dataset, tracker


def _report(api: Any, metrics: dict[str, Any], state: dict[str, Any] | None, ctx: WorkerContext) -> None:
    """A report through `api` (the module `ray.train` in a Ray Train worker, `ray.tune` in a trial's own process,
    looked up when called), with the chief's `state` as a checkpoint."""
    if state is None or not ctx.is_chief:
        api.report(metrics)
        return
    with tempfile.TemporaryDirectory() as tmp:
        torch.save(state, Path(tmp) / "state.pt")
        api.report(metrics, checkpoint=api.Checkpoint.from_directory(tmp))


def load_checkpoint_state(checkpoint: Any) -> dict[str, Any] | None:
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as directory:
        return torch.load(Path(directory) / "state.pt", weights_only=True)


def _cross_validate(trial: TrialConfig, run: RunContext, ctx: WorkerContext, api: Any, started: float) -> None:
    """The trial's folds, resumed from the last checkpoint `api` holds; every report says when this process
    started (the driver separates Ray's start-up from training time, and a restart is told apart)."""
    dataset, tracker = _prepare(run, ctx)
    resume = load_checkpoint_state(api.get_checkpoint())

    def report(metrics: dict[str, Any], state: dict[str, Any] | None) -> None:
        _report(api, {**metrics, "worker_started_at": started}, state, ctx)

    run_cross_validation(trial, dataset, report, ctx, resume, tracker, run)


def cross_validate_worker(config: dict[str, Any]) -> None:
    """Ray Train worker entry for one trial; resumes from the last Ray Train checkpoint."""
    started = time.time()
    trial, run = from_loop_config(config)
    quiet_ray_train()
    _cross_validate(trial, run, ray_context(), ray.train, started)


def cross_validate_in_trial(trial: TrialConfig, run: RunContext) -> None:
    """One CPU worker: the Tune trial's own process runs the folds. A Ray Train run for a world of one would add a
    controller, a worker and their helpers (each a Python process importing torch) and a process group that
    nothing uses; Tune keeps the checkpoints instead and, if this process dies, starts the trial again from the
    last one (the study's `tune.FailureConfig`). Same loop, same seeds, same numbers."""
    started = time.time()
    logging.getLogger("ray.train._internal.storage").setLevel(logging.WARNING)  # a line per checkpoint otherwise
    _cross_validate(trial, run, WorkerContext(), ray.tune, started)


def _final_model(
    trial: TrialConfig, run: RunContext, dataset: MSADataset, ctx: WorkerContext, tracker: Tracker | None
) -> tuple[dict[str, float], dict[str, Any]]:
    """`refit` (one model retrained on train+valid) or `ensemble` (the K fold models): test metrics, weights."""
    if trial.train.final == "ensemble":
        test_metrics, engines, scores = run_final_ensemble(trial, dataset, ctx, run)
        weights = {"folds": [e.model.state_dict() for e in engines]}
    else:
        test_metrics, engine, scores = run_final_training(trial, dataset, ctx, tracker, run)
        weights = {"model": engine.model.state_dict()}
    if tracker is not None and run.trial_run_id:  # a seed's run keeps its predictions, for paired tests later
        test = dataset.splits["test"]
        tracker.predictions(run.trial_run_id, test.ids, test.labels, scores)
    return test_metrics, weights


def final_train_worker(config: dict[str, Any]) -> None:
    """Ray Train worker entry for the final model; reports test metrics and the weights."""
    trial, run = from_loop_config(config)
    quiet_ray_train()
    ctx = ray_context()
    dataset, tracker = _prepare(run, ctx)
    test_metrics, weights = _final_model(trial, run, dataset, ctx, tracker)
    _report(ray.train, {f"test_{k}": v for k, v in test_metrics.items()}, weights if ctx.is_chief else None, ctx)


def final_train_in_task(trial: TrialConfig, run: RunContext) -> tuple[dict[str, float], dict[str, Any]]:
    """One CPU worker: the final model trained in a Ray task (see `cross_validate_in_trial`): test metrics, weights."""
    ctx = WorkerContext()
    dataset, tracker = _prepare(run, ctx)
    return _final_model(trial, run, dataset, ctx, tracker)
