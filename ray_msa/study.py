"""A study: Ray Tune + Optuna (TPE) + ASHA over cross-validated trials, each trial a
Ray Train run; then the best configuration retrained on train+valid and tested once.

Recorded in MLflow as study run -> trial runs -> fold runs. The test split is read only
by the final retraining, after every choice has been made on validation folds.

An interrupted study (SIGINT, SIGTERM) keeps Tune's experiment state and each trial's
Ray Train checkpoints; `run_study(..., resume=record)` continues it: finished trials are not run again,
unfinished ones continue from their last checkpoint, and every MLflow run is the one the
interrupted study opened.
"""

from __future__ import annotations

import json
import math
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ray_msa.data.dataset import MSADataset
from ray_msa.errors import InputError
from ray_msa.metrics import METRICS, mode_of
from ray_msa.tracking import Tracker, git_commit, redact

TRIAL_CPU = 0.5  # the Tune trial actor only waits on its Ray Train run
RECORDS = "ray_msa_studies"  # <storage>/ray_msa_studies/<study>.json: what --resume needs


class StudyInterrupted(Exception):
    """The study stopped on SIGINT/SIGTERM; its state is saved and it can be resumed."""

    def __init__(self, study_name: str) -> None:
        super().__init__(study_name)
        self.study_name = study_name


@dataclass
class StudySettings:
    arch: str
    dataset: str
    trials: int
    folds: int
    workers: int
    engine: str | None  # None: deepspeed when the workers get GPUs, else ddp
    seed: int
    metric: str
    tracking_uri: str
    storage: str
    fixed: dict[str, Any]
    space: dict[str, Any]
    start: list[dict[str, Any]] = field(
        default_factory=list
    )  # first configurations to evaluate (the space file's `start:`)
    cpus_per_worker: float | None = None
    use_gpu: bool | None = None  # None: one GPU per worker if the cluster has GPUs
    text_mode: str = "frozen"
    max_failures: int = 2
    concurrent: int | None = None  # None: as many trials as the cluster's free resources hold
    time_budget_min: float | None = None  # stop starting and running trials after this long (then retrain the best)
    command: list[str] = field(default_factory=list)  # the CLI arguments, kept so --resume rebuilds the same study
    extra_params: dict[str, Any] = field(default_factory=dict)

    @property
    def mode(self) -> str:
        return mode_of(self.metric)


@dataclass
class StudyResult:
    study_run_id: str
    best_config: dict[str, Any]
    cv: dict[str, float]
    test: dict[str, float]
    trials: int
    wall_s: float
    ray_overhead_s: tuple[float, float]
    model_uri: str


