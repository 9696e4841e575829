"""The one training loop: every architecture, both engines, CV and final training.

A trial is a K-fold cross-validation over train+valid. The K folds train in lockstep,
one epoch each per round, so after every epoch the trial reports the mean over folds of
each fold's best validation metric so far; ASHA compares trials on that. Each fold
stops early on its own validation metric and restores its best weights at the end.
The loop runs inside Ray Train workers (`workers.py`) and also in a plain process (tests,
benchmarks, the GPU check) through the same functions; it imports neither Ray nor MLflow.
"""

from __future__ import annotations

import copy
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from ray_msa.data.dataset import MSADataset, Split
from ray_msa.data.folds import development_pool, group_folds
from ray_msa.metrics import DEFAULT_METRIC, METRIC_SETS, compute_metrics, is_better
from ray_msa.train.batches import batches, evaluation_groups, input_stats, length_bucketed, sequence_lengths, shard
from ray_msa.train.engine import Engine, make_engine
from ray_msa.train.missing import MISSING_STREAM, MissingInputs, missing_inputs
from ray_msa.trial import RunContext, TrialConfig

Report = Callable[[dict[str, Any], dict[str, Any] | None], None]


@dataclass
class WorkerContext:
    rank: int = 0
    world: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_chief(self) -> bool:
        return self.rank == 0


@dataclass
class Fold:
    """One fold's model and early-stopping state."""

    index: int
    train_idx: np.ndarray
    val_idx: np.ndarray
    engine: Engine
    best_value: float | None = None
    best_epoch: int = -1
    best_metrics: dict[str, float] = field(default_factory=dict)
    best_state: dict[str, torch.Tensor] | None = None
    bad_epochs: int = 0
    done: bool = False
    run_id: str | None = None
    history: list[dict[str, float]] = field(default_factory=list)
    best_predictions: np.ndarray | None = None  # validation outputs of the best epoch (confusion matrix)
    best_plots: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # the model's box plots, best epoch

    def progress(self) -> dict[str, Any]:
        """What a checkpoint keeps (tensors, not arrays: checkpoints load with weights_only=True)."""
        state = {
            k: getattr(self, k) for k in ("best_value", "best_epoch", "best_metrics", "bad_epochs", "done", "history")
        }
        state["best_predictions"] = None if self.best_predictions is None else torch.as_tensor(self.best_predictions)
        return state


def progress(message: str) -> None:
    """A progress line on stdout (Ray Train patches print() into its logger and stdout both)."""
    sys.stdout.write(message + "\n")
    sys.stdout.flush()


