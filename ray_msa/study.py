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
import secrets
import signal
import tempfile
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import ray
import torch
from optuna.samplers import BaseSampler, RandomSampler, TPESampler
from ray import tune
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.optuna import OptunaSearch

from ray_msa.config import TextConfig
from ray_msa.console import routing_kept_through_ray_init
from ray_msa.data.dataset import MSADataset
from ray_msa.errors import InputError
from ray_msa.metrics import METRICS, mode_of
from ray_msa.models.ensemble import FoldEnsemble
from ray_msa.plan import TRIAL_CPU, Plan
from ray_msa.search_space import SpaceFile
from ray_msa.serving.pyfunc import log_pyfunc
from ray_msa.serving.stored import write_model_files
from ray_msa.statistics import t_interval
from ray_msa.study_plots import log_study_plots, optuna_study
from ray_msa.study_progress import StudyCallback, close_cut_trials, drop_checkpoints
from ray_msa.tracking import Tracker, git_commit, redact
from ray_msa.train.ray_train_run import trainer
from ray_msa.train.workers import (
    cross_validate_in_trial,
    cross_validate_worker,
    final_train_in_task,
    final_train_worker,
    load_checkpoint_state,
)
from ray_msa.trial import RunContext, TrialConfig

RECORDS = "ray_msa_studies"  # <storage>/ray_msa_studies/<study>.json: what --resume needs


class StudyInterrupted(Exception):
    """The study stopped on SIGINT/SIGTERM; its state is saved and it can be resumed."""

    def __init__(self, study_name: str) -> None:
        super().__init__(study_name)
        self.study_name = study_name


@dataclass
class StudySettings:
    """A study as the command line asked for it; each trial's configuration is
    `space.build(sampled values, flags, text)`."""

    dataset: str
    space: SpaceFile
    trials: int
    workers: int
    tracking_uri: str
    storage: str
    flags: dict[str, Any] = field(default_factory=dict)  # training settings from the command line
    text: TextConfig = field(default_factory=TextConfig)
    engine: str | None = None  # None: deepspeed when the workers get GPUs, else ddp
    cpus_per_worker: float | None = None
    use_gpu: bool | None = None  # None: one GPU per worker if the cluster has GPUs
    max_failures: int = 2
    concurrent: int | None = None  # None: as many trials as the cluster's free resources hold
    time_budget_min: float | None = None  # stop starting and running trials after this long (then retrain the best)
    test_seeds: int = 1  # the best configuration retrained and tested once per seed (seed, seed + 1, ...)
    sampler: str = "tpe"  # "tpe" (Optuna's TPE) or "random" (Optuna's random sampler)
    pruner: str = "asha"  # "asha" stops laggards at epochs 2, 4, ...; "none" runs every trial to its end
    keep_checkpoints: bool = False  # False: a trial's checkpoints go once its runs are closed, all once it finishes
    command: list[str] = field(default_factory=list)  # the CLI arguments, kept so --resume rebuilds the same study
    extra_params: dict[str, Any] = field(default_factory=dict)

    @property
    def arch(self) -> str:
        return self.space.arch

    @property
    def base(self) -> TrialConfig:
        """The file's and the flags' settings, before anything is sampled."""
        return self.space.build(None, self.flags, self.text)

    @property
    def metric(self) -> str:
        metric = self.base.train.metric
        if metric is None:
            raise ValueError("StudySettings.flags must name the metric (the dataset's default is resolved by tune)")
        return metric

    @property
    def mode(self) -> str:
        return mode_of(self.metric)


@dataclass
class StudyResult:
    study_run_id: str
    best_config: dict[str, Any]  # the sampled values of the best trial
    cv: dict[str, float]
    test: dict[str, float]  # the mean over seeds of each test metric
    trials: int
    wall_s: float
    ray_overhead_s: tuple[float, float]
    model_uri: str
    trial: TrialConfig | None = None  # the final model's resolved configuration
    test_seeds: dict[str, list[float]] = field(default_factory=dict)  # metric -> its value for each seed, in order


