"""Ray Train entry points: a worker of a trial's cross-validation, or of the final retraining.

Each gets its TrialConfig and RunContext through `loop_config` as its train-loop config, fetches the
dataset from the object store (a worker on another node converts its own HDF5 cache), runs
the loop of `loop.py` and reports through Ray Train, with checkpoints that `torch.load`
reads back with `weights_only=True`.
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
import ray.train.torch
import torch

from ray_msa.data.dataset import MSADataset
from ray_msa.data.sources import ensure_cache_on_this_node
from ray_msa.tracking import Tracker
from ray_msa.train.loop import WorkerContext, run_cross_validation, run_final_ensemble, run_final_training
from ray_msa.trial import RunContext, TrialConfig


def ray_context() -> WorkerContext:
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


def _setup(config: dict[str, Any]) -> tuple[TrialConfig, RunContext, MSADataset, WorkerContext, Tracker | None]:
    trial, run = from_loop_config(config)
    quiet_ray_train()
    torch.set_num_threads(run.threads)
    dataset = ray.get(run.dataset_ref[0])
    ensure_cache_on_this_node(dataset)
    ctx = ray_context()
    tracker = Tracker(run.tracking_uri) if ctx.is_chief and run.tracking_uri else None
    return trial, run, dataset, ctx, tracker


def _checkpoint_report(metrics: dict[str, Any], state: dict[str, Any] | None, ctx: WorkerContext) -> None:
    if state is None or not ctx.is_chief:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory() as tmp:
        torch.save(state, Path(tmp) / "state.pt")
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))


def load_checkpoint_state(checkpoint: Any) -> dict[str, Any] | None:
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as directory:
        return torch.load(Path(directory) / "state.pt", weights_only=True)


def cross_validate_worker(config: dict[str, Any]) -> None:
    """Ray Train worker entry for one trial; resumes from the last Ray checkpoint."""
    started = time.time()  # lets the driver separate Ray's start-up from training time
    trial, run, dataset, ctx, tracker = _setup(config)
    resume = load_checkpoint_state(ray.train.get_checkpoint())

    def report(metrics: dict[str, Any], state: dict[str, Any] | None) -> None:
        _checkpoint_report({**metrics, "worker_started_at": started}, state, ctx)

    run_cross_validation(trial, dataset, report, ctx, resume, tracker, run)


def final_train_worker(config: dict[str, Any]) -> None:
    """Ray Train worker entry for the final model (`refit`: one model retrained on train+valid;
    `ensemble`: the K fold models); reports test metrics and the weights."""
    trial, run, dataset, ctx, tracker = _setup(config)
    if trial.train.final == "ensemble":
        test_metrics, engines, scores = run_final_ensemble(trial, dataset, ctx, run)
        weights = {"folds": [e.model.state_dict() for e in engines]}
    else:
        test_metrics, engine, scores = run_final_training(trial, dataset, ctx, tracker, run)
        weights = {"model": engine.model.state_dict()}
    if tracker is not None and run.trial_run_id:  # a seed's run keeps its predictions, for paired tests later
        test = dataset.splits["test"]
        tracker.predictions(run.trial_run_id, test.ids, test.labels, scores)
    state = weights if ctx.is_chief else None
    _checkpoint_report({f"test_{k}": v for k, v in test_metrics.items()}, state, ctx)
