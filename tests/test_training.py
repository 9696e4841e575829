"""The training loop learns a planted signal, restores best weights, resumes exactly,
and runs the same way on the DeepSpeed engine."""

import copy
import os

import numpy as np
import pytest
import torch
import torch.distributed as dist

from ray_msa.data.folds import development_pool, group_folds
from ray_msa.data.synthetic import make_synthetic
from ray_msa.metrics import compute_metrics
from ray_msa.models import build_model
from ray_msa.models.ensemble import FoldEnsemble
from ray_msa.search_space import trial_config
from ray_msa.train.batches import batches, in_order
from ray_msa.train.engine import make_optimizer
from ray_msa.train.loop import WorkerContext, predict, run_cross_validation, run_final_ensemble, run_final_training

SETTINGS = dict(
    folds=2,
    seed=0,
    max_epochs=8,
    patience=3,
    metric="MAE",
    batch_size=16,
    lr=2e-3,
    weight_decay=0.0,
    grad_clip=1.0,
    heads=2,
    ffn=64,
    dropout=0.1,
    alpha=1.0,
    beta=0.5,
    gamma=0.5,
    hidden=32,
)
CONFIG = trial_config("mtl", SETTINGS)


@pytest.fixture(scope="module")
def planted():
    return make_synthetic(sizes=(240, 60, 120), seed=1)


@pytest.fixture(scope="module")
def small_planted():
    """For the tests about the loop's bookkeeping (resume, engines, ensemble), not about learning."""
    return make_synthetic(sizes=(80, 20, 40), seed=1)


def mean_predictor_mae(ds):
    pool = development_pool(ds)
    return float(
        np.mean([np.abs(pool.labels[v] - pool.labels[t].mean()).mean() for t, v in group_folds(pool.video_ids, 2, 0)])
    )


def test_planted_signal_is_learned(planted):
    reports = []
    summary = run_cross_validation(CONFIG, planted, lambda m, s: reports.append(m), WorkerContext())
    baseline = mean_predictor_mae(planted)
    assert summary["mean_MAE"] < 0.6 * baseline, (summary["mean_MAE"], baseline)
    assert reports[-1]["cv_complete"] and reports[-1]["mean_MAE"] == summary["mean_MAE"]
    # ASHA sees a non-increasing objective: each fold reports its best epoch so far
    assert all(b["mean_MAE"] <= a["mean_MAE"] + 1e-12 for a, b in zip(reports, reports[1:]))
    test, _, _ = run_final_training(CONFIG.with_train(final_epochs=6), planted, WorkerContext())
    test_baseline = np.abs(planted.splits["test"].labels - development_pool(planted).labels.mean()).mean()
    assert test["MAE"] < 0.6 * test_baseline


@pytest.mark.parametrize("schedule", ["constant", "linear"])
def test_resume_from_checkpoint_is_exact(small_planted, schedule):
    planted = small_planted
    config = CONFIG.with_train(max_epochs=4, patience=10, checkpoint_every=1, lr_schedule=schedule, warmup=0.25)
    full = []
    run_cross_validation(config, planted, lambda m, s: full.append(m), WorkerContext())
    saved = {}
    run_cross_validation(
        config,
        planted,
        lambda m, s: saved.setdefault(m["epoch"], copy.deepcopy(s)),
        WorkerContext(),
    )
    resumed = []
    run_cross_validation(config, planted, lambda m, s: resumed.append(m), WorkerContext(), resume=saved[2])
    assert [r["epoch"] for r in resumed] == [3, 4]
    assert resumed[-1]["mean_MAE"] == pytest.approx(full[-1]["mean_MAE"], abs=1e-6)


