"""DeepSpeed ZeRO 1, 2 and 3 on CPU (gloo, two workers) against ZeRO 0 and the DDP engine: the same
per-epoch losses and B-fusion gradients, and the best-weights snapshot restored under ZeRO 3."""

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
from ray_msa.train.loop import WorkerContext, cross_validate, predict

pytestmark = pytest.mark.slow
ENGINES = {"ddp": ("ddp", 0), **{f"zero{s}": ("deepspeed", s) for s in range(4)}}
# lf_dnn with B-fusion: its after_backward hook reads every modality's whole gradient, partitioned from ZeRO 1 on
SETTINGS = dict(hidden=16, post_fusion=16, balance=True, folds=2, seed=0, patience=4, batch_size=16, grad_clip=1.0)


def _workers(rank: int, port: int, out: str, template: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank))
    os.environ.update(WORLD_SIZE="2", DS_ACCELERATOR="cpu")
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.set_num_threads(1)
    ctx = WorkerContext(rank, 2)
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