@dataclass
class StudyRun:
    """The study's MLflow run and its --resume record on disk."""

    name: str
    run_id: str
    record: dict[str, Any]
    path: Path

    def save(self, **changes: Any) -> None:
        self.record.update(changes)
        _write_record(self.path, self.record)


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


class StopRequest:
    """SIGINT (Ctrl+C) and SIGTERM (`kill`, a scheduler's preemption, `ray job stop`) while Tune runs ask Tune
    to end the run and save its state (through SIGUSR1, which Tune listens on), and the study remembers it was
    stopped: a stop while no trial is mid-run (one waiting for resources) leaves Tune reporting every trial
    as ended, and the study must not go on to its final training as if tuning were done. A second signal, or
    one outside tuning, stops at once (KeyboardInterrupt)."""

    def __init__(self) -> None:
        self.requested = False
        self.tuning = False

    def __call__(self, signum, frame) -> None:
        if self.tuning and not self.requested and callable(signal.getsignal(signal.SIGUSR1)):
            self.requested = True
            signal.raise_signal(signal.SIGUSR1)
            return
        raise KeyboardInterrupt

    def fit(self, tuner: tune.Tuner) -> tune.ResultGrid:
        """`tuner.fit()` with Tune's own SIGINT handler off (this one decides) and its SIGUSR1 one on."""
        saved = os.environ.get("TUNE_DISABLE_SIGINT_HANDLER")
        os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
        self.requested, self.tuning = False, True
        try:
            return tuner.fit()
        finally:
            self.tuning = False
            if threading.current_thread() is threading.main_thread():
                signal.signal(signal.SIGUSR1, signal.SIG_DFL)  # Tune leaves its handler of the finished run
            if saved is None:
                os.environ.pop("TUNE_DISABLE_SIGINT_HANDLER", None)
            else:
                os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = saved


STOP = StopRequest()


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


def trial_folders(storage: str, study_name: str, trial: Any) -> list[Path]:
    """Where a Tune trial's checkpoints are: its folder in the study's storage (`trial.path`; `local_path` is the
    driver's staging folder), and its Ray Train run's when it has one."""
    return [Path(trial.path), Path(storage) / f"{study_name}-{trial.trial_id}"]


def closed_trial_folders(storage: str, study_name: str, trial: Any) -> list[Path]:
    """`trial_folders` of a trial that Tune completed; none once a stop is requested, so that no trial that
    `--resume` may continue loses its checkpoint."""
    return [] if STOP.requested else trial_folders(storage, study_name, trial)


def cross_validate_trial(trial: TrialConfig, run: RunContext, plan: Plan, name: str) -> None:
    """A Tune trial's K-fold cross-validation: in its own process (one CPU worker), else as Ray Train run `name`."""
    if plan.in_trial:
        cross_validate_in_trial(trial, run)
        return
    trainer(cross_validate_worker, trial, run, plan, name, in_tune=True).fit()


def tune_fault_tolerance(plan: Plan) -> dict[str, Any]:
    """Tune's checkpoint and failure settings of a study's or a grid's trials (its `tune.RunConfig`)."""
    return {
        "checkpoint_config": tune.CheckpointConfig(num_to_keep=1),
        "failure_config": tune.FailureConfig(max_failures=plan.trial_failures),
    }


def run_trial(sampled: dict[str, Any], dataset_ref: list, context: dict[str, Any]) -> None:
    """Tune trainable: one trial = the K-fold cross-validation of one sampled configuration."""
    settings: StudySettings = context["settings"]
    plan: Plan = context["plan"]
    trial = settings.space.build(sampled, {**settings.flags, "engine": plan.engine}, settings.text)
    trial_id = tune.get_context().get_trial_id()
    number = trial_id.rsplit("_", 1)[-1]
    tracker = Tracker(settings.tracking_uri)
    trial_run = tracker.child(context["study_run_id"], f"trial-{number}", {"role": "trial", "ray_trial_id": trial_id})
    tracker.params(trial_run, trial.params())  # the resolved configuration
    tracker.dataset_input(trial_run, *context["data_input"])
    run = RunContext(
        settings.tracking_uri, context["study_run_id"], trial_run, f"trial {number}", dataset_ref, plan.threads
    )
    cross_validate_trial(trial, run, plan, f"{context['study_name']}-{trial_id}")


