"""A trial's cross-validation or a final training as a Ray Train run: several workers, GPUs, DeepSpeed, or an
engine named on the command line. `ray.train.torch` is loaded only when such a run is made: it costs seconds of
start-up in every process that loads it, and a trial of one CPU worker (its own process) never needs it."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.tune.integration.ray_train import TuneReportCallback

from ray_msa.plan import Plan
from ray_msa.train.workers import loop_config
from ray_msa.trial import RunContext, TrialConfig


@functools.cache
def _study_trainer() -> type:
    """A TorchTrainer without Ray Data's callback: the dataset travels through the object store, never as a Ray
    Dataset, and the callback starts a DatasetManager actor (one more Python process) in every run regardless."""
    from ray.train.torch import TorchTrainer  # seconds of start-up: only in a process that makes a Ray Train run

    class StudyTrainer(TorchTrainer):
        def _create_default_callbacks(self) -> list:
            callbacks = super()._create_default_callbacks()
            return [c for c in callbacks if self.datasets or type(c).__name__ != "DatasetsCallback"]

    return StudyTrainer


def trainer(entry: Callable, trial: TrialConfig, run: RunContext, plan: Plan, name: str, in_tune: bool) -> Any:
    """The one TorchTrainer factory: a trial's CV (inside Tune) or the final retraining."""
    fault_tolerance = {
        "checkpoint_config": CheckpointConfig(num_to_keep=1),
        "failure_config": FailureConfig(max_failures=plan.max_failures),
    }
    return _study_trainer()(
        entry,
        train_loop_config=loop_config(trial, run),
        scaling_config=ScalingConfig(
            num_workers=plan.workers, use_gpu=plan.use_gpu, resources_per_worker=plan.worker_resources
        ),
        run_config=RunConfig(
            name=name,
            storage_path=plan.storage,
            **({"callbacks": [TuneReportCallback()], **fault_tolerance} if in_tune else {}),
        ),
    )
