"""What a person sees while a study runs, and the MLflow state of trials that end early:
a line per trial start, epoch and outcome; trials stopped by ASHA or cut by the time budget
closed with a `stopped_by` tag, never left RUNNING; Ray's start-up and tear-down measured."""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from ray import tune

from ray_msa.tracking import Tracker


def drop_checkpoints(*folders: Path) -> None:
    """Every `checkpoint_*` folder under `folders`: a closed trial's runs are in MLflow, and the final model too."""
    for folder in folders:
        for checkpoint in sorted(Path(folder).glob("**/checkpoint_*")):
            if checkpoint.is_dir():
                shutil.rmtree(checkpoint, ignore_errors=True)


def close_stopped_trial(tracker: Tracker, run_id: str, stopper: str, status: str = "FINISHED") -> None:
    """A trial run that ended before its CV did: its still-running folds KILLED, the run tagged
    with what stopped it and closed."""
    for fold in tracker.children(run_id):
        if fold.info.status == "RUNNING":
            tracker.finish(fold.info.run_id, "KILLED")
    tracker.tags(run_id, {"stopped_by": stopper})
    tracker.finish(run_id, status)


def close_cut_trials(tracker: Tracker, study_run: str) -> int:
    """Trials the time budget cut mid-trial never reach Tune's on_trial_complete, so their MLflow
    runs (and folds) would stay RUNNING after the study ends: close them as KILLED. Returns how
    many trials were cut."""
    cut = [t for t in tracker.children(study_run) if t.data.tags.get("role") == "trial" and t.info.status == "RUNNING"]
    for trial in cut:
        close_stopped_trial(tracker, trial.info.run_id, "time budget", "KILLED")
    return len(cut)


class StudyCallback(tune.Callback):
    """Progress a person can follow, and MLflow run states for stopped trials."""

    def __init__(
        self,
        tracker: Tracker,
        metric: str,
        trials_total: int,
        deadline: float | None = None,
        finished_trial_folders: Callable[[tune.experiment.Trial], list[Path]] | None = None,
    ) -> None:
        """`finished_trial_folders`: where a trial's checkpoints are, removed once its runs are closed (None: kept).
        An unfinished trial keeps its last, from which --resume continues it."""
        self.tracker, self.metric, self.trials_total, self.deadline = tracker, metric, trials_total, deadline
        self.finished_trial_folders = finished_trial_folders
        self.started: dict[str, float] = {}
        self.worker_started: dict[str, float] = {}
        self.last_result: dict[str, float] = {}
        self.timings: list[tuple[float, float]] = []  # (Ray overhead s, trial wall s)
        self.finished = 0

    def on_trial_start(self, iteration, trials, trial, **info):
        self.started[trial.trial_id] = time.time()
        shown = {
            k: (float(f"{v:.4g}") if isinstance(v, float) else v) for k, v in trial.config.items()
        }  # 3e-05, not 0.0
        print(f"== trial {trial.trial_id} started: {shown}", flush=True)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.worker_started.setdefault(trial.trial_id, result.get("worker_started_at", time.time()))
        self.last_result[trial.trial_id] = time.time()

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.finished += 1
        result = trial.last_result or {}
        run_id = result.get("trial_run_id")
        stopped = not result.get("cv_complete", False)  # Tune reserves "done" for itself
        stopper = "time budget" if self.deadline and time.time() >= self.deadline else "ASHA"
        if run_id:
            if stopped:
                close_stopped_trial(self.tracker, run_id, stopper)
            else:
                self.tracker.finish(run_id)
        if self.finished_trial_folders is not None:
            drop_checkpoints(*self.finished_trial_folders(trial))
        value = result.get(f"mean_{self.metric}", float("nan"))
        how = (
            f"stopped by {stopper} after epoch {result.get('epoch')}"
            if stopped
            else f"finished after epoch {result.get('epoch')}"
        )
        elapsed = time.time() - self.started.get(trial.trial_id, time.time())
        if trial.trial_id in self.worker_started:
            startup = self.worker_started[trial.trial_id] - self.started[trial.trial_id]
            teardown = time.time() - self.last_result[trial.trial_id]
            self.timings.append((startup + teardown, elapsed))
        print(
            f"== trial {trial.trial_id} {how}: CV mean {self.metric} {value:.4f} ({elapsed:.0f}s; "
            f"{self.finished}/{self.trials_total} trials)",
            flush=True,
        )

    def on_trial_error(self, iteration, trials, trial, **info):
        self.finished += 1
        run_id = (trial.last_result or {}).get("trial_run_id")
        if run_id:
            self.tracker.finish(run_id, "FAILED")
        print(f"== trial {trial.trial_id} failed; see its error file in {trial.local_path}", flush=True)

    def ray_overhead(self) -> tuple[float, float]:
        """Ray's share of trial time: (mean seconds before the worker loop starts and
        after its last report, mean trial wall seconds)."""
        if not self.timings:
            return math.nan, math.nan
        overhead, wall = np.mean(self.timings, axis=0)
        return float(overhead), float(wall)