def _open_study(
    tracker: Tracker, dataset: MSADataset, settings: StudySettings, resume: dict[str, Any] | None
) -> StudyRun:
    """The study's MLflow run (new, or the interrupted one) and its record."""
    fingerprint = dataset.fingerprint()
    if resume:
        if resume.get("data_fingerprint") not in (None, fingerprint):
            raise InputError(
                settings.dataset,
                "data",
                f"changed since study {resume['study_name']} started ({resume['data_fingerprint']} -> {fingerprint})",
                "resume with the same data, or start a new study",
            )
        tracker.reopen(resume["study_run_id"])
        return StudyRun(
            resume["study_name"], resume["study_run_id"], resume, study_record(settings.storage, resume["study_name"])
        )
    experiment = tracker.experiment(f"ray_msa-{settings.dataset}")
    # a random tail: two studies of one architecture started in the same second on one cluster shared Tune's
    # staging folder (named by experiment and start time), and each wrote its trials into the other's storage
    name = f"{settings.arch}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"
    tags = {
        "role": "study",
        "arch": settings.arch,
        "dataset": settings.dataset,
        "data_fingerprint": fingerprint,
        "mlflow.source.git.commit": git_commit(),
        "data_source": dataset.source,
        "metric_set": dataset.metric_set,
    }
    run_id = tracker.start(experiment, name, tags)
    base = settings.base
    tracker.params(
        run_id,
        {
            "arch": settings.arch,
            "dataset": settings.dataset,
            "trials": settings.trials,
            "folds": base.train.folds,
            "workers": settings.workers,
            "seed": base.train.seed,
            "metric": settings.metric,
            "text_mode": settings.text.mode,
            "text_model": settings.text.model,
            "data_fingerprint": fingerprint,
            "space_file": str(settings.space.path),
            "sampler": settings.sampler,
            "pruner": settings.pruner,
            **settings.extra_params,
            **{f"space.{k}": v for k, v in settings.space.space.items()},
        },
    )
    record = {
        "study_name": name,
        "study_run_id": run_id,
        "dataset": settings.dataset,
        "arch": settings.arch,
        "command": settings.command,
        "data_fingerprint": fingerprint,
        "data_source": dataset.source,
        "started": time.time(),
        "finished": False,
    }
    return StudyRun(name, run_id, record, study_record(settings.storage, name))


def plan_cluster(settings: StudySettings) -> Plan:
    """Start or join Ray, then fit the trials to the cluster's CPUs and GPUs."""
    # Keeping one checkpoint per trial makes Tune save its state at each, as it must, and warn when that is often
    # (small trials checkpointing every epoch): read by Tune in this driver process
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    if not ray.is_initialized():
        # joins the cluster of RAY_ADDRESS (a `ray job submit` job) or of `ray start`, else starts a
        # local one whose dashboard (which serves the State API Ray Train uses) binds 127.0.0.1
        with routing_kept_through_ray_init() as configure_logging:
            ray.init(log_to_driver=True, logging_level="WARNING", configure_logging=configure_logging)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, STOP)  # after ray.init, which installs its own (abort) handler
        signal.signal(signal.SIGINT, STOP)
    resources = ray.cluster_resources()
    total_cpus, gpus = resources.get("CPU", 1.0), resources.get("GPU", 0.0)
    use_gpu, engine = choose_devices(gpus, settings.use_gpu, settings.engine)
    per_worker, threads, concurrent = plan_resources(
        total_cpus, settings.workers, settings.cpus_per_worker, gpus if use_gpu else 0.0
    )
    plan = Plan(
        use_gpu,
        engine,
        per_worker,
        threads,
        settings.concurrent or concurrent,
        settings.workers,
        settings.storage,
        settings.max_failures,
        in_trial=settings.workers == 1 and not use_gpu and settings.engine is None,
    )
    print(
        f"resources: {total_cpus:g} CPUs, {gpus:g} GPUs; {settings.workers} worker(s) x {per_worker:g} CPU "
        f"({threads} threads)"
        f"{' + 1 GPU' if use_gpu else ''}, engine {engine}; {plan.concurrent} concurrent trial(s)",
        flush=True,
    )
    return plan