def test_deepspeed_engine_runs_the_same_loop(small_planted, tmp_path):
    planted = small_planted
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT="29517", RANK="0", LOCAL_RANK="0", WORLD_SIZE="1")
    dist.init_process_group("gloo", rank=0, world_size=1)
    try:
        reports = []
        config = CONFIG.with_train(max_epochs=4, lr_schedule="cosine", warmup=0.1)  # DeepSpeed steps the schedule too
        deepspeed = config.with_train(engine="deepspeed")
        summary = run_cross_validation(deepspeed, planted, lambda m, s: reports.append(m), WorkerContext())
        ddp = run_cross_validation(config.with_train(engine="ddp"), planted, lambda m, s: None, WorkerContext())
    finally:
        dist.destroy_process_group()
    assert len(reports) == 4
    assert summary["mean_MAE"] < mean_predictor_mae(planted)
    # same seed, same data, same optimizer: the engines agree on CPU fp32 up to summation order
    assert summary["mean_MAE"] == pytest.approx(ddp["mean_MAE"], rel=1e-4)


def test_the_ensemble_is_the_trials_fold_models_averaged(small_planted):
    """`--final ensemble`: the same seed rebuilds the trial's fold models exactly, and the test
    predictions are their average; `FoldEnsemble` (the logged model) predicts the same."""
    planted = small_planted
    config = CONFIG.with_train(max_epochs=3, final="ensemble")
    reports = []
    run_cross_validation(config, planted, lambda m, s: reports.append(m), WorkerContext())
    test_metrics, engines, scores = run_final_ensemble(config, planted, WorkerContext())
    pool, test = development_pool(planted), planted.splits["test"]
    for engine, (_, val_idx), trial_value in zip(engines, group_folds(pool.video_ids, 2, 0), reports[-1]["folds_MAE"]):
        fold_value = compute_metrics("mmsa", predict(engine, pool, val_idx, 16, WorkerContext()), pool.labels[val_idx])
        assert fold_value["MAE"] == pytest.approx(trial_value, abs=1e-6)  # the trial's own fold model
    members = [predict(e, test, np.arange(len(test)), 16, WorkerContext()) for e in engines]
    assert np.allclose(scores, np.mean(members, axis=0), atol=1e-6)
    assert not np.allclose(members[0], members[1], atol=1e-3)  # two different models were averaged
    assert test_metrics == compute_metrics("mmsa", scores, test.labels)
    ensemble = FoldEnsemble([e.model for e in engines]).eval()
    with torch.no_grad():
        logged = [ensemble(b).prediction.numpy() for b in batches(test, in_order(np.arange(len(test)), 16))]
    assert np.allclose(np.concatenate(logged), scores, atol=1e-5)


@pytest.mark.parametrize("optimizer", ["adamw", "adam"])
def test_fused_adam_steps_as_the_per_tensor_loop_does(optimizer):
    """The engine's Adam is PyTorch's fused kernel: after 20 clipped steps on an mtl model it holds the weights
    the default per-tensor loop computes, to float rounding; and it is fused (the loop is the slow path)."""
    trial = trial_config("mtl", {"optimizer": optimizer, "lr": 1e-3, "weight_decay": 1e-4})
    torch.manual_seed(0)
    model = build_model("mtl", ("text", "audio", "vision"), {"text": 32, "audio": 5, "vision": 7}, trial.model)
    reference = copy.deepcopy(model)
    fused = make_optimizer(model, trial.train)
    assert fused.defaults["fused"] is True
    loop = (torch.optim.AdamW if optimizer == "adamw" else torch.optim.Adam)(
        reference.parameters(), lr=1e-3, weight_decay=1e-4, foreach=False
    )
    grads = [torch.randn_like(p) for p in model.parameters()]
    for step in range(20):
        for net, opt in ((model, fused), (reference, loop)):
            for p, g in zip(net.parameters(), grads):
                p.grad = g * (1 + step % 3)
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step()
    worst = max((a - b).abs().max().item() for a, b in zip(model.parameters(), reference.parameters()))
    assert worst < 1e-6  # one pass against one op at a time: equal to a few float32 ulps