def plan_resources(
    total_cpus: float, workers: int, per_worker: float | None, gpus: float = 0.0
) -> tuple[float, int, int]:
    """(CPUs per worker, torch threads per worker, concurrent trials) for this cluster:
    trials run side by side until the CPUs (or, with GPU workers, the GPUs) are used up."""
    if per_worker is None:
        share = total_cpus / max(1, int(gpus)) if gpus else total_cpus  # with GPUs, CPUs are split over GPU workers
        per_worker = max(0.25, min(2.0 if not gpus else 8.0, (share - TRIAL_CPU) / workers))
    threads = max(1, int(round(per_worker)))
    concurrent = max(1, int(total_cpus // (TRIAL_CPU + workers * per_worker)))
    if gpus:
        concurrent = max(1, min(concurrent, int(gpus // workers)))
    return per_worker, threads, concurrent


def _sigterm_as_sigint(signum, frame) -> None:
    """`kill`, a scheduler's preemption or `ray job stop` send SIGTERM: stop as on Ctrl+C, so
    Tune saves its state and the study can be resumed."""
    signal.raise_signal(signal.SIGINT)


def choose_devices(cluster_gpus: float, use_gpu: bool | None, engine: str | None) -> tuple[bool, str]:
    """(one GPU per worker?, engine): GPUs when the cluster has them unless told otherwise;
    DeepSpeed on GPU workers, DDP on CPU ones, unless an engine is named."""
    gpu = cluster_gpus >= 1 if use_gpu is None else use_gpu
    return gpu, engine or ("deepspeed" if gpu else "ddp")


def study_record(storage: str, study_name: str) -> Path:
    return Path(storage) / RECORDS / f"{study_name}.json"


def find_study(storage: str, dataset: str, name: str | None = None) -> dict[str, Any]:
    """The record of study `name`, or of the latest unfinished study on `dataset`."""
    folder = Path(storage) / RECORDS
    if name:
        path = folder / f"{name}.json"
        if not path.is_file():
            known = sorted(p.stem for p in folder.glob("*.json")) if folder.is_dir() else []
            raise InputError(
                "--resume",
                name,
                f"no study of that name in {folder}",
                f"use one of {', '.join(known) or '(none)'} or the same --storage",
            )
        return json.loads(path.read_text())
    records = [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))] if folder.is_dir() else []
    unfinished = [r for r in records if r["dataset"] == dataset and not r.get("finished")]
    if not unfinished:
        raise InputError(
            "--resume",
            dataset,
            f"no unfinished study on {dataset} in {folder}",
            "pass --resume STUDY_NAME or the --storage the study used",
        )
    return max(unfinished, key=lambda r: r["started"])


def _write_record(path: Path, record: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=1))
    os.replace(tmp, path)


def run_trial(config: dict[str, Any], dataset_ref: list, settings: dict[str, Any]) -> None:
    """Tune trainable: one trial = one Ray Train run of the K-fold cross-validation."""
    import ray.tune
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    from ray_msa.train.loop import cross_validate_worker

    context = ray.tune.get_context()
    trial_id = context.get_trial_id()
    tracker = Tracker(settings["tracking_uri"])
    trial_number = trial_id.rsplit("_", 1)[-1]
    trial_run = tracker.child(
        settings["study_run_id"], f"trial-{trial_number}", {"role": "trial", "ray_trial_id": trial_id}
    )
    tracker.params(trial_run, {**settings["loop"], **config})  # the resolved configuration
    loop_config = {
        **settings["loop"],
        **config,
        "trial_run_id": trial_run,
        "dataset_ref": dataset_ref,
        "trial_name": f"trial {trial_number}",
    }
    trainer = TorchTrainer(
        cross_validate_worker,
        train_loop_config=loop_config,
        scaling_config=ScalingConfig(
            num_workers=settings["workers"],
            use_gpu=settings["use_gpu"],
            resources_per_worker=settings["worker_resources"],
        ),
        run_config=RunConfig(
            name=f"{settings['study_name']}-{trial_id}",
            storage_path=settings["storage"],
            callbacks=[TuneReportCallback()],
            checkpoint_config=CheckpointConfig(num_to_keep=1),
            failure_config=FailureConfig(max_failures=settings["max_failures"]),
        ),
    )
    trainer.fit()


def _close_stopped_trial(tracker: Tracker, run_id: str, stopper: str, status: str = "FINISHED") -> None:
    """A trial run that ended before its CV did: its still-running folds KILLED, the run tagged
    with what stopped it and closed."""
    for fold in tracker.children(run_id):
        if fold.info.status == "RUNNING":
            tracker.finish(fold.info.run_id, "KILLED")
    tracker.tags(run_id, {"stopped_by": stopper})
    tracker.finish(run_id, status)


def _close_cut_trials(tracker: Tracker, study_run: str) -> int:
    """Trials the time budget cut mid-trial never reach Tune's on_trial_complete, so their MLflow
    runs (and folds) would stay RUNNING after the study ends: close them as KILLED. Returns how
    many trials were cut."""
    cut = [t for t in tracker.children(study_run) if t.data.tags.get("role") == "trial" and t.info.status == "RUNNING"]
    for trial in cut:
        _close_stopped_trial(tracker, trial.info.run_id, "time budget", "KILLED")
    return len(cut)


def _study_callback(tracker: Tracker, metric: str, trials_total: int, deadline: float | None = None):
    from ray import tune

    class StudyCallback(tune.Callback):
        """Progress a person can follow, and MLflow run states for stopped trials."""

        def __init__(self) -> None:
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
            stopper = "time budget" if deadline and time.time() >= deadline else "ASHA"
            if run_id:
                if stopped:
                    _close_stopped_trial(tracker, run_id, stopper)
                else:
                    tracker.finish(run_id)
            value = result.get(f"mean_{metric}", float("nan"))
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
                f"== trial {trial.trial_id} {how}: CV mean {metric} {value:.4f} ({elapsed:.0f}s; {self.finished}/{trials_total} trials)",
                flush=True,
            )

        def on_trial_error(self, iteration, trials, trial, **info):
            self.finished += 1
            run_id = (trial.last_result or {}).get("trial_run_id")
            if run_id:
                tracker.finish(run_id, "FAILED")
            print(f"== trial {trial.trial_id} failed; see its error file in {trial.local_path}", flush=True)

        def ray_overhead(self) -> tuple[float, float]:
            """Ray's share of trial time: (mean seconds before the worker loop starts and
            after its last report, mean trial wall seconds)."""
            if not self.timings:
                return math.nan, math.nan
            overhead, wall = np.mean(self.timings, axis=0)
            return float(overhead), float(wall)

    return StudyCallback()


def run_study(dataset: MSADataset, settings: StudySettings, resume: dict[str, Any] | None = None) -> StudyResult:
    """Tune, pick the best trial on CV, retrain it on train+valid, test once, log it all.
    With `resume` (a record from `find_study`), continue that interrupted study instead."""
    import ray
    from optuna.samplers import TPESampler
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    started = time.time()
    tracker = Tracker(settings.tracking_uri)
    fingerprint = dataset.fingerprint()
    if resume:
        study_name, study_run = resume["study_name"], resume["study_run_id"]
        if resume.get("data_fingerprint") not in (None, fingerprint):
            raise InputError(
                settings.dataset,
                "data",
                f"changed since study {study_name} started (fingerprint {resume['data_fingerprint']} -> {fingerprint})",
                "resume with the same data, or start a new study",
            )
        tracker.reopen(study_run)
        record = resume
    else:
        experiment = tracker.experiment(f"ray_msa-{settings.dataset}")
        study_name = f"{settings.arch}-{time.strftime('%Y%m%d-%H%M%S')}"
        study_run = tracker.start(
            experiment,
            study_name,
            {
                "role": "study",
                "arch": settings.arch,
                "dataset": settings.dataset,
                "data_fingerprint": fingerprint,
                "mlflow.source.git.commit": git_commit(),
                "data_source": dataset.source,
            },
        )
        tracker.params(
            study_run,
            {
                "arch": settings.arch,
                "dataset": settings.dataset,
                "trials": settings.trials,
                "folds": settings.folds,
                "workers": settings.workers,
                "seed": settings.seed,
                "metric": settings.metric,
                "text_mode": settings.text_mode,
                "data_fingerprint": fingerprint,
                **settings.extra_params,
                **{f"fixed.{k}": v for k, v in settings.fixed.items()},
                **{f"space.{k}": v for k, v in settings.space.items()},
            },
        )
        record = {
            "study_name": study_name,
            "study_run_id": study_run,
            "dataset": settings.dataset,
            "arch": settings.arch,
            "command": settings.command,
            "data_fingerprint": fingerprint,
            "started": started,
            "finished": False,
        }
    record_path = study_record(settings.storage, study_name)
    _write_record(record_path, record)
    print(
        f"study {study_name}{' (resumed)' if resume else ''}: {dataset.summary()}; fingerprint {fingerprint}; "
        f"MLflow {redact(settings.tracking_uri)} run {study_run}",
        flush=True,
    )
    try:
        if not ray.is_initialized():
            # joins the cluster of RAY_ADDRESS (a `ray job submit` job) or of `ray start`, else starts a
            # local one whose dashboard (which serves the State API Ray Train uses) binds 127.0.0.1
            ray.init(log_to_driver=True, logging_level="WARNING")
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, _sigterm_as_sigint)  # after ray.init, which installs its own (abort) handler
        resources = ray.cluster_resources()
        total_cpus, gpus = resources.get("CPU", 1.0), resources.get("GPU", 0.0)
        use_gpu, engine = choose_devices(gpus, settings.use_gpu, settings.engine)
        per_worker, threads, concurrent = plan_resources(
            total_cpus, settings.workers, settings.cpus_per_worker, gpus if use_gpu else 0.0
        )
        concurrent = settings.concurrent or concurrent
        worker_resources = {"CPU": per_worker, **({"GPU": 1} if use_gpu else {})}
        tracker.params(study_run, {"engine": engine, "use_gpu": use_gpu})
        dataset_ref = [ray.put(dataset)]
        loop = {
            "arch": settings.arch,
            "engine": engine,
            "folds": settings.folds,
            "seed": settings.seed,
            "metric": settings.metric,
            "threads": threads,
            "tracking_uri": settings.tracking_uri,
            **settings.fixed,
        }
        trial_settings = {
            "tracking_uri": settings.tracking_uri,
            "study_run_id": study_run,
            "study_name": study_name,
            "loop": loop,
            "workers": settings.workers,
            "use_gpu": use_gpu,
            "worker_resources": worker_resources,
            "storage": settings.storage,
            "max_failures": settings.max_failures,
        }
        print(
            f"resources: {total_cpus:g} CPUs, {gpus:g} GPUs; {settings.workers} worker(s) x {per_worker:g} CPU ({threads} threads)"
            f"{' + 1 GPU' if use_gpu else ''}, engine {engine}; {concurrent} concurrent trial(s)",
            flush=True,
        )
        objective = f"mean_{settings.metric}"
        max_epochs = int(settings.fixed["max_epochs"])
        budget_s = settings.time_budget_min * 60 if settings.time_budget_min else None
        deadline = time.time() + budget_s if budget_s else None
        callback = _study_callback(tracker, settings.metric, settings.trials, deadline)
        trainable = tune.with_resources(
            tune.with_parameters(run_trial, dataset_ref=dataset_ref, settings=trial_settings), {"cpu": TRIAL_CPU}
        )
        experiment_path = Path(settings.storage) / study_name
        if resume and tune.Tuner.can_restore(str(experiment_path)):
            tuner = tune.Tuner.restore(str(experiment_path), trainable, resume_unfinished=True, resume_errored=True)
        else:
            tuner = tune.Tuner(
                trainable,
                param_space=settings.space,
                tune_config=tune.TuneConfig(
                    metric=objective,
                    mode=settings.mode,
                    num_samples=settings.trials,
                    max_concurrent_trials=concurrent,
                    time_budget_s=budget_s,
                    search_alg=OptunaSearch(
                        sampler=TPESampler(seed=settings.seed, n_startup_trials=max(2, min(5, settings.trials // 3))),
                        points_to_evaluate=list(settings.start) or None,
                    ),
                    scheduler=ASHAScheduler(
                        time_attr="epoch", max_t=max_epochs, grace_period=min(2, max_epochs), reduction_factor=2
                    ),
                ),
                run_config=tune.RunConfig(
                    name=study_name, storage_path=settings.storage, callbacks=[callback], verbose=0
                ),
            )
        grid = tuner.fit()
        out_of_time = deadline is not None and time.time() >= deadline - 1
        if not out_of_time and (grid.num_terminated + grid.num_errors < len(grid) or len(grid) < settings.trials):
            raise StudyInterrupted(study_name)  # Tune stopped on SIGINT with trials unfinished; its state is saved
        if out_of_time:
            cut = _close_cut_trials(tracker, study_run)
            print(
                f"time budget of {settings.time_budget_min:g} min used: {len(grid)} of {settings.trials} trials ran"
                f"{f', {cut} cut mid-trial (KILLED in MLflow)' if cut else ''}",
                flush=True,
            )
        completed = [r for r in grid if r.metrics and objective in r.metrics]
        if not completed:
            errors = [str(r.error) for r in grid if r.error]
            raise RuntimeError(f"no trial reported {objective}; first error: {errors[0] if errors else 'none'}")
        best = grid.get_best_result(metric=objective, mode=settings.mode, scope="last")
        best_config = {k: v for k, v in best.config.items()}
        cv = {k: float(v) for k, v in best.metrics.items() if k.startswith(("mean_", "std_"))}
        final_epochs = max(1, int(round(float(np.mean(best.metrics["best_epochs"])))))
        tracker.params(study_run, {f"best.{k}": v for k, v in best_config.items()} | {"final_epochs": final_epochs})
        tracker.metrics(study_run, {f"cv_{k}": v for k, v in cv.items()})
        print(
            f"best trial: CV mean {settings.metric} {cv[objective]:.4f}; retraining on train+valid for {final_epochs} epochs",
            flush=True,
        )

        test, model_state = _final_training(
            dataset_ref,
            {**loop, **best_config, "final_epochs": final_epochs, "study_run_id": study_run},
            trial_settings,
            study_name,
        )
        tracker.metrics(study_run, {f"test_{k}": v for k, v in test.items()})
        model_uri = _log_model(tracker, study_run, dataset, {**loop, **best_config}, model_state)
        wall = time.time() - started + float(record.get("wall_before_s", 0.0))
        overhead, trial_wall = callback.ray_overhead()
        tracker.metrics(
            study_run,
            {
                "wall_time_s": wall,
                "trials_run": len(grid),
                "ray_overhead_s_per_trial": overhead,
                "trial_wall_s": trial_wall,
            },
        )
        tracker.finish(study_run)
        _write_record(record_path, {**record, "finished": True})
        return StudyResult(study_run, best_config, cv, test, len(grid), wall, (overhead, trial_wall), model_uri)
    except BaseException as err:  # a failed or interrupted study is never left RUNNING
        interrupted = isinstance(err, (KeyboardInterrupt, StudyInterrupted))
        tracker.finish(study_run, "KILLED" if interrupted else "FAILED")
        _write_record(
            record_path, {**record, "wall_before_s": float(record.get("wall_before_s", 0.0)) + time.time() - started}
        )
        raise


def _final_training(
    dataset_ref: list, config: dict[str, Any], trial_settings: dict[str, Any], study_name: str
) -> tuple[dict[str, float], dict]:
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from ray_msa.train.loop import final_train_worker, load_checkpoint_state

    trainer = TorchTrainer(
        final_train_worker,
        train_loop_config={**config, "dataset_ref": dataset_ref},
        scaling_config=ScalingConfig(
            num_workers=trial_settings["workers"],
            use_gpu=trial_settings["use_gpu"],
            resources_per_worker=trial_settings["worker_resources"],
        ),
        run_config=RunConfig(name=f"{study_name}-final", storage_path=trial_settings["storage"]),
    )
    result = trainer.fit()
    test = {k[len("test_") :]: float(v) for k, v in result.metrics.items() if k.startswith("test_")}
    return test, load_checkpoint_state(result.checkpoint)["model"]


def _log_model(tracker: Tracker, run_id: str, dataset: MSADataset, config: dict[str, Any], state: dict) -> str:
    """The final model as an MLflow PyTorch model (weights + the config that rebuilds it)."""
    import mlflow
    import mlflow.pytorch

    from ray_msa.models import build_model
    from ray_msa.train.loop import model_config

    model = build_model(config["arch"], dataset.modalities, dataset.feature_dims(), model_config(config), dataset.task)
    model.load_state_dict(state)
    model.eval()
    mlflow.set_tracking_uri(tracker.uri)
    with mlflow.start_run(run_id=run_id):
        info = mlflow.pytorch.log_model(
            model, name="model", serialization_format="pickle", pip_requirements=["torch", "ray_msa"]
        )
        mlflow.log_dict(
            {
                "arch": config["arch"],
                "modalities": list(dataset.modalities),
                "feature_dims": dataset.feature_dims(),
                "model_config": model_config(config),
                "dataset": dataset.name,
                "task": dataset.task,
                "metric_set": dataset.metric_set,
                "class_names": list(dataset.class_names),
            },
            "model_spec.json",
        )
    return info.model_uri


def results_table(result: StudyResult, metric_names: tuple[str, ...] = METRICS) -> str:
    """Fold mean ± std of the best trial and its test metrics, one row per metric. A test split
    without labels (MVSA's unlabelled posts, which `predict` tags) shows '-', not nan."""
    lines = [f"{'metric':<10} {'CV mean ± std (best trial)':>28} {'test':>8}", "-" * 48]
    for name in metric_names:
        mean, std = result.cv.get(f"mean_{name}", math.nan), result.cv.get(f"std_{name}", math.nan)
        test = result.test.get(name, math.nan)
        lines.append(f"{name:<10} {f'{mean:.4f} ± {std:.4f}':>28} {'-' if math.isnan(test) else f'{test:.4f}':>8}")
    if not result.test:
        lines.append("test: the test split has no labels (python -m ray_msa.predict tags it)")
    return "\n".join(lines)


def default_storage() -> str:
    path = Path(os.environ.get("RAY_MSA_STORAGE", "ray_results")).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return str(path)