def search_algorithms(settings: StudySettings) -> tuple[BaseSampler, ASHAScheduler | None]:
    """The study's sampler (TPE, its first trials random; or random throughout) and its scheduler (ASHA
    stopping laggards at epochs 2, 4, ...; or None, Tune's FIFO, every trial trained to its end)."""
    train = settings.base.train
    if settings.sampler == "random":
        sampler: BaseSampler = RandomSampler(seed=train.seed)
    else:
        sampler = TPESampler(seed=train.seed, n_startup_trials=max(2, min(5, settings.trials // 3)))
    if settings.pruner == "none":
        return sampler, None
    grace = min(2, train.max_epochs)
    return sampler, ASHAScheduler(time_attr="epoch", max_t=train.max_epochs, grace_period=grace, reduction_factor=2)


def _tuner(
    settings: StudySettings,
    study: StudyRun,
    plan: Plan,
    dataset_ref: list,
    callback: StudyCallback,
    budget_s: float | None,
    resume: bool,
) -> tune.Tuner:
    """Optuna's TPE (or random sampler) proposes, ASHA (unless `pruner` is "none") stops laggards at epochs
    2, 4, ...; a resumed study restores Tune's state."""
    data_input = (settings.dataset, study.record["data_fingerprint"], study.record.get("data_source", settings.dataset))
    context = {
        "settings": settings,
        "plan": plan,
        "study_run_id": study.run_id,
        "study_name": study.name,
        "data_input": data_input,
    }
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, dataset_ref=dataset_ref, context=context), plan.trial_resources
    )
    experiment_path = Path(settings.storage) / study.name
    if resume and tune.Tuner.can_restore(str(experiment_path)):
        return tune.Tuner.restore(str(experiment_path), trainable, resume_unfinished=True, resume_errored=True)
    sampler, scheduler = search_algorithms(settings)
    return tune.Tuner(
        trainable,
        param_space=settings.space.tune_space(),
        tune_config=tune.TuneConfig(
            metric=f"mean_{settings.metric}",
            mode=settings.mode,
            num_samples=settings.trials,
            max_concurrent_trials=plan.concurrent,
            time_budget_s=budget_s,
            search_alg=OptunaSearch(sampler=sampler, points_to_evaluate=list(settings.space.start) or None),
            scheduler=scheduler,
            reuse_actors=plan.reuse_trial_processes,
        ),
        run_config=tune.RunConfig(
            name=study.name,
            storage_path=settings.storage,
            callbacks=[callback],
            verbose=0,
            **tune_fault_tolerance(plan),
        ),
    )


def best_result(results: Iterable[Any], objective: str, mode: str) -> Any:
    """The trial whose last report has the best CV objective (lowest for "min"); a trial that reported
    none (it failed first) or nan is never chosen; of equal ones, the earliest."""
    scored = [r for r in results if r.metrics and math.isfinite(float(r.metrics.get(objective, math.nan)))]
    if not scored:
        errors = [str(r.error) for r in results if r.error]
        raise RuntimeError(f"no trial reported {objective}; first error: {errors[0] if errors else 'none'}")
    pick = min if mode == "min" else max
    return pick(scored, key=lambda r: float(r.metrics[objective]))


def refit_epochs(best_epochs: Sequence[int]) -> int:
    """Epochs for the refit on train+valid: the mean of the folds' best epochs, rounded (half to even), >= 1."""
    return max(1, int(round(float(np.mean(best_epochs)))))


def _select_best(
    grid: Any, settings: StudySettings, tracker: Tracker, study: StudyRun
) -> tuple[dict[str, Any], dict[str, float], int]:
    """The trial with the best CV objective (validation folds only): its sampled values, its
    fold mean and std of every metric, and the refit's epochs (its folds' mean best epoch)."""
    objective = f"mean_{settings.metric}"
    best = best_result(grid, objective, settings.mode)
    sampled = dict(best.config)
    cv = {k: float(v) for k, v in best.metrics.items() if k.startswith(("mean_", "std_"))}
    final_epochs = refit_epochs(best.metrics["best_epochs"])
    tracker.params(study.run_id, {f"best.{k}": v for k, v in sampled.items()} | {"final_epochs": final_epochs})
    tracker.metrics(study.run_id, {f"cv_{k}": v for k, v in cv.items()})
    final = (
        f"its {settings.base.train.folds} fold models, averaged, on test"
        if settings.base.train.final == "ensemble"
        else f"retraining on train+valid for {final_epochs} epochs"
    )
    print(f"best trial: CV mean {settings.metric} {cv[objective]:.4f}; {final}", flush=True)
    return sampled, cv, final_epochs


def _final_training(
    trial: TrialConfig, run: RunContext, plan: Plan, study_name: str, seeds: int, tracker: Tracker
) -> tuple[dict[str, list[float]], dict]:
    """The best configuration retrained on train+valid once per seed (seed, seed + 1, ...; side by side
    when the cluster holds several), each evaluated once on test and recorded as a `final` child run of
    the study with its test predictions: (metric -> value per seed, the first seed's weights)."""

    def one(k: int) -> tuple[dict[str, float], Any]:
        seed = trial.train.seed + k
        child = tracker.child(run.study_run_id, f"final-seed-{seed}", {"role": "final", "seed": str(seed)})
        seeded = trial.with_train(seed=seed)
        tracker.params(child, seeded.params())
        context = replace(run, trial_run_id=child, trial_name=f"final seed {seed}")
        try:
            test, weights = _train_final(seeded, context, plan, f"{study_name}-final-{seed}", k == 0)
        except BaseException:
            tracker.finish(child, "FAILED")
            raise
        tracker.metrics(child, {f"test_{m}": v for m, v in test.items()})
        tracker.finish(child)
        return test, weights

    side_by_side = min(seeds, plan.concurrent)
    if side_by_side > 1:
        with ThreadPoolExecutor(max_workers=side_by_side) as pool:
            results = list(pool.map(one, range(seeds)))
    else:  # one at a time: in this thread, as Ray Train's driver expects by default
        results = [one(k) for k in range(seeds)]
    per_seed = {name: [test[name] for test, _ in results] for name in results[0][0]}
    return per_seed, results[0][1]  # the first seed's model is the one logged


def _train_final(trial: TrialConfig, run: RunContext, plan: Plan, name: str, weights: bool) -> tuple[dict, dict | None]:
    """One final model trained and tested: in a Ray task (one CPU worker), else as Ray Train run `name`:
    (test metric -> value, its weights if asked for)."""
    if plan.in_trial:
        task = ray.remote(final_train_in_task).options(
            num_cpus=TRIAL_CPU + plan.cpus_per_worker, max_retries=plan.max_failures
        )
        test, state = ray.get(task.remote(trial, run))
        return {m: float(v) for m, v in test.items()}, state if weights else None
    result = trainer(final_train_worker, trial, run, plan, name, in_tune=False).fit()
    test = {m[len("test_") :]: float(v) for m, v in result.metrics.items() if m.startswith("test_")}
    return test, load_checkpoint_state(result.checkpoint) if weights else None


def final_evaluation(
    tracker: Tracker,
    run_id: str,
    dataset: MSADataset,
    trial: TrialConfig,
    dataset_ref: list,
    plan: Plan,
    name: str,
    seeds: int,
    keep_checkpoints: bool = False,
) -> tuple[dict[str, list[float]], dict[str, float], str]:
    """The final model (`trial.train.final`) trained and tested once per seed as `final` children of run
    `run_id`, which gets the test summary over seeds and the logged model (the first seed's, or its fold
    ensemble): (metric -> value per seed, metric -> mean over seeds, the model's URI)."""
    run = RunContext(tracker.uri, run_id, None, "final", dataset_ref, plan.threads)
    per_seed, model_state = _final_training(trial, run, plan, name, seeds, tracker)
    summary = test_summary(per_seed)
    tracker.metrics(run_id, {f"test_{k}": v for k, v in summary.items()})
    tracker.metrics(run_id, {"final_seeds": seeds})
    model_uri = _log_model(tracker, run_id, dataset, trial, model_state)
    if not keep_checkpoints:  # the model is in MLflow now
        drop_checkpoints(*Path(plan.storage).glob(f"{name}-final-*"))
    return per_seed, {metric: summary[metric] for metric in per_seed}, model_uri


def test_summary(per_seed: dict[str, list[float]]) -> dict[str, float]:
    """Each test metric's mean over seeds (`<m>`), std (`std_<m>`) and 95% t-interval (`ci_low_<m>`,
    `ci_high_<m>`; nan for one seed)."""
    out = {}
    for name, values in per_seed.items():
        mean, std, low, high = t_interval(values)
        out |= {name: mean, f"std_{name}": std, f"ci_low_{name}": low, f"ci_high_{name}": high}
    return out


def run_study(dataset: MSADataset, settings: StudySettings, resume: dict[str, Any] | None = None) -> StudyResult:
    """Tune, pick the best trial on CV, retrain it on train+valid, test once, log it all.
    With `resume` (a record from `find_study`), continue that interrupted study instead."""
    started = time.time()
    tracker = Tracker(settings.tracking_uri)
    study = _open_study(tracker, dataset, settings, resume)
    study.save()
    tracker.dataset_input(study.run_id, settings.dataset, study.record["data_fingerprint"], dataset.source)
    print(
        f"study {study.name}{' (resumed)' if resume else ''}: {dataset.summary()}; fingerprint "
        f"{dataset.fingerprint()}; "
        f"MLflow {redact(settings.tracking_uri)} run {study.run_id}",
        flush=True,
    )
    try:
        plan = plan_cluster(settings)
        tracker.params(study.run_id, {"engine": plan.engine, "use_gpu": plan.use_gpu})
        dataset_ref = [ray.put(dataset)]
        budget_s = settings.time_budget_min * 60 if settings.time_budget_min else None
        deadline = time.time() + budget_s if budget_s else None
        folders = None if settings.keep_checkpoints else partial(closed_trial_folders, settings.storage, study.name)
        callback = StudyCallback(tracker, settings.metric, settings.trials, deadline, folders)
        grid = STOP.fit(_tuner(settings, study, plan, dataset_ref, callback, budget_s, resume is not None))
        out_of_time = deadline is not None and time.time() >= deadline - 1
        unfinished = grid.num_terminated + grid.num_errors < len(grid) or len(grid) < settings.trials
        if STOP.requested or (not out_of_time and unfinished):
            raise StudyInterrupted(study.name)  # Tune stopped on a signal; its state is saved
        if out_of_time:
            cut = close_cut_trials(tracker, study.run_id)
            print(
                f"time budget of {settings.time_budget_min:g} min used: {len(grid)} of {settings.trials} trials ran"
                f"{f', {cut} cut mid-trial (KILLED in MLflow)' if cut else ''}",
                flush=True,
            )
        sampled, cv, final_epochs = _select_best(grid, settings, tracker, study)
        log_study_plots(tracker, study.run_id, optuna_study(grid, settings.space, settings.metric, settings.mode))
        final = settings.space.build(
            sampled, {**settings.flags, "engine": plan.engine, "final_epochs": final_epochs}, settings.text
        )
        per_seed, test, model_uri = final_evaluation(
            tracker,
            study.run_id,
            dataset,
            final,
            dataset_ref,
            plan,
            study.name,
            settings.test_seeds,
            settings.keep_checkpoints,
        )
        wall = time.time() - started + float(study.record.get("wall_before_s", 0.0))
        overhead, trial_wall = callback.ray_overhead()
        tracker.metrics(
            study.run_id,
            {
                "wall_time_s": wall,
                "trials_run": len(grid),
                "ray_overhead_s_per_trial": overhead,
                "trial_wall_s": trial_wall,
            },
        )
        tracker.finish(study.run_id)
        study.save(finished=True)
        if not settings.keep_checkpoints:  # a finished study is never resumed: every checkpoint has done its work
            drop_checkpoints(*Path(settings.storage).glob(f"{study.name}*"))
        return StudyResult(
            study.run_id, sampled, cv, test, len(grid), wall, (overhead, trial_wall), model_uri, final, per_seed
        )
    except BaseException as err:  # a failed or interrupted study is never left RUNNING
        interrupted = isinstance(err, (KeyboardInterrupt, StudyInterrupted))
        tracker.finish(study.run_id, "KILLED" if interrupted else "FAILED")
        study.save(wall_before_s=float(study.record.get("wall_before_s", 0.0)) + time.time() - started)
        raise


def _log_model(tracker: Tracker, run_id: str, dataset: MSADataset, trial: TrialConfig, weights: dict) -> str:
    """The final model (the refit one, or the fold models as one `FoldEnsemble`) as an MLflow pyfunc whose
    weights are a safetensors file, and `model_spec.json`: what the model was trained on and its resolved
    configuration, which `predict`, `ablate` and the served model read back typed."""
    fitted = trial.restrict(dataset)

    def built(state: dict) -> torch.nn.Module:
        model = trial.spec.for_dataset(fitted, trial.model, trial.text)
        model.load_state_dict(state)
        return model

    members = weights.get("folds", [])
    model = FoldEnsemble([built(s) for s in members]) if members else built(weights["model"])
    record = model_record(fitted, trial) | {"members": len(members)}
    mlflow.set_tracking_uri(tracker.uri)
    with tempfile.TemporaryDirectory() as tmp, mlflow.start_run(run_id=run_id):
        write_model_files(Path(tmp), model, record)
        uri = log_pyfunc(Path(tmp), record)
        mlflow.log_dict(record, "model_spec.json")
    return uri


def model_record(dataset: MSADataset, trial: TrialConfig) -> dict[str, Any]:
    """`model_spec.json`: the data the model fits and the configuration that rebuilds it."""
    return {
        "arch": trial.arch,
        "modalities": list(dataset.modalities),
        "feature_dims": dataset.feature_dims(),
        "dataset": dataset.name,
        "task": dataset.task,
        "metric_set": dataset.metric_set,
        "class_names": list(dataset.class_names),
        "config": trial.to_dict(),
    }


def results_table(result: StudyResult, metric_names: tuple[str, ...] = METRICS) -> str:
    """Fold mean ± std of the best trial and its test metrics, one row per metric. A test split
    without labels (MVSA's unlabelled posts, which `predict` tags) shows '-', not nan."""
    seeds = len(next(iter(result.test_seeds.values()), []))
    if seeds > 1:
        head = f"test mean ± std over {seeds} seeds [95% CI]"
        lines = [f"{'metric':<10} {'CV mean ± std (best trial)':>28}   {head}", "-" * (44 + len(head))]
    else:
        lines = [f"{'metric':<10} {'CV mean ± std (best trial)':>28} {'test':>8}", "-" * 48]
    for name in metric_names:
        mean, std = result.cv.get(f"mean_{name}", math.nan), result.cv.get(f"std_{name}", math.nan)
        test = result.test.get(name, math.nan)
        if seeds > 1 and name in result.test_seeds:
            t_mean, t_std, low, high = t_interval(result.test_seeds[name])
            shown = f"{t_mean:.4f} ± {t_std:.4f} [{low:.4f}, {high:.4f}]"
            lines.append(f"{name:<10} {f'{mean:.4f} ± {std:.4f}':>28}   {shown}")
            continue
        lines.append(f"{name:<10} {f'{mean:.4f} ± {std:.4f}':>28} {'-' if math.isnan(test) else f'{test:.4f}':>8}")
    if not result.test:
        lines.append("test: the test split has no labels (python -m ray_msa.predict tags it)")
    return "\n".join(lines)


def default_storage() -> str:
    path = Path(os.environ.get("RAY_MSA_STORAGE", "ray_results")).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return str(path)
