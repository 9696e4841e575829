"""Data-parallel workers (gloo on CPU, two processes) against one: two workers predict exactly what one
predicts and train at global batch B as one worker at batch B; DeepSpeed ZeRO 1, 2 and 3 train as ZeRO 0
and the DDP engine (per-epoch losses, B-fusion gradients) and restore the best weights under ZeRO 3."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ray_msa.data.folds import development_pool
from ray_msa.data.synthetic import make_synthetic
from ray_msa.metrics import compute_metrics
from ray_msa.search_space import trial_config
from ray_msa.train.engine import DEEPSPEED_CONFIG
from ray_msa.train.loop import WorkerContext, cross_validate, new_engine, predict

pytestmark = pytest.mark.slow
ENGINES = {"ddp": ("ddp", 0), **{f"zero{s}": ("deepspeed", s) for s in range(4)}}
# lf_dnn with B-fusion: its after_backward hook reads every modality's whole gradient, partitioned from ZeRO 1 on
SETTINGS = dict(hidden=16, post_fusion=16, balance=True, folds=2, seed=0, patience=4, batch_size=16, grad_clip=1.0)


def _join(rank: int, port: int) -> WorkerContext:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank))
    os.environ.update(WORLD_SIZE="2", DS_ACCELERATOR="cpu")
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.set_num_threads(1)
    return WorkerContext(rank, 2)


PLAIN = trial_config("lf_dnn", {**SETTINGS, "balance": False, "dropout": 0.0, "lr": 2e-3, "max_epochs": 1})


def _plain_run(ctx: WorkerContext) -> dict[str, list]:
    """Untrained predictions of a seeded model, then each fold's predictions after one epoch (batch 16,
    no dropout: nothing random differs between one worker and two)."""
    # fold train sizes 16k + 13 and 16k + 1: last batches of 13 (shared 7 + 6) and of 1 (one worker has none)
    data = make_synthetic(sizes=(160, 30, 30), seed=2)
    pool = development_pool(data)
    everything = np.arange(len(pool))
    fresh = new_engine(PLAIN, data, pool, everything, 7, ctx)
    folds = cross_validate(PLAIN, data, lambda m, s: None, ctx)
    return {
        "untrained": predict(fresh, pool, everything, 16, ctx).tolist(),
        "trained": [predict(fold.engine, pool, everything, 16, ctx).tolist() for fold in folds],
    }


def _two_plain_workers(rank: int, port: int, out: str) -> None:
    results = _plain_run(_join(rank, port))
    if rank == 0:
        Path(out).write_text(json.dumps(results))
    dist.destroy_process_group()


def test_two_workers_predict_exactly_as_one_and_train_as_one_at_the_same_global_batch(tmp_path):
    out = tmp_path / "two.json"
    mp.spawn(_two_plain_workers, args=(29640, str(out)), nprocs=2)
    two, one = json.loads(out.read_text()), _plain_run(WorkerContext())
    np.testing.assert_array_equal(two["untrained"], one["untrained"])  # shard, predict, gather: nothing changes
    assert not np.array_equal(one["trained"][0], one["untrained"])
    for fold_two, fold_one in zip(two["trained"], one["trained"]):  # the same steps; sums in another order
        np.testing.assert_allclose(fold_two, fold_one, rtol=0, atol=1e-5)


def _workers(rank: int, port: int, out: str, template: str) -> None:
    ctx = _join(rank, port)
    data = make_synthetic(sizes=(160, 40, 40), seed=1)
    results: dict = {}
    for name, (engine, stage) in ENGINES.items():
        trial = trial_config("lf_dnn", {**SETTINGS, "lr": 2e-3, "max_epochs": 2})
        folds = cross_validate(
            trial.with_train(engine=engine, zero_stage=stage, deepspeed_config=template), data, lambda m, s: None, ctx
        )
        results[name] = [fold.history for fold in folds]
    # a high rate, so a fold's best epoch is not its last: the restored weights must be the best epoch's
    trial = trial_config("lf_dnn", {**SETTINGS, "lr": 5e-2, "max_epochs": 5})
    folds = cross_validate(
        trial.with_train(engine="deepspeed", zero_stage=3, deepspeed_config=template), data, lambda m, s: None, ctx
    )
    pool = development_pool(data)
    restored = []
    for fold in folds:
        scores = predict(fold.engine, pool, fold.val_idx, 16, ctx)  # every worker takes part in ZeRO 3's gathers
        again = compute_metrics("mmsa", scores, pool.labels[fold.val_idx])["MAE"]
        restored.append((fold.best_epoch, len(fold.history), fold.best_value, again))
    results["restored"] = restored
    if rank == 0:
        Path(out).write_text(json.dumps(results))
    dist.destroy_process_group()


def test_zero_1_2_3_train_as_zero_0_and_restore_the_best_weights(tmp_path):
    template = json.loads(DEEPSPEED_CONFIG.read_text())
    template["zero_optimization"]["stage3_param_persistence_threshold"] = 0  # ZeRO 3 partitions every parameter
    (tmp_path / "ds.json").write_text(json.dumps(template))
    out = tmp_path / "results.json"
    mp.spawn(_workers, args=(29650, str(out), str(tmp_path / "ds.json")), nprocs=2)
    results = json.loads(out.read_text())
    reference = results["zero0"]
    assert len(reference[0]) == 2 and reference[0][0]["train_loss"] != reference[0][1]["train_loss"]  # it moves
    for name in ("ddp", "zero1", "zero2", "zero3"):
        for fold, fold_reference in zip(results[name], reference):
            for epoch, epoch_reference in zip(fold, fold_reference):
                assert epoch.keys() == epoch_reference.keys()
                for key, value in epoch_reference.items():  # loss, each modality's gradient, B-fusion's omega
                    assert epoch[key] == pytest.approx(value, rel=1e-4, abs=1e-7), (name, key)
    assert any("grad_T" in key for key in reference[0][0])  # the balancer read the gathered gradients
    restored = results["restored"]
    assert any(best + 1 < epochs for best, epochs, _, _ in restored)  # a fold whose best epoch was not its last
    for _, _, best, again in restored:
        assert again == pytest.approx(best, abs=1e-6)
    assert np.isfinite([best for _, _, best, _ in restored]).all()