def new_engine(
    trial: TrialConfig, dataset: MSADataset, split: Split, train_idx: np.ndarray, seed: int, ctx: WorkerContext
) -> Engine:
    """A fresh model and engine for one fold; its learning-rate schedule spans max_epochs."""
    torch.manual_seed(seed)
    model = trial.spec.for_dataset(dataset, trial.model, trial.text)
    reads = model.inputs()
    model.set_input_stats(
        input_stats(split, train_idx, tuple(m for m in dataset.modalities if reads is None or m in reads))
    )
    model.prepare_from_training_data(split, train_idx)
    steps_per_epoch = -(-len(train_idx) // trial.train.batch_size)
    return make_engine(model, trial.train, ctx.device, steps_per_epoch * trial.train.max_epochs)


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def train_epoch(
    engine: Engine,
    split: Split,
    index: np.ndarray,
    batch_size: int,
    seed: list[int],
    ctx: WorkerContext,
    missing: MissingInputs | None = None,
) -> dict[str, float]:
    """One pass over `index` in a seeded order: the global batches are the same for any number of workers,
    and each worker trains on its share of every batch, its loss weighted by that share, so the gradient
    the workers average is the whole batch's (W workers at batch B train as one worker at batch B).
    With `missing`, each global batch loses inputs as `train.missing_rate` says, drawn from its own stream."""
    engine.train(True)
    rng = np.random.default_rng(seed)
    torch.manual_seed(int(rng.integers(2**31)))  # dropout too depends only on (seed, fold, epoch): resumes are exact
    groups = length_bucketed(rng.permutation(index), sequence_lengths(split), batch_size, rng)
    shares = [shard(group, ctx.rank, ctx.world) for group in groups]
    weights = [len(share) * ctx.world / len(group) for share, group in zip(shares, groups)]
    # a batch smaller than the world leaves some workers nothing: they step on one sample weighted 0
    local = [share if len(share) else group[:1] for share, group in zip(shares, groups)]
    if missing is None:
        source = batches(split, local, engine.model.inputs())
    else:  # masks drawn for the global batch, then shared out, so W workers see what one worker sees
        masks = np.random.default_rng([*seed, MISSING_STREAM])
        source = _missing_batches(missing, split, groups, masks, engine.model.inputs(), ctx)
    sums: dict[str, float] = {}
    steps = 0
    for batch, weight in zip(source, weights):
        batch = to_device(batch, ctx.device)
        output = engine.forward(batch)
        loss, parts = engine.model.loss(output, batch)
        engine.backward(loss if weight == 1.0 else loss * weight)
        parts.update(engine.model.after_backward(output, batch, engine.full_grad))
        engine.step()
        parts["loss"] = float(loss.detach())
        for k, v in parts.items():
            sums[k] = sums.get(k, 0.0) + v
        steps += 1
    return {f"train_{k}": v / max(steps, 1) for k, v in sums.items()}


def _missing_batches(
    missing: MissingInputs,
    split: Split,
    groups: list[np.ndarray],
    rng: np.random.Generator,
    inputs: tuple[str, ...] | None,
    ctx: WorkerContext,
) -> Iterator[dict[str, torch.Tensor]]:
    """This worker's share of each global batch after its inputs went missing (masks drawn for the whole
    batch, so W workers see what one worker sees; the first sample when the share is empty, as `train_epoch`)."""
    for part, group in zip(missing.epoch(split, groups, rng), groups):
        positions = shard(np.arange(len(group)), ctx.rank, ctx.world)
        yield next(batches(part, [positions if len(positions) else np.zeros(1, np.int64)], inputs))


@torch.no_grad()  # not inference_mode: ZeRO-3 gathers parameters here, and training must reuse them
def predict_with_extras(
    engine: Engine, split: Split, index: np.ndarray, batch_size: int, ctx: WorkerContext
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Predicted scores for `index` and the model's per-sample extras (auxiliary task outputs,
    attention weights), computed in batches shared out over the workers and gathered on every worker.
    The batches (sorted by length) are the same for any number of workers, so every sample's prediction
    is too, bit for bit; every worker runs as many forward passes (ZeRO 3 gathers parameters in each)."""
    engine.train(False)
    groups = evaluation_groups(split, index, batch_size)  # positions in index
    mine = groups[ctx.rank :: ctx.world]
    rounds = -(-len(groups) // ctx.world)
    padded = mine + groups[:1] * (rounds - len(mine))  # a worker with fewer batches repeats one, unused
    positions = np.concatenate(mine) if mine else np.zeros(0, np.int64)
    scores, extras = [], {}
    for round_, b in enumerate(batches(split, [index[g] for g in padded], engine.model.inputs())):
        output = engine.predict(to_device(b, ctx.device))
        if round_ >= len(mine):
            continue
        scores.append(output.prediction.float().cpu().numpy())
        for k, v in output.extras.items():
            if v.dim() >= 1 and v.size(0) == len(scores[-1]):
                extras.setdefault(k, []).append(v.float().cpu().numpy())
    local = (positions, np.concatenate(scores) if scores else np.zeros(0, np.float32))
    local_extras = {k: np.concatenate(v) for k, v in extras.items()}
    parts = [(local, local_extras)]
    if ctx.world > 1:
        parts = [None] * ctx.world
        dist.all_gather_object(parts, (local, local_extras))

    def gathered(pieces: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
        tail = next((values.shape[1:] for _, values in pieces if len(values)), ())  # (8,) for emotion logits
        out = np.zeros((len(index), *tail), np.float32)
        for pos, values in pieces:
            out[pos] = values
        return out

    names = set().union(*(e.keys() for _, e in parts))
    return gathered([p for p, _ in parts]), {
        k: gathered([(pos, e[k]) for (pos, _), e in parts if k in e]) for k in sorted(names)
    }


def predict(engine: Engine, split: Split, index: np.ndarray, batch_size: int, ctx: WorkerContext) -> np.ndarray:
    """Predicted scores (or logits) for `index`, in its order."""
    return predict_with_extras(engine, split, index, batch_size, ctx)[0]


def fold_summary(folds: list[Fold], metric_names: tuple[str, ...]) -> dict[str, float]:
    """Mean and std over folds of each fold's best-epoch validation metrics."""
    summary: dict[str, float] = {}
    for name in metric_names:
        values = [f.best_metrics[name] for f in folds if name in f.best_metrics]
        if values:
            summary[f"mean_{name}"] = float(np.mean(values))
            summary[f"std_{name}"] = float(np.std(values))
    return summary


def fold_values(folds: list[Fold], metric_names: tuple[str, ...]) -> dict[str, list[float]]:
    """Each fold's best-epoch value of each metric, by fold index (paired tests compare these)."""
    return {f"folds_{name}": [float(f.best_metrics.get(name, np.nan)) for f in folds] for name in metric_names}


def _restore(folds: list[Fold], resume: dict[str, Any]) -> int:
    """Folds as a checkpoint left them; returns the epoch to continue from."""
    for fold, saved in zip(folds, resume["folds"]):
        fold.engine.load_state_dict(saved["engine"])
        fold.best_state = saved["best_state"]
        for k, v in saved["progress"].items():
            setattr(fold, k, v)
    return resume["epoch"] + 1


def _close_fold_run(tracker: Any, fold: Fold, dataset: MSADataset, pool: Split) -> None:
    """A finished fold's run: its best metrics, plots, confusion matrix (classes), FINISHED."""
    tracker.metrics(fold.run_id, {**fold.best_metrics, "best_epoch": fold.best_epoch + 1})
    tracker.plot_history(fold.run_id, fold.history, fold.engine.model.plot_prefixes)
    for name, series in fold.best_plots.items():
        tracker.box_plot(fold.run_id, name, series)
    if dataset.task == "classes":
        truth, chosen = pool.labels[fold.val_idx], np.asarray(fold.best_predictions).argmax(-1)
        tracker.confusion_matrix(fold.run_id, truth, chosen, dataset.class_names)
    tracker.finish(fold.run_id)


def run_cross_validation(
    trial: TrialConfig,
    dataset: MSADataset,
    report: Report,
    ctx: WorkerContext,
    resume: dict[str, Any] | None = None,
    tracker: Any = None,
    run: RunContext = RunContext(),
) -> dict[str, float]:
    """Train the K folds of one trial in lockstep; report once per epoch. Returns the fold summary."""
    folds = cross_validate(trial, dataset, report, ctx, resume, tracker, run)
    return fold_summary(folds, METRIC_SETS[dataset.metric_set])


def cross_validate(
    trial: TrialConfig,
    dataset: MSADataset,
    report: Report,
    ctx: WorkerContext,
    resume: dict[str, Any] | None = None,
    tracker: Any = None,
    run: RunContext = RunContext(),
) -> list[Fold]:
    """The K folds trained in lockstep, each ending with its best weights restored."""
    train = trial.train
    dataset = trial.restrict(dataset)
    pool = development_pool(dataset)
    metric, seed = train.metric or DEFAULT_METRIC[dataset.metric_set], train.seed
    metric_names = METRIC_SETS[dataset.metric_set]
    classes = pool.labels if dataset.task == "classes" else None
    folds = [
        Fold(i, train_idx, val_idx, new_engine(trial, dataset, pool, train_idx, seed * 1000 + i, ctx))
        for i, (train_idx, val_idx) in enumerate(group_folds(pool.video_ids, train.folds, seed, classes))
    ]
    start_epoch = _restore(folds, resume) if resume else 0
    missing = missing_inputs(trial, dataset)
    if tracker is not None:
        for fold in (f for f in folds if not f.done):  # a fold finished before a restart keeps its finished run
            tags = {"role": "fold", "fold": str(fold.index)}
            fold.run_id = tracker.child(run.trial_run_id, f"fold-{fold.index}", tags)
            sizes = {"fold": fold.index, "train_size": len(fold.train_idx), "val_size": len(fold.val_idx)}
            tracker.params(fold.run_id, sizes)
    if resume and ctx.is_chief:  # a restarted worker or a resumed study says where it picked up
        progress(f"[{run.trial_name}] resumed from its checkpoint after epoch {start_epoch}")
        if tracker is not None:
            resumed = {"resumed_from_epoch": str(start_epoch)}
            for run_id in [run.trial_run_id, *(f.run_id for f in folds if not f.done)]:
                tracker.tags(run_id, resumed)
    for epoch in range(start_epoch, train.max_epochs):
        started = time.perf_counter()
        for fold in (f for f in folds if not f.done):
            fit = train_epoch(
                fold.engine, pool, fold.train_idx, train.batch_size, [seed, fold.index, epoch], ctx, missing
            )
            fold.history.append(fit)
            predictions, extras = predict_with_extras(fold.engine, pool, fold.val_idx, train.batch_size, ctx)
            truth = pool.labels[fold.val_idx]
            val = compute_metrics(dataset.metric_set, predictions, truth)
            val.update(fold.engine.model.validation_metrics(extras, truth))  # auxiliary tasks, scored too
            if is_better(metric, val[metric], fold.best_value):
                fold.best_value, fold.best_epoch, fold.best_metrics, fold.bad_epochs = val[metric], epoch, val, 0
                fold.best_predictions = predictions
                fold.best_plots = fold.engine.model.fold_plots(extras)
                fold.best_state = copy.deepcopy(fold.engine.model.state_dict())
            else:
                fold.bad_epochs += 1
            fold.done = fold.bad_epochs >= train.patience or epoch == train.max_epochs - 1
            if fold.done:  # restore the best weights; its metrics are the fold's result
                fold.engine.model.load_state_dict(fold.best_state)
            if tracker is not None:
                tracker.metrics(fold.run_id, {**fit, **{f"val_{k}": v for k, v in val.items()}}, step=epoch)
                if fold.done:
                    _close_fold_run(tracker, fold, dataset, pool)
        summary = fold_summary(folds, metric_names)
        all_done = all(f.done for f in folds)
        if ctx.is_chief:
            values = " ".join(f"{f.best_value:.3f}" + ("*" if f.done else "") for f in folds)
            progress(
                f"[{run.trial_name}] epoch {epoch + 1}/{train.max_epochs}: best val {metric} by fold {values} | "
                f"mean {summary[f'mean_{metric}']:.4f} | {time.perf_counter() - started:.1f}s"
            )
        if tracker is not None:
            tracker.metrics(run.trial_run_id, summary, step=epoch)
        result = {
            **summary,
            **fold_values(folds, metric_names),
            "epoch": epoch + 1,
            "folds_done": sum(f.done for f in folds),
            "cv_complete": all_done,
            "best_epochs": [f.best_epoch + 1 for f in folds],
            "trial_run_id": run.trial_run_id or "",
        }
        state = None
        if all_done or (epoch + 1) % train.checkpoint_every == 0:
            saved = [
                {"engine": f.engine.state_dict(), "best_state": f.best_state, "progress": f.progress()} for f in folds
            ]
            state = {"epoch": epoch, "folds": saved}
        report(result, state)
        if all_done:
            break
    return folds


def run_final_training(
    trial: TrialConfig, dataset: MSADataset, ctx: WorkerContext, tracker: Any = None, run: RunContext = RunContext()
) -> tuple[dict[str, float], Engine, np.ndarray]:
    """Retrain on all of train+valid for `train.final_epochs` epochs, then evaluate once on test:
    (test metrics, the engine, the test predictions in the split's order)."""
    train = trial.train
    dataset = trial.restrict(dataset)
    if train.final_epochs is None:
        raise ValueError("run_final_training needs train.final_epochs (the best trial's mean best epoch)")
    pool = development_pool(dataset)
    everything = np.arange(len(pool))
    # the folds' schedule, stopped at their best epoch
    engine = new_engine(trial, dataset, pool, everything, train.seed * 1000 + 999, ctx)
    missing = missing_inputs(trial, dataset)
    for epoch in range(train.final_epochs):
        fit = train_epoch(engine, pool, everything, train.batch_size, [train.seed, 999, epoch], ctx, missing)
        if ctx.is_chief:
            progress(f"[final] epoch {epoch + 1}/{train.final_epochs}: train loss {fit['train_loss']:.4f}")
        if tracker is not None:  # the seed's own run, else the study's
            tracker.metrics(run.trial_run_id or run.study_run_id, {f"final_{k}": v for k, v in fit.items()}, step=epoch)
    test = dataset.splits["test"]
    scores = predict(engine, test, np.arange(len(test)), train.batch_size, ctx)
    return _test_metrics(dataset, scores), engine, scores


def run_final_ensemble(
    trial: TrialConfig, dataset: MSADataset, ctx: WorkerContext, run: RunContext = RunContext()
) -> tuple[dict[str, float], list[Engine], np.ndarray]:
    """`--final ensemble`: the trial's K-fold cross-validation again (the same seed gives the same fold
    models as the trial), then each fold's best model predicts test once and the predictions are
    averaged: (test metrics, the fold engines, the averaged test predictions)."""
    folds = cross_validate(trial, dataset, lambda metrics, state: None, ctx, run=run)
    dataset = trial.restrict(dataset)
    test = dataset.splits["test"]
    everything = np.arange(len(test))
    scores = np.mean([predict(f.engine, test, everything, trial.train.batch_size, ctx) for f in folds], axis=0)
    return _test_metrics(dataset, scores), [f.engine for f in folds], scores


def _test_metrics(dataset: MSADataset, scores: np.ndarray) -> dict[str, float]:
    """The test split's metrics; none for unlabelled posts (the CV metrics are the result, `predict` tags them)."""
    test = dataset.splits["test"]
    if dataset.task == "classes" and (test.labels < 0).all():
        return {}
    return compute_metrics(dataset.metric_set, scores, test.labels)
